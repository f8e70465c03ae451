"""containers.lock: the exact packages of every container, so every machine builds the same bytes.

``polyarch lock`` writes it next to containers.toml; ``polyarch build --locked``
builds exactly what it lists without reading any Debian index.

Format: TOML (schema ``LOCK_SCHEMA``), written by hand here so that the order
is fixed: containers, systems and packages sorted by name, one package per
line, so a refresh shows in a diff as the lines of the packages that changed.
Per container it records the inputs of containers.toml that decide the
closure (each source's name, suite, components, snapshot and priority;
package, packages, pins, base, exclude, prefer) and their hash; per container
and system each source read (its Release's date, suite and codename, the
SHA256 of the signed InRelease, the SHA256 of each Packages index: paths
below ``dists/SUITE/``, so they hold for any mirror of the archive) and every
package with its version, architecture, pool path, size, SHA256 and source.

Trust model. ``polyarch lock`` takes every hash from the chain apt trusts
(InRelease signature → index hash → package hash). ``--locked`` then does not
fetch InRelease nor any index: the lock itself is the trust anchor, and each
.deb is accepted only with the locked size and SHA256. So a lock must be
trusted like the source it sits beside: review its diffs as you review code.
Mirror-independent hashes mean a lock made against one mirror (or a snapshot)
verifies packages downloaded from any other.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import msgspec

from polyarch import tomlwrite as toml
from polyarch.config import Config, Container
from polyarch.debian.identity import Architecture, PackageName, Version
from polyarch.debian.packages import PackageRecord
from polyarch.debian.resolver import Resolution, ResolvedPackage
from polyarch.debian.sources import Source, SourceRelease
from polyarch.determinism import canonical_json
from polyarch.errors import HostError, LockError
from polyarch.files import atomic_write
from polyarch.lock_check import lock_line
from polyarch.platforms import System

LOCK_NAME = "containers.lock"
LOCK_SCHEMA = 2
"""2: several sources (each package names its source; each system lists the sources read)."""

_Hex64 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
_PoolPath = Annotated[
    str, msgspec.Meta(pattern=r"^(?!/)(?!.*(?:^|/)\.\.(?:/|$))[^\x00-\x1f]+$", max_length=4095)
]
"""Relative, no ``..``, no control characters: it is joined to the mirror's URL."""


