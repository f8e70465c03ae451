"""The file a Packages index is cached in, and every check made when it is read back.

    u64 LE length of the header | SHA256 of the header | header (msgpack) | records

The records are the index's own bytes from its first stanza on, cut before
each stanza (``scan``): a record is one stanza and the empty line after it.
The header holds lookup tables (``Tables``), where each record ends, an 8-byte
SHA256 prefix per record, and the SHA256 of the records' SHA256s (in order),
which checks them all. Writing the file parses no record: the tables need only
each stanza's Package and Provides (``scan_packages``), so a cold run pays for
parsing only the records it uses.

The file is keyed by the signed index's hash, not by its own bytes, so it
checks itself: opening it verifies the header (a few MB), using a record
verifies that record, then parses it (``parse_stanza``); using all of them
verifies and parses all of them. A warm run that uses a few hundred of 63,000
records hashes and parses only those. A stanza the parser refuses (no
Version, a malformed SHA256: a broken index, signed or not) raises its
``IntegrityError`` when that record is used, not when the index is cached.
``check_index_file`` checks everything: every record parses and could come
from a Packages index, and the tables are exactly those of the records
(``cache verify``, ``cache pull``).
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import mmap
import re
import sys
from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import BinaryIO, overload

import msgspec

from polyarch.debian.packages import PackageRecord, parse_provides, parse_stanza
from polyarch.errors import IntegrityError

FORMAT = "lazy-4"
"""Written into every parsed index's cache key with the record layout (``index.cache_key``)."""

# Record positions are stored as little-endian u32 arrays: ``array.frombytes``
# turns them into Python-indexable arrays without a per-item decode.
_U32 = "I"
_LENGTH = 8
_SHA256 = 32
RECORD_DIGEST = 8
"""Bytes of SHA256 kept per record: enough to catch damage, small enough for the header."""


def u32_bytes(values: Iterable[int]) -> bytes:
    packed = array(_U32, values)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def u32_array(data: bytes) -> array[int]:
    packed = array(_U32)
    packed.frombytes(data)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed


class Strings(msgspec.Struct, frozen=True, array_like=True):
    """Strings as one UTF-8 blob and where each ends: read without a Python object per string.

    A warm run looks up a few hundred of an index's 63,000 names; decoding
    them all into a list cost more than everything else the lookups do.
    """

    blob: bytes
    ends: bytes
    """u32 per string: where it ends in ``blob`` (it starts where the previous one ends)."""

    @classmethod
    def of(cls, strings: Sequence[str]) -> Strings:
        encoded = [s.encode() for s in strings]
        return cls(b"".join(encoded), u32_bytes(itertools.accumulate(map(len, encoded))))


class Tables(msgspec.Struct, frozen=True, array_like=True):
    """Sorted lookup tables of one index."""

    names: Strings
    """The package name of every record, sorted; equal names stay in index order."""
    name_records: bytes
    """u32 per entry of ``names``: that record's position in the index."""
    virtuals: Strings
    """One entry per item of every Provides field, sorted by virtual name;
    equal names stay in index order, then field order."""
    virtual_records: bytes
    """u32 per entry of ``virtuals``: the providing record's position."""
    virtual_versions: Strings
    """Per entry of ``virtuals``: the provided version, or "" if unversioned."""


def build_tables(names: Sequence[str], provides: Sequence[str]) -> Tables:
    """The lookup tables of records with these names and Provides fields, in index order."""
    order = sorted(range(len(names)), key=names.__getitem__)  # stable: index order kept
    provided: list[tuple[str, int, str]] = []
    for position, field in enumerate(provides):
        if field:
            for virtual, version in parse_provides(field):
                provided.append((virtual, position, version or ""))
    provided.sort(key=lambda entry: entry[0])  # stable: index order, then field order
    return Tables(
        names=Strings.of([names[i] for i in order]),
        name_records=u32_bytes(order),
        virtuals=Strings.of([v for v, _, _ in provided]),
        virtual_records=u32_bytes(p for _, p, _ in provided),
        virtual_versions=Strings.of([version for _, _, version in provided]),
    )


