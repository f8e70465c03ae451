"""list: every container of containers.toml, what it runs, its versions and its last build.

The version of a container's package on each system comes from
containers.lock when its entry is current (nothing is read from the network),
else from resolving against the archive (the cached indexes; the Release is
fetched), or not at all with ``locked_only``. The last build is what
``OUT/NAME/oci/`` holds: the index digest and each system's manifest digest,
read back and checked like every layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from polyarch import lock as lockfile
from polyarch.config import Container
from polyarch.determinism import Digest
from polyarch.errors import ImageError
from polyarch.image.layout_reader import read_oci_layout
from polyarch.outputs import Outputs
from polyarch.platforms import SYSTEMS
from polyarch.reference import DEFAULT_TAG
from polyarch.workflows.resolve import Session, resolve_container

VersionSource = Literal["lock", "archive", "none"]


@dataclass(frozen=True, slots=True)
class LastBuild:
    """What ``polyarch build`` last wrote for a container."""

    path: Path
    index_digest: Digest
    manifests: tuple[tuple[str, Digest], ...]
    """(system name, manifest digest) of each system built, in system-table order."""


@dataclass(frozen=True, slots=True)
class Listed:
    container: Container
    versions: tuple[tuple[str, str | None], ...]
    """(system name, version of the container's package there, or None if not known)."""
    version_source: VersionSource
    build: LastBuild | None
    build_problem: str | None = None
    """Why ``OUT/NAME/oci`` could not be read, when it exists but is damaged."""


def list_containers(session: Session, *, out_dir: Path, locked_only: bool = False) -> list[Listed]:
    """One ``Listed`` per container, in containers.toml order."""
    path = lockfile.lock_path(session.config)
    lock = lockfile.read_lock(path) if path.exists() else None
    listed = []
    for container in session.config.containers:
        versions, source = _versions(session, container, lock, locked_only)
        build, problem = last_build(out_dir, container.name)
        listed.append(Listed(container, versions, source, build, problem))
    return listed


def _versions(
    session: Session, container: Container, lock: lockfile.Lock | None, locked_only: bool
) -> tuple[tuple[tuple[str, str | None], ...], VersionSource]:
    systems = container.systems
    entry = lock.containers.get(container.name) if lock else None
    if entry is not None and lockfile.is_current(entry, session.config, container):
        return tuple(
            (s.name, _locked_version(entry.systems[s.name].packages, container.package))
            for s in systems
        ), "lock"
    if locked_only:
        return tuple((s.name, None) for s in systems), "none"
    resolutions = resolve_container(session, container, systems)
    return tuple(
        (
            s.name,
            next(
                (p.record.version for p in r.packages if p.record.name == container.package), None
            ),
        )
        for s, r in resolutions.items()
    ), "archive"


def _locked_version(packages: Sequence[lockfile.LockedPackage], name: str) -> str | None:
    return next((p.version for p in packages if p.name == name), None)


def last_build(out_dir: Path, name: str) -> tuple[LastBuild | None, str | None]:
    """The last build in ``OUT/NAME/oci``; (None, None) when there is none, (None, why) if damaged."""
    layout_path = Outputs(out_dir, name).layout
    if not layout_path.exists():
        return None, None
    try:
        layout = read_oci_layout(layout_path)
        tag = layout.tags[0] if layout.tags else DEFAULT_TAG
        images = layout.images(tag)
        index_digest = layout.resolve(tag).digest
    except ImageError as exc:
        return None, exc.message
    order = {s: i for i, s in enumerate(SYSTEMS)}
    manifests = sorted(
        ((image.system, image.manifest.digest) for image in images if image.system is not None),
        key=lambda item: order[item[0]],
    )
    built = tuple((system.name, digest) for system, digest in manifests)
    return LastBuild(Outputs(out_dir, name).root, index_digest, built), None
