"""Parsed Packages indexes, cached in a form a warm run uses without decoding it.

The parsed index is cached under the SHA256 of the compressed index (the hash
the signed Release names), in a form a warm run can use without decoding it:

    u64 LE length of the header | header (msgpack) | records (msgpack array)

The header holds lookup tables (package names and provided virtual names,
sorted, each with its record's position) and where each record ends. A warm
run maps the file, decodes only the header (~10 ms), and decodes a record only
when the resolver asks for its name: resolving a closure touches a few hundred
of the 63,000 records. Iterating a ``PackageIndex`` still decodes everything
in one call, as fast as a plain msgpack list.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import mmap
import sys
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import overload

import msgspec

from polyarch.cache import Cache, Kind
from polyarch.debian.packages import PackageRecord, parse_packages, parse_provides
from polyarch.errors import CacheError

__all__ = ["PackageIndex", "cache_key", "load_index"]


# -- the lookup tables ---------------------------------------------------------

# Record positions are stored as little-endian u32 arrays: ``array.frombytes``
# turns them into Python-indexable arrays without a per-item decode.
_U32 = "I"


def _u32_bytes(values: Iterable[int]) -> bytes:
    packed = array(_U32, values)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def _u32_array(data: bytes) -> array[int]:
    packed = array(_U32)
    packed.frombytes(data)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed


class _Tables(msgspec.Struct, frozen=True, array_like=True):
    """Sorted lookup tables of one index (the cache file's header, minus offsets)."""

    names: list[str]
    """The package name of every record, sorted; equal names stay in index order."""
    name_records: bytes
    """u32 per entry of ``names``: that record's position in the index."""
    virtuals: list[str]
    """One entry per item of every Provides field, sorted by virtual name;
    equal names stay in index order, then field order."""
    virtual_records: bytes
    """u32 per entry of ``virtuals``: the providing record's position."""
    virtual_versions: list[str]
    """Per entry of ``virtuals``: the provided version, or "" if unversioned."""


class _Header(msgspec.Struct, frozen=True, array_like=True):
    count: int
    record_ends: bytes
    """u32 per record: where it ends in the records array (it starts where the previous one ends)."""
    tables: _Tables


def _build_tables(records: Sequence[PackageRecord]) -> _Tables:
    names = [r.name for r in records]
    order = sorted(range(len(names)), key=names.__getitem__)  # stable: index order kept
    provided: list[tuple[str, int, str]] = []
    for position, record in enumerate(records):
        if record.provides:
            for virtual, version in parse_provides(record.provides):
                provided.append((virtual, position, version or ""))
    provided.sort(key=lambda entry: entry[0])  # stable: index order, then field order
    return _Tables(
        names=[names[i] for i in order],
        name_records=_u32_bytes(order),
        virtuals=[v for v, _, _ in provided],
        virtual_records=_u32_bytes(p for _, p, _ in provided),
        virtual_versions=[version for _, _, version in provided],
    )


def _span(keys: list[str], key: str) -> range:
    start = bisect.bisect_left(keys, key)
    return range(start, bisect.bisect_right(keys, key, start))


_RECORD_DECODER = msgspec.msgpack.Decoder(PackageRecord)
_RECORDS_DECODER = msgspec.msgpack.Decoder(list[PackageRecord])
_HEADER_DECODER = msgspec.msgpack.Decoder(_Header)
_ENCODER = msgspec.msgpack.Encoder()
_HEADER_LENGTH = 8


class _Part:
    """One component's index: its tables, and its records in memory or in a mapped file."""

    def __init__(
        self,
        tables: _Tables,
        count: int,
        *,
        records: list[PackageRecord] | None = None,
        blob: memoryview | None = None,
        record_ends: array[int] | None = None,
        path: Path | None = None,
    ) -> None:
        self.count = count
        self.names = tables.names
        self.name_records = _u32_array(tables.name_records)
        self.virtuals = tables.virtuals
        self.virtual_records = _u32_array(tables.virtual_records)
        self.virtual_versions = tables.virtual_versions
        self._records = records
        self._blob = blob
        self._ends = record_ends
        self._path = path
        self._decoded: dict[int, PackageRecord] = {}

    def record(self, position: int) -> PackageRecord:
        if self._records is not None:
            return self._records[position]
        found = self._decoded.get(position)
        if found is None:
            assert self._blob is not None and self._ends is not None
            start = self._ends[position - 1] if position else _array_header_length(self.count)
            try:
                found = _RECORD_DECODER.decode(self._blob[start : self._ends[position]])
            except (msgspec.DecodeError, ValueError) as exc:  # ValueError: bad UTF-8
                raise self._damaged() from exc
            self._decoded[position] = found
        return found

    def records(self) -> list[PackageRecord]:
        if self._records is None:
            assert self._blob is not None
            try:
                decoded = _RECORDS_DECODER.decode(self._blob)
            except (msgspec.DecodeError, ValueError) as exc:  # ValueError: bad UTF-8
                raise self._damaged() from exc
            if len(decoded) != self.count:
                raise self._damaged()
            # Records handed out one by one stay the same objects.
            for position, record in self._decoded.items():
                decoded[position] = record
            self._records = decoded
            self._decoded = {}
        return self._records

    def _damaged(self) -> CacheError:
        if self._path is not None:
            self._path.unlink(missing_ok=True)
        return CacheError(
            f"the cached parsed index {self._path} is damaged; it has been removed",
            hint="run the command again to rebuild it",
        )


def _array_header_length(count: int) -> int:
    # msgpack array header: fixarray, array 16 or array 32.
    return 1 if count < 16 else 3 if count < 1 << 16 else 5


def _array_header(count: int) -> bytes:
    if count < 16:
        return bytes([0x90 | count])
    if count < 1 << 16:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


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
        return cls([_Part(_build_tables(listed), len(listed), records=listed)])

    @classmethod
    def concat(cls, indexes: Iterable[PackageIndex]) -> PackageIndex:
        """One index over several (components of one arch), in the order given."""
        return cls([part for index in indexes for part in index._parts])

    def named(self, name: str) -> list[PackageRecord]:
        """The records of the real package ``name``, in index order."""
        return [
            part.record(part.name_records[i])
            for part in self._parts
            for i in _span(part.names, name)
        ]

    def provided(self, virtual: str) -> list[tuple[PackageRecord, str | None]]:
        """``(record, provided version or None)`` of each Provides of ``virtual``, in index order."""
        return [
            (part.record(part.virtual_records[i]), part.virtual_versions[i] or None)
            for part in self._parts
            for i in _span(part.virtuals, virtual)
        ]

    def names(self) -> set[str]:
        """Every real and virtual package name of the index."""
        return {name for part in self._parts for name in itertools.chain(part.names, part.virtuals)}

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

# The cache key carries the file format and the record layout: msgpack of an
# array_like struct would decode into the wrong fields if PackageRecord changed.
_FORMAT = "lazy-1:" + ",".join(PackageRecord.__struct_fields__)
_LAYOUT = hashlib.sha256(_FORMAT.encode()).hexdigest()[:8]


def cache_key(sha256_hex: str) -> str:
    """The cache key of a parsed index: its compressed file's SHA256 and the file format."""
    return f"{sha256_hex}-{_LAYOUT}"


def _write_cached(cache: Cache, key: str, records: list[PackageRecord], tables: _Tables) -> None:
    encoded = [_ENCODER.encode(record) for record in records]
    prefix = _array_header(len(records))
    ends = list(itertools.accumulate(map(len, encoded), initial=len(prefix)))[1:]
    header = _ENCODER.encode(
        _Header(count=len(records), record_ends=_u32_bytes(ends), tables=tables)
    )
    with cache.writer(Kind.INDEXES, key) as f:
        f.write(len(header).to_bytes(_HEADER_LENGTH, "little"))
        f.write(header)
        f.write(prefix)
        f.writelines(encoded)


def is_valid_cached_index(path: Path) -> bool:
    """Whether ``path`` holds a parsed index this version of polyarch can read."""
    return _read_cached(path) is not None


def _read_cached(path: Path) -> _Part | None:
    """The part a cache file holds, or None if it is not a well-formed cache file."""
    try:
        with path.open("rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None
    view = memoryview(mapped)
    length = int.from_bytes(view[:_HEADER_LENGTH], "little")
    try:
        header = _HEADER_DECODER.decode(view[_HEADER_LENGTH : _HEADER_LENGTH + length])
        blob = view[_HEADER_LENGTH + length :]
        ends = _u32_array(header.record_ends)
        part = _Part(header.tables, header.count, blob=blob, record_ends=ends, path=path)
    except (msgspec.DecodeError, ValueError):  # ValueError: bad UTF-8, or an array cut short
        return None
    count = part.count
    if not (
        len(ends) == count == len(part.names) == len(part.name_records)
        and len(part.virtuals) == len(part.virtual_versions) == len(part.virtual_records)
        and bytes(blob[: _array_header_length(count)]) == _array_header(count)
        and (ends[-1] if count else _array_header_length(count)) == len(blob)
    ):
        return None
    return part


def load_index(
    cache: Cache,
    sha256_hex: str,
    raw_loader: Callable[[], bytes],
    *,
    component: str,
) -> PackageIndex:
    """The records of the index whose compressed file has ``sha256_hex``.

    From the cache when it holds the parsed form (mapped, decoded on demand);
    otherwise ``raw_loader()`` is called for the uncompressed, already verified
    index bytes, which are parsed and cached. An unreadable cache entry is
    discarded and rebuilt.
    """
    key = cache_key(sha256_hex)
    cached = cache.get(Kind.INDEXES, key)
    if cached is not None:
        part = _read_cached(cached)
        if part is not None:
            return PackageIndex([part])
        cache.discard(Kind.INDEXES, key)
    records = parse_packages(raw_loader(), component)
    tables = _build_tables(records)
    _write_cached(cache, key, records, tables)
    return PackageIndex([_Part(tables, len(records), records=records)])
