"""Writing files so that no reader sees half of one: temp file beside, then rename.

The cache has its own writer (``Cache.writer``, with locks and grace periods);
these are for everything else: the lock file, registry records, image blobs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
