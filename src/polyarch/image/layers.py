"""Planned layers → deterministic tar + gzip blobs in the cache (the plan is ``layer_plan``).

A layer is a pure function of its packages' bytes, the filesystem
rules (``keep_docs``), the epoch and ``LAYER_FORMAT_VERSION``: nothing about
the image it ends up in. So libc6, bash, coreutils and their dependencies give
byte-identical layers in every image of a system (the fd and rg images share
them, and a registry stores them once), as nix2container does.

Layers are cached under the hash of exactly those inputs: cache kind
``layers`` maps the key to a small record (``layer_record``: digests, sizes,
packages), kind ``blobs`` holds the gzip file under its digest's hex. A hit
reads neither the .deb nor compresses anything, but it checks what it takes:
the record against its schema and checksum, the blob against its digest. A
bad one is evicted (with a warning) and the layer is built again.
"""

from __future__ import annotations

import hashlib
import tarfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol, cast

from polyarch.cache import Cache, Kind
from polyarch.debian.deb import DebContents, DebEntry
from polyarch.debian.identity import DebFacts, facts_of
from polyarch.determinism import (
    TAR_FORMAT,
    Digest,
    GzipWriter,
    canonical_json,
    normalise_tarinfo,
)
from polyarch.errors import PackageError
from polyarch.image.filesystem import (
    generated_entries,
    generated_inputs,
    layer_tree,
    package_entries,
    skeleton_entries,
)
from polyarch.image.layer_plan import LayerPlan
from polyarch.image.layer_record import (
    RECORD_FORMAT,
    LayerRecord,
    decode_layer_record,
    encode_layer_record,
)
from polyarch.progress import NULL_PROGRESS, Progress

LAYER_FORMAT_VERSION = 3
"""Bump whenever the bytes of a layer for the same inputs change (rules, tar writer, compressor).

3: libdeflate (``determinism.COMPRESSOR``) instead of the host's zlib (2 was an
unreleased variant that cut every layer into 4 MiB members).
"""


@dataclass(frozen=True)
class Layer:
    """One built layer: its gzip blob in the cache and the digests an image names it by."""

    digest: Digest
    """sha256 of the gzip blob."""
    diff_id: Digest
    """sha256 of the uncompressed tar."""
    size: int
    uncompressed_size: int
    blob: Path
    packages: tuple[str, ...]
    commands: tuple[str, ...] = ()
    """``command_paths`` of the layer, so the entrypoint can be found (and an
    absolute ``command`` checked) without reading any layer back."""
    debs: tuple[DebFacts, ...] = ()
    """Each package of the layer as its .deb describes itself."""


COMMAND_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def command_paths(entries: Sequence[DebEntry]) -> tuple[str, ...]:
    """What an entrypoint can name: every non-directory in the PATH directories, and
    elsewhere every symlink and every file with an execute bit."""
    return tuple(
        sorted(
            e.path
            for e in entries
            if e.kind != "dir"
            and (e.path.rsplit("/", 1)[0] in COMMAND_DIRS or e.kind == "symlink" or e.mode & 0o111)
        )
    )


@dataclass
class LayerStats:
    """Counters of one ``build_layers`` call: cache hits and misses, .debs read."""

    hits: int = 0
    misses: int = 0
    debs_read: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count_read(self) -> None:
        with self._lock:
            self.debs_read += 1

    def count(self, *, hits: int = 0, misses: int = 0) -> None:
        with self._lock:
            self.hits += hits
            self.misses += misses


def layer_key(
    plan: LayerPlan, closure: Sequence[tuple[str, str]], *, epoch: int, keep_docs: bool
) -> str:
    """The cache key of a layer: the hash of every input its bytes depend on.

    The generated layer is keyed by the whole closure (names and sha256s), not
    by its entries, so that a hit needs no .deb read.
    """
    inputs: dict[str, object] = {
        "format": LAYER_FORMAT_VERSION,
        "record": RECORD_FORMAT,
        "epoch": epoch,
        "skeleton": plan.skeleton,
        "packages": [list(p) for p in plan.packages],
    }
    if plan.packages or plan.generated:
        inputs["keep_docs"] = keep_docs
    if plan.generated:
        inputs["closure"] = [list(p) for p in closure]
    return hashlib.sha256(canonical_json(inputs)).hexdigest()


class TarSink(Protocol):
    """What ``tarfile`` needs of a stream it writes: ``GzipWriter`` or any binary file."""

    def write(self, data: bytes, /) -> int: ...
    def tell(self) -> int: ...


