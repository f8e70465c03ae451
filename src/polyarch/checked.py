"""Files this machine has checked, and that have not changed since: not hashed again.

A warm build uses every cached layer blob and compares its outputs with
what it would write, ~60 MB of SHA-256 for fd's two systems. Nothing in
them changed since the last build, and the kernel says so: every write to
a file (or rename onto its path, chmod, link) sets its inode change time
(ctime) to the current time, and no user can set ctime back.

So ``CheckedFiles.check(path, claim, verify)`` remembers, per path, the
file's identity — device, inode, size, mtime and ctime, as ``fstat`` of the
open file reports them — at the time ``verify`` found it to satisfy
``claim`` (e.g. ``sha256:...``). The next check of that claim on a file
with exactly that identity is answered from the memo; any other file, or
the same one written to meanwhile, is verified again.

Two rules keep the memo sound:

- The identity is taken before reading, and again after; a file that
  changed while it was read is not remembered.
- A file is remembered only if its ctime is more than ``RACY_NS`` older than
  the moment its check began (git's "racy clean" rule). File systems stamp
  times from a coarse clock, so a write in the same tick as the last one
  can leave ctime unchanged; a file last changed long before the read
  started gets a newer ctime from any later write.

The memo lives in the cache (``CACHE/checked/``), one small file per path;
it is never pushed or pulled (it describes this machine's inodes), and a
missing or unreadable record only means hashing again. docs/SECURITY.md,
"what is verified where", says what this trusts: the kernel's ctime.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

CHECKED_DIR = "checked"
"""Below the cache root: the memo's records; not a kind of entry."""
RACY_NS = 2_000_000_000
"""A file whose ctime is this close to the start of its check is not remembered."""
_FORMAT = 1
_IDENTITY_FIELDS = 5

Identity = tuple[int, int, int, int, int]
"""(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns) of an open file."""


def identity_of(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class CheckedFiles:
    """The memo of checked files; ``root`` None keeps it in this process only."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self._known: dict[str, tuple[Identity, str]] = {}
        self._lock = threading.Lock()

    def check(self, path: Path, claim: str, verify: Callable[[io.BufferedReader], bool]) -> bool:
        """Whether the regular file at ``path`` satisfies ``claim``, which ``verify`` decides.

        ``verify`` reads the open file (never followed through a symlink) and is
        called unless the memo knows this very file, unchanged, satisfies ``claim``.
        False also when ``path`` is not a regular file or cannot be read.
        """
        began = time.time_ns()
        try:
            fd = os.open(  # non-blocking: a FIFO put in a file's place is refused, not waited on
                path,
                os.O_RDONLY
                | os.O_NONBLOCK
                | getattr(os, "O_NOFOLLOW", 0)
                | getattr(os, "O_CLOEXEC", 0),
            )
        except OSError:
            return False
        with os.fdopen(fd, "rb") as f:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                return False
            name = os.path.abspath(path)
            if self._recall(name) == (identity_of(before), claim):
                return True
            if not verify(f):
                self._forget(name)
                return False
            after = identity_of(os.fstat(fd))
        if after == identity_of(before) and before.st_ctime_ns < began - RACY_NS:
            self._remember(name, after, claim)
        return True

    def _record_path(self, name: str) -> Path | None:
        if self.root is None:
            return None
        digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()
        return self.root / digest[:2] / digest

    def _recall(self, name: str) -> tuple[Identity, str] | None:
        with self._lock:
            known = self._known.get(name)
        if known is not None:
            return known
        record = self._record_path(name)
        if record is None:
            return None
        try:
            # Non-blocking, and regular files only: a FIFO in its place must not hang a build.
            fd = os.open(record, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    return None
                data = json.loads(f.read(4096))
            if data["format"] != _FORMAT or data["path"] != name:
                return None
            identity = tuple(int(x) for x in data["identity"])
            claim = str(data["claim"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # no record, or not one of ours: check the file
        if len(identity) != _IDENTITY_FIELDS:
            return None
        return identity, claim  # type: ignore[return-value]

    def _remember(self, name: str, identity: Identity, claim: str) -> None:
        with self._lock:
            self._known[name] = (identity, claim)
        record = self._record_path(name)
        if record is None:
            return
        data = {"format": _FORMAT, "path": name, "identity": identity, "claim": claim}
        # Best effort: a memo that cannot be written only means hashing again next time.
        with contextlib.suppress(OSError):
            _write_atomically(record, json.dumps(data).encode())

    def _forget(self, name: str) -> None:
        with self._lock:
            self._known.pop(name, None)
        record = self._record_path(name)
        if record is not None:
            with contextlib.suppress(OSError):
                record.unlink()


def _write_atomically(path: Path, data: bytes) -> None:
    for directory in (path.parent.parent, path.parent):
        with contextlib.suppress(FileExistsError):
            directory.mkdir()
        if not stat.S_ISDIR(os.lstat(directory).st_mode):
            return  # a symlink or file where the memo's directory belongs: never written through
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
