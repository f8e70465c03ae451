"""outdated: would a rebuild now give other packages than the lock (or the last build) has?

Each container is resolved afresh against every configured source, as
``polyarch lock --update`` would, and compared package by package with its
entry in containers.lock, or, without one, with the dpkg status files of the
last build under ``--out`` (versions only). A scheduled job runs it and
rebuilds and re-pushes only the containers it names; the changes say which
new versions come from a security suite.
"""

from __future__ import annotations

import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from polyarch import lock as lockfile
from polyarch.config import Container
from polyarch.errors import ImageError, LockError
from polyarch.image.filesystem import STATUS_DIR
from polyarch.image.layout_reader import read_oci_layout
from polyarch.lock_diff import Held, PackageChange, held, package_changes
from polyarch.outputs import Outputs
from polyarch.platforms import System
from polyarch.workflows.resolve import Session, resolve_fresh

Baseline = Literal["lock", "build"]
_STATUS_PREFIX = STATUS_DIR.lstrip("/") + "/"
_MAX_STATUS_BYTES = 1 << 20
"""A dpkg status stanza is a few kB; a larger entry is not one polyarch wrote."""


@dataclass(frozen=True, slots=True)
class Change:
    """A package that differs now, and whether its new version comes from a security suite."""

    package: PackageChange
    security: bool


@dataclass(frozen=True, slots=True)
class Outdated:
    """One container compared with the sources as they are now."""

    container: str
    baseline: Baseline
    path: Path
    """containers.lock, or the build's ``OUT/NAME`` directory."""
    changes: tuple[Change, ...]
    lock_matches_config: bool | None
    """False when containers.toml changed since the lock (then ``lock --update`` is due
    whatever the archive did); None when compared with a build."""

    @property
    def rebuild_needed(self) -> bool:
        return bool(self.changes) or self.lock_matches_config is False

    @property
    def security_fixes(self) -> int:
        return sum(1 for c in self.changes if c.security)


def outdated_containers(
    session: Session, containers: Sequence[Container], *, out_dir: Path
) -> list[Outdated]:
    """Compare each container's lock entry (else its last build) with a fresh resolution."""
    path = lockfile.lock_path(session.config)
    entries = lockfile.read_lock(path).containers if path.exists() else {}
    results = []
    for container in containers:
        entry = entries.get(container.name)
        if entry is not None:
            systems = _configured(container, set(entry.systems))
            before = {
                s: held(entry.systems[s.name].packages) for s in systems if s.name in entry.systems
            }
            matches = lockfile.is_current(entry, session.config, container)
            results.append(_compare(session, container, "lock", path, systems, before, matches))
            continue
        outputs = Outputs(out_dir, container.name)
        if not outputs.layout.is_dir():
            raise LockError(
                f"nothing to compare {container.name!r} with: containers.lock has no entry "
                f"for it, and {outputs.root} holds no build",
                hint="run `polyarch lock` (or build it) first",
            )
        built = built_packages(outputs.layout)
        systems = _configured(container, {s.name for s in built})
        results.append(_compare(session, container, "build", outputs.root, systems, built, None))
    return results


def _configured(container: Container, recorded: set[str]) -> tuple[System, ...]:
    """The container's systems that the lock or build has, in config order (else all)."""
    return tuple(s for s in container.systems if s.name in recorded) or container.systems


def _compare(
    session: Session,
    container: Container,
    baseline: Baseline,
    path: Path,
    systems: tuple[System, ...],
    before: dict[System, dict[str, Held]],
    matches: bool | None,
) -> Outdated:
    security = {s.name for s in session.sources if s.security}
    changes: list[Change] = []
    for system, resolution in resolve_fresh(session, container, systems).items():
        now = {
            p.record.name: Held(p.record.version, p.record.sha256, p.source)
            for p in resolution.packages
        }
        for change in package_changes(system.name, before.get(system, {}), now):
            after = change.after
            changes.append(Change(change, after is not None and after.source in security))
    return Outdated(container.name, baseline, path, tuple(changes), matches)


# --- what a build holds ----------------------------------------------------------------


def built_packages(layout_dir: Path) -> dict[System, dict[str, Held]]:
    """Package → version of each system's image in an OCI layout, from its dpkg status files."""
    layout = read_oci_layout(layout_dir)
    found: dict[System, dict[str, Held]] = {}
    for tag in layout.tags:
        for image in layout.images(tag):
            if image.system is None or image.system in found:
                continue
            packages: dict[str, Held] = {}
            for descriptor in image.layers:
                packages.update(_status_files(layout.checked_blob(descriptor)))
            found[image.system] = packages
    if not found:
        raise ImageError(f"{layout_dir} holds no image", hint="build the container again")
    return found


def _status_files(blob: Path) -> dict[str, Held]:
    """The packages whose status file a gzip layer holds (read as a stream, never unpacked)."""
    packages: dict[str, Held] = {}
    try:
        with blob.open("rb") as f, tarfile.open(fileobj=f, mode="r|gz") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if not (name.startswith(_STATUS_PREFIX) and member.isfile()):
                    continue
                if member.size > _MAX_STATUS_BYTES:
                    raise ImageError(f"{blob}: {name} is too large to be a dpkg status file")
                data = tar.extractfile(member)
                fields = _stanza(data.read().decode("utf-8", "replace") if data else "")
                if "Package" in fields and "Version" in fields:
                    packages[fields["Package"]] = Held(fields["Version"])
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise ImageError(
            f"cannot read layer {blob}: {exc}", hint="build the container again"
        ) from exc
    return packages


def _stanza(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if colon and line[:1] not in (" ", "\t"):
            fields[key.strip()] = value.strip()
    return fields
