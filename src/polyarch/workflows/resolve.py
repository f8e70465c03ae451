"""resolve: which packages each system's image of a container is made of, verified."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from polyarch.cache import Cache
from polyarch.config import Config, Container
from polyarch.debian.archive import Archive
from polyarch.debian.packages import PackageRecord
from polyarch.debian.repository import Repository
from polyarch.debian.sources import Source, find_sources
from polyarch.errors import (
    CacheError,
    IntegrityError,
    LockError,
    PackageError,
    PolyarchError,
    ResolveError,
)
from polyarch.platforms import System
from polyarch.progress import NULL_PROGRESS, Progress

# The lock's modules load only for --locked/--offline builds and `polyarch lock`:
# a plain build never reads containers.lock (issue 13: warm start-up).
if TYPE_CHECKING:
    from polyarch import lock as lockfile
    from polyarch import lock_diff
    from polyarch.debian.identity import Claim
    from polyarch.debian.resolver import Resolution
    from polyarch.debian.universe import PackageUniverse


@dataclass
class Session:
    """What one polyarch invocation shares between containers and systems.

    The sources (signed metadata, one chain per source) are verified once, and
    each arch's package universe is built once, however many containers use it.

    With ``lock`` set (``--locked``) closures come from containers.lock and no
    Release or index is read. ``offline`` (which needs ``lock``) forbids the
    network: whatever the cache lacks is a ``CacheError`` listing it, and the
    HTTP client refuses every request, so nothing can slip through.
    """

    config: Config
    cache: Cache
    progress: Progress = NULL_PROGRESS
    client: httpx.Client | None = None
    lock: lockfile.Lock | None = None
    offline: bool = False
    _archive: Archive | None = None
    _universes: dict[str, PackageUniverse] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    sharing: dict[str, dict[str, frozenset[str]]] = field(default_factory=dict)
    """Per system: package name → the project's containers that use it (``workflows.sharing``)."""

    @property
    def archive(self) -> Archive:
        """Every configured source, each verified on its own chain when first read."""
        with self._lock:  # systems resolve in threads: one archive for all of them
            return self._make_archive()

    def _make_archive(self) -> Archive:
        if self._archive is None:
            client = self.client
            if self.offline:
                client = httpx.Client(transport=_OfflineTransport())
            self._archive = Archive(
                find_sources(self.config), self.cache, client=client, progress=self.progress
            )
        return self._archive

    @property
    def sources(self) -> tuple[Source, ...]:
        """The configured sources, main first (read from local files only)."""
        return self.archive.sources

    @property
    def repository(self) -> Repository:
        """The main source; closing it closes the HTTP client every source shares."""
        return self.archive.main

    def close(self) -> None:
        if self._archive is not None:
            self._archive.close()

    def universe(self, system: System) -> PackageUniverse:
        # Here, as resolve and fetch below: a warm build answered by its stamp needs none.
        from polyarch.debian.universe import PackageUniverse

        arch = system.debian_arch
        if arch not in self._universes:
            self._universes[arch] = PackageUniverse(self.archive.source_indexes(arch), arch)
        return self._universes[arch]


class _OfflineTransport(httpx.BaseTransport):
    """Refuses every request: an offline build must never reach the network."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        raise CacheError(
            f"offline: would download {request.url}, which is not in the cache",
            hint="run the build once online, or `polyarch cache pull REF`",
        )


def resolve_container(
    session: Session, container: Container, systems: Sequence[System]
) -> dict[System, Resolution]:
    """The closure of ``container`` for each system, base packages flagged.

    With ``session.lock`` the closures are the locked ones (``LockError`` if
    the lock does not match containers.toml). Otherwise they are resolved
    from the archive's indexes; a root package that exists on some systems
    but not others gets an error naming the systems that lack it.
    """
    if session.lock is not None:
        from polyarch import lock as lockfile

        return lockfile.locked_resolutions(
            session.lock, session.config, container, systems, session.sources
        )
    if session.offline:
        raise LockError(
            "an offline build needs containers.lock (indexes are not read offline)",
            hint="run `polyarch lock` while online, then build with --offline",
        )
    return resolve_fresh(session, container, systems)


def resolve_fresh(
    session: Session, container: Container, systems: Sequence[System]
) -> dict[System, Resolution]:
    """The closures resolved from the sources as they are now, whatever the lock says."""
    from polyarch.debian.resolver import resolve

    results: dict[System, Resolution] = {}
    for system in systems:
        universe = session.universe(system)
        missing = [name for name in container.roots if not universe.has(name)]
        if missing:
            _raise_missing(session, container, system, missing[0])
        resolution = resolve(
            universe,
            system=system,
            container=container.name,
            base=container.base,
            roots=(container.package, *container.packages),
            exclude=container.exclude,
            prefer=container.prefer,
            pins=dict(container.pins),
        )
        for warning in resolution.warnings:
            session.progress.warn(f"{container.name} ({system.name}): {warning}")
        results[system] = dataclasses.replace(
            resolution, sources=session.archive.used(system.debian_arch)
        )
    return results


def _raise_missing(session: Session, container: Container, system: System, name: str) -> None:
    elsewhere = [
        other.name
        for other in container.systems
        if other != system and session.universe(other).has(name)
    ]
    if elsewhere:
        raise ResolveError(
            f"{container.name}: package {name!r} is not available for {system.name} "
            f"({system.debian_arch}); it exists for {', '.join(elsewhere)}",
            hint=f"drop {system.name} from the container's systems, or choose another package",
        )
    near = session.universe(system).near_names(name)
    hint = f"did you mean {' or '.join(repr(n) for n in near)}?" if near else "check the name"
    raise ResolveError(
        f"{container.name}: no package {name!r} in the archive for {system.name} "
        f"({system.debian_arch})",
        hint=hint,
    )


def download(
    session: Session,
    resolutions: dict[System, Resolution],
    *,
    only: Collection[str] | None = None,
) -> dict[str, Path]:
    """Fetch the packages of ``resolutions`` (verified, cached); sha256 → path.

    ``only`` limits it to those sha256s. Offline, a package the cache lacks
    is not fetched: a ``CacheError`` lists every missing one.
    """
    from polyarch.debian.fetch import cached_deb, fetch_debs

    records = {p.record.sha256: p.record for r in resolutions.values() for p in r.packages}
    source_of = {p.record.sha256: p.source for r in resolutions.values() for p in r.packages}
    wanted = sorted(records if only is None else set(only) & records.keys())
    if session.offline:
        found: dict[str, Path] = {}
        missing: list[str] = []
        for sha256 in wanted:
            path = cached_deb(records[sha256], session.cache)
            if path is None:
                r = records[sha256]
                missing.append(f"{r.name} {r.version} ({r.architecture})")
            else:
                found[sha256] = path
        if missing:
            raise CacheError(
                f"offline, and {len(missing)} package(s) are not in the cache "
                f"{session.cache.root}: {', '.join(sorted(missing))}",
                hint="build once online with this lock, or `polyarch cache pull REF`",
            )
        return found
    if not wanted:
        return {}  # nothing to fetch: do not even set up the mirror's HTTP client
    try:
        return fetch_debs(
            [records[k] for k in wanted],
            session.archive.locator({k: source_of[k] for k in wanted}),
            session.cache,
            progress=session.progress,
            anchor=partial(_anchor, session, resolutions),
        )
    except IntegrityError as exc:
        if session.lock is None:
            raise
        # The lock is the trust anchor of a locked build: a file it does not describe is
        # a lock error, whichever side is wrong.
        raise LockError(
            exc.message,
            hint="the mirror serves another file than containers.lock names: if the lock "
            "was edited, review the change; else try another mirror",
        ) from exc


def _anchor(session: Session, resolutions: dict[System, Resolution], record: PackageRecord) -> str:
    """What vouches for ``record``'s size and SHA256: its index, or its line of containers.lock."""
    if session.lock is None:
        return "its index"
    from polyarch import lock as lockfile

    for system, resolution in resolutions.items():
        line = _lock_line(session, resolution.container, system, record.sha256)
        if line:
            return line
    return str(lockfile.lock_path(session.config))


