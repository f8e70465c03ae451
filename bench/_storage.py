"""Where a benchmark's own engines keep their layers: a fresh ext4 of their own, or the host's.

Why not simply the host's file system: on this project's machines ``/`` is
ext4 *without a journal*, and there ext4 will not reuse an inode freed in
the last minute or so (fs/ext4/ialloc.c, ``recently_deleted``): every new
file scans past them. Right after an engine removed a 100-layer image
(160 000 to 960 000 files on vfs) a load of 5 000 files took 3.7 s instead
of 0.5 s (``tar -x`` of r-cran-littler's merged layer, measured). So on
``/`` a load's time depended on what the sample before it had removed (in
bench/layers.py's order, the shared policy's loads ran right after the
baseline's removal) and on what other processes delete meanwhile. A new,
journaled ext4 (mkfs defaults, as on most hosts) on a loop device gives
every load the same conditions; the engines still store with vfs, on this
machine's disk.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STORAGES = ("ext4", "host")
IMAGE_BYTES = 96 << 30
"""The file system's size (sparse: only what is written takes disk space)."""


@contextmanager
def engine_storage(work: Path, kind: str) -> Iterator[tuple[Path, str]]:
    """A directory for the engines' data and what it is on; removed afterwards.

    ``ext4``: a new journaled ext4 mounted from a sparse file under ``work``
    (root and a loop device needed; falls back to ``host`` with the reason);
    ``host``: ``work`` itself.
    """
    if kind == "host":
        yield work, "the host's file system"
        return
    image, mount = work / "engines.ext4", work / "engines-fs"
    mount.mkdir(parents=True, exist_ok=True)
    try:
        with image.open("wb") as sparse:
            sparse.truncate(IMAGE_BYTES)
        _run("mkfs.ext4", "-q", "-F", str(image))
        # discard: blocks freed in there (a removed image) are freed on the host's disk too,
        # else the file keeps the largest image's size (emacs-gtk, 100 layers: 16 GB) to the end.
        _run("mount", "-o", "loop,discard", str(image), str(mount))
    except (OSError, subprocess.CalledProcessError) as exc:
        image.unlink(missing_ok=True)
        yield work, f"the host's file system (no ext4 of its own: {exc})"
        return
    try:
        yield mount, "a new journaled ext4 (loop device)"
    finally:
        _unmount(mount)
        image.unlink(missing_ok=True)


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def _unmount(mount: Path) -> None:
    for _ in range(10):  # a daemon that just stopped may still hold a file for a moment
        # --recursive: dockerd bind-mounts its data root onto itself.
        if (
            subprocess.run(["umount", "--recursive", str(mount)], capture_output=True).returncode
            == 0
        ):
            shutil.rmtree(mount, ignore_errors=True)
            return
        time.sleep(1)
    subprocess.run(["umount", "--recursive", "--lazy", str(mount)], capture_output=True)
