"""Writing files and directories so that no reader sees half of one.

Files: a temp file beside, then rename. Directories: filled in a staging
directory beside, then swapped in (``replace_directory``), so ``OUT/NAME``
holds the previous result or the new one, never a mix. The cache has its own
writer (``Cache.writer``, with locks); these are for everything else: the lock
file, registry records, outputs.

A staging directory is flock-ed while its build runs; the kernel drops the
lock when the process dies, however it dies. So the next build of the same
output removes the ``.NAME.tmp-*`` a killed build left, and never a live one.

Outputs never share an inode with the cache (``clone_or_copy``): a hard link
would let a user editing ``result/`` corrupt the cache, and a damaged cache
entry corrupt results built before the damage.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import os
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from polyarch.checked import CheckedFiles
from polyarch.errors import HostError, ImageError

STAGING_INFIX = ".tmp-"
"""Staging directories are ``.NAME.tmp-*`` beside ``NAME``."""
OLD_INFIX = ".old-"
"""Where a previous result waits to be deleted on systems without an atomic exchange."""
NEW_INFIX = ".new-"
"""A staging directory before it is locked (for microseconds)."""
NEW_GRACE = 60.0


@contextmanager
def _replacing(path: Path, mode: int) -> Iterator[Path]:
    """A temp file beside ``path`` that replaces it when the block ends, and is gone if it fails."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, mode)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def file_size(path: Path) -> int:
    """The size of the file at ``path``; 0 if it is gone (or unreadable)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically: a reader sees the old file or the new one.

    ``path``'s directory must exist; OSError as the file system raises it.
    """
    with _replacing(path, mode) as tmp:
        tmp.write_bytes(data)


def atomic_copy(source: Path, path: Path, *, mode: int = 0o644) -> None:
    """Copy ``source`` to ``path`` atomically (see ``atomic_write``), without reading it into memory."""
    with _replacing(path, mode) as tmp:
        shutil.copyfile(source, tmp)


def same_content(path: Path, expected: bytes) -> bool:
    """True if the regular file at ``path`` holds exactly ``expected``.

    By content, never by timestamps, so an edited output is noticed whatever its mtime.
    """
    try:
        st = os.lstat(path)
        return (
            stat.S_ISREG(st.st_mode)
            and st.st_size == len(expected)
            and path.read_bytes() == expected
        )
    except OSError:
        return False


def has_digest(
    path: Path,
    digest: str,
    size: int,
    *,
    not_inode_of: Path,
    checked: CheckedFiles | None = None,
) -> bool:
    """True if the regular file at ``path`` has ``size`` bytes whose sha256 is ``digest``.

    A file that is the very inode of ``not_inode_of`` (the cache's copy) does
    not count: outputs must never share an inode with the cache. With
    ``checked``, a file hashed before and unchanged since is not hashed again.
    """
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size != size:
            return False
        if os.path.samestat(st, os.stat(not_inode_of)):
            return False
    except OSError:
        return False

    def hashes_to_digest(f: io.BufferedReader) -> bool:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest() == digest

    memo = checked if checked is not None else CheckedFiles(None)
    try:
        return memo.check(path, digest, hashes_to_digest)
    except OSError:
        return False


FICLONE = 0x40049409
"""Linux ioctl: make ``dst`` share ``src``'s extents copy-on-write (btrfs, XFS, bcachefs)."""


def clone_or_copy(source: Path, path: Path, *, mode: int = 0o644) -> None:
    """Write a new file at ``path`` with ``source``'s bytes, sharing no inode with it.

    A reflink (``FICLONE``) where the file system supports it, which costs no
    time or space and still lets either file change without the other; else
    a copy in the kernel (``sendfile``). ``source`` is never followed if it is
    a symlink. ``path`` must not exist.
    """
    src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        dst = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            if not _reflink(src, dst):
                _copy(src, dst, os.fstat(src).st_size)
        except BaseException:
            os.close(dst)
            path.unlink(missing_ok=True)
            raise
        os.close(dst)
    finally:
        os.close(src)