class _Strict(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class LockedPackage(_Strict, frozen=True, kw_only=True):
    """One package of a locked closure."""

    name: PackageName
    version: Version
    architecture: Architecture
    filename: _PoolPath
    """Pool path relative to the mirror root."""
    size: Annotated[int, msgspec.Meta(ge=0)]
    sha256: _Hex64
    base: bool
    """In the closure of the base roots (bash, coreutils, ...) alone."""
    source: str
    """The name of the source it comes from (``main`` for [repository])."""


class LockedRelease(_Strict, frozen=True, kw_only=True):
    """One source as a system's closure read it: the signed state of its suite."""

    name: str
    suite: str
    codename: str
    release_date: str
    """The Release's ``Date``, RFC 3339 UTC."""
    release_file: str
    """``InRelease``, or ``Release`` (verified through ``Release.gpg``)."""
    release_sha256: _Hex64
    priority: int
    indexes: dict[str, _Hex64]
    """Index path below ``dists/SUITE/`` → SHA256 of the file the signed Release lists."""


class LockedSystem(_Strict, frozen=True, kw_only=True):
    """One container's closure on one system, and the sources' states it was taken from."""

    debian_arch: str
    sources: tuple[LockedRelease, ...]
    """Every source read for this arch, in configuration order."""
    packages: tuple[LockedPackage, ...]


class LockedSource(_Strict, frozen=True, kw_only=True):
    """One configured source, as far as it decides closures (not its mirror URL)."""

    name: str
    suite: str
    components: tuple[str, ...]
    snapshot: str = ""
    """Empty when the source is not a snapshot."""
    priority: int | None = None
    """The configured pin priority; absent: the Release's default."""


class LockInputs(_Strict, frozen=True, kw_only=True):
    """What of containers.toml decides a container's closure."""

    sources: tuple[LockedSource, ...]
    package: str
    packages: tuple[str, ...]
    pins: dict[str, str]
    """Package → the name of the source it is pinned to."""
    base: tuple[str, ...]
    exclude: tuple[str, ...]
    prefer: tuple[str, ...]


class LockedContainer(_Strict, frozen=True, kw_only=True):
    inputs_sha256: _Hex64
    inputs: LockInputs
    systems: dict[str, LockedSystem]
    """System name (``x86_64-linux``) → its closure."""


class Lock(_Strict, frozen=True, kw_only=True):
    schema: int
    containers: dict[str, LockedContainer]


# --- building a lock ----------------------------------------------------------------


def lock_path(config: Config) -> Path:
    """``containers.lock`` beside the config file."""
    return config.directory / LOCK_NAME


def container_inputs(config: Config, container: Container) -> LockInputs:
    """The config values a lock entry is valid for."""
    return LockInputs(
        sources=tuple(
            LockedSource(
                name=s.name,
                suite=s.suite,
                components=s.components,
                snapshot=s.snapshot or "",
                priority=s.priority,
            )
            for s in config.sources
        ),
        package=container.package,
        packages=tuple(container.packages),
        pins=dict(container.pins),
        base=tuple(container.base),
        exclude=tuple(container.exclude),
        prefer=tuple(container.prefer),
    )


def inputs_sha256(inputs: LockInputs) -> str:
    """The hash of ``inputs`` (canonical JSON), as stored in the lock."""
    return hashlib.sha256(canonical_json(msgspec.to_builtins(inputs))).hexdigest()


def locked_system(resolution: Resolution) -> LockedSystem:
    """The lock entry of one resolved system (its ``sources`` filled in)."""
    packages = sorted(
        (
            LockedPackage(
                name=p.record.name,
                version=p.record.version,
                architecture=p.record.architecture,
                filename=p.record.filename,
                size=p.record.size,
                sha256=p.record.sha256,
                base=p.base,
                source=p.source,
            )
            for p in resolution.packages
        ),
        key=lambda p: (p.name, p.architecture, p.sha256),
    )
    return LockedSystem(
        debian_arch=resolution.system.debian_arch,
        sources=tuple(
            LockedRelease(indexes=dict(s.indexes), **{f: getattr(s, f) for f in _RELEASE_FIELDS})
            for s in resolution.sources
        ),
        packages=tuple(packages),
    )


_RELEASE_FIELDS = tuple(f for f in LockedRelease.__struct_fields__ if f != "indexes")


def locked_container(
    config: Config, container: Container, systems: dict[str, LockedSystem]
) -> LockedContainer:
    """The lock entry of ``container`` from its systems' entries."""
    inputs = container_inputs(config, container)
    return LockedContainer(
        inputs_sha256=inputs_sha256(inputs),
        inputs=inputs,
        systems=dict(sorted(systems.items())),
    )


def new_lock(containers: dict[str, LockedContainer]) -> Lock:
    return Lock(schema=LOCK_SCHEMA, containers=dict(sorted(containers.items())))


# --- checking a lock against the config --------------------------------------------


def is_current(entry: LockedContainer | None, config: Config, container: Container) -> bool:
    """True if ``entry`` locks ``container`` as configured, for every one of its systems."""
    if entry is None or entry.inputs != container_inputs(config, container):
        return False
    return all(s.name in entry.systems for s in container.systems)


def locked_resolutions(
    lock: Lock,
    config: Config,
    container: Container,
    systems: Sequence[System],
    sources: Sequence[Source] = (),
) -> dict[System, Resolution]:
    """The locked closures of ``container`` as resolutions; LockError if the lock does not fit.

    The lock no longer fits when the container is missing from it, when an
    input (``package``, ``base``, ``sources``, ...) changed in containers.toml,
    or when a requested system was never locked. ``sources`` (as configured
    here) complete the records of the sources: a lock holds no mirror URL.
    """
    entry = _fitting_entry(lock, config, container)
    update = f"run `polyarch lock --update {container.name}`"
    results: dict[System, Resolution] = {}
    for system in systems:
        locked = entry.systems.get(system.name)
        if locked is None:
            raise LockError(
                f"containers.lock has no {system.name} packages for {container.name!r}",
                hint=update,
            )
        if locked.debian_arch != system.debian_arch:
            raise LockError(
                f"containers.lock lists {locked.debian_arch} packages for {system.name} "
                f"({system.debian_arch}) in {container.name!r}",
                hint=update,
            )
        results[system] = Resolution(
            system=system,
            container=container.name,
            packages=tuple(
                ResolvedPackage(record=_record(p), required_by=(), base=p.base, source=p.source)
                for p in locked.packages
            ),
            excluded=(),
            warnings=(),
            sources=tuple(
                _source_release(s, next((c for c in sources if c.name == s.name), None))
                for s in locked.sources
            ),
        )
    return results


def _fitting_entry(lock: Lock, config: Config, container: Container) -> LockedContainer:
    """The lock entry of ``container``, if it is there, intact and made for this config."""
    update = f"run `polyarch lock --update {container.name}`"
    entry = lock.containers.get(container.name)
    if entry is None:
        raise LockError(
            f"containers.lock has no entry for container {container.name!r}",
            hint=f"run `polyarch lock` to add it ({update.removeprefix('run ')} also works)",
        )
    if inputs_sha256(entry.inputs) != entry.inputs_sha256:
        raise LockError(
            f"containers.lock entry of {container.name!r} was edited by hand "
            "(its inputs do not match inputs_sha256)",
            hint=update,
        )
    wanted = container_inputs(config, container)
    changed = _changed_inputs(entry.inputs, wanted)
    if changed:
        raise LockError(
            f"containers.lock does not match containers.toml for {container.name!r}: "
            + "; ".join(changed),
            hint=update,
        )
    return entry


def _source_release(locked: LockedRelease, source: Source | None) -> SourceRelease:
    return SourceRelease(
        url=source.url if source else "",
        components=source.components if source else (),
        indexes=tuple(sorted(locked.indexes.items())),
        security=bool(source and source.security),
        **{f: getattr(locked, f) for f in _RELEASE_FIELDS},
    )


def _record(p: LockedPackage) -> PackageRecord:
    return PackageRecord(
        name=p.name,
        version=p.version,
        architecture=p.architecture,
        filename=p.filename,
        size=p.size,
        sha256=p.sha256,
    )


def _changed_inputs(old: LockInputs, new: LockInputs) -> list[str]:
    """``key old → new`` for every input that differs, in field order; sources one by one."""
    changes: list[str] = []
    for name in LockInputs.__struct_fields__:
        before, after = getattr(old, name), getattr(new, name)
        if name == "sources":
            changes += _changed_sources(before, after)
        elif before != after:
            changes.append(f"{name} {_show(before)} → {_show(after)}")
    return changes


def _changed_sources(old: tuple[LockedSource, ...], new: tuple[LockedSource, ...]) -> list[str]:
    before, after = {s.name: s for s in old}, {s.name: s for s in new}
    changes = [f"source {n} added" for n in after if n not in before]
    changes += [f"source {n} removed" for n in before if n not in after]
    for name in before.keys() & after.keys():
        for field in LockedSource.__struct_fields__:
            a, b = getattr(before[name], field), getattr(after[name], field)
            if a != b:
                changes.append(f"source {name}: {field} {_show(a)} → {_show(b)}")
    if not changes and old != new:
        changes.append("sources reordered")
    return sorted(changes)


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return repr(value)


# --- reading and writing ---------------------------------------------------------------


def read_lock(path: Path) -> Lock:
    """Read and validate ``containers.lock``; LockError when missing, malformed or of another schema."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LockError(
            f"{path}: no such file", hint="run `polyarch lock` to write it (needs the network)"
        ) from None
    except OSError as exc:
        raise LockError(f"{path}: cannot read: {exc.strerror}") from exc
    regenerate = "delete it and run `polyarch lock`"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise LockError(f"{path}:{line}: not UTF-8 text", hint=regenerate) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LockError(f"{path}: not valid TOML: {exc}", hint=regenerate) from exc
    schema = raw.get("schema")
    if schema != LOCK_SCHEMA:
        older = isinstance(schema, int) and not isinstance(schema, bool) and schema < LOCK_SCHEMA
        raise LockError(
            f"{path} has schema {schema!r}; this polyarch reads schema {LOCK_SCHEMA}",
            hint="run `polyarch lock --update` to rewrite it"
            if older
            else "it was written by a newer polyarch: upgrade polyarch, or run "
            "`polyarch lock --update` to rewrite it",
        )
    try:
        return msgspec.convert(raw, Lock)
    except msgspec.ValidationError as exc:
        raise LockError(f"{path}:{lock_line(text, str(exc))}: {exc}", hint=regenerate) from exc


def previous_entries(path: Path) -> dict[str, LockedContainer]:
    """The entries of the lock at ``path`` that ``polyarch lock`` may keep.

    None of a lock of an older schema can be kept (``lock --update`` rewrites
    it whole); a missing lock has none; any other unreadable lock is a LockError.
    """
    if not path.exists():
        return {}
    try:
        schema = tomllib.loads(path.read_text(encoding="utf-8")).get("schema")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        schema = None
    if isinstance(schema, int) and not isinstance(schema, bool) and schema < LOCK_SCHEMA:
        return {}
    return read_lock(path).containers


def write_lock(path: Path, lock: Lock) -> None:
    """Write ``lock`` to ``path`` atomically (a reader sees the old file or the new one)."""
    try:
        atomic_write(path, render_lock(lock).encode())
    except OSError as exc:
        raise HostError.of(exc, f"cannot write {path}") from exc


_HEADER = """\
# containers.lock: the exact packages of every container in containers.toml.
# Written by `polyarch lock`; commit it and do not edit it by hand.
# `polyarch lock --update [NAME]` refreshes it; `polyarch build --locked` uses it.
"""


def render_lock(lock: Lock) -> str:
    """The TOML text of ``lock``: sorted, one package (and one source) per line, byte-stable."""
    out = [_HEADER, f"schema = {lock.schema}\n"]
    for name, entry in sorted(lock.containers.items()):
        table = f"containers.{toml.key(name)}"
        out.append(f"\n[{table}]\ninputs_sha256 = {toml.string(entry.inputs_sha256)}\n")
        out.append(f"\n[{table}.inputs]\n")
        for field in LockInputs.__struct_fields__:
            value = getattr(entry.inputs, field)
            out.append(
                f"{field} = {toml.lines(value) if field == 'sources' else toml.value(value)}\n"
            )
        for system, locked in sorted(entry.systems.items()):
            out.append(f"\n[{table}.systems.{toml.key(system)}]\n")
            out.append(f"debian_arch = {toml.string(locked.debian_arch)}\n")
            out.append(f"sources = {toml.lines(locked.sources)}\n")
            out.append(f"packages = {toml.lines(locked.packages)}\n")
    return "".join(out)