class StringTable(Sequence[bytes]):
    """``Strings`` opened for lookups: item ``i`` is its UTF-8 bytes (a slice, no copy).

    UTF-8 sorts bytewise in code-point order, so a list sorted as ``str`` is
    sorted as bytes too and ``span`` can bisect it.
    """

    def __init__(self, strings: Strings) -> None:
        self._blob = memoryview(strings.blob)
        self._ends = u32_array(strings.ends)

    def __len__(self) -> int:
        return len(self._ends)

    @overload
    def __getitem__(self, i: int) -> bytes: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[bytes]: ...

    def __getitem__(self, i: int | slice) -> bytes | Sequence[bytes]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return bytes(self._blob[self._ends[i - 1] if i else 0 : self._ends[i]])

    def text(self, i: int) -> str:
        return self[i].decode()

    def span(self, key: str) -> range:
        """The positions of the entries equal to ``key``."""
        wanted = key.encode()
        start = bisect.bisect_left(self, wanted)
        return range(start, bisect.bisect_right(self, wanted, start))

    def all(self) -> list[str]:
        """Every entry, decoded (for whole-index questions only: it makes them all)."""
        return [self.text(i) for i in range(len(self))]


class _Header(msgspec.Struct, frozen=True, array_like=True):
    count: int
    component: str
    """The component the records belong to (``PackageRecord.component``)."""
    record_ends: bytes
    """u32 per record: where it ends in the records (it starts where the previous one ends)."""
    record_digests: bytes
    """``RECORD_DIGEST`` bytes of SHA256 per record."""
    records_sha256: bytes
    """SHA256 of the SHA256s of every record, in order."""
    tables: Tables


_HEADER_DECODER = msgspec.msgpack.Decoder(_Header)
_ENCODER = msgspec.msgpack.Encoder()


def write_index_file(
    f: BinaryIO,
    path: Path,
    records: memoryview,
    ends: Sequence[int],
    tables: Tables,
    component: str,
) -> IndexFile:
    """Write the cache file of ``records`` (ending at ``ends``) to ``f``, at ``path``.

    Returns the file as written, over ``records`` in memory.
    """
    starts = itertools.chain((0,), ends)
    digests = [hashlib.sha256(records[a:b]).digest() for a, b in zip(starts, ends, strict=False)]
    header = _Header(
        count=len(ends),
        component=component,
        record_ends=u32_bytes(ends),
        record_digests=b"".join(d[:RECORD_DIGEST] for d in digests),
        records_sha256=hashlib.sha256(b"".join(digests)).digest(),
        tables=tables,
    )
    encoded = _ENCODER.encode(header)
    f.write(len(encoded).to_bytes(_LENGTH, "little"))
    f.write(hashlib.sha256(encoded).digest())
    f.write(encoded)
    f.write(records)
    return IndexFile(path, header, records, u32_array(header.record_ends))


class DamagedIndex(Exception):
    """A record (or all of them) does not match what the header says."""


