"""A Debian archive, trusted step by step: signed Release, then index hashes.

The chain of trust is the one apt uses:

1. ``dists/SUITE/InRelease`` (or ``Release`` + ``Release.gpg``) is verified
   with ``gpgv`` against the configured keyring. Only the text gpgv returns as
   signed is parsed, never the raw download: anything outside the signature
   (or a second, unsigned block) cannot smuggle fields in.
2. The Release's ``Date``/``Valid-Until`` must be current, and its suite must
   be the one asked for (a mirror cannot answer with another, older suite).
3. Each ``COMPONENT/binary-ARCH/Packages.{xz,gz}`` must have the size and
   SHA256 the signed Release lists.
4. Each .deb must match the size and SHA256 its index lists (``fetch.py``).
"""

from __future__ import annotations

import base64
import hashlib
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

import httpx
from debian import deb822

from polyarch import cmd
from polyarch.cache import Cache
from polyarch.config import RepositoryConfig
from polyarch.debian.index import CACHE_KIND as INDEX_CACHE_KIND
from polyarch.debian.index import PackageIndex, decompress, load_index
from polyarch.debian.packages import PackageRecord
from polyarch.errors import ConfigError, IntegrityError, MirrorError, SignatureError
from polyarch.http import get_with_retries, new_client
from polyarch.platforms import SYSTEMS
from polyarch.progress import NULL_PROGRESS, Progress

DEFAULT_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
# An archive's clock may run a little ahead of ours; more than this is refused.
MAX_CLOCK_SKEW = timedelta(days=1)
# Preferred index compressions, best first; only those the Release lists are tried.
INDEX_VARIANTS = (".xz", ".gz", "")
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


# --- finding the mirror ---------------------------------------------------------------


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
    Debian's archive keyring.
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
        keyring = DEFAULT_KEYRING
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


# --- signatures -----------------------------------------------------------------------


def _dearmor(data: bytes) -> bytes:
    """The binary packets of ASCII-armoured OpenPGP data (all blocks, concatenated)."""
    out = bytearray()
    state = "outside"
    body: list[bytes] = []
    for raw in data.splitlines():
        line = raw.strip()
        if line.startswith(b"-----BEGIN PGP"):
            state, body = "headers", []
        elif line.startswith(b"-----END PGP"):
            out += base64.b64decode(b"".join(body), validate=True)
            state = "outside"
        elif state == "headers" and line and b":" in line:
            continue  # an armour header such as "Comment: ..."
        elif state in ("headers", "body"):
            if state == "body" and line.startswith(b"="):
                continue  # CRC24 checksum line
            state = "body"
            body.append(line)
    return bytes(out)


def _binary_keyring(keyring: Path, workdir: Path) -> Path:
    """gpgv reads only binary keyrings; an armoured ``.asc`` one is decoded first."""
    data = keyring.read_bytes()
    if not data.lstrip().startswith(b"-----BEGIN PGP"):
        return keyring.resolve()
    out = workdir / "keyring.gpg"
    try:
        out.write_bytes(_dearmor(data))
    except ValueError as exc:
        raise ConfigError(
            f"keyring {keyring} is not a valid OpenPGP keyring",
            hint="point [repository] keyring at a .gpg or .asc keyring file",
        ) from exc
    return out


