"""The local content-addressed store: downloaded .debs, parsed indexes, built layers.

Every entry is named by the hash of what it holds (or of the exact inputs that
made it), written to a temporary file in the same directory and renamed into
place, so a reader never sees a partial entry and a crash leaves at most a
stray ``*.tmp-*`` file that ``prune`` removes.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import platformdirs

from polyarch.errors import CacheError

ENV_VAR = "POLYARCH_CACHE_DIR"


def default_cache_dir() -> Path:
    """``POLYARCH_CACHE_DIR``, else the user cache dir (``~/.cache/polyarch`` on Linux)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path(platformdirs.user_cache_dir("polyarch", appauthor=False))


class Cache:
    """A directory of kinds (``debs``, ``indexes``, ``layers``, ...), each a flat key → file map."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, kind: str, key: str) -> Path:
        """Where the entry would live; it may not exist."""
        return self.root / kind / key[:2] / key

    def get(self, kind: str, key: str) -> Path | None:
        p = self.path(kind, key)
        return p if p.is_file() else None

    @contextmanager
    def writer(self, kind: str, key: str) -> Iterator[BinaryIO]:
        """Open a temporary file; on a clean exit it becomes the entry, else it vanishes."""
        final = self.path(kind, key)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{key[:16]}.", suffix=".tmp")
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

    def put(self, kind: str, key: str, data: bytes) -> Path:
        with self.writer(kind, key) as f:
            f.write(data)
        return self.path(kind, key)

    def discard(self, kind: str, key: str) -> None:
        self.path(kind, key).unlink(missing_ok=True)
