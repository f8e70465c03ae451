"""The cache as a whole: info, verify, prune, and sharing it through an OCI registry.

Kinds of entries (see ``polyarch.cache``): ``debs`` (key: the .deb's SHA256),
``blobs`` (gzip layers, key: their SHA256), ``layers`` (JSON naming a blob,
key: the hash of the layer's inputs) and ``indexes`` (parsed Packages
indexes, key: the signed index file's SHA256 + record layout).

``push_cache`` sends every entry as a blob of an OCI artifact: an image index
(``artifactType`` ``application/vnd.polyarch.cache.v1``) over manifests of at
most ``ENTRIES_PER_MANIFEST`` entries each, every layer descriptor annotated
with the entry's kind and key. ``pull_cache`` reads that back into a cache.

Trust: ``debs`` and ``blobs`` are named by their content and checked on pull.
``layers`` and ``indexes`` are named by their inputs, so a pulled one is
taken on trust: pull only from a registry you trust like your CI (the role
Cachix plays). ``--locked`` still checks every .deb it reads against the lock.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from polyarch.cache import LOCKS_DIR, REGISTRY_RECORDS_KIND, Cache
from polyarch.debian.index import CACHE_KIND as INDEXES
from polyarch.debian.index import cache_key as index_cache_key
from polyarch.debian.index import is_valid_cached_index
from polyarch.determinism import Digest, canonical_json, sha256_digest, sha256_file
from polyarch.errors import IntegrityError, RegistryError, UsageError
from polyarch.image.archive import OCI_LAYOUT_VERSION
from polyarch.image.layers import BLOBS_KIND as BLOBS
from polyarch.image.layers import LAYERS_KIND as LAYERS
from polyarch.image.layers import read_layer_record
from polyarch.image.oci import (
    ANNOTATION_REF_NAME,
    MEDIA_TYPE_INDEX,
    MEDIA_TYPE_LAYER_GZIP,
    MEDIA_TYPE_MANIFEST,
)
from polyarch.progress import NULL_PROGRESS, Progress
from polyarch.registry import (
    Credentials,
    PushResult,
    Reference,
    RegistryClient,
    parse_reference,
    push_layout,
)
from polyarch.registry.client import registry_message

DEBS = "debs"
KINDS = (DEBS, BLOBS, LAYERS, INDEXES)
"""Every kind of entry, in the order verify and push visit them."""
TEMP_GRACE = 600.0
"""Seconds a writer's temporary file may go unmodified before prune deems it left by a crash."""

ARTIFACT_TYPE = "application/vnd.polyarch.cache.v1"
ANNOTATION_KIND = "dev.polyarch.cache.kind"
ANNOTATION_KEY = "dev.polyarch.cache.key"
MEDIA_TYPES = {
    DEBS: "application/vnd.debian.binary-package",
    BLOBS: MEDIA_TYPE_LAYER_GZIP,
    LAYERS: "application/vnd.polyarch.layer.v1+json",
    INDEXES: "application/vnd.polyarch.packages.v1+msgpack",
}
EMPTY_CONFIG_TYPE = "application/vnd.oci.empty.v1+json"
ENTRIES_PER_MANIFEST = 1000
"""Keeps each manifest far below the 4 MiB registries accept."""

_KEY_RE = re.compile(r"[0-9a-f]{64}(?:-[0-9a-f]{8})?")
_CONTENT_ADDRESSED = (DEBS, BLOBS)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# --- info ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KindInfo:
    kind: str
    entries: int
    bytes: int


@dataclass(frozen=True, slots=True)
class CacheInfo:
    root: Path
    kinds: tuple[KindInfo, ...]
    temp_files: int
    temp_bytes: int

    @property
    def bytes(self) -> int:
        return sum(k.bytes for k in self.kinds) + self.temp_bytes


def cache_info(cache: Cache) -> CacheInfo:
    """Entries and bytes per kind, and the temporary files of writers (live or crashed)."""
    kinds = []
    for kind in KINDS:
        sizes = [_size(path) for _key, path in cache.entries(kind)]
        kinds.append(KindInfo(kind, len(sizes), sum(sizes)))
    temps = [_size(p) for p in cache.temp_files()]
    return CacheInfo(cache.root, tuple(kinds), len(temps), sum(temps))


