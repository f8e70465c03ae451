"""The local content-addressed store: downloaded .debs, parsed indexes, built layers.

Every entry is named by the hash of what it holds (or of the exact inputs that
made it), written to a temporary file in the same directory and renamed into
place, so a reader never sees a partial entry and a crash (even SIGKILL)
leaves at most a stray ``.*.tmp`` file that ``polyarch cache prune`` removes.

Several processes may share one cache. Atomic renames already keep it
uncorrupted; ``lock(kind, key)`` (an flock, released by the kernel when a
process dies) lets the producers of one entry take turns, so the second one
finds the first one's result instead of doing the same work again.

Use is recorded in the access time: ``get`` sets it explicitly (at most once
per ``TOUCH_INTERVAL``), so it works on ``noatime``/``relatime`` mounts, and
``prune --older-than`` removes what no build has used for that long.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

import filelock
import platformdirs

from polyarch.errors import CacheError

ENV_VAR = "POLYARCH_CACHE_DIR"


class Kind(StrEnum):
    """The kinds of entries, each a directory of the cache; in the order verify and push visit them."""

    DEBS = "debs"
    """Downloaded .debs; key: the .deb's SHA256."""
    BLOBS = "blobs"
    """gzip layer blobs; key: their SHA256."""
    LAYERS = "layers"
    """Layer records (JSON naming a blob); key: the hash of the layer's inputs."""
    INDEXES = "indexes"
    """Parsed Packages indexes; key: the signed index file's SHA256 + record layout."""
    FACTS = "facts"
    """What an SBOM says of one package (maintainer, source, licence); key: the .deb's SHA256."""

    @property
    def content_addressed(self) -> bool:
        """The key is the SHA256 of the entry's bytes (else a hash of what made it)."""
        return self in (Kind.DEBS, Kind.BLOBS)


KEY_PATTERN = re.compile(r"[0-9a-f]{64}(?:-[0-9a-f]{8})?")
"""What a cache key looks like; nothing else may become a file name in the cache."""


REGISTRY_RECORDS_DIR = "registry-blobs"
"""Where each registry is known to hold which blob (mount hints); not a kind of entry."""
LOCKS_DIR = "locks"
"""Holds the lock files of ``Cache.lock``; not a kind of entry."""
TMP_SUFFIX = ".tmp"
TOUCH_INTERVAL = 3600.0
"""Seconds between two access-time updates of one entry (``get``)."""


def default_cache_dir() -> Path:
    """``POLYARCH_CACHE_DIR``, else the user cache dir (``~/.cache/polyarch`` on Linux)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path(platformdirs.user_cache_dir("polyarch", appauthor=False))


class Cache:
    """A directory per ``Kind``, each a flat key → file map (sharded by the key's first two chars)."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, kind: Kind, key: str) -> Path:
        """Where the entry would live; it may not exist."""
        return self.root / kind / key[:2] / key

    def get(self, kind: Kind, key: str) -> Path | None:
        """The entry's path if it exists (and mark it used), else None."""
        p = self.path(kind, key)
        try:
            st = p.stat()
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        now = time.time()
        if now - st.st_atime > TOUCH_INTERVAL:
            # A read-only cache is still a usable cache.
            with contextlib.suppress(OSError):
                os.utime(p, ns=(time.time_ns(), st.st_mtime_ns))
        return p

    @contextmanager
    def lock(self, kind: Kind, key: str) -> Iterator[None]:
        """Hold the producer lock of one entry (blocks while another process holds it)."""
        path = self.root / LOCKS_DIR / kind / f"{key}.lock"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = filelock.FileLock(path, thread_local=False)
            lock.acquire()
        except OSError as exc:
            raise CacheError(
                f"cannot lock {path}: {exc.strerror}",
                hint=f"set --cache-dir or {ENV_VAR} to a writable directory",
            ) from exc
        try:
            yield
        finally:
            lock.release()

    def kinds(self) -> list[Kind]:
        """The kinds present in the cache."""
        return [kind for kind in Kind if (self.root / kind).is_dir()]

    def entries(self, kind: Kind) -> Iterator[tuple[str, Path]]:
        """Every (key, path) of ``kind``, in no particular order; temporary files excluded."""
        base = self.root / kind
        try:
            shards = list(base.iterdir())
        except OSError:
            return
        for shard in shards:
            try:
                files = list(shard.iterdir())
            except OSError:
                continue  # a stray file at shard level, or removed meanwhile
            for path in files:
                if not path.name.startswith("."):
                    yield path.name, path

    def temp_files(self) -> Iterator[Path]:
        """Temporary files of writers (live ones, or left by a crash)."""
        for kind in self.kinds():
            yield from (self.root / kind).glob(f"*/.*{TMP_SUFFIX}")

    @contextmanager
    def writer(self, kind: Kind, key: str) -> Iterator[BinaryIO]:
        """Open a temporary file; on a clean exit it becomes the entry, else it vanishes."""
        final = self.path(kind, key)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{key[:16]}.", suffix=TMP_SUFFIX)
        except OSError as exc:
            raise CacheError(
                f"cannot write to cache {self.root}: {exc.strerror}",
                hint=f"set --cache-dir or {ENV_VAR} to a writable directory",
            ) from exc
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put(self, kind: Kind, key: str, data: bytes) -> Path:
        """Write ``data`` as the entry (atomically); return its path."""
        with self.writer(kind, key) as f:
            f.write(data)
        return self.path(kind, key)

    def discard(self, kind: Kind, key: str) -> None:
        """Remove the entry if it is there."""
        self.path(kind, key).unlink(missing_ok=True)
