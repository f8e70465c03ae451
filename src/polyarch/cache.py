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

Nothing read back is trusted (the cache is shared between machines through
``cache push``/``pull``, and disks flip bits): a key must match ``KEY_PATTERN``
before it becomes a path, an entry must be a regular file reached through real
directories (symlinks are never followed, so no entry leads outside the cache),
and whoever uses an entry checks its content (``debs`` and ``blobs`` against
their key, records against their schema and checksum). A bad entry is
``evict``-ed with a warning and fetched or rebuilt: the cache heals itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

from polyarch.checked import CHECKED_DIR, CheckedFiles
from polyarch.errors import CacheError, HostError
from polyarch.progress import NullProgress, Progress

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
    CONTENTS = "contents"
    """Command lines of Contents indexes (``polyarch add``); key: the signed file's SHA256 + format."""

    @property
    def content_addressed(self) -> bool:
        """The key is the SHA256 of the entry's bytes (else a hash of what made it)."""
        return self in (Kind.DEBS, Kind.BLOBS)


KEY_PATTERN = re.compile(r"[0-9a-f]{64}(?:-[0-9a-f]{8})?")
"""What a cache key looks like; nothing else may become a file name in the cache."""


REGISTRY_RECORDS_DIR = "registry-blobs"
"""Where each registry is known to hold which blob (mount hints); not a kind of entry."""
LOCKS_DIR = "locks"
OUTPUTS_LOCKS = "outputs"
"""Below ``LOCKS_DIR``: one lock per output directory (``Cache.outputs_lock``)."""
"""Holds the lock files of ``Cache.lock``; not a kind of entry."""
TMP_SUFFIX = ".tmp"
TOUCH_INTERVAL = 3600.0
"""Seconds between two access-time updates of one entry (``get``)."""


