"""Every package of one Debian arch, indexed for resolution, and relationship fields parsed.

``PackageUniverse`` answers the resolver's questions (which versions of a
name, who provides a virtual name, what a Depends field means on this arch)
lazily, so a universe over a cached index costs only the names it is asked about.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from debian.deb822 import PkgRelation

from polyarch.debian.index import PackageIndex
from polyarch.debian.packages import PackageRecord
from polyarch.debian.version import compare_versions


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


@functools.lru_cache(maxsize=32768)
def _parse_relation_field(text: str) -> tuple[Clause, ...]:
    # Thousands of packages share identical field strings ("libc6 (>= 2.34)"),
    # so parsing per distinct string keeps python-debian's parser off the hot path.
    clauses: list[Clause] = []
    for group in PkgRelation.parse_relations(text):
        alternatives: list[Alternative] = []
        for rel in group:
            version: Any = rel.get("version")
            arches: Any = rel.get("arch") or ()
            alternatives.append(
                Alternative(
                    name=rel["name"],
                    archqual=rel.get("archqual"),
                    op=version[0] if version else None,
                    version=version[1] if version else None,
                    arches=tuple((bool(a.enabled), str(a.arch)) for a in arches),
                )
            )
        if alternatives:
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


class PackageUniverse:
    """Every package of one Debian arch (plus ``all``), indexed for resolution.

    Build it once per Packages index and reuse it for every container. It is
    lazy: a name's candidates and providers are looked up, filtered to this
    arch and ordered the first time they are asked for, then kept, so a
    universe over a cached ``PackageIndex`` costs only the names resolution
    touches.
    """

    def __init__(self, records: Sequence[PackageRecord], arch: str) -> None:
        """Index ``records``; those of another arch than ``arch`` or ``all`` are ignored."""
        self.arch = arch
        self._index = (
            records if isinstance(records, PackageIndex) else PackageIndex.from_records(records)
        )
        self._candidates: dict[str, tuple[PackageRecord, ...]] = {}
        self._providers: dict[str, tuple[Provider, ...]] = {}
        self._relations: dict[str, tuple[Clause, ...]] = {}

    def has(self, name: str) -> bool:
        """Whether ``name`` is a real or virtual package of this arch."""
        return bool(self.candidates(name) or self.providers(name))

    def near_names(self, name: str) -> list[str]:
        """Up to three known package names that look like ``name`` (for typos)."""
        known = sorted(n for n in self._index.names() if self.has(n))
        return difflib.get_close_matches(name, known, n=3, cutoff=0.6)

    def candidates(self, name: str) -> tuple[PackageRecord, ...]:
        """The real packages called ``name``, highest version first."""
        found = self._candidates.get(name)
        if found is None:
            group = [r for r in self._index.named(name) if r.architecture in (self.arch, "all")]
            found = tuple(sorted(group, key=_RECORD_ORDER)) if len(group) > 1 else tuple(group)
            self._candidates[name] = found
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
                    for group in _parse_relation_field(text)
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
