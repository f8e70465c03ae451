"""Where in containers.lock a problem is, so that every lock error names its line.

The lock is a trust anchor (``polyarch.lock``): a field that cannot be right
(a version no package can have) is refused when it is read, and a field that
is merely wrong (a version, name, architecture or size the .deb itself
contradicts) when the build compares it with the .deb's own control data
(``debian.identity``). Either way the message names ``containers.lock:LINE``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from polyarch.tomlkeys import array_item_line, line_of


def lock_line(text: str, message: str) -> int:
    """The line of the first entry of a lock's ``text`` that does not validate.

    msgspec's error names the field but hides dict keys (``containers[...]``),
    so the entries are validated again one by one to find it; ``message`` is
    only used when that finds nothing.
    """
    keys, index = locate_invalid(text)
    if index is not None:
        return array_item_line(text, keys, index)
    return line_of(text, keys) if keys else 1


def locate_invalid(text: str) -> tuple[tuple[str, ...], int | None]:
    """(keys, package index or None) of the first invalid part of a lock, else ((), None)."""
    from polyarch.lock import LockedContainer, LockedPackage, LockedSystem, LockInputs

    try:
        raw = tomllib.loads(text)
    except ValueError:
        return (), None
    containers = raw.get("containers")
    if not isinstance(containers, dict):
        return ("containers",), None
    for name, entry in containers.items():
        keys: tuple[str, ...] = ("containers", name)
        if _valid(entry, LockedContainer):
            continue
        if not isinstance(entry, dict):
            return keys, None
        if not _valid(entry.get("inputs"), LockInputs):
            return (*keys, "inputs"), None
        systems = entry.get("systems")
        for system, locked in systems.items() if isinstance(systems, dict) else ():
            where = (*keys, "systems", system)
            if _valid(locked, LockedSystem):
                continue
            packages = locked.get("packages") if isinstance(locked, dict) else None
            for i, package in enumerate(packages if isinstance(packages, list) else ()):
                if not _valid(package, LockedPackage):
                    return (*where, "packages"), i
            return where, None
        return keys, None
    return (), None


def _valid(value: Any, kind: type[msgspec.Struct]) -> bool:
    try:
        msgspec.convert(value, kind)
    except msgspec.ValidationError:
        return False
    return True


def package_line(path: Path, container: str, system: str, index: int) -> str:
    """``containers.lock:LINE`` of package ``index`` of a container's system, for messages."""
    keys = ("containers", container, "systems", system, "packages")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return str(path)
    return f"{path}:{array_item_line(text, keys, index)}"


def package_index(systems: Mapping[str, Sequence[Any]], system: str, sha256: str) -> int | None:
    """Where the package ``sha256`` is in ``systems[system]`` (a system's locked packages)."""
    for i, package in enumerate(systems.get(system, ())):
        if package.sha256 == sha256:
            return i
    return None
