"""The cache as a whole: info, verify, prune. Sharing it is ``cache_transfer``.

Kinds of entries: see ``polyarch.cache.Kind``.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from polyarch.cache import LOCKS_DIR, Cache, Kind, open_regular
from polyarch.debian.contents import is_current_key
from polyarch.errors import UsageError
from polyarch.files import file_size
from polyarch.image.layer_record import decode_layer_record
from polyarch.progress import NULL_PROGRESS, Progress
from polyarch.workflows.cache_check import EntryChecker, other_format
from polyarch.workflows.cache_transfer import STAGING_PREFIX
from polyarch.workflows.stamp import prune_stamps

TEMP_GRACE = 600.0
"""Seconds a writer's temporary file may go unmodified before prune deems it left by a crash."""


# --- info ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KindInfo:
    kind: Kind
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
    for kind in Kind:
        sizes = [file_size(path) for _key, path in cache.entries(kind)]
        kinds.append(KindInfo(kind, len(sizes), sum(sizes)))
    temps = [file_size(p) for p in cache.temp_files()]
    return CacheInfo(cache.root, tuple(kinds), len(temps), sum(temps))


# --- verify ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    kind: Kind
    key: str
    reason: str
    path: Path | None = field(default=None, compare=False)
    """Where it was found (what ``repair`` removes)."""


@dataclass(frozen=True, slots=True)
class VerifyReport:
    checked: dict[Kind, int]
    problems: tuple[Problem, ...]
    repaired: bool
    """True if the bad entries were deleted (``repair=True``)."""

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_cache(
    cache: Cache, *, repair: bool = False, jobs: int = 4, progress: Progress = NULL_PROGRESS
) -> VerifyReport:
    """Check every entry as ``cache_check.EntryChecker`` does (hashes, schemas, checksums).

    With ``repair`` every bad entry is deleted: the next build fetches or
    rebuilds it. A layer entry whose blob was bad goes with it.
    """
    checked: dict[Kind, int] = {}
    problems: list[Problem] = []
    entries = {kind: list(cache.entries(kind)) for kind in Kind}
    task = progress.task("verifying the cache", total=sum(map(len, entries.values())))
    blobs = dict(entries[Kind.BLOBS])
    checker = EntryChecker(blobs.get)

    def check(kind: Kind, name: str, path: Path) -> Problem | None:
        reason = checker.problem(kind, name, path)
        progress.advance(task)
        return Problem(kind, name, reason, path) if reason else None

    try:
        with ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool:
            for kind in Kind:
                found = [
                    p
                    for p in pool.map(lambda e, k=kind: check(k, *e), entries[kind])
                    if p is not None
                ]
                checked[kind] = len(entries[kind])
                problems += sorted(found, key=lambda p: p.key)
    finally:
        progress.done(task)
    if repair:
        for problem in problems:
            if problem.path is not None:
                with contextlib.suppress(FileNotFoundError):
                    problem.path.unlink()  # a symlink is removed, never followed
    return VerifyReport(checked, tuple(problems), repaired=repair and bool(problems))


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
    removed: dict[Kind, KindInfo]
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
    for staging in cache.root.glob(f"{STAGING_PREFIX}*"):
        # An interrupted `cache pull`: its entries were never checked, so never used.
        with contextlib.suppress(OSError):
            if now - staging.lstat().st_mtime > TEMP_GRACE:
                shutil.rmtree(staging)
    removed: dict[Kind, KindInfo] = {}
    for kind in Kind:
        count = size = 0
        for key, path in list(cache.entries(kind)):
            try:
                st = path.stat()
            except OSError:
                continue
            stale = older_than is not None and now - max(st.st_atime, st.st_mtime) > older_than
            dangling = kind == Kind.LAYERS and _dangling_layer(cache, path)
            unusable = (kind == Kind.INDEXES and other_format(key)) or (
                kind == Kind.CONTENTS and not is_current_key(key)
            )
            if stale or dangling or unusable:
                path.unlink(missing_ok=True)
                (cache.root / LOCKS_DIR / kind / f"{key}.lock").unlink(missing_ok=True)
                count += 1
                size += st.st_size
        removed[kind] = KindInfo(kind, count, size)
    _remove_orphan_locks(cache, now)
    prune_stamps(cache, now=now, grace=TEMP_GRACE, older_than=older_than)
    return PruneReport(removed, temp_count, temp_bytes)


def _dangling_layer(cache: Cache, path: Path) -> bool:
    f = open_regular(path)
    if f is None:
        return True
    try:
        with f:
            record = decode_layer_record(f.read())
    except (OSError, ValueError):
        return True
    return record is not None and not cache.path(Kind.BLOBS, record.blob_key).is_file()


def _remove_orphan_locks(cache: Cache, now: float) -> None:
    # A lock file of an entry that never came to be (a crashed producer). Removing
    # one a process is about to use costs at most a duplicated download or layer.
    for kind in Kind:
        for lock in (cache.root / LOCKS_DIR / kind).glob("*.lock"):
            try:
                old = now - lock.stat().st_mtime > TEMP_GRACE
                if old and cache.get(kind, lock.name.removesuffix(".lock")) is None:
                    lock.unlink()
            except OSError:
                continue
