"""Debian version ordering, exactly as ``dpkg --compare-versions`` orders them.

python-debian's ``version_compare`` is correct but costs ~100 µs a call without
apt_pkg; the resolver compares thousands of versions per closure, so this module
parses each version once (cached) into the pieces dpkg's ``verrevcmp`` walks.
"""

from __future__ import annotations

import functools
from itertools import zip_longest
from typing import Final

__all__ = ["OPERATORS", "compare_versions", "satisfies"]

OPERATORS: Final = frozenset({"<<", "<=", "=", ">=", ">>", "<", ">"})
"""Relation operators of Depends-like fields; ``<`` and ``>`` are the deprecated ``<=``/``>=``."""

# One (non-digit run, digit run) step of dpkg's verrevcmp: the non-digit run as
# its character weights followed by a 0 terminator, the digit run as an int.
_Part = tuple[tuple[int, ...], int]
# An absent part compares like an empty non-digit run followed by the number 0.
_EMPTY_PART: Final[_Part] = ((0,), 0)


def _weight(char: str) -> int:
    # dpkg's order(): '~' sorts before everything, even the end of the string;
    # letters sort before all other non-digit characters.
    if char == "~":
        return -1
    if char.isascii() and char.isalpha():
        return ord(char)
    return ord(char) + 256


def _parts(text: str) -> tuple[_Part, ...]:
    parts: list[_Part] = []
    i, n = 0, len(text)
    while i < n:
        start = i
        while i < n and not ("0" <= text[i] <= "9"):
            i += 1
        # The 0 terminator makes a shorter run compare like dpkg's end-of-string:
        # above '~', below every other character.
        weights = (*(_weight(c) for c in text[start:i]), 0)
        start = i
        while i < n and "0" <= text[i] <= "9":
            i += 1
        parts.append((weights, int(text[start:i]) if i > start else 0))
    return tuple(parts)


@functools.lru_cache(maxsize=65536)
def _parse(version: str) -> tuple[int, tuple[_Part, ...], tuple[_Part, ...]]:
    text = version.strip()
    if not text:
        raise ValueError("empty version string")
    epoch = 0
    colon = text.find(":")
    if colon != -1:
        if not text[:colon].isdigit():
            raise ValueError(f"bad epoch in version {version!r}")
        epoch = int(text[:colon])
        text = text[colon + 1 :]
    upstream, dash, revision = text.rpartition("-")
    if not dash:
        upstream, revision = text, ""
    return epoch, _parts(upstream), _parts(revision)


def _compare_parts(a: tuple[_Part, ...], b: tuple[_Part, ...]) -> int:
    for pa, pb in zip_longest(a, b, fillvalue=_EMPTY_PART):
        if pa != pb:
            return -1 if pa < pb else 1
    return 0


@functools.lru_cache(maxsize=65536)
def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` sorts before, equal to or after ``b`` in dpkg's order.

    Epochs first, then upstream, then revision (a missing revision equals ``0``);
    ``~`` sorts before anything, even the end of the string (``1.0~rc1 << 1.0``).
    Raises ValueError for an empty version or a non-numeric epoch.
    """
    ea, ua, ra = _parse(a)
    eb, ub, rb = _parse(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_parts(ua, ub) or _compare_parts(ra, rb)


def satisfies(version: str, op: str, wanted: str) -> bool:
    """Whether ``version`` meets the relation ``(op wanted)`` of a Depends-like field.

    ``op`` is one of ``<<``, ``<=``, ``=``, ``>=``, ``>>``, or the deprecated ``<``
    and ``>``, which dpkg reads as ``<=`` and ``>=``. Raises ValueError otherwise.
    """
    order = compare_versions(version, wanted)
    if op == "<<":
        return order < 0
    if op in ("<=", "<"):
        return order <= 0
    if op == "=":
        return order == 0
    if op in (">=", ">"):
        return order >= 0
    if op == ">>":
        return order > 0
    raise ValueError(f"unknown version relation {op!r}; expected one of {sorted(OPERATORS)}")