def _gpgv(
    source: Source, what: str, signed: Path, detached_data: Path | None, workdir: Path
) -> None:
    """Run gpgv; raise SignatureError unless a key of the keyring made a good signature."""
    keyring = _binary_keyring(source.keyring, workdir)
    home = workdir / "home"
    home.mkdir(mode=0o700)
    argv: list[str | Path] = ["gpgv", "--homedir", home, "--keyring", keyring, "--status-fd", "1"]
    if detached_data is None:
        argv += ["--output", workdir / "signed.txt", signed]
    else:
        argv += [signed, detached_data]
    result = cmd.run(argv, timeout=120)
    keywords = [
        line.split()[1]
        for line in result.stdout.decode(errors="replace").splitlines()
        if line.startswith("[GNUPG:] ") and len(line.split()) > 1
    ]
    status = set(keywords)
    location = f"{source.url}/dists/{source.suite}/{what}"
    if "BADSIG" in status:
        raise SignatureError(
            f"{location}: {what} was modified after signing (bad signature)",
            hint="the mirror or a proxy serves altered files; try another mirror",
        )
    if status & {"ERROR", "FAILURE"} or keywords.count("PLAINTEXT") > 1:
        # e.g. a second signed message appended: gpgv verifies only the first,
        # and which text it returned would be guesswork. apt refuses it too.
        raise SignatureError(
            f"{location} is not a single signed message",
            hint="the mirror or a proxy serves altered files; try another mirror",
        )
    if "VALIDSIG" in status and "GOODSIG" in status:
        # Other signatures by keys we do not hold (ERRSIG) are allowed, as in apt:
        # archives sign with several keys and a keyring may hold only some.
        return
    if status & {"NO_PUBKEY", "ERRSIG"}:
        raise SignatureError(
            f"{location} is not signed by a key in {source.keyring}",
            hint="set [repository] keyring in containers.toml to the archive's keyring",
        )
    if status & {"EXPKEYSIG", "REVKEYSIG"}:
        raise SignatureError(
            f"{location} is signed by an expired or revoked key",
            hint="update the keyring (apt-get install debian-archive-keyring) or [repository] keyring",
        )
    if "NODATA" in status:
        raise SignatureError(
            f"{location} holds no OpenPGP signature",
            hint="check that [repository] url points at a Debian archive",
        )
    stderr = result.stderr.decode(errors="replace").strip().splitlines()
    raise SignatureError(
        f"{location}: gpgv could not verify it: {stderr[-1] if stderr else 'no output'}",
        hint=f"check that {source.keyring} is a keyring gpgv can read",
    )


def verify_inrelease(source: Source, data: bytes) -> str:
    """The signed text of a clear-signed InRelease, after gpgv accepted it."""
    with tempfile.TemporaryDirectory(prefix="polyarch-gpgv-") as tmp:
        work = Path(tmp)
        (work / "InRelease").write_bytes(data)
        _gpgv(source, "InRelease", work / "InRelease", None, work)
        return (work / "signed.txt").read_bytes().decode("utf-8", errors="replace")


def verify_detached(source: Source, release: bytes, signature: bytes) -> str:
    """The text of ``Release`` after gpgv accepted ``Release.gpg`` for it."""
    with tempfile.TemporaryDirectory(prefix="polyarch-gpgv-") as tmp:
        work = Path(tmp)
        (work / "Release").write_bytes(release)
        (work / "Release.gpg").write_bytes(signature)
        _gpgv(source, "Release.gpg", work / "Release.gpg", work / "Release", work)
        return release.decode("utf-8", errors="replace")


# --- the Release file -----------------------------------------------------------------


@dataclass(frozen=True)
class Release:
    """The fields of a verified Release that polyarch uses."""

    date: datetime
    valid_until: datetime | None
    suite: str
    codename: str
    architectures: tuple[str, ...]
    components: tuple[str, ...]
    sha256: Mapping[str, tuple[int, str]]
    """Path below dists/SUITE/ → (size, lowercase hex SHA256)."""
    acquire_by_hash: bool
    text: str
    """The verified text: exactly what the signature covers."""


def _release_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # a Release is one stanza; nothing after it is used
            continue
        if line[0] in " \t":
            if key:
                fields[key] += "\n" + line.strip()
            continue
        key, _, value = line.partition(":")
        key = key.strip().lower()
        fields[key] = value.strip()
    return fields


