"""Reading a Packages index for its cache without parsing its records.

The cached index (``index_file``) holds each record as the bytes of its stanza
and lookup tables by name and by provided name, so caching an index needs only
where each stanza is and its Package and Provides fields, exactly as
``parse_stanza`` would read them. ``scan_packages`` finds those at a fraction
of the cost of parsing every record (on Debian's 63,000-stanza main index,
~0.15 s against ~0.75 s):

- the quick way, for an index shaped as Debian's archives write them (each
  stanza begins with its one Package line; LF line ends; no field spelt in an
  unusual case): two regular expressions pull every Package and Provides line,
  once a third found no line that would make them read otherwise than
  ``stanza_fields`` (``_SPOILERS`` lists those lines);
- otherwise stanza by stanza, by ``stanza_fields`` itself.

Records tile the index from the first record on: a record is its stanza and the
separator (and any piece without a wanted field) up to the next record, which
parses as the stanza alone. So the cached records are the index's own bytes,
written in one piece and checked whole by their digests.
"""

from __future__ import annotations

import bisect
import re
from typing import NamedTuple

from polyarch.debian.packages import field_value, normalized, stanza_fields


class ScannedIndex(NamedTuple):
    """An index cut into records, with what its lookup tables need of each."""

    records: memoryview
    """The (normalized) index from its first record on: the records, one after another."""
    ends: list[int]
    """Where each record ends in ``records`` (it starts where the previous one ends)."""
    names: list[str]
    """Each record's Package field, as its ``PackageRecord`` has it ("" if none)."""
    provides: list[str]
    """Each record's Provides field, likewise."""


# A line that makes the quick way read otherwise than ``stanza_fields``, or needs
# ``normalized``. Each alternative starts at a line's newline. None occurs in
# Debian's archives.
_SPOILERS = re.compile(
    rb"\n(?:"
    rb"[ \t]+\n"  # a separator line holding whitespace
    rb"|\n(?!Package:|\Z)"  # a stanza that does not begin with a Package line, or an extra empty line
    rb"|(?<=[^\n]\n)Package:"  # a Package line that does not begin its stanza
    rb"|p(?i:ackage|rovides):"  # Package or Provides spelt in another case
    rb"|P(?!ackage:|rovides:)(?i:ackage|rovides):"
    rb"|P(?:ackage|rovides):.*\n[ \t]"  # either continued on the next line
    rb")"
)
_PACKAGE_LINE = re.compile(rb"\n\nPackage:(.*)")
_PROVIDES_LINE = re.compile(rb"\nProvides:(.*)")


def scan_packages(data: bytes) -> ScannedIndex:
    """The records of an uncompressed index, with their names and Provides fields.

    Exactly what ``parse_stanza`` gives each record for those two fields,
    without parsing the records (a stanza it refuses is still a record).
    """
    if _quick(data):
        return _scanned_quickly(data)
    return _scanned_slowly(normalized(data))


def _quick(data: bytes) -> bool:
    first_line = data.find(b"\n")
    return (
        data.startswith(b"Package:")
        and data[first_line + 1 : first_line + 2] not in (b" ", b"\t")  # continued
        and b"\r" not in data
        and _SPOILERS.search(data) is None
    )


def _scanned_quickly(data: bytes) -> ScannedIndex:
    # Every stanza begins with its only Package line, after an empty line (but
    # the first, at 0): the records start there and nowhere else.
    first_line = data.find(b"\n")
    starts = [0]
    raw_names = [data[8 : first_line if first_line >= 0 else None]]
    for match in _PACKAGE_LINE.finditer(data):
        starts.append(match.start() + 2)
        raw_names.append(match[1])
    names = [name.decode("utf-8", errors="replace").strip() for name in raw_names]
    provides = [""] * len(starts)
    for match in _PROVIDES_LINE.finditer(data):
        # The last Provides line of a stanza wins, as in ``stanza_fields``.
        record = bisect.bisect_right(starts, match.start()) - 1
        provides[record] = match[1].decode("utf-8", errors="replace").strip()
    return _tiled(data, starts, names, provides)


def _scanned_slowly(data: bytes) -> ScannedIndex:
    starts: list[int] = []
    names: list[str] = []
    provides: list[str] = []
    offset = 0
    for stanza in data.split(b"\n\n"):
        fields = stanza_fields(stanza)
        if fields is not None:
            starts.append(offset)
            names.append(field_value(fields.get("Package", "")))
            provides.append(field_value(fields.get("Provides", "")))
        offset += len(stanza) + 2
    return _tiled(data, starts, names, provides)


def _tiled(data: bytes, starts: list[int], names: list[str], provides: list[str]) -> ScannedIndex:
    first = starts[0] if starts else len(data)
    ends = [start - first for start in starts[1:]]
    if starts:
        ends.append(len(data) - first)
    return ScannedIndex(memoryview(data)[first:], ends, names, provides)