# --- verify ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str
    key: str
    reason: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    checked: dict[str, int]
    problems: tuple[Problem, ...]
    repaired: bool
    """True if the bad entries were deleted (``repair=True``)."""

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_cache(
    cache: Cache, *, repair: bool = False, jobs: int = 4, progress: Progress = NULL_PROGRESS
) -> VerifyReport:
    """Re-hash every ``debs``/``blobs`` entry, check ``layers`` name present blobs, decode ``indexes``.

    With ``repair`` every bad entry is deleted: the next build fetches or
    rebuilds it. A layer entry whose blob was bad goes with it.
    """
    checked: dict[str, int] = {}
    problems: list[Problem] = []
    entries = {kind: list(cache.entries(kind)) for kind in KINDS}
    task = progress.task("verifying the cache", total=sum(map(len, entries.values())))

    def check(kind: str, key: str, path: Path) -> Problem | None:
        try:
            reason = _check_entry(cache, kind, key, path, bad_blobs)
        except OSError as exc:
            reason = f"unreadable: {exc.strerror}"
        progress.advance(task)
        return Problem(kind, key, reason) if reason else None

    bad_blobs: set[str] = set()
    try:
        with ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool:
            for kind in KINDS:  # blobs before layers: a layer naming a bad blob is bad too
                found = [
                    p
                    for p in pool.map(lambda e, k=kind: check(k, *e), entries[kind])
                    if p is not None
                ]
                if kind == BLOBS:
                    bad_blobs = {p.key for p in found}
                checked[kind] = len(entries[kind])
                problems += sorted(found, key=lambda p: p.key)
    finally:
        progress.done(task)
    if repair:
        for problem in problems:
            cache.discard(problem.kind, problem.key)
    return VerifyReport(checked, tuple(problems), repaired=repair and bool(problems))


def _check_entry(cache: Cache, kind: str, key: str, path: Path, bad_blobs: set[str]) -> str:
    """Why the entry is bad, or the empty string."""
    if kind in _CONTENT_ADDRESSED:
        if not re.fullmatch(r"[0-9a-f]{64}", key):
            return "not named by a sha256"
        actual = sha256_file(path).removeprefix("sha256:")
        return "" if actual == key else f"content hashes to {actual}"
    if kind == LAYERS:
        try:
            record = read_layer_record(path)
        except ValueError:
            return "not a layer record"
        if record is None:
            return ""
        blob = cache.path(BLOBS, record.blob_key)
        if record.blob_key in bad_blobs:
            return f"its blob {record.digest} is damaged"
        if not blob.is_file():
            return f"its blob {record.digest} is missing"
        if blob.stat().st_size != record.size:
            return f"its blob {record.digest} has the wrong size"
        return ""
    if kind == INDEXES:
        if _other_format(key):
            return ""  # never read by this version; prune removes it
        if not is_valid_cached_index(path):
            return "not a parsed index"
    return ""


# --- prune -----------------------------------------------------------------------------


