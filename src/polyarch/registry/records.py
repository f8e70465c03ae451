"""Which repositories of a registry hold which blob, as this machine has seen: mount hints."""

from __future__ import annotations

import json
from pathlib import Path

import filelock

from polyarch.cache import REGISTRY_RECORDS_DIR, default_cache_dir
from polyarch.determinism import canonical_json
from polyarch.files import atomic_write


def default_record_dir() -> Path:
    """``<cache>/registry-blobs``: records live beside the cache they describe."""
    return default_cache_dir() / REGISTRY_RECORDS_DIR


def record_path(record_dir: Path, registry: str) -> Path:
    safe = "".join(c if c.isalnum() or c in ".-" else "_" for c in registry)
    return record_dir / f"{safe}.json"


class BlobRecord:
    """Which repositories of one registry hold a blob, as this machine has pushed or seen.

    A JSON file per registry in the cache dir; merged under a file lock on save so
    parallel pushes do not lose each other's entries. Only a hint for mounts: a
    stale entry costs one failed mount request.
    """

    MAX_REPOS = 4

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, list[str]] = self._load()
        self._new: dict[str, list[str]] = {}

    def _load(self) -> dict[str, list[str]]:
        try:
            data = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return {}
        return (
            {
                k: [r for r in v if isinstance(r, str)]
                for k, v in data.items()
                if isinstance(v, list)
            }
            if isinstance(data, dict)
            else {}
        )

    def repositories(self, digest: str) -> list[str]:
        return list(self._entries.get(digest, ()))

    def add(self, digest: str, repository: str) -> None:
        for table in (self._entries, self._new):
            repos = table.setdefault(digest, [])
            if repository in repos:
                repos.remove(repository)
            repos.insert(0, repository)
            del repos[self.MAX_REPOS :]

    def save(self) -> None:
        if not self._new:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with filelock.FileLock(str(self.path) + ".lock", timeout=30):
                merged = self._load()
                for digest, repos in self._new.items():
                    merged[digest] = list(dict.fromkeys([*repos, *merged.get(digest, [])]))[
                        : self.MAX_REPOS
                    ]
                atomic_write(self.path, canonical_json(merged))
        except (OSError, filelock.Timeout):
            # Losing the hint only costs a future upload instead of a mount.
            return
        self._new.clear()