def default_cache_dir() -> Path:
    """``POLYARCH_CACHE_DIR``, else the user cache dir (``~/.cache/polyarch`` on Linux)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    import platformdirs  # imported when needed: the CLI's start-up stays short

    return Path(platformdirs.user_cache_dir("polyarch", appauthor=False))


def is_key(key: str) -> bool:
    """Whether ``key`` may name a cache entry (it becomes a file name)."""
    return KEY_PATTERN.fullmatch(key) is not None


class Cache:
    """A directory per ``Kind``, each a flat key → file map (sharded by the key's first two chars).

    ``progress`` receives the warnings of ``evict``; by default they are kept
    in a ``NullProgress`` (``cache.progress.warnings``).
    """

    def __init__(self, root: Path | str | None = None, *, progress: Progress | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.progress: Progress = progress if progress is not None else NullProgress()
        self.checked = CheckedFiles(self.root / CHECKED_DIR)
        """Files hashed before and unchanged since (entries and outputs): not hashed again."""

    def path(self, kind: Kind, key: str) -> Path:
        """Where the entry would live; it may not exist. CacheError if ``key`` is not a key."""
        if not is_key(key):
            raise CacheError(
                f"{key[:80]!r} is not a {kind} cache key",
                hint="a cache record names something that is not a sha256; "
                "run `polyarch cache verify --repair`",
            )
        return self.root / kind / key[:2] / key

    def get(self, kind: Kind, key: str) -> Path | None:
        """The entry's path if it is a regular file (and mark it used), else None.

        Reached through real directories only: an entry, or a directory on the
        way to it, that is a symlink is a miss (and the entry is evicted).
        """
        p = self.path(kind, key)
        st = self._lstat(kind, p)
        if st is None:
            return None
        if not stat.S_ISREG(st.st_mode):
            self.evict(kind, key, "not a regular file")
            return None
        if time.time() - st.st_atime > TOUCH_INTERVAL:
            # A read-only cache is still a usable cache.
            with contextlib.suppress(OSError, NotImplementedError):
                os.utime(p, ns=(time.time_ns(), st.st_mtime_ns), follow_symlinks=False)
        return p

    def _lstat(self, kind: Kind, path: Path) -> os.stat_result | None:
        try:
            for directory in (self.root / kind, path.parent):
                if not stat.S_ISDIR(os.lstat(directory).st_mode):
                    return None  # a symlink (or a file) where a directory belongs
            return os.lstat(path)
        except OSError:
            return None

    def verified(self, kind: Kind, key: str) -> Path | None:
        """The path of a ``debs``/``blobs`` entry whose content hashes to its key, else None.

        A mismatch is evicted. A file hashed before (by any process using this
        cache) and not changed since is not hashed again (``polyarch.checked``).
        """
        if not kind.content_addressed:
            raise ValueError(f"{kind} entries are not named by their content")
        path = self.get(kind, key)
        if path is None:
            return None
        found: list[str] = []

        def hashes_to_key(f: io.BufferedReader) -> bool:
            found.append(hashlib.file_digest(f, "sha256").hexdigest())
            return found[-1] == key

        if self.checked.check(path, f"sha256:{key}", hashes_to_key):
            return path
        if found:
            self.evict(kind, key, f"its content hashes to {found[-1][:16]}…")
        return None

    def open(self, kind: Kind, key: str) -> io.BufferedReader | None:
        """The entry opened for reading (never through a symlink), else None."""
        path = self.get(kind, key)
        if path is None:
            return None
        return open_regular(path)

    def evict(self, kind: Kind, key: str, reason: str) -> None:
        """Remove a damaged entry, with a warning; whoever needs it fetches or rebuilds it."""
        self.discard(kind, key)
        self.progress.warn(
            f"cache: removed {kind} entry {key[:16]}… ({reason}); it is fetched or rebuilt"
        )

    def lock(self, kind: Kind, key: str) -> AbstractContextManager[None]:
        """Hold the producer lock of one entry (blocks while another process holds it)."""
        self.path(kind, key)  # refuses what is not a key
        return self._hold(self.root / LOCKS_DIR / kind / f"{key}.lock")

    def outputs_lock(self, key: str) -> AbstractContextManager[None]:
        """Hold the lock of one output directory (``key``: its path's SHA-256), so that
        builds into it take turns writing it and stamping what they wrote."""
        if not KEY_PATTERN.fullmatch(key):
            raise ValueError(f"not a key: {key!r}")
        return self._hold(self.root / LOCKS_DIR / OUTPUTS_LOCKS / f"{key}.lock")

    @contextmanager
    def _hold(self, path: Path) -> Iterator[None]:
        import filelock  # imported when needed: the CLI's start-up stays short

        try:
            self._real_dirs(self.root / LOCKS_DIR, path.parent)
            lock = filelock.FileLock(path, thread_local=False)
            lock.acquire()
        except OSError as exc:
            raise HostError.of(exc, f"cannot lock {path}") from exc
        try:
            yield
        finally:
            lock.release()

    def kinds(self) -> list[Kind]:
        """The kinds present in the cache."""
        return [kind for kind in Kind if (self.root / kind).is_dir()]

    def entries(self, kind: Kind) -> Iterator[tuple[str, Path]]:
        """Every (name, path) of ``kind``, in no particular order; temporary files excluded.

        Names are as found: ``cache verify`` judges them (not a key, a symlink).
        Shard directories that are symlinks are not entered.
        """
        for shard in _real_subdirs(self.root / kind):
            try:
                files = list(shard.iterdir())
            except OSError:
                continue  # removed meanwhile
            for path in files:
                if not path.name.startswith("."):
                    yield path.name, path

    def temp_files(self) -> Iterator[Path]:
        """Temporary files of writers (live ones, or left by a crash); none behind a symlink."""
        for kind in Kind:
            for shard in _real_subdirs(self.root / kind):
                yield from (p for p in shard.glob(f".*{TMP_SUFFIX}") if not p.is_symlink())

    @contextmanager
    def writer(self, kind: Kind, key: str) -> Iterator[BinaryIO]:
        """Open a temporary file; on a clean exit it becomes the entry, else it vanishes."""
        final = self.path(kind, key)
        try:
            self._real_dirs(self.root / kind, final.parent)
            fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{key[:16]}.", suffix=TMP_SUFFIX)
        except OSError as exc:
            raise HostError.of(exc, f"cannot write to the cache {self.root}") from exc
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
            os.replace(tmp, final)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise HostError.of(exc, f"cannot write to the cache {self.root}") from exc
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _real_dirs(self, *directories: Path) -> None:
        """Create directories below the root; a symlink or file in their place is removed."""
        self.root.mkdir(parents=True, exist_ok=True)
        for directory in directories:
            try:
                st = os.lstat(directory)
            except FileNotFoundError:
                directory.mkdir(exist_ok=True)
                continue
            if not stat.S_ISDIR(st.st_mode):
                directory.unlink()  # never write through a link out of the cache
                directory.mkdir()

    def adopt(self, kind: Kind, key: str, path: Path) -> None:
        """Make the file at ``path`` (on the cache's file system) the entry, atomically."""
        final = self.path(kind, key)
        try:
            self._real_dirs(self.root / kind, final.parent)
            os.replace(path, final)
        except OSError as exc:
            raise HostError.of(exc, f"cannot write to the cache {self.root}") from exc

    @contextmanager
    def content_writer(self, kind: Kind) -> Iterator[tuple[BinaryIO, Callable[[str], Path]]]:
        """A temporary file for an entry whose key is known only once it is written.

        Yields ``(file, commit)``: ``commit(key)`` closes the file and makes it the
        entry (``adopt``), returning its path. Without a commit, or on an error, the
        file vanishes. It is made in shard ``00``, so ``temp_files`` finds it after a crash.
        """
        shard = self.root / kind / "00"
        try:
            self._real_dirs(self.root / kind, shard)
            fd, tmp = tempfile.mkstemp(dir=shard, prefix=".new.", suffix=TMP_SUFFIX)
        except OSError as exc:
            raise HostError.of(exc, f"cannot write to the cache {self.root}") from exc
        f = os.fdopen(fd, "wb")

        def commit(key: str) -> Path:
            f.close()
            self.adopt(kind, key, Path(tmp))
            return self.path(kind, key)

        try:
            with f:
                yield f, commit
        except OSError as exc:
            raise HostError.of(exc, f"cannot write to the cache {self.root}") from exc
        finally:
            Path(tmp).unlink(missing_ok=True)

    def put(self, kind: Kind, key: str, data: bytes) -> Path:
        """Write ``data`` as the entry (atomically); return its path."""
        with self.writer(kind, key) as f:
            f.write(data)
        return self.path(kind, key)

    def discard(self, kind: Kind, key: str) -> None:
        """Remove the entry if it is there (a symlink itself, never what it points at)."""
        path = self.path(kind, key)
        st = self._lstat(kind, path)
        if st is not None and stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path, ignore_errors=True)  # a directory where a file belongs
        elif st is not None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _real_subdirs(base: Path) -> list[Path]:
    """The directories in ``base`` (itself a real directory), symlinks and files left out."""
    try:
        if not stat.S_ISDIR(os.lstat(base).st_mode):
            return []
        found = list(base.iterdir())
    except OSError:
        return []
    real = []
    for path in found:
        with contextlib.suppress(OSError):  # removed meanwhile
            if stat.S_ISDIR(os.lstat(path).st_mode):
                real.append(path)
    return real


def open_regular(path: Path) -> io.BufferedReader | None:
    """``path`` opened for reading if it is a regular file, not followed if it is a symlink
    (non-blocking: a FIFO in its place is refused, never waited on)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return os.fdopen(fd, "rb")