_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``90s``, ``45m``, ``12h``, ``30d``, ``2w`` (or ``1d12h``) → seconds; UsageError otherwise."""
    compact = text.strip().lower()
    parts = _DURATION_RE.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact.replace(" ", ""):
        raise UsageError(
            f"{text!r} is not a duration", hint="write it like 30d, 12h, 45m or 2w (also 1d12h)"
        )
    return sum(float(n) * _UNITS[u] for n, u in parts)


@dataclass(frozen=True, slots=True)
class PruneReport:
    removed: dict[str, KindInfo]
    """Per kind: how many entries and bytes were removed."""
    temp_files: int
    temp_bytes: int

    @property
    def bytes(self) -> int:
        return sum(k.bytes for k in self.removed.values()) + self.temp_bytes


def prune_cache(
    cache: Cache, *, older_than: float | None = None, now: float | None = None
) -> PruneReport:
    """Remove crash leftovers; with ``older_than`` (seconds) also entries unused that long.

    Temporary files untouched for ``TEMP_GRACE`` seconds are always removed
    (a live writer keeps writing, so its file stays recent). An entry's last
    use is the later of its access and modification times; ``Cache.get``
    sets the access time on every use. Layer records whose blob is gone,
    parsed indexes in another version's format, and lock files no entry
    needs any more are removed too: nothing can use them.
    """
    now = time.time() if now is None else now
    temp_count = temp_bytes = 0
    for path in list(cache.temp_files()):
        try:
            st = path.stat()
            if now - st.st_mtime > TEMP_GRACE:
                path.unlink()
                temp_count += 1
                temp_bytes += st.st_size
        except OSError:
            continue  # finished (renamed) or removed meanwhile
    removed: dict[str, KindInfo] = {}
    for kind in KINDS:
        count = size = 0
        for key, path in list(cache.entries(kind)):
            try:
                st = path.stat()
            except OSError:
                continue
            stale = older_than is not None and now - max(st.st_atime, st.st_mtime) > older_than
            dangling = kind == LAYERS and _dangling_layer(cache, path)
            unusable = kind == INDEXES and _other_format(key)
            if stale or dangling or unusable:
                path.unlink(missing_ok=True)
                (cache.root / LOCKS_DIR / kind / f"{key}.lock").unlink(missing_ok=True)
                count += 1
                size += st.st_size
        removed[kind] = KindInfo(kind, count, size)
    _remove_orphan_locks(cache, now)
    return PruneReport(removed, temp_count, temp_bytes)


def _other_format(index_key: str) -> bool:
    """A parsed index written by another polyarch version: its key names another format."""
    return not index_key.endswith(index_cache_key(""))


def _dangling_layer(cache: Cache, path: Path) -> bool:
    try:
        record = read_layer_record(path)
    except (OSError, ValueError):
        return True
    return record is not None and not cache.path(BLOBS, record.blob_key).is_file()


def _remove_orphan_locks(cache: Cache, now: float) -> None:
    # A lock file of an entry that never came to be (a crashed producer). Removing
    # one a process is about to use costs at most a duplicated download or layer.
    for kind in KINDS:
        for lock in (cache.root / LOCKS_DIR / kind).glob("*.lock"):
            try:
                old = now - lock.stat().st_mtime > TEMP_GRACE
                if old and cache.get(kind, lock.name.removesuffix(".lock")) is None:
                    lock.unlink()
            except OSError:
                continue


# --- push ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CachePushResult:
    push: PushResult
    entries: dict[str, int]
    """How many entries of each kind the artifact lists."""


@dataclass(frozen=True, slots=True)
class _Entry:
    kind: str
    key: str
    path: Path
    digest: Digest
    size: int


def push_cache(
    cache: Cache,
    ref: str,
    *,
    kinds: Sequence[str] = KINDS,
    credentials: Credentials | None = None,
    insecure: bool = False,
    ca_bundle: Path | None = None,
    jobs: int = 4,
    progress: Progress = NULL_PROGRESS,
) -> CachePushResult:
    """Upload the cache's entries of ``kinds`` to ``ref`` as one OCI artifact (see the module doc).

    Blobs the registry already has are skipped (HEAD), so pushing a cache
    that grew sends only what is new. Entries are listed sorted by kind and
    key, so the same cache always gives the same artifact digest.
    """
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise UsageError(f"unknown cache kind {unknown[0]!r}", hint=f"use {', '.join(KINDS)}")
    entries = _collect(cache, kinds, progress)
    if not entries:
        raise UsageError(f"the cache {cache.root} is empty", hint="build something first")
    reference = parse_reference(ref)
    tag = reference.tag or "latest"
    with tempfile.TemporaryDirectory(prefix="polyarch-cache-push-") as tmp:
        layout = Path(tmp)
        _write_layout(layout, entries, tag)
        result = push_layout(
            layout,
            ref,
            credentials=credentials,
            insecure=insecure,
            ca_bundle=ca_bundle,
            jobs=jobs,
            progress=progress,
            record_dir=cache.root / REGISTRY_RECORDS_KIND,
        )
    counts = {kind: sum(1 for e in entries if e.kind == kind) for kind in kinds}
    return CachePushResult(result, counts)


def _collect(cache: Cache, kinds: Sequence[str], progress: Progress) -> list[_Entry]:
    found = sorted(
        (kind, key, path)
        for kind in kinds
        for key, path in cache.entries(kind)
        if _KEY_RE.fullmatch(key)
    )
    task = progress.task("reading the cache", total=len(found))

    def entry(item: tuple[str, str, Path]) -> _Entry:
        kind, key, path = item
        # debs and blobs are named by their sha256; push_layout re-hashes them as it sends.
        digest = Digest(f"sha256:{key}") if kind in _CONTENT_ADDRESSED else sha256_file(path)
        progress.advance(task)
        return _Entry(kind, key, path, digest, _size(path))

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(entry, found))
    finally:
        progress.done(task)


def _write_layout(layout: Path, entries: Sequence[_Entry], tag: str) -> None:
    """An OCI layout whose blobs are symlinks into the cache (nothing is copied)."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> Digest:
        digest = sha256_digest(data)
        (blobs / digest.removeprefix("sha256:")).write_bytes(data)
        return digest

    for e in entries:
        target = blobs / e.digest.removeprefix("sha256:")
        if not target.exists():
            os.symlink(e.path, target)
    config = b"{}"
    config_desc = {"mediaType": EMPTY_CONFIG_TYPE, "digest": put(config), "size": len(config)}
    children = []
    for start in range(0, len(entries), ENTRIES_PER_MANIFEST):
        chunk = entries[start : start + ENTRIES_PER_MANIFEST]
        manifest = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_TYPE_MANIFEST,
                "artifactType": ARTIFACT_TYPE,
                "config": config_desc,
                "layers": [
                    {
                        "mediaType": MEDIA_TYPES[e.kind],
                        "digest": e.digest,
                        "size": e.size,
                        "annotations": {ANNOTATION_KIND: e.kind, ANNOTATION_KEY: e.key},
                    }
                    for e in chunk
                ],
            }
        )
        children.append(
            {
                "mediaType": MEDIA_TYPE_MANIFEST,
                "artifactType": ARTIFACT_TYPE,
                "digest": put(manifest),
                "size": len(manifest),
            }
        )
    index = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_INDEX,
            "artifactType": ARTIFACT_TYPE,
            "manifests": children,
        }
    )
    top = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": MEDIA_TYPE_INDEX,
                "digest": put(index),
                "size": len(index),
                "annotations": {ANNOTATION_REF_NAME: tag},
            }
        ],
    }
    (layout / "index.json").write_bytes(canonical_json(top))
    (layout / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": OCI_LAYOUT_VERSION}))


# --- pull ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CachePullResult:
    reference: str
    digest: Digest
    entries: int
    downloaded: int
    present: int
    """Entries the cache had already (not downloaded)."""
    bytes: int
    per_kind: dict[str, int] = field(default_factory=dict)


_ACCEPT = ", ".join([MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST])


def pull_cache(
    cache: Cache,
    ref: str,
    *,
    kinds: Sequence[str] = KINDS,
    credentials: Credentials | None = None,
    insecure: bool = False,
    ca_bundle: Path | None = None,
    jobs: int = 4,
    progress: Progress = NULL_PROGRESS,
) -> CachePullResult:
    """Fill ``cache`` from an artifact ``push_cache`` made; entries already present are skipped.

    Every blob is checked against its descriptor's digest and size, and a
    ``debs``/``blobs`` entry also against its key, before it becomes an entry.
    """
    reference = parse_reference(ref)
    client = RegistryClient(
        reference.api_host,
        credentials=credentials,
        insecure=insecure,
        plain_http=reference.plain_http,
        ca_bundle=ca_bundle,
    )
    scope = f"repository:{reference.repository}:pull"
    with client:
        root_digest, root = _get_manifest(client, reference.repository, scope, ref, reference)
        manifests = (
            [
                _get_manifest(
                    client, reference.repository, scope, ref, reference, str(c["digest"])
                )[1]
                for c in root.get("manifests", [])
                if isinstance(c, dict)
            ]
            if "manifests" in root
            else [root]
        )
        wanted: dict[tuple[str, str], tuple[Digest, int]] = {}
        for manifest in manifests:
            if manifest.get("artifactType") != ARTIFACT_TYPE:
                raise RegistryError(
                    f"{ref} is not a polyarch cache (artifactType {manifest.get('artifactType')!r})",
                    hint="name what `polyarch cache push` pushed",
                )
            for d in manifest.get("layers", []):
                kind, key, digest, size = _descriptor(d, ref)
                if kind in kinds:
                    wanted[(kind, key)] = (digest, size)
        todo = [(k, d) for k, d in sorted(wanted.items()) if not _present(cache, *k, d[1])]
        task = progress.task(f"pull {reference}", total=sum(d[1] for _k, d in todo))
        redirect_client: list[httpx.Client] = []

        def fetch(item: tuple[tuple[str, str], tuple[Digest, int]]) -> int:
            (kind, key), (digest, size) = item
            data = _get_blob(client, reference.repository, scope, digest, redirect_client)
            if len(data) != size or sha256_digest(data) != digest:
                raise IntegrityError(
                    f"{ref}: blob {digest} ({kind} {key[:12]}) does not match its descriptor",
                    hint="the registry serves altered data; push the cache again",
                )
            if kind in _CONTENT_ADDRESSED and digest != f"sha256:{key}":
                raise IntegrityError(
                    f"{ref}: {kind} entry {key[:12]} holds {digest}, not its own content",
                    hint="do not use this cache artifact; push it again from a good cache",
                )
            cache.put(kind, key, data)
            progress.advance(task, size)
            return size

        try:
            with ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool:
                sizes = list(pool.map(fetch, todo))
        finally:
            progress.done(task)
            for c in redirect_client:
                c.close()
    per_kind = {kind: sum(1 for (k, _key) in wanted if k == kind) for kind in kinds}
    return CachePullResult(
        reference=f"{reference.name}@{root_digest}",
        digest=root_digest,
        entries=len(wanted),
        downloaded=len(todo),
        present=len(wanted) - len(todo),
        bytes=sum(sizes),
        per_kind=per_kind,
    )


def _present(cache: Cache, kind: str, key: str, size: int) -> bool:
    path = cache.get(kind, key)
    return path is not None and (kind not in _CONTENT_ADDRESSED or _size(path) == size)


def _descriptor(d: object, ref: str) -> tuple[str, str, Digest, int]:
    annotations = d.get("annotations") if isinstance(d, dict) else None
    if not isinstance(d, dict) or not isinstance(annotations, dict):
        raise RegistryError(f"{ref}: a cache entry has no annotations")
    kind, key = annotations.get(ANNOTATION_KIND), annotations.get(ANNOTATION_KEY)
    digest, size = d.get("digest"), d.get("size")
    # The key becomes a file name in the cache: only a known kind and a plain hex key.
    if kind not in KINDS or not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise RegistryError(f"{ref}: malformed cache entry {kind!r}/{key!r}")
    if not isinstance(digest, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise RegistryError(f"{ref}: cache entry {key[:12]} has a malformed digest")
    if not isinstance(size, int) or size < 0:
        raise RegistryError(f"{ref}: cache entry {key[:12]} has a malformed size")
    return str(kind), key, Digest(digest), size


def _get_manifest(
    client: RegistryClient,
    repo: str,
    scope: str,
    ref: str,
    reference: Reference,
    digest: str | None = None,
) -> tuple[Digest, dict[str, Any]]:
    target = digest or reference.digest or reference.tag or "latest"
    response = client.request(
        "GET", f"/v2/{repo}/manifests/{target}", scopes=(scope,), headers={"Accept": _ACCEPT}
    )
    if response.status_code == 404:
        raise RegistryError(
            f"{ref}: not found", hint="push a cache there with `polyarch cache push`"
        )
    if response.status_code != 200:
        raise RegistryError(f"{ref}: {registry_message(response)}")
    actual = sha256_digest(response.content)
    expected = digest or reference.digest
    if expected and actual != expected:
        raise IntegrityError(f"{ref}: manifest {expected} arrived as {actual}")
    try:
        doc = json.loads(response.content)
    except ValueError:
        raise RegistryError(f"{ref}: manifest {actual} is not JSON") from None
    if not isinstance(doc, dict):
        raise RegistryError(f"{ref}: manifest {actual} is not a JSON object")
    return actual, doc


def _get_blob(
    client: RegistryClient,
    repo: str,
    scope: str,
    digest: Digest,
    redirect_client: list[httpx.Client],
) -> bytes:
    response = client.request("GET", f"/v2/{repo}/blobs/{digest}", scopes=(scope,))
    if response.status_code in (301, 302, 303, 307, 308) and "location" in response.headers:
        # Registries hand blobs to a storage service: fetch there without our credentials.
        if not redirect_client:
            redirect_client.append(httpx.Client(follow_redirects=True, timeout=120.0))
        response = redirect_client[0].get(str(client.url(response.headers["location"])))
    if response.status_code != 200:
        raise RegistryError(
            f"{client.registry}/{repo}: blob {digest}: {registry_message(response)}",
            hint="the cache artifact is incomplete; push it again",
        )
    return response.content
