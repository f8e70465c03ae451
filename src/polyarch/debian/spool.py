"""A package's file contents spooled to a nameless temporary file (``debian.deb`` keeps
what fits its memory budget in memory, the rest here).

The file is opened beside the .deb (a read-only cache: in the system's temporary
directory) and has no name, so it vanishes when the contents are dropped, also
after kill -9. Reads are positional, so the layers of several systems read one
package's contents from threads at once.
"""

from __future__ import annotations

import io
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

MEMORY_BUDGET = 64 << 20
"""File contents held in memory per package; the rest is spooled to disk."""
SPOOL_FILE_SIZE = 16 << 20
"""A file this large is spooled even within the budget (it is written out in chunks anyway)."""
_COPY_CHUNK = 1 << 20


class Spool:
    """A package's nameless temporary file of file contents; reads are positional (thread-safe)."""

    def __init__(self, directory: Path) -> None:
        try:
            # Open as long as the contents live; closing it frees the disk space.
            self._file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115
        except OSError:  # a read-only cache: the system's temporary directory then
            self._file = tempfile.TemporaryFile()  # noqa: SIM115
        self._lock = threading.Lock()
        self.size = 0

    def append(self, source: IO[bytes], size: int) -> int:
        """Copy ``size`` bytes of ``source`` to the end; return where they start."""
        offset = self.size
        left = size
        with self._lock:
            while left:
                chunk = source.read(min(left, _COPY_CHUNK))
                if not chunk:
                    raise EOFError("unexpected end of data")
                os.pwrite(self._file.fileno(), chunk, self.size)
                self.size += len(chunk)
                left -= len(chunk)
        return offset

    def pread(self, size: int, offset: int) -> bytes:
        return os.pread(self._file.fileno(), size, offset)


@dataclass(frozen=True, eq=False)
class Spooled:
    """File content kept in the package's spool file rather than in memory."""

    spool: Spool
    offset: int
    size: int

    def reader(self) -> io.BufferedReader:
        """A stream of the content (independent of other readers)."""
        return io.BufferedReader(_SpoolReader(self), _COPY_CHUNK)


class _SpoolReader(io.RawIOBase):
    def __init__(self, spooled: Spooled) -> None:
        self._spooled, self._pos = spooled, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._spooled.size - self._pos)
        if n <= 0:
            return 0
        chunk = self._spooled.spool.pread(n, self._spooled.offset + self._pos)
        buffer[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)