def _release_date(value: str, field: str, where: str) -> datetime:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError) as exc:
        raise IntegrityError(f"{where}: {field} {value!r} is not a date") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_release(text: str, where: str) -> Release:
    """Parse verified Release text (``where`` names it in errors)."""
    fields = _release_fields(text)
    if "date" not in fields:
        raise IntegrityError(
            f"{where} has no Date field", hint="the mirror serves a broken Release"
        )
    sha256: dict[str, tuple[int, str]] = {}
    for line in fields.get("sha256", "").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit():
            sha256[parts[2]] = (int(parts[1]), parts[0].lower())
    valid_until = fields.get("valid-until")
    return Release(
        date=_release_date(fields["date"], "Date", where),
        valid_until=_release_date(valid_until, "Valid-Until", where) if valid_until else None,
        suite=fields.get("suite", ""),
        codename=fields.get("codename", ""),
        architectures=tuple(fields.get("architectures", "").split()),
        components=tuple(fields.get("components", "").split()),
        sha256=sha256,
        acquire_by_hash=fields.get("acquire-by-hash", "").lower() == "yes",
        text=text,
    )


# --- the repository -------------------------------------------------------------------


def _system_of(arch: str) -> str:
    names = [s.name for s in SYSTEMS if s.debian_arch == arch]
    return f"{arch} ({names[0]})" if names else arch