def write_tar(entries: Sequence[DebEntry], epoch: int, out: TarSink) -> None:
    """Write the layer tar of ``entries`` (in ``layer_tree`` order) to ``out``, reproducibly.

    Contents are streamed (spooled ones from disk), so memory stays bounded.
    """
    # tarfile's writing mode only ever writes and tells (typeshed wants a whole file).
    sink = cast(IO[bytes], out)
    with tarfile.open(fileobj=sink, mode="w", format=TAR_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.path.lstrip("/"))
            info.mode = entry.mode
            data: IO[bytes] | None = None
            if entry.kind == "file":
                info.type = tarfile.REGTYPE
                info.size = entry.size
                data = entry.reader()
            elif entry.kind == "dir":
                info.type = tarfile.DIRTYPE
            elif entry.kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = entry.target
            else:
                info.type = tarfile.LNKTYPE
                info.linkname = entry.target.lstrip("/")
            normalise_tarinfo(info, epoch)
            info.uid, info.gid = entry.uid, entry.gid
            tar.addfile(info, data)


def build_layers(
    plans: Sequence[LayerPlan],
    read: Callable[[str], DebContents],
    cache: Cache,
    *,
    epoch: int,
    keep_docs: bool,
    jobs: int = 2,
    progress: Progress = NULL_PROGRESS,
    stats: LayerStats | None = None,
) -> list[Layer]:
    """Build (or take from the cache) every planned layer; an empty generated layer is left out.

    ``read(sha256)`` returns a package's contents (the fetched, verified
    .deb); it is called at most once per package. Misses are built and
    compressed in ``jobs`` threads (lzma and zlib release the GIL). Pass
    ``stats`` to count hits, misses and .debs read.
    """
    builder = _LayerBuilder(plans, read, cache, epoch, keep_docs, progress, stats or LayerStats())
    return builder.run(jobs)


class _LayerBuilder:
    """The state of one ``build_layers`` call, shared by its threads."""

    def __init__(
        self,
        plans: Sequence[LayerPlan],
        read: Callable[[str], DebContents],
        cache: Cache,
        epoch: int,
        keep_docs: bool,
        progress: Progress,
        stats: LayerStats,
    ) -> None:
        self.plans, self.read, self.cache = plans, read, cache
        self.epoch, self.keep_docs = epoch, keep_docs
        self.progress, self.stats = progress, stats
        self.closure = [p for plan in plans for p in plan.packages]
        self.keys = [
            layer_key(plan, self.closure, epoch=epoch, keep_docs=keep_docs) for plan in plans
        ]
        self.contents: dict[str, DebContents] = {}
        self.facts: dict[str, DebFacts] = {}
        self.keep_contents = False
        self.task = 0

    def run(self, jobs: int) -> list[Layer]:
        results: list[Layer | None] = [None] * len(self.plans)
        missing: list[int] = []
        for i, key in enumerate(self.keys):
            hit = _cached(self.cache, key)
            if hit is None:
                missing.append(i)
            else:
                results[i] = hit if isinstance(hit, Layer) else None
        self.stats.count(hits=len(self.plans) - len(missing))
        self.task = self.progress.task("layers", total=len(self.plans))
        self.progress.advance(self.task, len(self.plans) - len(missing))
        # The generated layer needs every package's contents: keep them only if it must be built.
        self.keep_contents = any(self.plans[i].generated for i in missing)
        first = [i for i in missing if not self.plans[i].generated]
        last = [i for i in missing if self.plans[i].generated]
        with ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool:
            for i, layer in zip(first, pool.map(self.build, first), strict=True):
                results[i] = layer
            if last:
                # Read what the hit layers did not, in parallel, before the closure-wide layer.
                unread = [(n, s) for n, s in self.closure if s not in self.contents]
                list(pool.map(lambda p: self.get(*p), unread))
                for i, layer in zip(last, pool.map(self.build, last), strict=True):
                    results[i] = layer
        self.progress.done(self.task)
        return [layer for layer in results if layer is not None]

    def get(self, name: str, sha256: str) -> DebContents:
        """The package's contents: whole when read now, else what the generated layer needs.

        Each package is in one layer, which reads it first; the generated layer
        comes last and needs only ``generated_inputs``, which is what is kept.
        """
        found = self.contents.get(sha256)
        if found is None:
            found = self.read(sha256)
            self.stats.count_read()
            try:
                self.facts[sha256] = facts_of(found, sha256, found.size)
            except ValueError as exc:
                raise PackageError(
                    f"package {name} ({sha256[:12]}): {exc}",
                    hint="the archive serves a malformed package; remove it from the container",
                ) from None
            if self.keep_contents:
                self.contents[sha256] = generated_inputs(found)
        return found

    def build(self, i: int) -> Layer | None:
        # One producer per layer across processes sharing the cache: whoever
        # waited finds the other's result instead of compressing it again.
        with self.cache.lock(Kind.LAYERS, self.keys[i]):
            hit = _cached(self.cache, self.keys[i])
            if hit is not None:
                self.stats.count(hits=1)
                self.progress.advance(self.task)
                return hit if isinstance(hit, Layer) else None
            self.stats.count(misses=1)
            return self.produce(i)

    def produce(self, i: int) -> Layer | None:
        plan, keep_docs = self.plans[i], self.keep_docs
        groups: list[list[DebEntry]] = []
        if plan.skeleton:
            groups.append(skeleton_entries())
        for name, sha256 in plan.packages:
            groups.append(package_entries(self.get(name, sha256), keep_docs=keep_docs))
        if plan.generated:
            every = [self.get(name, sha256) for name, sha256 in self.closure]
            groups.append(generated_entries(every, keep_docs=keep_docs))
        debs = tuple(self.facts[sha256] for _name, sha256 in plan.packages)
        layer = _store(self.cache, self.keys[i], plan, layer_tree(groups), self.epoch, debs)
        self.progress.advance(self.task)
        return layer


