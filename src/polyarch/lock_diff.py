"""What changed in a container's packages: between two locks, or a lock (or build) and now.

``polyarch lock`` prints these changes when it refreshes an entry;
``polyarch outdated`` reports them to say whether a rebuild is due.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from polyarch.debian.version import compare_versions
from polyarch.lock import LockedContainer, LockedPackage

ChangeKind = Literal["added", "removed", "upgraded", "downgraded", "rebuilt"]


@dataclass(frozen=True, slots=True)
class Held:
    """A package as a lock, a build or a fresh resolution has it."""

    version: str
    sha256: str | None = None
    """None where it is not known (a built image records versions only)."""
    source: str | None = None


@dataclass(frozen=True, slots=True)
class PackageChange:
    """One package of one system that differs between before and after."""

    system: str
    name: str
    before: Held | None
    after: Held | None

    @property
    def kind(self) -> ChangeKind:
        if self.before is None:
            return "added"
        if self.after is None:
            return "removed"
        order = compare_versions(self.after.version, self.before.version)
        return "upgraded" if order > 0 else "downgraded" if order < 0 else "rebuilt"

    def line(self) -> str:
        """``SYSTEM: + name version``, ``SYSTEM: - name version`` or ``SYSTEM: name a → b``."""
        a, b = self.before, self.after
        if a is None and b is not None:
            return f"{self.system}: + {self.name} {b.version}"
        if b is None and a is not None:
            return f"{self.system}: - {self.name} {a.version}"
        assert a is not None and b is not None
        via = f" ({b.source})" if b.source and b.source != a.source else ""
        return f"{self.system}: {self.name} {a.version} → {b.version}{via}"


def held(packages: Iterable[LockedPackage]) -> dict[str, Held]:
    return {p.name: Held(p.version, p.sha256, p.source) for p in packages}


def package_changes(
    system: str, before: Mapping[str, Held], after: Mapping[str, Held]
) -> list[PackageChange]:
    """Every package added, removed or changed (version, or bytes where both know them)."""
    changes: list[PackageChange] = []
    for name in sorted(before.keys() | after.keys()):
        a, b = before.get(name), after.get(name)
        if a is not None and b is not None:
            same_bytes = a.sha256 is None or b.sha256 is None or a.sha256 == b.sha256
            if a.version == b.version and same_bytes:
                continue
        changes.append(PackageChange(system, name, a, b))
    return changes


def lock_changes(old: LockedContainer | None, new: LockedContainer) -> list[str]:
    """What a refresh changed, one line per package (``PackageChange.line``)."""
    lines: list[str] = []
    for system, entry in new.systems.items():
        before = old.systems[system].packages if old and system in old.systems else ()
        lines += [c.line() for c in package_changes(system, held(before), held(entry.packages))]
    return lines


@dataclass(frozen=True, slots=True)
class LockUpdate:
    """What ``polyarch lock`` did to one container."""

    name: str
    action: str
    """``locked`` (new), ``updated`` (re-resolved), ``unchanged`` (kept as is) or ``removed``."""
    changes: tuple[str, ...] = ()