def _reflink(src: int, dst: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        fcntl.ioctl(dst, FICLONE, src)
    except OSError:
        return False  # EOPNOTSUPP, EXDEV, EINVAL: not a reflink file system, or not one
    return True


def _copy(src: int, dst: int, size: int) -> None:
    offset = 0
    try:
        while offset < size:
            sent = os.sendfile(dst, src, offset, size - offset)
            if sent == 0:
                break
            offset += sent
    except OSError as exc:
        if offset or exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise
        while chunk := os.read(src, 1 << 20):  # sendfile cannot do these two files
            os.write(dst, chunk)


@contextmanager
def staging_dir(dest: Path) -> Iterator[Path]:
    """A fresh directory beside ``dest``, locked while in use; removed unless renamed away.

    Stale staging directories of ``dest`` (their builds were killed) are removed first.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(dest)
    # Locked under a name no cleaner removes, then renamed (the lock stays with the inode):
    # another build's cleanup can never see it unlocked.
    new = Path(tempfile.mkdtemp(prefix=f".{dest.name}{NEW_INFIX}", dir=dest.parent))
    held = _hold(new)
    tmp = dest.parent / new.name.replace(NEW_INFIX, STAGING_INFIX, 1)
    os.rename(new, tmp)
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if held is not None:
            os.close(held)


def _hold(directory: Path) -> int | None:
    """An fd holding an exclusive flock on ``directory``; None where it cannot be had."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def remove_stale_staging(dest: Path) -> list[Path]:
    """Remove the ``.NAME.tmp-*`` and ``.NAME.old-*`` directories of ``dest`` no process holds.

    Returns what was removed. One that a live build holds (its flock) is left alone.
    """
    removed = []
    for infix in (STAGING_INFIX, OLD_INFIX, NEW_INFIX):
        for candidate in dest.parent.glob(f".{dest.name}{infix}*"):
            if candidate.is_symlink() or not candidate.is_dir():
                continue
            if infix == NEW_INFIX and time.time() - candidate.lstat().st_mtime < NEW_GRACE:
                continue  # a build between creating and locking it
            held = _hold(candidate)
            if held is None:
                continue  # a live build holds it
            try:
                shutil.rmtree(candidate, ignore_errors=True)
                removed.append(candidate)
            finally:
                os.close(held)
    return removed


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes  # here: only a directory swap needs it, not every importer of this module

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    renameat2.restype = ctypes.c_int
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def replace_directory(dest: Path, fill: Callable[[Path], None]) -> Path:
    """Run ``fill(staging_dir)``, then make the staging dir ``dest``; return ``dest``.

    ``fill`` writes everything into a fresh ``.NAME.tmp-*`` directory beside
    ``dest``. Only when it returns is the result swapped in: on Linux in one
    atomic exchange, elsewhere by renaming the old result aside and the new one
    in (restoring the old one if that fails); the old result is then deleted.
    If ``fill`` raises, the staging dir is removed and ``dest`` is untouched, so
    readers see the previous result or the new one, never a mix.
    """
    name = dest.name
    if not name or name.startswith(".") or "\0" in name:
        raise ImageError(f"{name!r} cannot name an output directory", hint="use a container name")
    if (dest.exists() or dest.is_symlink()) and not dest.is_dir():
        raise ImageError(f"{dest} exists and is not a directory", hint="remove it or use --out")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HostError.of(exc, f"cannot create {dest.parent}") from exc
    try:
        with staging_dir(dest) as tmp:
            os.chmod(tmp, 0o755)  # mkdtemp makes 0700; outputs are for everyone to read
            fill(tmp)
            _swap_in(tmp, dest)
    except OSError as exc:
        # Disk full, read-only, permissions: the previous result is still in place.
        raise HostError.of(exc, f"cannot write {dest}") from exc
    return dest


def _swap_in(new: Path, dest: Path) -> None:
    """Put directory ``new`` at ``dest``; the old ``dest`` ends up at ``new`` or is deleted."""
    if not dest.exists():
        os.rename(new, dest)
    elif _exchange(new, dest):
        pass  # new now holds the old result; staging_dir deletes it
    else:
        aside = Path(tempfile.mkdtemp(prefix=f".{dest.name}{OLD_INFIX}", dir=dest.parent))
        os.rename(dest, aside)  # onto an empty directory: allowed by POSIX
        try:
            os.rename(new, dest)
        except OSError:
            os.rename(aside, dest)
            raise
        shutil.rmtree(aside, ignore_errors=True)
