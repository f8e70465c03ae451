"""Packages indexes, cached in a form a run uses without parsing all of it.

The index is cached under the SHA256 of the compressed index (the hash the
signed Release names), in a file (``index_file``) that holds its stanzas,
lookup tables (package names and provided virtual names, sorted, each with
its record's position) and checksums. Caching it parses no record: the tables
are read straight from each stanza's Package and Provides lines
(``scan_packages``). A run maps the file, decodes only the header (~10 ms),
and parses (and checks) a record only when the resolver asks for its name:
resolving a closure touches a few hundred of the 63,000 records. Iterating a
``PackageIndex`` parses everything; a stanza the parser refuses raises its
``IntegrityError`` when it is used.

A record that fails its check is damage on disk (or a poisoned cache): the
entry is evicted with a warning, the index is downloaded and parsed again, and
the run goes on with the fresh records (``_Part.heal``).
"""

from __future__ import annotations

import hashlib
import itertools
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import overload

from polyarch.cache import Cache, Kind
from polyarch.debian.index_file import (
    FORMAT,
    DamagedIndex,
    IndexFile,
    StringTable,
    Tables,
    build_tables,
    read_index_file,
    u32_array,
    write_index_file,
)
from polyarch.debian.packages import PackageRecord, decompress
from polyarch.debian.scan import scan_packages
from polyarch.errors import CacheError

__all__ = ["PackageIndex", "cache_key", "load_index", "parse_worker"]


Healer = Callable[[str], IndexFile]
"""Evicts a damaged cache file (the argument says why) and returns the index read afresh."""


class _Part:
    """One component's index: its tables, and its records in memory or in a checked file."""

    def __init__(
        self,
        tables: Tables,
        count: int,
        *,
        records: list[PackageRecord] | None = None,
        file: IndexFile | None = None,
        heal: Healer | None = None,
    ) -> None:
        self.count = count
        self.names = StringTable(tables.names)
        self.name_records = u32_array(tables.name_records)
        self.virtuals = StringTable(tables.virtuals)
        self.virtual_records = u32_array(tables.virtual_records)
        self.virtual_versions = StringTable(tables.virtual_versions)
        self._records = records
        self._file = file
        self._heal = heal
        self._decoded: dict[int, PackageRecord] = {}

    def record(self, position: int) -> PackageRecord:
        if self._records is not None:
            return self._records[position]
        found = self._decoded.get(position)
        if found is None:
            assert self._file is not None
            try:
                found = self._file.record(position)
            except DamagedIndex as exc:
                found = self._healed(str(exc)).record(position)
            self._decoded[position] = found
        return found

    def records(self) -> list[PackageRecord]:
        if self._records is None:
            assert self._file is not None
            try:
                decoded = self._file.records()
            except DamagedIndex as exc:
                decoded = self._healed(str(exc)).records()
            # Records handed out one by one stay the same objects.
            for position, record in self._decoded.items():
                decoded[position] = record
            self._records = decoded
            self._decoded = {}
        return self._records

    def _healed(self, reason: str) -> IndexFile:
        """The index read afresh; the tables (checked with the header) stay valid."""
        where = self._file.path if self._file is not None else "?"
        fresh = self._heal(reason) if self._heal is not None else None
        if fresh is None or fresh.count != self.count:
            raise CacheError(
                f"the cached parsed index {where} is damaged ({reason}); it has been removed",
                hint="run the command again to rebuild it",
            )
        self._file, self._heal = fresh, None
        return fresh