def _lock_line(session: Session, container: str, system: System, sha256: str) -> str | None:
    from polyarch import lock as lockfile
    from polyarch.lock_check import package_index, package_line

    assert session.lock is not None
    entry = session.lock.containers.get(container)
    locked = entry.systems if entry is not None else {}
    packages = {name: s.packages for name, s in locked.items()}
    index = package_index(packages, system.name, sha256)
    if index is None:
        return None
    return package_line(lockfile.lock_path(session.config), container, system.name, index)


def claim_refused(
    session: Session, container: str, system: System, claim: Claim, differences: list[str]
) -> PolyarchError:
    """The error for a .deb that is not what its lock entry (LockError) or index record says."""
    what = f"{container} ({system.name}): package {claim.name} {claim.version}"
    if session.lock is not None:
        where = _lock_line(session, container, system, claim.sha256) or "containers.lock"
        return LockError(
            f"{where}: {what}: " + "; ".join(differences),
            hint=f"the lock does not describe the .deb it names; review how it changed, "
            f"then run `polyarch lock --update {container}`",
        )
    return PackageError(
        f"{what}: its index record says " + "; ".join(differences),
        hint="the archive describes this package falsely; remove it from the container",
    )


def lock_containers(
    session: Session,
    containers: Sequence[Container],
    *,
    update: Collection[str] | bool = False,
) -> tuple[lockfile.Lock, list[lock_diff.LockUpdate]]:
    """The lock for ``containers``, re-resolving only what needs it; also what changed.

    An entry is resolved afresh when it is missing, no longer matches
    containers.toml, or is named in ``update`` (``True``: every container).
    Others are kept byte for byte, so ``polyarch lock`` on a current lock
    reads nothing from the network. Entries of containers no longer in the
    config are dropped. The caller writes the result (``write_lock``).
    """
    from polyarch import lock as lockfile
    from polyarch import lock_diff

    old = lockfile.previous_entries(lockfile.lock_path(session.config))
    new: dict[str, lockfile.LockedContainer] = {}
    updates: list[lock_diff.LockUpdate] = []
    for container in containers:
        entry = old.get(container.name)
        forced = update is True or (not isinstance(update, bool) and container.name in update)
        if not forced and lockfile.is_current(entry, session.config, container):
            assert entry is not None
            new[container.name] = entry
            updates.append(lock_diff.LockUpdate(container.name, "unchanged"))
            continue
        fresh = _lock_entry(session, container)
        new[container.name] = fresh
        changes = tuple(lock_diff.lock_changes(entry, fresh)) if entry else ()
        action = "locked" if entry is None else ("updated" if fresh != entry else "unchanged")
        updates.append(lock_diff.LockUpdate(container.name, action, changes))
    for name in sorted(old.keys() - new.keys()):
        updates.append(lock_diff.LockUpdate(name, "removed"))
    return lockfile.new_lock(new), updates


def _lock_entry(session: Session, container: Container) -> lockfile.LockedContainer:
    from polyarch import lock as lockfile

    resolutions = resolve_fresh(session, container, container.systems)
    systems: dict[str, lockfile.LockedSystem] = {
        s.name: lockfile.locked_system(r) for s, r in resolutions.items()
    }
    return lockfile.locked_container(session.config, container, systems)