class IndexFile:
    """A cache file whose header was checked; records are checked as they are parsed.

    Every record is parsed each time it is asked for: ``PackageIndex`` keeps them.
    """

    def __init__(self, path: Path, header: _Header, blob: memoryview, ends: array[int]) -> None:
        self.path = path
        self.count = header.count
        self.component = header.component
        self.tables = header.tables
        self._header = header
        self._blob = blob
        self._ends = ends

    def _bytes_of(self, position: int) -> memoryview:
        return self._blob[self._ends[position - 1] if position else 0 : self._ends[position]]

    def record(self, position: int) -> PackageRecord:
        """Record ``position``, checked and parsed (``IntegrityError`` if its stanza is refused)."""
        if not 0 <= position < self.count:
            raise DamagedIndex(f"a table names record {position} of {self.count}")
        stanza = self._bytes_of(position)
        want = self._header.record_digests[position * RECORD_DIGEST :][:RECORD_DIGEST]
        if hashlib.sha256(stanza).digest()[:RECORD_DIGEST] != want:
            raise DamagedIndex(f"record {position} does not match its checksum")
        return self._parsed(position, bytes(stanza))

    def records(self) -> list[PackageRecord]:
        """Every record, all checked first, then parsed."""
        stanzas = [self._bytes_of(i) for i in range(self.count)]
        digests = b"".join(hashlib.sha256(stanza).digest() for stanza in stanzas)
        if hashlib.sha256(digests).digest() != self._header.records_sha256:
            raise DamagedIndex("the records do not match their checksum")
        return [self._parsed(i, bytes(stanza)) for i, stanza in enumerate(stanzas)]

    def _parsed(self, position: int, stanza: bytes) -> PackageRecord:
        record = parse_stanza(stanza, self.component)
        if record is None:
            raise DamagedIndex(f"record {position} is not a Packages stanza")
        return record


def read_index_file(path: Path, opened: BinaryIO) -> IndexFile | str:
    """The file ``opened`` (at ``path``) with its header checked, or why it is not one."""
    try:
        mapped = mmap.mmap(opened.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as exc:
        return f"cannot be mapped ({exc})"
    view = memoryview(mapped)
    length = int.from_bytes(view[:_LENGTH], "little")
    start = _LENGTH + _SHA256
    raw_header = view[start : start + length]
    if len(raw_header) != length or hashlib.sha256(raw_header).digest() != view[_LENGTH:start]:
        return "its header does not match its checksum"
    try:
        header = _HEADER_DECODER.decode(raw_header)
        ends = u32_array(header.record_ends)
    except (msgspec.DecodeError, ValueError) as exc:  # ValueError: an array cut short
        return f"its header cannot be decoded ({exc})"
    blob = view[start + length :]
    count, tables = header.count, header.tables
    names, virtuals = tables.names.ends, tables.virtuals.ends
    if not (
        len(ends) == count == len(names) // 4 == len(tables.name_records) // 4
        and len(header.record_digests) == count * RECORD_DIGEST
        and len(virtuals) == len(tables.virtual_versions.ends)
        and len(virtuals) // 4 == len(tables.virtual_records) // 4
        and (ends[-1] if count else 0) == len(blob)
    ):
        return "its header does not describe its records"
    return IndexFile(path, header, blob, ends)


_UNSAFE_FILENAME = re.compile(r"(?:^/|(?:^|/)\.\.(?:/|$)|[\x00-\x1f])")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def record_problem(record: PackageRecord) -> str:
    """Why ``record`` cannot have come from a Packages index polyarch parsed, or ""."""
    if not _HEX64.fullmatch(record.sha256):
        return f"package {record.name[:40]!r} has a malformed SHA256"
    if record.size < 0:
        return f"package {record.name[:40]!r} has a negative size"
    if not record.filename or _UNSAFE_FILENAME.search(record.filename):
        return f"package {record.name[:40]!r} has the unsafe file name {record.filename[:80]!r}"
    return ""


def check_index_file(path: Path, opened: BinaryIO) -> str:
    """Everything about a cache file that can be checked without the signed index, or ""."""
    found = read_index_file(path, opened)
    if isinstance(found, str):
        return found
    try:
        records = found.records()
    except DamagedIndex as exc:
        return str(exc)
    except IntegrityError as exc:
        return f"a record cannot be parsed: {exc.message}"
    problem = next((p for p in map(record_problem, records) if p), "")
    if problem:
        return problem
    names, provides = [r.name for r in records], [r.provides for r in records]
    if found.tables != build_tables(names, provides):
        return "its tables do not match its records"
    return ""