class PackageIndex(Sequence[PackageRecord]):
    """The records of one or more Packages indexes, decoded on demand.

    A sequence in index order (component by component), plus the lookups the
    resolver needs — ``named`` and ``provided`` — which decode only the
    records they return. Every lookup of one record returns the same object.
    """

    def __init__(self, parts: Sequence[_Part] = ()) -> None:
        self._parts = tuple(parts)

    @classmethod
    def from_records(cls, records: Iterable[PackageRecord]) -> PackageIndex:
        """An index over records already in memory."""
        listed = list(records)
        tables = build_tables([r.name for r in listed], [r.provides for r in listed])
        return cls([_Part(tables, len(listed), records=listed)])

    @classmethod
    def concat(cls, indexes: Iterable[PackageIndex]) -> PackageIndex:
        """One index over several (components of one arch), in the order given."""
        return cls([part for index in indexes for part in index._parts])

    def named(self, name: str) -> list[PackageRecord]:
        """The records of the real package ``name``, in index order."""
        return [
            part.record(part.name_records[i]) for part in self._parts for i in part.names.span(name)
        ]

    def provided(self, virtual: str) -> list[tuple[PackageRecord, str | None]]:
        """``(record, provided version or None)`` of each Provides of ``virtual``, in index order."""
        return [
            (part.record(part.virtual_records[i]), part.virtual_versions.text(i) or None)
            for part in self._parts
            for i in part.virtuals.span(virtual)
        ]

    def names(self) -> set[str]:
        """Every real and virtual package name of the index."""
        return {
            name
            for part in self._parts
            for name in itertools.chain(part.names.all(), part.virtuals.all())
        }

    def __len__(self) -> int:
        return sum(part.count for part in self._parts)

    @overload
    def __getitem__(self, index: int) -> PackageRecord: ...

    @overload
    def __getitem__(self, index: slice) -> list[PackageRecord]: ...

    def __getitem__(self, index: int | slice) -> PackageRecord | list[PackageRecord]:
        if isinstance(index, slice):
            return list(self)[index]
        if index < 0:
            index += len(self)
        for part in self._parts:
            if 0 <= index < part.count:
                return part.record(index)
            index -= part.count
        raise IndexError("PackageIndex index out of range")

    def __iter__(self) -> Iterator[PackageRecord]:
        for part in self._parts:
            yield from part.records()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PackageIndex | list | tuple):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<PackageIndex of {len(self)} records>"


# -- the cache -----------------------------------------------------------------

# The cache key carries the file format and the record layout: records parsed
# from a cached stanza must be those this version's ``PackageRecord`` would hold.
_FORMAT = FORMAT + ":" + ",".join(PackageRecord.__struct_fields__)
_LAYOUT = hashlib.sha256(_FORMAT.encode()).hexdigest()[:8]


def cache_key(sha256_hex: str) -> str:
    """The cache key of a parsed index: its compressed file's SHA256 and the file format."""
    return f"{sha256_hex}-{_LAYOUT}"


def load_index(
    cache: Cache,
    sha256_hex: str,
    raw_loader: Callable[[], bytes],
    *,
    component: str,
) -> PackageIndex:
    """The records of the index whose compressed file has ``sha256_hex``.

    From the cache when it holds the index (mapped; records checked and parsed
    on demand); otherwise ``raw_loader()`` is called for the uncompressed,
    already verified index bytes, which are cut into stanzas and cached. A
    damaged cache entry, found now or when a record is used later, is evicted
    with a warning and rebuilt. A stanza the parser refuses raises its
    ``IntegrityError`` when its record is used.
    """
    key = cache_key(sha256_hex)

    def parse() -> IndexFile:
        scanned = scan_packages(raw_loader())
        tables = build_tables(scanned.names, scanned.provides)
        with cache.writer(Kind.INDEXES, key) as f:
            path = cache.path(Kind.INDEXES, key)
            return write_index_file(f, path, scanned.records, scanned.ends, tables, component)

    def heal(reason: str) -> IndexFile:
        cache.evict(Kind.INDEXES, key, reason)
        return parse()

    opened = cache.open(Kind.INDEXES, key)
    if opened is not None:
        with opened:
            found = read_index_file(cache.path(Kind.INDEXES, key), opened)
        if not isinstance(found, str):
            return PackageIndex([_Part(found.tables, found.count, file=found, heal=heal)])
        cache.evict(Kind.INDEXES, key, found)
    fresh = parse()
    return PackageIndex([_Part(fresh.tables, fresh.count, file=fresh)])


def parse_worker(argv: list[str]) -> None:
    """Parse the verified index on stdin into the cache (argv: ROOT SHA256 PATH COMPONENT).

    The body of the process ``Repository`` parses a large index in, so that
    both systems' indexes parse at once; it lives here, not in ``repository``,
    so the process does not import the HTTP client it never uses.
    """
    root, sha256, path, component = argv
    cache = Cache(root)
    data = sys.stdin.buffer.read()
    with cache.lock(Kind.INDEXES, sha256):
        load_index(cache, sha256, lambda: decompress(data, path), component=component)