class Repository:
    """A verified view of one suite of a Debian archive.

    ``release()`` and ``index(arch)`` download and verify once per instance;
    InRelease is always fetched afresh (it is small and says what is current),
    and an index is downloaded only when the cache lacks its parsed form.
    """

    def __init__(
        self,
        source: Source,
        cache: Cache,
        *,
        client: httpx.Client | None = None,
        progress: Progress = NULL_PROGRESS,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.source = source
        self.cache = cache
        self.progress = progress
        self._owns_client = client is None
        self._client = client if client is not None else new_client()
        self._now = now or (lambda: datetime.now(UTC))
        self._release: Release | None = None
        self._indexes: dict[str, PackageIndex] = {}

    @property
    def client(self) -> httpx.Client:
        """The HTTP client, shared with ``fetch_debs``."""
        return self._client

    def close(self) -> None:
        """Close the HTTP client if this repository made it."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> Repository:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _dist_url(self, path: str) -> str:
        return f"{self.source.url}/dists/{self.source.suite}/{path}"

    def _get(self, url: str) -> httpx.Response:
        return get_with_retries(self._client, url)

    def release(self) -> Release:
        """The suite's Release, after its signature, date and suite were checked."""
        if self._release is None:
            self._release = self._fetch_release()
        return self._release

    def _fetch_release(self) -> Release:
        inrelease_url = self._dist_url("InRelease")
        response = self._get(inrelease_url)
        if response.status_code == 200:
            where = inrelease_url
            text = verify_inrelease(self.source, response.content)
        elif response.status_code in (404, 410):
            where = self._dist_url("Release")
            release_bytes = self._require(self._get(where), where)
            signature = self._require(self._get(where + ".gpg"), where + ".gpg")
            text = verify_detached(self.source, release_bytes, signature)
        else:
            raise MirrorError(
                f"{inrelease_url}: HTTP {response.status_code}",
                hint="check [repository] url and suite in containers.toml",
            )
        release = parse_release(text, where)
        self._check_current(release, where)
        return release

    def _require(self, response: httpx.Response, url: str) -> bytes:
        if response.status_code != 200:
            raise MirrorError(
                f"{url}: HTTP {response.status_code}",
                hint=f"check [repository] url and suite ({self.source.suite}) in containers.toml",
            )
        return response.content

    def _check_current(self, release: Release, where: str) -> None:
        suite = self.source.suite
        if suite not in (release.suite, release.codename):
            raise SignatureError(
                f"{where} is for {release.codename or release.suite!r}, not {suite!r}",
                hint="the mirror answers with another suite; check [repository] url and suite",
            )
        now = self._now()
        if release.date > now + MAX_CLOCK_SKEW:
            raise SignatureError(
                f"{where} is dated {release.date:%Y-%m-%d %H:%M} UTC, in the future",
                hint="check this machine's clock; otherwise the mirror is broken",
            )
        if release.valid_until and release.valid_until < now and not self.source.snapshot:
            raise SignatureError(
                f"{where} expired on {release.valid_until:%Y-%m-%d %H:%M} UTC",
                hint="the mirror is stale (or this machine's clock is wrong); try another mirror",
            )

    def _index_file(self, component: str, arch: str) -> tuple[str, int, str]:
        release = self.release()
        base = f"{component}/binary-{arch}/Packages"
        for suffix in INDEX_VARIANTS:
            entry = release.sha256.get(base + suffix)
            if entry is not None:
                return base + suffix, entry[0], entry[1]
        suite = self.source.suite
        if release.architectures and arch not in release.architectures:
            listed = " ".join(release.architectures)
            raise MirrorError(
                f"{self.source.url} has no {_system_of(arch)} packages for {suite} (it has: {listed})",
                hint="choose another system, or a mirror that carries this architecture",
            )
        if release.components and component not in release.components:
            listed = " ".join(release.components)
            raise MirrorError(
                f"{self.source.url} has no component {component!r} in {suite} (it has: {listed})",
                hint="fix [repository] components in containers.toml",
            )
        raise MirrorError(
            f"mirror has no {_system_of(arch)} index for {suite} {component}",
            hint="the mirror may be incomplete; try another mirror",
        )

    def index_hashes(self, arch: str) -> dict[str, str]:
        """Path below dists/SUITE/ → SHA256 of each index file ``index(arch)`` uses."""
        hashes: dict[str, str] = {}
        for component in self.source.components:
            path, _size, sha256 = self._index_file(component, arch)
            hashes[path] = sha256
        return hashes

    def index(self, arch: str) -> PackageIndex:
        """Every package of every configured component for ``arch``, in component order.

        Cached indexes stay lazily decoded (see ``PackageIndex``): a warm
        resolution decodes only the records it looks at.
        """
        if arch not in self._indexes:
            parts: list[PackageIndex] = []
            for component in self.source.components:
                path, size, sha256 = self._index_file(component, arch)

                def raw(path: str = path, size: int = size, sha256: str = sha256) -> bytes:
                    return decompress(self._download_index(path, size, sha256), path)

                # Two processes sharing a cache parse an index once: the second waits.
                with self.cache.lock(INDEX_CACHE_KIND, sha256):
                    parts.append(load_index(self.cache, sha256, raw, component=component))
            self._indexes[arch] = PackageIndex.concat(parts)
        return self._indexes[arch]

    def _download_index(self, path: str, size: int, sha256: str) -> bytes:
        task = self.progress.task(f"index {self.source.suite}/{path}", total=size)
        try:
            data: bytes | None = None
            if self.release().acquire_by_hash:
                # by-hash paths never change, so a mirror mid-sync cannot serve
                # a newer index than the Release we verified.
                directory = path.rsplit("/", 1)[0]
                response = self._get(self._dist_url(f"{directory}/by-hash/SHA256/{sha256}"))
                if response.status_code == 200:
                    data = response.content
            url = self._dist_url(path)
            if data is None:
                data = self._require(self._get(url), url)
            actual = hashlib.sha256(data).hexdigest()
            if len(data) != size or actual != sha256:
                raise IntegrityError(
                    f"{url} does not match the signed Release "
                    f"(size {len(data)}, expected {size}; sha256 {actual}, expected {sha256})",
                    hint="the mirror may be mid-sync; try again later or use another mirror",
                )
            self.progress.advance(task, size)
            return data
        finally:
            self.progress.done(task)

    def url_of(self, record: PackageRecord) -> str:
        """Where the .deb of ``record`` is downloaded from."""
        return f"{self.source.url}/{record.filename.lstrip('/')}"
