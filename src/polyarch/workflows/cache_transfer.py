"""Sharing the cache through an OCI registry: ``polyarch cache push`` and ``cache pull``.

``push_cache`` sends every entry as a blob of an OCI artifact: an image index
(``artifactType`` ``application/vnd.polyarch.cache.v1``) over manifests of at
most ``ENTRIES_PER_MANIFEST`` entries each, every layer descriptor annotated
with the entry's kind and key. ``pull_cache`` reads that back into a cache.

Trust: a pulled artifact is hostile until checked. Every entry is downloaded
into a staging directory inside the cache and checked there exactly as
``cache verify`` checks (``cache_check``): ``debs`` and ``blobs`` against
their key, ``layers`` records against their schema and checksum and the blob
they name (which must unpack to their diff_id), parsed indexes against every
checksum. One bad entry refuses the whole artifact (``CacheError`` naming it)
and nothing enters the cache. What cannot be checked without the signed
archive: that a layer record or parsed index is what *its inputs* give. A
pusher who controls the artifact can map inputs to other well-formed
contents, so pull only from a registry you trust like your CI (the role
Cachix plays), or pull only ``--kind debs --kind blobs`` (see docs/SECURITY.md).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from polyarch import media_types
from polyarch.cache import KEY_PATTERN, REGISTRY_RECORDS_DIR, Cache, Kind, open_regular
from polyarch.determinism import DIGEST_PATTERN, Digest, canonical_json, sha256_file
from polyarch.errors import CacheError, HostError, RegistryError, UsageError
from polyarch.files import file_size
from polyarch.image.layout import put_blob, write_layout_index
from polyarch.progress import NULL_PROGRESS, Progress
from polyarch.reference import DEFAULT_TAG, parse_reference
from polyarch.registry.client import ANONYMOUS, RegistryAccess
from polyarch.registry.pull import Puller
from polyarch.registry.push import PushResult, push_layout
from polyarch.workflows.cache_check import EntryChecker

ANNOTATION_KIND = "dev.polyarch.cache.kind"
ANNOTATION_KEY = "dev.polyarch.cache.key"
MEDIA_TYPES = {
    Kind.DEBS: media_types.DEBIAN_PACKAGE,
    Kind.BLOBS: media_types.OCI_LAYER_GZIP,
    Kind.LAYERS: media_types.POLYARCH_LAYER_RECORD,
    Kind.INDEXES: media_types.POLYARCH_PACKAGES_INDEX,
    Kind.FACTS: media_types.POLYARCH_PACKAGE_FACTS,
}
"""The media type of each kind's entries in the artifact."""
STAGING_PREFIX = ".pull-"
"""Pulled entries wait in ``CACHE/.pull-*`` until all are checked (prune removes stale ones)."""
ENTRIES_PER_MANIFEST = 1000
"""Keeps each manifest far below the 4 MiB registries accept."""


@dataclass(frozen=True, slots=True)
class CachePushResult:
    push: PushResult
    entries: dict[Kind, int]
    """How many entries of each kind the artifact lists."""


@dataclass(frozen=True, slots=True)
class _Entry:
    kind: Kind
    key: str
    path: Path
    digest: Digest
    size: int


def push_cache(
    cache: Cache,
    ref: str,
    *,
    kinds: Sequence[Kind] = tuple(Kind),
    access: RegistryAccess = ANONYMOUS,
    jobs: int = 4,
    progress: Progress = NULL_PROGRESS,
) -> CachePushResult:
    """Upload the cache's entries of ``kinds`` to ``ref`` as one OCI artifact (see the module doc).

    Blobs the registry already has are skipped (HEAD), so pushing a cache
    that grew sends only what is new. Entries are listed sorted by kind and
    key, so the same cache always gives the same artifact digest.
    """
    entries = _collect(cache, kinds, progress)
    if not entries:
        raise UsageError(f"the cache {cache.root} is empty", hint="build something first")
    reference = parse_reference(ref)
    tag = reference.tag or DEFAULT_TAG
    with tempfile.TemporaryDirectory(prefix="polyarch-cache-push-") as tmp:
        layout = Path(tmp)
        _write_layout(layout, entries, tag)
        result = push_layout(
            layout,
            ref,
            access=access,
            jobs=jobs,
            progress=progress,
            record_dir=cache.root / REGISTRY_RECORDS_DIR,
        )
    counts = {kind: sum(1 for e in entries if e.kind == kind) for kind in kinds}
    return CachePushResult(result, counts)