def packages_to_read(
    plans: Sequence[LayerPlan], cache: Cache, *, epoch: int, keep_docs: bool
) -> set[str]:
    """The sha256s ``build_layers`` would read: those of the layers the cache lacks.

    Every package of the closure when the generated layer is missing; none on
    a fully warm cache, so such a build needs no .deb at all.
    """
    closure = [p for plan in plans for p in plan.packages]
    needed: set[str] = set()
    for plan in plans:
        key = layer_key(plan, closure, epoch=epoch, keep_docs=keep_docs)
        if _cached(cache, key) is None:
            packages = closure if plan.generated else plan.packages
            needed.update(sha256 for _name, sha256 in packages)
    return needed


def read_layer_record(cache: Cache, key: str) -> LayerRecord | _Empty | None:
    """The valid record of layer ``key``; None if absent; a bad one is evicted (None)."""
    f = cache.open(Kind.LAYERS, key)
    if f is None:
        return None
    try:
        with f:
            record = decode_layer_record(f.read())
    except (OSError, ValueError) as exc:
        cache.evict(Kind.LAYERS, key, str(exc))
        return None
    return _Empty() if record is None else record


class _Empty:
    """A cached generated layer that had no entries."""


def _cached(cache: Cache, key: str) -> Layer | _Empty | None:
    record = read_layer_record(cache, key)
    if not isinstance(record, LayerRecord):
        return record
    blob = cache.verified(Kind.BLOBS, record.blob_key)
    if blob is None or blob.stat().st_size != record.size:
        return None  # the blob was evicted (or is missing): build the layer again
    return Layer(
        digest=Digest(record.digest),
        diff_id=Digest(record.diff_id),
        size=record.size,
        uncompressed_size=record.uncompressed_size,
        blob=blob,
        packages=record.packages,
        commands=record.commands,
        debs=record.debs,
    )


def cached_layer(cache: Cache, key: str) -> Layer | None:
    """The layer cached under ``key`` with its blob in place, else None."""
    hit = _cached(cache, key)
    return hit if isinstance(hit, Layer) else None


def _store(
    cache: Cache,
    key: str,
    plan: LayerPlan,
    entries: list[DebEntry],
    epoch: int,
    debs: tuple[DebFacts, ...],
) -> Layer | None:
    if not entries and plan.generated and not plan.packages and not plan.skeleton:
        cache.put(Kind.LAYERS, key, encode_layer_record(None))
        return None
    return store_layer(cache, key, entries, epoch, plan.names, debs)


def store_layer(
    cache: Cache,
    key: str,
    entries: list[DebEntry],
    epoch: int,
    names: tuple[str, ...],
    debs: tuple[DebFacts, ...] = (),
) -> Layer:
    """Write the layer of ``entries`` (in ``layer_tree`` order) to the cache under ``key``."""
    with cache.content_writer(Kind.BLOBS) as (out, commit):
        gz = GzipWriter(out)
        write_tar(entries, epoch, gz)
        gz.close()
        layer = Layer(
            digest=gz.digest,
            diff_id=gz.diff_id,
            size=gz.size,
            uncompressed_size=gz.uncompressed_size,
            blob=commit(gz.digest.removeprefix("sha256:")),
            packages=names,
            commands=command_paths(entries),
            debs=debs,
        )
    # The blob is in place before the entry that names it, so a hit always has its blob.
    record = LayerRecord(
        digest=layer.digest,
        diff_id=layer.diff_id,
        size=layer.size,
        uncompressed_size=layer.uncompressed_size,
        packages=layer.packages,
        debs=debs,
        commands=layer.commands,
    )
    cache.put(Kind.LAYERS, key, encode_layer_record(record))
    return layer
