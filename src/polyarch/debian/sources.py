"""Where packages come from: the mirror, suite, components and keyring of each source.

The main mirror is ``[repository] url``, else a snapshot URL, else the host's
apt sources (deb822 ``*.sources`` and one-line ``*.list``); never a host name
written into polyarch. The other sources (``polyarch.config_sources``) are
suites of the same archive unless they name a URL, except the security suite:
it lives in an archive of its own, which is found in the host's apt sources,
else beside the main one (``.../debian`` → ``.../debian-security``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from polyarch.config import Config, RepositoryConfig
from polyarch.config_rules import MAIN_SOURCE
from polyarch.config_sources import SourceSpec
from polyarch.debian.keys import BUNDLED_KEYRING
from polyarch.errors import ConfigError, MirrorError

DEFAULT_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
SET_URL_HINT = "set [repository] url in containers.toml to a Debian mirror"


@dataclass(frozen=True)
class Source:
    """Where packages come from and which key must have signed them."""

    url: str
    """Mirror base URL without a trailing slash (the directory holding dists/ and pool/)."""
    suite: str
    components: tuple[str, ...]
    keyring: Path
    snapshot: str | None = None
    """Set for a frozen snapshot archive, whose Valid-Until has long passed by design."""
    name: str = MAIN_SOURCE
    """The source's name in containers.toml (``main`` for [repository]), locks and output."""
    priority: int | None = None
    """The configured pin priority; None: the Release's default (``Repository.priority``)."""
    security: bool = False
    """A security suite: what `polyarch outdated` calls a security fix comes from here."""

    def describe(self) -> str:
        """How messages name it: ``source 'security' (URL SUITE)``."""
        return f"source {self.name!r} ({self.url} {self.suite})"


@dataclass(frozen=True)
class _AptEntry:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None


_ONE_LINE_RE = re.compile(r"^deb\s+(?:\[([^\]]*)\]\s*)?(\S+)\s+(\S+)(?:\s+(.*))?$")
_SNAPSHOT_STAMP_RE = re.compile(r"\d{8}T\d{6}Z")


def _one_line_entries(path: Path) -> Iterator[_AptEntry]:
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.split("#", 1)[0].strip()
        match = _ONE_LINE_RE.match(line)
        if not match:
            continue
        options, uri, suite, comps = match.groups()
        signed_by = None
        for option in (options or "").split():
            key, _, value = option.partition("=")
            if key == "signed-by":
                signed_by = value
        yield _AptEntry(uri, (suite,), tuple((comps or "").split()), signed_by)


def deb822_paragraphs(text: str) -> Iterator[dict[str, str]]:
    """The paragraphs of a deb822 file (apt's ``*.sources``): field names lowercased,
    continuation lines joined by newlines, ``#`` comment lines skipped.

    By hand rather than with python-debian, whose import alone cost every
    build ~15 ms (tests hold the two to agreement).
    """
    fields: dict[str, str] = {}
    key: str | None = None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if fields:
                yield fields
            fields, key = {}, None
        elif line[0] in " \t":
            if key is not None:
                fields[key] += "\n" + line.rstrip()
        else:
            name, colon, value = line.partition(":")
            key = name.strip().lower() if colon and name.strip() else None
            if key is not None:
                fields[key] = value.strip()
    if fields:
        yield fields


def _deb822_entries(path: Path) -> Iterator[_AptEntry]:
    for para in deb822_paragraphs(path.read_text(encoding="utf-8", errors="replace")):
        if "deb" not in para.get("types", "").split():
            continue
        if para.get("enabled", "yes").strip().lower() == "no":
            continue
        signed_by = para.get("signed-by", "").strip() or None
        for uri in para.get("uris", "").split():
            yield _AptEntry(
                uri,
                tuple(para.get("suites", "").split()),
                tuple(para.get("components", "").split()),
                signed_by,
            )


def _apt_entries(apt_dir: Path) -> list[_AptEntry]:
    """Every ``deb`` entry in apt's order: sources.list, then sources.list.d/ sorted."""
    files = [apt_dir / "sources.list"]
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    entries: list[_AptEntry] = []
    for path in files:
        try:
            if not path.is_file():
                continue
            reader = _deb822_entries if path.suffix == ".sources" else _one_line_entries
            entries += [e for e in reader(path) if urlsplit(e.uri).scheme in ("http", "https")]
        except OSError:
            continue  # an unreadable apt file is not ours to report; the next may do
    return entries


def _looks_like_debian_archive(uri: str) -> bool:
    """``.../debian``, or a snapshot of it (``.../debian/20250520T000000Z``)."""
    parts = [p for p in urlsplit(uri).path.split("/") if p]
    if parts and _SNAPSHOT_STAMP_RE.fullmatch(parts[-1]):
        parts = parts[:-1]
    return bool(parts) and parts[-1] == "debian"


