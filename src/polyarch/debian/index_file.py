"""The file a parsed Packages index is cached in, and every check made when it is read back.

    u64 LE length of the header | SHA256 of the header | header (msgpack) | records (msgpack array)

The header holds lookup tables (``Tables``), where each record ends, an
8-byte SHA256 prefix per record and the SHA256 of all records. The file is
keyed by the signed index's hash, not by its own bytes, so it checks itself:
opening it verifies the header (a few MB), decoding a record verifies that
record, decoding all of them verifies all of them. A warm run that decodes a
few hundred of 63,000 records hashes only those. ``check_cached_index`` checks
everything, and that every record could come from a Packages index
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
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, overload

import msgspec

from polyarch.debian.packages import PackageRecord

FORMAT = "lazy-3"
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

    def well_formed(self) -> bool:
        """The ends rise and the last one ends the blob (a crafted table could say otherwise)."""
        ends = self._ends
        return (ends[-1] if ends else 0) == len(self._blob) and all(
            a <= b for a, b in zip(itertools.chain((0,), ends), ends, strict=False)
        )


class _Header(msgspec.Struct, frozen=True, array_like=True):
    count: int
    record_ends: bytes
    """u32 per record: where it ends in the records array (it starts where the previous one ends)."""
    record_digests: bytes
    """``RECORD_DIGEST`` bytes of SHA256 per record."""
    records_sha256: bytes
    tables: Tables


_RECORD_DECODER = msgspec.msgpack.Decoder(PackageRecord)
_RECORDS_DECODER = msgspec.msgpack.Decoder(list[PackageRecord])
_HEADER_DECODER = msgspec.msgpack.Decoder(_Header)
_ENCODER = msgspec.msgpack.Encoder()


def array_header_length(count: int) -> int:
    # msgpack array header: fixarray, array 16 or array 32.
    return 1 if count < 16 else 3 if count < 1 << 16 else 5


def _array_header(count: int) -> bytes:
    if count < 16:
        return bytes([0x90 | count])
    if count < 1 << 16:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


def write_index_file(f: BinaryIO, records: Sequence[PackageRecord], tables: Tables) -> None:
    """Write the cache file of ``records`` to ``f``."""
    encoded = [_ENCODER.encode(record) for record in records]
    prefix = _array_header(len(records))
    ends = list(itertools.accumulate(map(len, encoded), initial=len(prefix)))[1:]
    everything = hashlib.sha256(prefix)
    for item in encoded:
        everything.update(item)
    header = _ENCODER.encode(
        _Header(
            count=len(records),
            record_ends=u32_bytes(ends),
            record_digests=b"".join(hashlib.sha256(e).digest()[:RECORD_DIGEST] for e in encoded),
            records_sha256=everything.digest(),
            tables=tables,
        )
    )
    f.write(len(header).to_bytes(_LENGTH, "little"))
    f.write(hashlib.sha256(header).digest())
    f.write(header)
    f.write(prefix)
    f.writelines(encoded)


class DamagedIndex(Exception):
    """A record (or all of them) does not match what the header says."""


@dataclass
class IndexFile:
    """A cache file whose header was checked; records are checked as they are decoded."""

    path: Path
    count: int
    tables: Tables
    blob: memoryview
    ends: array[int]
    digests: bytes
    records_sha256: bytes

    def record(self, position: int) -> PackageRecord:
        if not 0 <= position < self.count:
            raise DamagedIndex(f"a table names record {position} of {self.count}")
        start = self.ends[position - 1] if position else array_header_length(self.count)
        data = self.blob[start : self.ends[position]]
        want = self.digests[position * RECORD_DIGEST : (position + 1) * RECORD_DIGEST]
        if hashlib.sha256(data).digest()[:RECORD_DIGEST] != want:
            raise DamagedIndex(f"record {position} does not match its checksum")
        try:
            return _RECORD_DECODER.decode(data)
        except (msgspec.DecodeError, ValueError) as exc:  # ValueError: bad UTF-8
            raise DamagedIndex(f"record {position} cannot be decoded: {exc}") from None

    def records(self) -> list[PackageRecord]:
        if hashlib.sha256(self.blob).digest() != self.records_sha256:
            raise DamagedIndex("the records do not match their checksum")
        try:
            decoded = _RECORDS_DECODER.decode(self.blob)
        except (msgspec.DecodeError, ValueError) as exc:
            raise DamagedIndex(f"the records cannot be decoded: {exc}") from None
        if len(decoded) != self.count:
            raise DamagedIndex(f"{len(decoded)} records, the header says {self.count}")
        return decoded


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
        and bytes(blob[: array_header_length(count)]) == _array_header(count)
        and (ends[-1] if count else array_header_length(count)) == len(blob)
    ):
        return "its header does not describe its records"
    return IndexFile(path, count, tables, blob, ends, header.record_digests, header.records_sha256)


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
    tables, count = found.tables, found.count
    strings = [StringTable(t) for t in (tables.names, tables.virtuals, tables.virtual_versions)]
    if not all(t.well_formed() for t in strings):
        return "its tables are not well formed"
    positions = [*u32_array(tables.name_records), *u32_array(tables.virtual_records)]
    if any(p >= count for p in positions):
        return "its tables name records it does not have"
    names = strings[0].all()
    if [records[p].name for p in u32_array(tables.name_records)] != names or names != sorted(names):
        return "its name table does not match its records"
    if strings[1].all() != sorted(strings[1].all()):
        return "its table of provided names is not sorted"
    return next((p for p in map(record_problem, records) if p), "")
