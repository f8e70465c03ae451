"""containers.lock: the exact packages of every container, so every machine builds the same bytes.

``polyarch lock`` writes it next to containers.toml; ``polyarch build --locked``
builds exactly what it lists without reading any Debian index.

Format: TOML (schema ``LOCK_SCHEMA``), written by hand here so that the order
is fixed: containers, systems and packages sorted by name, one package per
line, so a refresh shows in a diff as the lines of the packages that changed.
Per container it records the inputs of containers.toml that decide the
closure (suite, components, snapshot, package, packages, base, exclude,
prefer) and their hash; per container and system the Release's date, suite
and codename, the SHA256 of each Packages index the closure came from (paths
below ``dists/SUITE/``, so they hold for any mirror of the archive) and every
package with its version, architecture, pool path, size and SHA256.

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
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated

import msgspec

from polyarch.config import Config, Container
from polyarch.debian.identity import Architecture, PackageName, Version
from polyarch.debian.packages import PackageRecord
from polyarch.debian.resolver import Resolution, ResolvedPackage
from polyarch.determinism import canonical_json, rfc3339
from polyarch.errors import HostError, LockError
from polyarch.files import atomic_write
from polyarch.lock_check import lock_line
from polyarch.platforms import System

LOCK_NAME = "containers.lock"
LOCK_SCHEMA = 1

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


class LockedSystem(_Strict, frozen=True, kw_only=True):
    """One container's closure on one system, and the archive state it was taken from."""

    debian_arch: str
    release_date: str
    """The Release's ``Date``, RFC 3339 UTC."""
    suite: str
    codename: str
    indexes: dict[str, _Hex64]
    """Index path below ``dists/SUITE/`` → SHA256 of the file the signed Release lists."""
    packages: tuple[LockedPackage, ...]


class LockInputs(_Strict, frozen=True, kw_only=True):
    """What of containers.toml decides a container's closure."""

    suite: str
    components: tuple[str, ...]
    snapshot: str
    """Empty when the repository is not a snapshot."""
    package: str
    packages: tuple[str, ...]
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
    repo = config.repository
    return LockInputs(
        suite=repo.suite,
        components=tuple(repo.components),
        snapshot=repo.snapshot or "",
        package=container.package,
        packages=tuple(container.packages),
        base=tuple(container.base),
        exclude=tuple(container.exclude),
        prefer=tuple(container.prefer),
    )


def inputs_sha256(inputs: LockInputs) -> str:
    """The hash of ``inputs`` (canonical JSON), as stored in the lock."""
    return hashlib.sha256(canonical_json(msgspec.to_builtins(inputs))).hexdigest()


def locked_system(
    resolution: Resolution,
    *,
    release_date: datetime,
    suite: str,
    codename: str,
    indexes: dict[str, str],
) -> LockedSystem:
    """The lock entry of one resolved system."""
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
            )
            for p in resolution.packages
        ),
        key=lambda p: (p.name, p.architecture, p.sha256),
    )
    return LockedSystem(
        debian_arch=resolution.system.debian_arch,
        release_date=rfc3339(int(release_date.timestamp())),
        suite=suite,
        codename=codename,
        indexes=dict(sorted(indexes.items())),
        packages=tuple(packages),
    )


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
    lock: Lock, config: Config, container: Container, systems: Sequence[System]
) -> dict[System, Resolution]:
    """The locked closures of ``container`` as resolutions; LockError if the lock does not fit.

    The lock no longer fits when the container is missing from it, when an
    input (``package``, ``base``, ``suite``, ...) changed in containers.toml,
    or when a requested system was never locked.
    """
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
                ResolvedPackage(record=_record(p), required_by=(), base=p.base)
                for p in locked.packages
            ),
            excluded=(),
            warnings=(),
        )
    return results


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
    """``key: old → new`` for every input that differs, in field order."""
    changes: list[str] = []
    for name in LockInputs.__struct_fields__:
        before, after = getattr(old, name), getattr(new, name)
        if before != after:
            changes.append(f"{name} {_show(before)} → {_show(after)}")
    return changes


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(repr(v) for v in value) + "]"
    return repr(value)


def lock_changes(old: LockedContainer | None, new: LockedContainer) -> list[str]:
    """What a refresh changed, one line each: ``SYSTEM: + name version``, ``- ...``, ``name a → b``."""
    lines: list[str] = []
    for system, entry in new.systems.items():
        before = {
            p.name: p
            for p in (old.systems[system].packages if old and system in old.systems else ())
        }
        after = {p.name: p for p in entry.packages}
        for name in sorted(before.keys() | after.keys()):
            a, b = before.get(name), after.get(name)
            if a is None and b is not None:
                lines.append(f"{system}: + {name} {b.version}")
            elif b is None and a is not None:
                lines.append(f"{system}: - {name} {a.version}")
            elif a is not None and b is not None and a.sha256 != b.sha256:
                lines.append(f"{system}: {name} {a.version} → {b.version}")
    return lines


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
        raise LockError(
            f"{path} has schema {schema!r}; this polyarch reads schema {LOCK_SCHEMA}",
            hint="run `polyarch lock --update` to rewrite it",
        )
    try:
        return msgspec.convert(raw, Lock)
    except msgspec.ValidationError as exc:
        raise LockError(f"{path}:{lock_line(text, str(exc))}: {exc}", hint=regenerate) from exc


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
    """The TOML text of ``lock``: sorted, one package per line, byte-stable."""
    out = [_HEADER, f"schema = {lock.schema}\n"]
    for name, entry in sorted(lock.containers.items()):
        table = f"containers.{_key(name)}"
        out.append(f"\n[{table}]\ninputs_sha256 = {_str(entry.inputs_sha256)}\n")
        out.append(f"\n[{table}.inputs]\n")
        for field in LockInputs.__struct_fields__:
            out.append(f"{field} = {_value(getattr(entry.inputs, field))}\n")
        for system, locked in sorted(entry.systems.items()):
            out.append(f"\n[{table}.systems.{_key(system)}]\n")
            out.append(f"debian_arch = {_str(locked.debian_arch)}\n")
            out.append(f"release_date = {_str(locked.release_date)}\n")
            out.append(f"suite = {_str(locked.suite)}\n")
            out.append(f"codename = {_str(locked.codename)}\n")
            indexes = ", ".join(f"{_key(k)} = {_str(v)}" for k, v in sorted(locked.indexes.items()))
            out.append(f"indexes = {{ {indexes} }}\n" if indexes else "indexes = {}\n")
            out.append("packages = [\n")
            for p in locked.packages:
                fields = ", ".join(
                    f"{f} = {_value(getattr(p, f))}" for f in LockedPackage.__struct_fields__
                )
                out.append(f"  {{ {fields} }},\n")
            out.append("]\n")
    return "".join(out)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _str(key)


def _str(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _str(value)
    if isinstance(value, Iterable):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to containers.lock")


@dataclass(frozen=True, slots=True)
class LockUpdate:
    """What ``polyarch lock`` did to one container."""

    name: str
    action: str
    """``locked`` (new), ``updated`` (re-resolved), ``unchanged`` (kept as is) or ``removed``."""
    changes: tuple[str, ...] = ()
