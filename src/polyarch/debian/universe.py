"""Every package of one Debian arch, indexed for resolution, and relationship fields parsed.

``PackageUniverse`` answers the resolver's questions (which versions of a
name, who provides a virtual name, what a Depends field means on this arch)
lazily, so a universe over a cached index costs only the names it is asked about.

Over several sources it chooses as apt does (apt_preferences(5)): a name's
versions come from the sources of the highest pin priority that have it
(a backports archive at 100 only serves names nothing at 500 has; below 0
never, unless pinned), and among those the highest version wins. A version
listed identically by two sources is one version, read from the first.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from polyarch.config_rules import MAIN_SOURCE
from polyarch.debian.index import PackageIndex
from polyarch.debian.packages import PackageRecord
from polyarch.debian.version import compare_versions
from polyarch.errors import IntegrityError


@dataclass(frozen=True, slots=True)
class Alternative:
    """One ``name:qual (op version) [arches]`` of a relationship field."""

    name: str
    archqual: str | None = None
    op: str | None = None
    version: str | None = None
    arches: tuple[tuple[bool, str], ...] = ()

    def __str__(self) -> str:
        text = f"{self.name}:{self.archqual}" if self.archqual else self.name
        return f"{text} ({self.op} {self.version})" if self.op else text


Clause = tuple[Alternative, ...]


def clause_text(clause: Clause) -> str:
    return " | ".join(str(alt) for alt in clause)


# One alternative of a relationship field (Debian Policy 7.1): a package name, an
# optional architecture qualifier, an optional version relation, an optional list
# of architectures (``!`` negates one) and build profiles, which binary packages do
# not use and which are ignored here.
_ALTERNATIVE = re.compile(
    r"""
    (?P<name> [a-zA-Z0-9][a-zA-Z0-9.+-]* )
    (?: : (?P<archqual> [a-zA-Z0-9][a-zA-Z0-9-]* ) )?
    (?: \s* \( \s* (?P<op> [<=>]+ ) \s* (?P<version> [a-zA-Z0-9.+~:-]+ ) \s* \) )?
    (?: \s* \[ (?P<arches> [\s!\w-]+ ) \] )?
    (?: \s* < .+ > )?
    \s*
    """,
    re.VERBOSE,
)


@functools.lru_cache(maxsize=32768)
def parse_relation_field(text: str) -> tuple[Clause, ...]:
    """A Depends-like field: clauses (comma-separated) of alternatives (``|``-separated).

    Thousands of packages share identical field strings ("libc6 (>= 2.34)"),
    so each distinct string is parsed once. An alternative that is not well
    formed becomes one whose name is its whole text, which no package has
    (as python-debian's parser does; tests hold the two to agreement).
    """
    clauses: list[Clause] = []
    for clause in text.strip().split(","):
        alternatives: list[Alternative] = []
        for raw in clause.split("|"):
            item = raw.strip()
            match = _ALTERNATIVE.fullmatch(item)
            if match is None:
                alternatives.append(Alternative(name=item))
                continue
            arches = match["arches"]
            alternatives.append(
                Alternative(
                    name=match["name"],
                    archqual=match["archqual"],
                    op=match["op"],
                    version=match["version"],
                    arches=tuple(
                        (False, arch[1:]) if arch.startswith("!") else (True, arch)
                        for arch in (arches.split() if arches else ())
                    ),
                )
            )
        clauses.append(tuple(alternatives))
    return tuple(clauses)


def arch_matches(spec: str, arch: str) -> bool:
    return spec in (arch, "any", "linux-any", f"linux-{arch}", f"any-{arch}")


def _record_order(a: PackageRecord, b: PackageRecord) -> int:
    # Highest version first; the rest only makes duplicates order-independent.
    by_version = compare_versions(b.version, a.version)
    if by_version:
        return by_version
    ka = (a.architecture, a.filename, a.sha256)
    kb = (b.architecture, b.filename, b.sha256)
    return (ka > kb) - (ka < kb)


Provider = tuple[PackageRecord, str | None]
_RECORD_ORDER = functools.cmp_to_key(_record_order)
_DEFAULT_PRIORITY = 500


@dataclass(frozen=True, slots=True)
class SourceIndex:
    """One source's packages for one arch, and the pin priority they get."""

    name: str
    priority: int
    index: Sequence[PackageRecord]


_Found = tuple[int, PackageRecord]
"""(position of the source in the universe, record)."""


class PackageUniverse:
    """Every package of one Debian arch (plus ``all``), indexed for resolution.

    Build it once per Packages index and reuse it for every container. It is
    lazy: a name's candidates and providers are looked up, filtered to this
    arch and ordered the first time they are asked for, then kept, so a
    universe over a cached ``PackageIndex`` costs only the names resolution
    touches.
    """

    def __init__(self, records: Sequence[PackageRecord] | Sequence[SourceIndex], arch: str) -> None:
        """Index ``records`` (one source) or the records of each source, first source first.

        Records of another arch than ``arch`` or ``all`` are ignored.
        """
        self.arch = arch
        if records and isinstance(records[0], SourceIndex):
            given = [s for s in records if isinstance(s, SourceIndex)]
        else:
            given = [SourceIndex(MAIN_SOURCE, _DEFAULT_PRIORITY, records)]  # type: ignore[arg-type]
        self.sources = tuple(SourceIndex(s.name, s.priority, _as_index(s.index)) for s in given)
        self._index = PackageIndex.concat(_as_index(s.index) for s in self.sources)
        self._found: dict[str, tuple[_Found, ...]] = {}
        self._origin: dict[int, int] = {}
        self._candidates: dict[str, tuple[PackageRecord, ...]] = {}
        self._providers: dict[str, tuple[Provider, ...]] = {}
        self._relations: dict[str, tuple[Clause, ...]] = {}

    def has(self, name: str) -> bool:
        """Whether ``name`` is a real or virtual package of this arch (in any source)."""
        return bool(self._every(name) or self.providers(name))

    def near_names(self, name: str) -> list[str]:
        """Up to three known package names that look like ``name`` (for typos)."""
        import difflib  # only for a name that is not there: the error message

        known = sorted(n for n in self._index.names() if self.has(n))
        return difflib.get_close_matches(name, known, n=3, cutoff=0.6)

    def candidates(self, name: str) -> tuple[PackageRecord, ...]:
        """The real packages called ``name`` that apt would consider, highest version first.

        Only versions of the highest pin priority (of at least 0) that has the
        name; a version two sources list identically counts once (the first's).
        """
        found = self._candidates.get(name)
        if found is None:
            every = self._every(name)
            top = max((self.sources[pos].priority for pos, _ in every), default=-1)
            seen: set[tuple[str, str]] = set()
            group: list[PackageRecord] = []
            for pos, record in every:
                key = (record.version, record.sha256)
                if top >= 0 and self.sources[pos].priority == top and key not in seen:
                    seen.add(key)
                    group.append(record)
            found = tuple(sorted(group, key=_RECORD_ORDER)) if len(group) > 1 else tuple(group)
            self._candidates[name] = found
        return found

    def from_source(self, name: str, source: str) -> tuple[PackageRecord, ...]:
        """The versions of ``name`` that source ``source`` has (a pin), highest first."""
        group = [r for pos, r in self._every(name) if self.sources[pos].name == source]
        return tuple(sorted(group, key=_RECORD_ORDER))

    def versions_elsewhere(self, name: str) -> tuple[tuple[str, str], ...]:
        """(version, source) of ``name`` in every source, for messages; highest first."""
        every = sorted(self._every(name), key=lambda f: _RECORD_ORDER(f[1]))
        return tuple((r.version, self.sources[pos].name) for pos, r in every)

    def origin(self, record: PackageRecord, *, pinned: bool = False) -> str:
        """The name of the source ``record`` is read from.

        Unless the record was ``pinned`` to its source, raises ``IntegrityError``
        when another source lists the same package, version and arch with other
        bytes: which one is meant cannot be told.
        """
        self._every(record.name)
        pos = self._origin.get(id(record), 0)
        for other_pos, other in () if pinned else self._found[record.name]:
            if (
                other_pos != pos
                and (other.version, other.architecture) == (record.version, record.architecture)
                and other.sha256 != record.sha256
            ):
                a, b = self.sources[pos].name, self.sources[other_pos].name
                raise IntegrityError(
                    f"{record.name} {record.version} ({record.architecture}) differs between "
                    f"sources {a!r} (sha256 {record.sha256}) and {b!r} (sha256 {other.sha256})",
                    hint=f'pin it to one of them, e.g. pins = {{ {record.name} = "{a}" }}, '
                    "or switch one source off",
                )
        return self.sources[pos].name

    def _every(self, name: str) -> tuple[_Found, ...]:
        """Every record of ``name`` for this arch, in source order."""
        found = self._found.get(name)
        if found is None:
            found = tuple(
                (pos, r)
                for pos, source in enumerate(self.sources)
                for r in _as_index(source.index).named(name)
                if r.architecture in (self.arch, "all")
            )
            for pos, r in found:
                self._origin.setdefault(id(r), pos)
            self._found[name] = found
        return found

    def providers(self, name: str) -> tuple[Provider, ...]:
        """(record, provided version or None) of every package providing ``name``.

        Ordered by provider name, then that provider's version (highest first):
        the deterministic choice when nothing in the closure provides ``name`` yet.
        """
        found = self._providers.get(name)
        if found is None:
            ranked: list[tuple[str, int, PackageRecord, str | None]] = []
            for record, version in self._index.provided(name):
                # Only providers of this arch count; their rank is their place
                # among the candidates of their own name.
                for rank, candidate in enumerate(self.candidates(record.name)):
                    if candidate is record:
                        ranked.append((record.name, rank, record, version))
                        break
            ranked.sort(key=lambda p: (p[0], p[1]))  # stable: field order within a record
            found = tuple((p[2], p[3]) for p in ranked)
            self._providers[name] = found
        return found

    def relations(self, text: str) -> tuple[Clause, ...]:
        """A relationship field parsed, with alternatives restricted to other arches removed."""
        cached = self._relations.get(text)
        if cached is None:
            cached = tuple(
                clause
                for clause in (
                    tuple(alt for alt in group if self._for_this_arch(alt))
                    for group in parse_relation_field(text)
                )
                if clause
            )
            self._relations[text] = cached
        return cached

    def _for_this_arch(self, alt: Alternative) -> bool:
        if not alt.arches:
            return True
        if any(enabled for enabled, _ in alt.arches):
            return any(enabled and arch_matches(s, self.arch) for enabled, s in alt.arches)
        return not any(arch_matches(s, self.arch) for _, s in alt.arches)


def _as_index(records: Sequence[PackageRecord]) -> PackageIndex:
    return records if isinstance(records, PackageIndex) else PackageIndex.from_records(records)
