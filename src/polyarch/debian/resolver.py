"""The package closure of one container on one system, computed from a Packages index.

Resolution is deliberately simple and deterministic rather than a SAT search:
it follows Pre-Depends and Depends breadth-first from sorted roots, keeps the
first choice it makes for a name, and fails loudly (never silently picks
something else) when a later constraint disagrees with an earlier choice.
Recommends and Suggests are not followed: a tool container wants the least
that makes the tool run.

The base roots (bash, coreutils, ...) are resolved first and alone, so their
closure is the same set for every container of a system: that is what lets the
image builder share the base layers byte for byte between images.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from polyarch.config_rules import MAIN_SOURCE
from polyarch.debian.packages import PackageRecord
from polyarch.debian.sources import SourceRelease
from polyarch.debian.universe import Alternative, Clause, PackageUniverse, clause_text
from polyarch.debian.version import satisfies
from polyarch.errors import ResolveError
from polyarch.platforms import System

__all__ = ["Resolution", "ResolvedPackage", "resolve"]


@dataclass(frozen=True, slots=True)
class ResolvedPackage:
    """One package of a closure and why it is there."""

    record: PackageRecord
    required_by: tuple[str, ...]
    """Sorted names of the packages in the closure whose dependencies it satisfies.

    Empty for a root nothing else depends on.
    """
    base: bool
    """True if it is in the closure of the base roots alone."""
    source: str = MAIN_SOURCE
    """The name of the source it comes from (``Resolution.source`` tells its URL and Release)."""


@dataclass(frozen=True, slots=True)
class Resolution:
    """The closure of one container on one system."""

    system: System
    container: str
    packages: tuple[ResolvedPackage, ...]
    """Sorted by package name."""
    excluded: tuple[str, ...]
    """Sorted names that were needed but dropped on purpose through ``exclude``."""
    warnings: tuple[str, ...]
    sources: tuple[SourceRelease, ...] = ()
    """The sources read for this system, in configuration order (filled in by the workflow)."""

    def names(self) -> tuple[str, ...]:
        """The package names of the closure, sorted."""
        return tuple(p.record.name for p in self.packages)

    def source(self, name: str) -> SourceRelease | None:
        """The source called ``name`` (a package's ``source``), if it is known."""
        return next((s for s in self.sources if s.name == name), None)


class _Closure:
    """The mutable state of one resolution; ``resolve`` is its only user."""

    def __init__(
        self,
        universe: PackageUniverse,
        system: System,
        container: str,
        exclude: Iterable[str],
        prefer: Iterable[str],
        pins: Mapping[str, str],
    ) -> None:
        self.universe = universe
        self.pins = dict(pins)
        # As apt's ``pkg/release``: what the normal versions cannot satisfy may
        # come from the sources a container pins something to.
        self.targets = tuple(sorted(set(self.pins.values())))
        self.system = system
        self.container = container
        self.exclude = frozenset(exclude)
        self.prefer = frozenset(prefer)
        # Excluded names that would have been picked, so the next option was taken.
        self.exclude_steered: set[str] = set()
        self.chosen: dict[str, PackageRecord] = {}
        self.parent: dict[str, str | None] = {}
        self.dependents: dict[str, set[str]] = {}
        self.excluded_for: dict[str, set[str]] = {}
        self.queue: deque[PackageRecord] = deque()

    # -- matching -------------------------------------------------------------

    def _real_ok(self, record: PackageRecord, alt: Alternative) -> bool:
        if alt.archqual == "any":
            # dpkg: ``pkg:any`` needs the target to declare it may serve any
            # arch (allowed), or not to care about arch at all (foreign).
            if record.multi_arch not in ("allowed", "foreign"):
                return False
        elif alt.archqual not in (None, "native", self.universe.arch):
            return False
        if alt.op is None or alt.version is None:
            return True
        return satisfies(record.version, alt.op, alt.version)

    def _provide_ok(self, record: PackageRecord, provided: str | None, alt: Alternative) -> bool:
        if alt.archqual == "any" and record.multi_arch not in ("allowed", "foreign"):
            return False
        if alt.op is None or alt.version is None:
            return True
        # As dpkg: an unversioned Provides never satisfies a versioned dependency.
        return provided is not None and satisfies(provided, alt.op, alt.version)

    def _chosen_satisfier(self, alt: Alternative) -> str | None:
        record = self.chosen.get(alt.name)
        if record is not None and self._real_ok(record, alt):
            return record.name
        for provider, provided in self.universe.providers(alt.name):
            if self.chosen.get(provider.name) is provider and self._provide_ok(
                provider, provided, alt
            ):
                return provider.name
        return None

    def _pick(
        self, alt: Alternative, *, allow_excluded: bool, only: frozenset[str] | None = None
    ) -> PackageRecord | None:
        """The package to add for ``alt``: a real one of that name, else the first provider."""

        def usable(record: PackageRecord, matches: bool) -> bool:
            # One version per name: a name already chosen (in another version) is taken.
            if not matches or record.name in self.chosen:
                return False
            if only is not None and record.name not in only:
                return False
            if not allow_excluded and record.name in self.exclude:
                self.exclude_steered.add(record.name)
                return False
            return True

        for record in self._versions(alt.name):
            if usable(record, self._real_ok(record, alt)):
                return record
        if alt.name not in self.pins:
            for target in self.targets:
                for record in self.universe.from_source(alt.name, target):
                    if usable(record, self._real_ok(record, alt)):
                        return record
        for provider, provided in self.universe.providers(alt.name):
            if usable(provider, self._provide_ok(provider, provided, alt)):
                return provider
        return None

    def _versions(self, name: str) -> tuple[PackageRecord, ...]:
        """The versions of ``name`` to choose from: its pinned source's, else apt's candidates."""
        source = self.pins.get(name)
        if source is not None:
            return self.universe.from_source(name, source)
        return self.universe.candidates(name)

    # -- closure --------------------------------------------------------------

    def add_roots(self, roots: Iterable[str]) -> None:
        for root in sorted(set(roots)):
            if root in self.exclude:
                self.excluded_for.setdefault(root, set())
                continue
            if not self.universe.has(root):
                raise self._unknown_root(root)
            if root in self.pins and not self._versions(root):
                raise self._not_in_pinned_source(root)
            self._satisfy((Alternative(root),), None)
        while self.queue:
            record = self.queue.popleft()
            for field in (record.pre_depends, record.depends):
                if field:
                    for clause in self.universe.relations(field):
                        self._satisfy(clause, record.name)

    def _satisfy(self, clause: Clause, dependent: str | None) -> None:
        # 1. Something already in the closure satisfies one alternative.
        for alt in clause:
            name = self._chosen_satisfier(alt)
            if name is not None:
                self._link(dependent, name)
                return
        # 2. A preferred package that satisfies an alternative, else the first
        #    alternative that something installable satisfies.
        for only in (self.prefer, None) if self.prefer else (None,):
            for alt in clause:
                record = self._pick(alt, allow_excluded=False, only=only)
                if record is not None:
                    self._add(record, dependent)
                    return
        # 3. Only an excluded package would do: the user dropped it on purpose.
        for alt in clause:
            record = self._pick(alt, allow_excluded=True)
            if record is not None and record.name in self.exclude:
                needed_by = self.excluded_for.setdefault(record.name, set())
                if dependent is not None:
                    needed_by.add(dependent)
                return
        raise self._unsatisfiable(clause, dependent)

    def _add(self, record: PackageRecord, dependent: str | None) -> None:
        self.chosen[record.name] = record
        self.parent[record.name] = dependent
        self.queue.append(record)
        self._link(dependent, record.name)

    def _link(self, dependent: str | None, name: str) -> None:
        deps = self.dependents.setdefault(name, set())
        if dependent is not None and dependent != name:
            deps.add(dependent)

    def check_conflicts(self) -> None:
        for name in sorted(self.chosen):
            record = self.chosen[name]
            for field_name, field in (("Conflicts", record.conflicts), ("Breaks", record.breaks)):
                if not field:
                    continue
                for clause in self.universe.relations(field):
                    for alt in clause:
                        other = self._conflicting(record, alt)
                        if other is not None:
                            raise self._conflict(record, other, f"{field_name}: {alt}")

    def _conflicting(self, record: PackageRecord, alt: Alternative) -> PackageRecord | None:
        target = self.chosen.get(alt.name)
        if (
            target is not None
            and target.name != record.name
            and (
                alt.op is None
                or alt.version is None
                or satisfies(target.version, alt.op, alt.version)
            )
        ):
            return target
        for provider, provided in self.universe.providers(alt.name):
            # A package that conflicts with a virtual package it provides itself
            # is Debian's "only one provider at a time" idiom, not a conflict.
            if (
                provider.name != record.name
                and self.chosen.get(provider.name) is provider
                and (
                    alt.op is None
                    or alt.version is None
                    or (provided is not None and satisfies(provided, alt.op, alt.version))
                )
            ):
                return provider
        return None

    # -- errors ---------------------------------------------------------------

    def _where(self) -> str:
        return f"{self.container} ({self.system.name}, {self.universe.arch})"

    def _chain(self, name: str | None) -> list[str]:
        chain: list[str] = []
        while name is not None:
            chain.append(name)
            name = self.parent.get(name)
        return chain[::-1]

    def _unknown_root(self, root: str) -> ResolveError:
        near = self.universe.near_names(root)
        guess = f"; did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
        return ResolveError(
            f"{self.container}: no package {root!r} for {self.universe.arch} ({self.system.name}){guess}",
            hint="fix the package name in containers.toml (apt-cache search NAME finds it)",
        )

    def _not_in_pinned_source(self, root: str) -> ResolveError:
        source = self.pins[root]
        found = self.universe.versions_elsewhere(root)
        where = ", ".join(f"{v} in {s}" for v, s in found) or "nowhere"
        return ResolveError(
            f"{self._where()}: {root} is pinned to source {source!r}, which has no "
            f"{root} for {self.universe.arch} (found: {where})",
            hint=f"pin {root} to a source that has it, or drop the pin",
        )

    def _why_not(self, alt: Alternative) -> str:
        chosen = self.chosen.get(alt.name)
        if chosen is not None:
            by = self.parent.get(alt.name)
            return f"{alt.name} {chosen.version} is already chosen" + (f" (for {by})" if by else "")
        candidates = self._versions(alt.name)
        providers = self.universe.providers(alt.name)
        if not candidates and not providers:
            return f"no package {alt.name!r} for {self.universe.arch}"
        if (
            alt.archqual == "any"
            and not any(r.multi_arch in ("allowed", "foreign") for r in candidates)
            and not any(p.multi_arch in ("allowed", "foreign") for p, _ in providers)
        ):
            return f"{alt.name} is not Multi-Arch: allowed, so ':any' cannot use it"
        parts: list[str] = []
        if candidates:
            pinned = f" in pinned source {self.pins[alt.name]!r}" if alt.name in self.pins else ""
            parts.append(
                f"no version satisfies; available{pinned}: "
                + ", ".join(r.version for r in candidates)
            )
        if providers:
            parts.append(
                "provided by: "
                + ", ".join(
                    f"{p.name} (= {v})" if v else f"{p.name} (unversioned)" for p, v in providers
                )
            )
        return "; ".join(parts)

    def _unsatisfiable(self, clause: Clause, dependent: str | None) -> ResolveError:
        path = " → ".join([*self._chain(dependent), clause_text(clause)])
        if len(clause) == 1:
            reason = self._why_not(clause[0])
        else:
            reason = (
                "no alternative can be installed ("
                + "; ".join(f"{alt.name}: {self._why_not(alt)}" for alt in clause)
                + ")"
            )
        return ResolveError(
            f"{self._where()}: {path}: {reason}",
            hint="check [repository] suite and components, or add the missing package to exclude",
        )

    def _conflict(self, a: PackageRecord, b: PackageRecord, relation: str) -> ResolveError:
        chains = " and ".join(" → ".join(self._chain(r.name)) for r in (a, b))
        return ResolveError(
            f"{self._where()}: {a.name} {a.version} conflicts with {b.name} {b.version} "
            f"({relation}); pulled in by {chains}",
            hint="drop one of them from the container's packages, or exclude one",
        )


def resolve(
    universe: PackageUniverse,
    *,
    system: System,
    container: str,
    base: Sequence[str],
    roots: Sequence[str],
    exclude: Sequence[str] = (),
    prefer: Sequence[str] = (),
    pins: Mapping[str, str] | None = None,
) -> Resolution:
    """The closure of ``base`` + ``roots`` for ``system``, or ResolveError saying why not.

    Base roots are resolved first and alone, so the packages marked ``base`` are
    the same for every container with the same base and exclude. ``exclude`` drops
    packages on purpose (with everything only they would pull in); each drop is
    reported in ``warnings``; an excluded package that was one of several choices
    just lets the next choice win. ``prefer`` names packages to pick first where
    an alternative or a virtual package leaves a choice (``mawk`` for ``awk``);
    what is already in the closure still wins. ``pins`` (package → source name)
    take a package from that source only, as apt's ``pkg/release`` does, and let
    a dependency the usual versions cannot satisfy come from the pinned sources.
    The result depends only on the inputs' content, not on their order.
    """
    if system.debian_arch != universe.arch:
        raise ValueError(
            f"universe is for {universe.arch}, system {system.name} needs {system.debian_arch}"
        )
    closure = _Closure(universe, system, container, exclude, prefer, pins or {})
    closure.add_roots(base)
    base_names = frozenset(closure.chosen)
    closure.add_roots(roots)
    closure.check_conflicts()

    packages = tuple(
        ResolvedPackage(
            record=closure.chosen[name],
            required_by=tuple(sorted(closure.dependents.get(name, ()))),
            base=name in base_names,
            source=universe.origin(closure.chosen[name], pinned=name in closure.pins),
        )
        for name in sorted(closure.chosen)
    )
    warnings: list[str] = []
    for name in sorted(closure.excluded_for):
        needed_by = sorted(closure.excluded_for[name])
        if needed_by:
            warnings.append(f"excluded {name}, needed by: {', '.join(needed_by)}")
        else:
            warnings.append(f"excluded {name}, although it was asked for as a root")
    for name in sorted(closure.exclude - closure.excluded_for.keys() - closure.exclude_steered):
        warnings.append(f"exclude {name!r} has no effect: nothing in the closure needs it")
    return Resolution(
        system=system,
        container=container,
        packages=packages,
        excluded=tuple(sorted(closure.excluded_for)),
        warnings=tuple(warnings),
    )
