"""A Debian archive, trusted step by step: signed Release, then index hashes.

The chain of trust is the one apt uses:

1. ``dists/SUITE/InRelease`` (or ``Release`` + ``Release.gpg``) is verified
   in-process against the configured keyring, by apt's rules (signature.py).
   Only the text the verifier returns as signed is parsed, never the raw
   download; anything outside the signed message is refused.
2. The Release's ``Date``/``Valid-Until`` must be current, and its suite must
   be the one asked for (a mirror cannot answer with another, older suite).
3. Each ``COMPONENT/binary-ARCH/Packages.{xz,gz}`` must have the size and
   SHA256 the signed Release lists.
4. Each .deb must match the size and SHA256 its index lists (``fetch.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from types import TracebackType

import httpx

from polyarch.cache import Cache, Kind
from polyarch.config_rules import MAIN_SOURCE
from polyarch.debian.contents import Contents, contents_files, load_contents
from polyarch.debian.index import PackageIndex, cache_key, load_index
from polyarch.debian.packages import PackageRecord, decompress
from polyarch.debian.signature import verify_detached, verify_inrelease
from polyarch.debian.sources import Source
from polyarch.errors import IntegrityError, MirrorError, PolyarchError, SignatureError
from polyarch.http import get_with_retries, new_client
from polyarch.platforms import SYSTEMS
from polyarch.progress import NULL_PROGRESS, Progress

PARSE_ELSEWHERE_FROM = 1 << 20
"""A compressed index this large (Debian's main is ~9 MB) is parsed in a worker process.

Gunzipping and caching it (``scan``) take ~0.5 s per arch, mostly holding the
GIL; in processes, two arches' indexes are read on two cores at once (a cold
``build fd --all-systems`` 0.35 s faster). The worker (a fresh ``python -c``:
nothing of this program is imported again, as multiprocessing would) writes
the cache file, where this process then finds it.
"""
_WORKER = "import sys; from polyarch.debian.index import parse_worker; parse_worker(sys.argv[1:])"
# An archive's clock may run a little ahead of ours; more than this is refused.
MAX_CLOCK_SKEW = timedelta(days=1)
# Preferred index compressions, best first; only those the Release lists are tried.
# gzip first: bookworm's 50 MB amd64 index gunzips in 0.4 s against 1.5 s for xz
# (same machine, same run), for a download 37 % larger (12.1 MB against 8.8 MB).
INDEX_VARIANTS = (".gz", ".xz", "")
# apt's default pin priorities of a release (apt_preferences(5)).
DEFAULT_PRIORITY = 500
NOT_AUTOMATIC_PRIORITY = 1
BUT_AUTOMATIC_UPGRADES_PRIORITY = 100


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
    origin: str = ""
    label: str = ""
    not_automatic: bool = False
    but_automatic_upgrades: bool = False
    file_name: str = "InRelease"
    """The signed file read: ``InRelease``, or ``Release`` (with ``Release.gpg``)."""
    file_sha256: str = ""
    """SHA256 of that file as downloaded (lowercase hex): what an SBOM cites."""

    @property
    def default_priority(self) -> int:
        """apt's pin priority for this release when none is configured."""
        if self.not_automatic:
            return BUT_AUTOMATIC_UPGRADES_PRIORITY if self.but_automatic_upgrades else 1
        return DEFAULT_PRIORITY


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
        origin=fields.get("origin", ""),
        label=fields.get("label", ""),
        not_automatic=fields.get("notautomatic", "").lower() == "yes",
        but_automatic_upgrades=fields.get("butautomaticupgrades", "").lower() == "yes",
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
        self._release_lock = threading.Lock()  # systems resolve in threads: fetch it once
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

    @property
    def _table(self) -> str:
        """Where containers.toml configures this source."""
        name = self.source.name
        return "[repository]" if name == MAIN_SOURCE else f"[sources.{name}]"

    def release(self) -> Release:
        """The suite's Release, after its signature, date and suite were checked."""
        with self._release_lock:
            if self._release is None:
                try:
                    self._release = self._fetch_release()
                except PolyarchError as exc:
                    # Several sources are read side by side: say which one failed.
                    hint = exc.hint.replace("[repository]", self._table) if exc.hint else None
                    raise type(exc)(
                        f"source {self.source.name!r}: {exc.message}", hint=hint
                    ) from exc
            return self._release

    def priority(self) -> int:
        """The source's pin priority: configured, else apt's default for its Release."""
        if self.source.priority is not None:
            return self.source.priority
        return self.release().default_priority

    def supports(self, arch: str) -> bool:
        """Whether the Release lists ``arch`` (or lists none, as old archives do).

        apt skips a source that does not carry an architecture; so does polyarch
        for every source but the main one (security has no s390x, for one).
        """
        listed = self.release().architectures
        return not listed or arch in listed

    def _fetch_release(self) -> Release:
        inrelease_url = self._dist_url("InRelease")
        response = self._get(inrelease_url)
        if response.status_code == 200:
            where, signed = inrelease_url, response.content
            text = verify_inrelease(self.source, signed)
        elif response.status_code in (404, 410):
            where = self._dist_url("Release")
            signed = self._require(self._get(where), where)
            detached = self._get(where + ".gpg")
            if detached.status_code in (404, 410):
                raise SignatureError(
                    f"{self._dist_url('')} is not signed: it has a Release but neither "
                    "InRelease nor Release.gpg",
                    hint=f"polyarch uses signed archives only; point {self._table} url at one",
                )
            signature = self._require(detached, where + ".gpg")
            text = verify_detached(self.source, signed, signature)
        else:
            raise MirrorError(
                f"{inrelease_url}: HTTP {response.status_code}",
                hint=f"check {self._table} url and suite in containers.toml",
            )
        release = dataclasses.replace(
            parse_release(text, where),
            file_name=where.rsplit("/", 1)[1],
            file_sha256=hashlib.sha256(signed).hexdigest(),
        )
        self._check_current(release, where)
        return release

    def _require(self, response: httpx.Response, url: str) -> bytes:
        if response.status_code != 200:
            raise MirrorError(
                f"{url}: HTTP {response.status_code}",
                hint=f"check {self._table} url and suite ({self.source.suite}) in containers.toml, "
                f"or switch it off: {self._table} enable = false",
            )
        return response.content

    def _check_current(self, release: Release, where: str) -> None:
        suite = self.source.suite
        if suite not in (release.suite, release.codename):
            raise SignatureError(
                f"{where} is for {release.codename or release.suite!r}, not {suite!r}",
                hint=f"the mirror answers with another suite; check {self._table} url and suite",
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
                hint=f"fix {self._table} components in containers.toml",
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
                fetched: list[bytes] = []
                if size >= PARSE_ELSEWHERE_FROM:  # then the cache has it, or ``fetched`` the file
                    self._parse_elsewhere(path, size, sha256, component, fetched)

                def raw(
                    path: str = path,
                    size: int = size,
                    sha256: str = sha256,
                    got: list[bytes] = fetched,
                ) -> bytes:
                    data = got.pop() if got else self._download_index(path, size, sha256)
                    return decompress(data, path)

                if self.cache.get(Kind.INDEXES, cache_key(sha256)) is not None:
                    # Parsed already: no lock (a warm build then never loads filelock).
                    parts.append(load_index(self.cache, sha256, raw, component=component))
                    continue
                # Two processes sharing a cache parse an index once: the second waits.
                with self.cache.lock(Kind.INDEXES, sha256):
                    parts.append(load_index(self.cache, sha256, raw, component=component))
            self._indexes[arch] = PackageIndex.concat(parts)
        return self._indexes[arch]

    def _parse_elsewhere(
        self, path: str, size: int, sha256: str, component: str, fetched: list[bytes]
    ) -> bool:
        """Download an index the cache lacks and parse it into the cache in a worker process.

        False when that did not happen (already cached, or the worker failed: the
        caller then parses here, which raises the right error); a downloaded
        file is left in ``fetched`` so it is not downloaded twice.
        """
        if self.cache.get(Kind.INDEXES, cache_key(sha256)) is not None:
            return False
        data = self._download_index(path, size, sha256)
        argv = [sys.executable, "-c", _WORKER, str(self.cache.root), sha256, path, component]
        try:
            done = subprocess.run(argv, input=data, capture_output=True, timeout=600)
        except (OSError, subprocess.SubprocessError):
            done = None
        if done is None or done.returncode != 0:
            fetched.append(data)  # parse here instead, which reports any problem properly
            return False
        return True

    def contents(self, arch: str) -> Contents:
        """Which package ships which command for ``arch`` (contents.py), verified like any index."""
        parts, listed = [], self.release().sha256
        for path, size, sha256 in contents_files(listed, self.source.components, arch):
            download = functools.partial(self._download_index, path, size, sha256)
            with self.cache.lock(Kind.CONTENTS, sha256):
                parts.append(load_contents(self.cache, sha256, download, self._dist_url(path)))
        return Contents.concat(parts)

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