def _collect(cache: Cache, kinds: Sequence[Kind], progress: Progress) -> list[_Entry]:
    found = sorted(
        (kind, key, path)
        for kind in kinds
        for key, path in cache.entries(kind)
        if KEY_PATTERN.fullmatch(key) and _is_regular(path)
    )
    task = progress.task("reading the cache", total=len(found))

    def entry(item: tuple[Kind, str, Path]) -> _Entry:
        kind, key, path = item
        # debs and blobs are named by their sha256; push_layout re-hashes them as it sends.
        digest = Digest(f"sha256:{key}") if kind.content_addressed else sha256_file(path)
        progress.advance(task)
        return _Entry(kind, key, path, digest, file_size(path))

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(entry, found))
    finally:
        progress.done(task)


def _is_regular(path: Path) -> bool:
    """A regular file, not a symlink to one: nothing outside the cache is pushed."""
    f = open_regular(path)
    if f is None:
        return False
    f.close()
    return True


def _write_layout(layout: Path, entries: Sequence[_Entry], tag: str) -> None:
    """An OCI layout whose blobs are symlinks into the cache (nothing is copied)."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for e in entries:
        target = blobs / e.digest.removeprefix("sha256:")
        if not target.exists():
            os.symlink(e.path, target)
    config = b"{}"
    config_desc = {
        "mediaType": media_types.OCI_EMPTY,
        "digest": put_blob(layout, config),
        "size": 2,
    }
    children = []
    for start in range(0, len(entries), ENTRIES_PER_MANIFEST):
        manifest = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": media_types.OCI_MANIFEST,
                "artifactType": media_types.POLYARCH_CACHE,
                "config": config_desc,
                "layers": [
                    {
                        "mediaType": MEDIA_TYPES[e.kind],
                        "digest": e.digest,
                        "size": e.size,
                        "annotations": {ANNOTATION_KIND: e.kind, ANNOTATION_KEY: e.key},
                    }
                    for e in entries[start : start + ENTRIES_PER_MANIFEST]
                ],
            }
        )
        children.append(
            {
                "mediaType": media_types.OCI_MANIFEST,
                "artifactType": media_types.POLYARCH_CACHE,
                "digest": put_blob(layout, manifest),
                "size": len(manifest),
            }
        )
    index = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": media_types.OCI_INDEX,
            "artifactType": media_types.POLYARCH_CACHE,
            "manifests": children,
        }
    )
    write_layout_index(layout, media_types.OCI_INDEX, put_blob(layout, index), len(index), tag)


@dataclass(frozen=True, slots=True)
class CachePullResult:
    reference: str
    digest: Digest
    entries: int
    downloaded: int
    present: int
    """Entries the cache had already (not downloaded)."""
    bytes: int
    per_kind: dict[Kind, int] = field(default_factory=dict)


def pull_cache(
    cache: Cache,
    ref: str,
    *,
    kinds: Sequence[Kind] = tuple(Kind),
    access: RegistryAccess = ANONYMOUS,
    jobs: int = 4,
    progress: Progress = NULL_PROGRESS,
) -> CachePullResult:
    """Fill ``cache`` from an artifact ``push_cache`` made; entries already present are skipped.

    Every blob is checked against its descriptor's digest and size, and a
    ``debs``/``blobs`` entry also against its key, before it becomes an entry.
    """
    reference = parse_reference(ref)
    with access.client(reference) as client, Puller(client, reference.repository) as puller:
        root_digest, wanted = _listed_entries(
            puller, reference.digest or reference.tag or DEFAULT_TAG, ref
        )
        wanted = {k: v for k, v in wanted.items() if k[0] in kinds}
        todo = [(k, d) for k, d in sorted(wanted.items()) if not _present(cache, *k, d[1])]
        with _Staging(cache, ref) as staging:
            sizes = staging.download(puller, todo, jobs, progress, str(reference))
            staging.check()
            staging.commit()
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


_Wanted = tuple[tuple[Kind, str], tuple[Digest, int]]


class _Staging:
    """Pulled entries wait in ``CACHE/.pull-*`` until every one of them has been checked."""

    def __init__(self, cache: Cache, ref: str) -> None:
        self.cache, self.ref = cache, ref
        self.files: dict[tuple[Kind, str], Path] = {}

    def __enter__(self) -> _Staging:
        try:
            self.cache.root.mkdir(parents=True, exist_ok=True)
            self.root = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.cache.root))
        except OSError as exc:
            raise HostError.of(exc, f"cannot write to the cache {self.cache.root}") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def download(
        self, puller: Puller, todo: list[_Wanted], jobs: int, progress: Progress, name: str
    ) -> list[int]:
        task = progress.task(f"pull {name}", total=sum(d[1] for _k, d in todo))

        def fetch(item: _Wanted) -> int:
            (kind, key), (digest, size) = item
            if kind.content_addressed and digest != f"sha256:{key}":
                raise self.refuse(kind, key, f"it holds {digest}, not its own content")
            path = self.root / f"{kind}-{key}"
            path.write_bytes(puller.blob(digest, size))
            self.files[(kind, key)] = path
            progress.advance(task, size)
            return size

        try:
            with ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool:
                return list(pool.map(fetch, todo))
        finally:
            progress.done(task)

    def blob_path(self, key: str) -> Path | None:
        staged = self.files.get((Kind.BLOBS, key))
        return staged if staged is not None else self.cache.verified(Kind.BLOBS, key)

    def check(self) -> None:
        """Every staged entry as ``cache verify`` checks it; CacheError naming the first bad one."""
        checker = EntryChecker(self.blob_path)
        for (kind, key), path in sorted(self.files.items()):
            reason = checker.problem(kind, key, path)
            if reason:
                raise self.refuse(kind, key, reason)

    def commit(self) -> None:
        # Blobs before the records that name them, as a build writes them.
        for kind in Kind:
            for (k, key), path in sorted(self.files.items()):
                if k == kind:
                    self.cache.adopt(kind, key, path)

    def refuse(self, kind: Kind, key: str, reason: str) -> CacheError:
        return CacheError(
            f"{self.ref}: refusing the cache artifact: {kind} entry {key}: {reason}",
            hint="nothing was added to the cache; do not use this artifact, "
            "push it again from a good cache",
        )


def _listed_entries(
    puller: Puller, target: str, ref: str
) -> tuple[Digest, dict[tuple[Kind, str], tuple[Digest, int]]]:
    """The artifact's root digest, and (kind, key) → (digest, size) of every entry it lists."""
    hint = "push a cache there with `polyarch cache push`"
    root_digest, root, _ = puller.manifest(target, not_found_hint=hint)
    children = [c for c in root.get("manifests", []) if isinstance(c, dict)]
    manifests = (
        [puller.manifest(str(c.get("digest")), not_found_hint=hint)[1] for c in children]
        if "manifests" in root
        else [root]
    )
    wanted: dict[tuple[Kind, str], tuple[Digest, int]] = {}
    for manifest in manifests:
        if manifest.get("artifactType") != media_types.POLYARCH_CACHE:
            raise RegistryError(
                f"{ref} is not a polyarch cache (artifactType {manifest.get('artifactType')!r})",
                hint="name what `polyarch cache push` pushed",
            )
        for d in manifest.get("layers", []):
            kind, key, digest, size = _descriptor(d, ref)
            wanted[(kind, key)] = (digest, size)
    return root_digest, wanted


def _present(cache: Cache, kind: Kind, key: str, size: int) -> bool:
    path = cache.get(kind, key)
    return path is not None and (not kind.content_addressed or file_size(path) == size)


def _descriptor(d: object, ref: str) -> tuple[Kind, str, Digest, int]:
    annotations = d.get("annotations") if isinstance(d, dict) else None
    if not isinstance(d, dict) or not isinstance(annotations, dict):
        raise RegistryError(f"{ref}: a cache entry has no annotations")
    kind, key = annotations.get(ANNOTATION_KIND), annotations.get(ANNOTATION_KEY)
    digest, size = d.get("digest"), d.get("size")
    # The key becomes a file name in the cache: only a known kind and a plain hex key.
    if kind not in tuple(Kind) or not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        raise RegistryError(f"{ref}: malformed cache entry {kind!r}/{key!r}")
    if not isinstance(digest, str) or not DIGEST_PATTERN.fullmatch(digest):
        raise RegistryError(f"{ref}: cache entry {key[:12]} has a malformed digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RegistryError(f"{ref}: cache entry {key[:12]} has a malformed size")
    return Kind(kind), key, Digest(digest), size
