"""Where packages come from: the mirror, suite, components and keyring of an archive.

The mirror is ``[repository] url``, else a snapshot URL, else the host's apt
sources (deb822 ``*.sources`` and one-line ``*.list``); never a host name
written into polyarch.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from debian import deb822

from polyarch.config import RepositoryConfig
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


def _deb822_entries(path: Path) -> Iterator[_AptEntry]:
    with path.open(encoding="utf-8", errors="replace") as f:
        for para in deb822.Deb822.iter_paragraphs(f, use_apt_pkg=False):
            if "deb" not in para.get("Types", "").split():
                continue
            if para.get("Enabled", "yes").strip().lower() == "no":
                continue
            signed_by = para.get("Signed-By", "").strip() or None
            for uri in para.get("URIs", "").split():
                yield _AptEntry(
                    uri,
                    tuple(para.get("Suites", "").split()),
                    tuple(para.get("Components", "").split()),
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
    stamp = cfg.snapshot or ""
    if not _SNAPSHOT_STAMP_RE.fullmatch(stamp):
        raise ConfigError(
            f"[repository] snapshot {stamp!r} is not a timestamp like 20250520T000000Z",
            hint="write it as YYYYMMDDTHHMMSSZ (UTC)",
        )
    template = cfg.snapshot_url
    example = 'snapshot_url = "http://HOST/archive/debian/{snapshot}"'
    if not template:
        raise ConfigError(
            "[repository] snapshot is set but snapshot_url is not",
            hint=f"add the URL template of a snapshot archive, e.g. {example}",
        )
    if "{snapshot}" not in template or urlsplit(template).scheme not in ("http", "https"):
        raise ConfigError(
            f"[repository] snapshot_url {template!r} is not an http(s) URL with {{snapshot}} in it",
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
