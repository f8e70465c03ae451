"""resolve: which packages each system's image of a container is made of, verified."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from polyarch.cache import Cache
from polyarch.config import Config, Container
from polyarch.debian.fetch import fetch_debs
from polyarch.debian.repository import Release, Repository, find_source
from polyarch.debian.resolver import PackageUniverse, Resolution, resolve
from polyarch.errors import ResolveError
from polyarch.platforms import System
from polyarch.progress import NULL_PROGRESS, Progress

RESOLVE_SCHEMA = "polyarch.resolve/v1"


@dataclass
class Session:
    """What one polyarch invocation shares between containers and systems.

    The repository (signed metadata) is verified once, and each arch's package
    universe is built once, however many containers use it.
    """

    config: Config
    cache: Cache
    progress: Progress = NULL_PROGRESS
    client: httpx.Client | None = None
    _repository: Repository | None = None
    _universes: dict[str, PackageUniverse] = field(default_factory=dict)

    @property
    def repository(self) -> Repository:
        if self._repository is None:
            source = find_source(self.config.repository)
            self._repository = Repository(
                source, self.cache, client=self.client, progress=self.progress
            )
        return self._repository

    def release(self) -> Release:
        return self.repository.release()

    def universe(self, system: System) -> PackageUniverse:
        arch = system.debian_arch
        if arch not in self._universes:
            self._universes[arch] = PackageUniverse(self.repository.index(arch), arch)
        return self._universes[arch]


def resolve_container(
    session: Session, container: Container, systems: Sequence[System]
) -> dict[System, Resolution]:
    """The closure of ``container`` for each system, base packages flagged.

    A root package that exists on some systems but not others gets an error
    naming the systems that lack it, instead of a bare "no such package".
    """
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
        )
        for warning in resolution.warnings:
            session.progress.warn(f"{container.name} ({system.name}): {warning}")
        results[system] = resolution
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


def download(session: Session, resolutions: dict[System, Resolution]) -> dict[str, Path]:
    """Fetch every package of ``resolutions`` (verified, cached); sha256 → path."""
    records = {p.record.sha256: p.record for r in resolutions.values() for p in r.packages}
    return fetch_debs(
        [records[k] for k in sorted(records)],
        session.repository,
        session.cache,
        progress=session.progress,
    )


def resolution_json(container: Container, resolutions: dict[System, Resolution]) -> dict[str, Any]:
    """The stable ``--json`` object (schema ``polyarch.resolve/v1``, see docs/JSON.md)."""
    return {
        "schema": RESOLVE_SCHEMA,
        "container": container.name,
        "package": container.package,
        "systems": {
            system.name: {
                "debian_arch": system.debian_arch,
                "platform": system.oci_platform,
                "excluded": list(r.excluded),
                "packages": [
                    {
                        "name": p.record.name,
                        "version": p.record.version,
                        "architecture": p.record.architecture,
                        "size": p.record.size,
                        "sha256": p.record.sha256,
                        "filename": p.record.filename,
                        "base": p.base,
                        "required_by": list(p.required_by),
                    }
                    for p in r.packages
                ],
            }
            for system, r in resolutions.items()
        },
    }
