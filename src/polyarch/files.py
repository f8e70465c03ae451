"""Writing files and directories so that no reader sees half of one.

Files: a temp file beside, then rename. Directories: filled in a staging
directory beside, then swapped in (``replace_directory``), so ``OUT/NAME``
holds the previous result or the new one, never a mix. The cache has its own
writer (``Cache.writer``, with locks); these are for everything else: the lock
file, registry records, outputs.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from polyarch.errors import ImageError

STAGING_INFIX = ".tmp-"
"""Staging directories are ``.NAME.tmp-*`` beside ``NAME``."""


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


def link_or_copy(source: Path, path: Path) -> None:
    """Hard-link ``source`` at ``path``, or copy it (with its mode) where linking fails.

    Only for immutable content such as blobs named by their digest: the two names
    share the bytes. Links fail across file systems, or where the file is not ours.
    """
    try:
        os.link(source, path)
    except OSError:
        shutil.copy2(source, path)


@contextmanager
def staging_dir(dest: Path) -> Iterator[Path]:
    """A fresh directory beside ``dest``; removed unless the caller renamed it away."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}{STAGING_INFIX}", dir=dest.parent))
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    if not sys.platform.startswith("linux"):
        return False
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
        raise ImageError(f"cannot create {dest.parent}: {exc.strerror}", hint="use --out") from exc
    with staging_dir(dest) as tmp:
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; outputs are for everyone to read
        fill(tmp)
        try:
            _swap_in(tmp, dest)
        except OSError as exc:
            raise ImageError(
                f"cannot move the new result into {dest}: {exc.strerror}",
                hint="check permissions of the output directory",
            ) from exc
    return dest


def _swap_in(new: Path, dest: Path) -> None:
    """Put directory ``new`` at ``dest``; the old ``dest`` ends up at ``new`` or is deleted."""
    if not dest.exists():
        os.rename(new, dest)
    elif _exchange(new, dest):
        pass  # new now holds the old result; staging_dir deletes it
    else:
        aside = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        os.rename(dest, aside)  # onto an empty directory: allowed by POSIX
        try:
            os.rename(new, dest)
        except OSError:
            os.rename(aside, dest)
            raise
        shutil.rmtree(aside, ignore_errors=True)