def _pick_entry(entries: list[_AptEntry], cfg: RepositoryConfig) -> _AptEntry | None:
    wanted = set(cfg.components)
    rules: list[Callable[[_AptEntry], bool]] = [
        lambda e: cfg.suite in e.suites and _looks_like_debian_archive(e.uri),
        lambda e: cfg.suite in e.suites and wanted <= set(e.components),
        # The host runs another release: its main archive serves ours too.
        lambda e: _looks_like_debian_archive(e.uri),
    ]
    for rule in rules:
        for entry in entries:
            if rule(entry):
                return entry
    return None


def snapshot_url(cfg: RepositoryConfig) -> str:
    """The archive URL of ``[repository] snapshot``: ``snapshot_url`` with ``{snapshot}`` filled in."""
    return _fill_snapshot("[repository]", cfg.snapshot, cfg.snapshot_url)


def _fill_snapshot(table: str, snapshot: str | None, template: str | None) -> str:
    stamp = snapshot or ""
    if not _SNAPSHOT_STAMP_RE.fullmatch(stamp):
        raise ConfigError(
            f"{table} snapshot {stamp!r} is not a timestamp like 20250520T000000Z",
            hint="write it as YYYYMMDDTHHMMSSZ (UTC)",
        )
    example = 'snapshot_url = "http://HOST/archive/debian/{snapshot}"'
    if not template:
        raise ConfigError(
            f"{table} snapshot is set but snapshot_url is not",
            hint=f"add the URL template of a snapshot archive, e.g. {example}",
        )
    if "{snapshot}" not in template or urlsplit(template).scheme not in ("http", "https"):
        raise ConfigError(
            f"{table} snapshot_url {template!r} is not an http(s) URL with {{snapshot}} in it",
            hint=f"write it like {example}",
        )
    # str.replace, not str.format: the template is user text and may hold other braces.
    return template.replace("{snapshot}", stamp)


def find_source(cfg: RepositoryConfig, *, apt_dir: Path = Path("/etc/apt")) -> Source:
    """The mirror, suite, components and keyring to use.

    With ``[repository] snapshot`` the URL is ``snapshot_url`` filled in with
    it (a frozen archive state: old locks stay buildable after the mirror
    moves on). Otherwise it is ``[repository] url``, else the host's apt
    source for the suite (deb822 ``*.sources`` and one-line ``*.list`` files). The keyring is
    ``[repository] keyring``, else the apt source's ``Signed-By`` file, else
    the host's Debian archive keyring, else the copy polyarch ships (debian/keys.py).
    """
    signed_by: str | None = None
    if cfg.snapshot is not None:
        url = snapshot_url(cfg)
    elif cfg.url:
        url = cfg.url
        if urlsplit(url).scheme not in ("http", "https"):
            raise ConfigError(
                f"[repository] url {url!r} is not an http(s) URL",
                hint="write it like http://HOST/debian",
            )
    else:
        entry = _pick_entry(_apt_entries(apt_dir), cfg)
        if entry is None:
            raise MirrorError(
                f"no Debian mirror for {cfg.suite} found in {apt_dir} (no [repository] url given)",
                hint=f"{SET_URL_HINT}; in containers there is usually no apt configuration",
            )
        url = entry.uri
        signed_by = entry.signed_by
    if cfg.keyring:
        keyring = Path(cfg.keyring).expanduser()
    elif signed_by and signed_by.startswith("/") and "\n" not in signed_by:
        keyring = Path(signed_by)
    else:
        keyring = DEFAULT_KEYRING if DEFAULT_KEYRING.is_file() else BUNDLED_KEYRING
    if not keyring.is_file():
        raise ConfigError(
            f"keyring {keyring} does not exist",
            hint="install debian-archive-keyring, or set [repository] keyring in containers.toml",
        )
    return Source(
        url=url.rstrip("/"),
        suite=cfg.suite,
        components=tuple(cfg.components),
        keyring=keyring,
        snapshot=cfg.snapshot,
    )


# --- every source --------------------------------------------------------------------


def find_sources(config: Config, *, apt_dir: Path = Path("/etc/apt")) -> tuple[Source, ...]:
    """Every enabled source of ``config``, the main one first (``find_source``).

    Reads only local files (the host's apt sources, keyrings), never the network,
    so a ``--locked --offline`` build knows where each locked package came from.
    """
    main = find_source(config.repository, apt_dir=apt_dir)
    specs = config.sources or ()
    main_spec = next((s for s in specs if s.kind == "main"), None)
    sources = [main]
    entries: list[_AptEntry] | None = None
    for spec in specs:
        if spec.kind == "main":
            continue
        if entries is None:
            entries = _apt_entries(apt_dir)
        sources.append(_other_source(spec, main, main_spec, entries))
    return tuple(sources)


