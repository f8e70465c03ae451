"""Every package source of a project, each verified on its own chain, read side by side.

An ``Archive`` holds one ``Repository`` per source (main, updates, security,
backports, third-party). Each source's InRelease is checked against *its*
keyring, its indexes against its Release, its .debs against its indexes:
the chain of ``repository.py``, once per source, never mixed. The sources'
Releases are fetched in parallel, so the extra sources cost a warm build one
round trip, not one per source.

A source whose Release does not list an architecture is left out for that
architecture, as apt does (the security archive carries no s390x); the main
source must carry every architecture that is built.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

import httpx

from polyarch.cache import Cache
from polyarch.debian.packages import PackageRecord
from polyarch.debian.repository import Release, Repository
from polyarch.debian.sources import Source, SourceRelease
from polyarch.determinism import rfc3339
from polyarch.errors import LockError
from polyarch.progress import NULL_PROGRESS, Progress

if TYPE_CHECKING:
    from polyarch.debian.universe import SourceIndex

_T = TypeVar("_T")


class Archive:
    """The verified sources of one project, in configuration order (main first)."""

    def __init__(
        self,
        sources: Sequence[Source],
        cache: Cache,
        *,
        client: httpx.Client | None = None,
        progress: Progress = NULL_PROGRESS,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        if not sources:
            raise ValueError("an archive needs at least its main source")
        # The main repository owns the client unless one is given; the others share
        # it, so closing the main one (``Session.repository.close()``) closes it.
        main = Repository(sources[0], cache, client=client, progress=progress, now=now)
        others = [
            Repository(s, cache, client=main.client, progress=progress, now=now)
            for s in sources[1:]
        ]
        self.repositories = (main, *others)
        self._indexes: dict[str, tuple[SourceIndex, ...]] = {}
        self._releases: tuple[Release, ...] | None = None

    @property
    def main(self) -> Repository:
        return self.repositories[0]

    @property
    def client(self) -> httpx.Client:
        return self.main.client

    @property
    def sources(self) -> tuple[Source, ...]:
        return tuple(r.source for r in self.repositories)

    def close(self) -> None:
        self.main.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def repository(self, name: str) -> Repository:
        for repository in self.repositories:
            if repository.source.name == name:
                return repository
        raise LockError(
            f"no source {name!r} is configured (known: "
            + ", ".join(r.source.name for r in self.repositories)
            + ")",
            hint="run `polyarch lock --update` after changing the sources",
        )

    def releases(self) -> tuple[Release, ...]:
        """Every source's verified Release, fetched side by side; the first failure is raised."""
        if self._releases is None:  # asked for often (``readable``, ``used``): threads once
            self._releases = tuple(_parallel([r.release for r in self.repositories]))
        return self._releases

    def readable(self, arch: str) -> tuple[Repository, ...]:
        """The repositories that carry ``arch``: always the main one, the others if listed."""
        self.releases()
        return (self.main, *(r for r in self.repositories[1:] if r.supports(arch)))

    def source_indexes(self, arch: str) -> tuple[SourceIndex, ...]:
        """Each source's index for ``arch`` with its priority, downloaded side by side."""
        from polyarch.debian.universe import SourceIndex  # a stamped warm build reads none

        if arch not in self._indexes:
            repositories = self.readable(arch)
            indexes = _parallel([functools.partial(r.index, arch) for r in repositories])
            self._indexes[arch] = tuple(
                SourceIndex(r.source.name, r.priority(), index)
                for r, index in zip(repositories, indexes, strict=True)
            )
        return self._indexes[arch]

    def used(self, arch: str) -> tuple[SourceRelease, ...]:
        """What a closure for ``arch`` was read from: each source, its Release and indexes."""
        return tuple(source_release(r, arch) for r in self.readable(arch))

    def locator(self, source_of: Mapping[str, str]) -> DebLocator:
        """Where to download each .deb: ``source_of`` maps its SHA256 to its source's name."""
        urls = {name: self.repository(name).source.url for name in set(source_of.values())}
        return DebLocator(self.client, {sha: urls[name] for sha, name in source_of.items()})


class DebLocator:
    """The HTTP client and each .deb's URL, for ``fetch_debs`` over several sources."""

    def __init__(self, client: httpx.Client, base_urls: Mapping[str, str]) -> None:
        self.client = client
        self._base_urls = dict(base_urls)

    def url_of(self, record: PackageRecord) -> str:
        return f"{self._base_urls[record.sha256]}/{record.filename.lstrip('/')}"


def source_release(repository: Repository, arch: str) -> SourceRelease:
    """The record of one verified source as used for ``arch``."""
    source, release = repository.source, repository.release()
    return SourceRelease(
        name=source.name,
        url=source.url,
        suite=source.suite,
        codename=release.codename,
        components=source.components,
        priority=repository.priority(),
        release_date=rfc3339(int(release.date.timestamp())),
        release_file=release.file_name,
        release_sha256=release.file_sha256,
        indexes=tuple(sorted(repository.index_hashes(arch).items())),
        security=source.security,
    )


def _parallel(calls: Sequence[Callable[[], _T]]) -> list[_T]:
    """Each call's result, in order; they run side by side (network-bound: Releases, indexes)."""
    if len(calls) <= 1:
        return [call() for call in calls]
    with ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix="source") as pool:
        futures = [pool.submit(call) for call in calls]
        # In order, so the first source's error is the one raised, whatever finished first.
        return [future.result() for future in futures]