def _other_source(
    spec: SourceSpec, main: Source, main_spec: SourceSpec | None, entries: list[_AptEntry]
) -> Source:
    table = f"[sources.{spec.name}]"
    signed_by: str | None = None
    snapshot: str | None = None
    own_archive = spec.kind == "security" and not spec.url
    if spec.snapshot and (spec.snapshot_url or own_archive):
        template = spec.snapshot_url or _security_sibling(
            (main_spec.snapshot_url if main_spec else None) or ""
        )
        if template is None:
            raise ConfigError(
                f"{table}: the main archive is a snapshot, and no snapshot_url of the "
                "security archive can be derived from [repository] snapshot_url",
                hint=f'set {table} snapshot_url = "http://HOST/archive/debian-security/'
                '{snapshot}", or enable = false',
            )
        url, snapshot = _fill_snapshot(table, spec.snapshot, template), spec.snapshot
    elif spec.url:
        url = spec.url
    elif spec.same_archive:
        url = main.url
    else:
        url, signed_by = _security_archive(spec, main, entries)
    if spec.keyring:
        keyring = Path(spec.keyring).expanduser()
    elif spec.kind != "security":
        keyring = main.keyring
    elif signed_by and signed_by.startswith("/") and Path(signed_by).is_file():
        keyring = Path(signed_by)
    else:
        # Also when the apt source's Signed-By is not here (a copied apt configuration):
        # Debian's keys verify Debian's security archive, and refuse anything else.
        keyring = DEFAULT_KEYRING if DEFAULT_KEYRING.is_file() else BUNDLED_KEYRING
    if not keyring.is_file():
        raise ConfigError(
            f"keyring {keyring} of {table} does not exist",
            hint=f"set {table} keyring to the file that signs {spec.suite}",
        )
    return Source(
        url=url.rstrip("/"),
        suite=spec.suite,
        components=spec.components,
        keyring=keyring,
        snapshot=snapshot,
        name=spec.name,
        priority=spec.priority,
        security=spec.is_security,
    )


def _security_archive(
    spec: SourceSpec, main: Source, entries: list[_AptEntry]
) -> tuple[str, str | None]:
    """(URL, Signed-By) of the security archive: the host's apt source, else beside the main."""
    for entry in entries:
        if spec.suite in entry.suites:
            return entry.uri, entry.signed_by
    for entry in entries:
        last = [p for p in urlsplit(entry.uri).path.split("/") if p][-1:]
        if last == ["debian-security"] and any(s.endswith("-security") for s in entry.suites):
            return entry.uri, entry.signed_by
    sibling = _security_sibling(main.url)
    if sibling is None:
        raise MirrorError(
            f"no security archive for {spec.suite} in the host's apt sources, and the main "
            f"archive {main.url} is not a .../debian one to find it beside",
            hint='set [sources.security] url = "http://HOST/debian-security", or '
            "[sources.security] enable = false",
        )
    return sibling, None


def _security_sibling(url: str) -> str | None:
    """``http://H/debian`` → ``http://H/debian-security``: how Debian lays out its archives.

    Works on snapshot URLs and templates too (``.../debian/{snapshot}``); None when
    no path part is ``debian``.
    """
    parts = urlsplit(url)
    segments = parts.path.split("/")
    for i in range(len(segments) - 1, -1, -1):
        if segments[i] == "debian":
            segments[i] = "debian-security"
            return parts._replace(path="/".join(segments)).geturl()
    return None


@dataclass(frozen=True, slots=True)
class SourceRelease:
    """One source as a closure used it: where it is, and the signed Release it was read at.

    What an SBOM or provenance statement cites for a package: ``url`` +
    the package's ``filename`` is where its .deb came from, ``release_sha256``
    the signed file (``release_file``) that vouches for the index that lists it.
    """

    name: str
    url: str
    suite: str
    codename: str
    components: tuple[str, ...]
    priority: int
    release_date: str
    """The Release's ``Date``, RFC 3339 UTC."""
    release_file: str
    """``InRelease``, or ``Release`` when it was verified through ``Release.gpg``."""
    release_sha256: str
    """SHA256 (hex) of that file as downloaded."""
    indexes: tuple[tuple[str, str], ...]
    """(path below ``dists/SUITE/``, SHA256) of each Packages index of this arch read."""
    security: bool = False
