"""Caching an index without parsing its records: the scan's exactness, and refusals when used.

``scan_packages`` reads each stanza's Package and Provides for the lookup
tables without parsing records, the quick way for an index shaped as Debian's
archives write them. Whatever the bytes, it must agree with the parser's own
reading of every stanza (``stanza_fields``), cut the same records, and each
cached record must parse as its stanza does. A stanza the parser refuses is
cached all the same and refused when it is used, with the parser's error.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from polyarch.cache import Cache, Kind
from polyarch.debian import scan
from polyarch.debian.index import cache_key, load_index
from polyarch.debian.index_file import check_index_file
from polyarch.debian.packages import (
    field_value,
    normalized,
    parse_packages,
    parse_stanza,
    split_stanzas,
    stanza_fields,
)
from polyarch.errors import IntegrityError

SHA = "ab" * 32


def _stanza(i: int) -> bytes:
    provides = [f"Provides: virt{i % 3} (= 1.{i}), other{i}\n", "", f"Provides: virt{i % 2}\n"][
        i % 3
    ]
    return (
        f"Package: pkg{i}\nSource: src{i // 2}\nVersion: 1.{i}-1\nArchitecture: amd64\n"
        f"{provides}Depends: libc6 (>= 2.36),\n pkg{i + 1}\n"
        f"Description: package {i}\n Package: lookalike{i}\n Provides: lookalike\n .\n"
        f"Tag: role::program,\n use::testing\n"
        f"Filename: pool/main/p/pkg{i}/pkg{i}_1.{i}-1_amd64.deb\nSize: {100 + i}\n"
        f"SHA256: {hashlib.sha256(str(i).encode()).hexdigest()}\n"
    ).encode()


# Shaped as Debian's archives write an index: the quick way reads it.
DEBIAN_SHAPED = b"\n".join(_stanza(i) for i in range(12))

# What turns a shaped index into one the quick way must not read, or reads otherwise.
_INSERTS = [
    b"\n", b"\n\n", b" ", b"\t", b"\r\n", b"\n \n", b"\n\t\n", b":", b"\xff", b"\xc3",
    b"\nPackage: second", b"\npackage: lower", b"\nPACKAGE: upper", b"\nPackagE: mixed",
    b"\nProvides: more", b"\nprovides: lower", b"\nPROVIDES: upper (= 2)", b"\n continued",
    b"\nVersion: 2", b"\nversion: 3", b"\nsha256: " + SHA.encode(), b"\nProvide\xc5\xbf: long-s",
]  # fmt: skip


@st.composite
def _mutated_index(draw: st.DrawFn) -> bytes:
    data = bytearray(DEBIAN_SHAPED)
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "insert", "delete", "splice"]))
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[at:at] = draw(st.sampled_from(_INSERTS))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 12))]
        else:
            start = draw(st.integers(0, len(DEBIAN_SHAPED)))
            data[at:at] = DEBIAN_SHAPED[start : start + draw(st.integers(1, 60))]
    return bytes(data)


def _outcome(stanza: bytes) -> object:
    try:
        return parse_stanza(stanza, "main")
    except IntegrityError as exc:
        return exc.message


@settings(max_examples=600, deadline=None)
@given(_mutated_index())
def test_the_scan_reads_names_and_provides_as_the_parser_does(data: bytes) -> None:
    pieces = [p for p in split_stanzas(data) if stanza_fields(p) is not None]
    fields = [stanza_fields(p) or {} for p in pieces]
    scanned = scan.scan_packages(data)
    assert scanned.names == [field_value(f.get("Package", "")) for f in fields]
    assert scanned.provides == [field_value(f.get("Provides", "")) for f in fields]
    # The same records, each parsing as its stanza: the same record or the same refusal.
    assert len(scanned.ends) == len(pieces)
    starts = [0, *scanned.ends[:-1]]
    records = [bytes(scanned.records[a:b]) for a, b in zip(starts, scanned.ends, strict=True)]
    assert [_outcome(r) for r in records] == [_outcome(p) for p in pieces]
    assert all(r.startswith(p) for r, p in zip(records, pieces, strict=True))
    # Read the slow way, the same.
    assert scan._scanned_slowly(normalized(data))[1:] == scanned[1:]
    event("read the quick way" if scan._quick(data) else "read stanza by stanza")
    if not any(isinstance(_outcome(p), str) for p in pieces):
        parsed = parse_packages(data, "main")
        assert [(r.name, r.provides) for r in parsed] == list(
            zip(scanned.names, scanned.provides, strict=True)
        )


_HARMLESS = [b"\nProvides: more", b"\nVersion: 2", b"\nversion: 3", b"\nProvide\xc5\xbf: long-s"]
_SPOILERS = [
    b"\n \n", b"\n\t\n", b"\r\n", b"\n\n", b"\nPackage: second", b"\npackage: lower",
    b"\nPACKAGE: upper", b"\nPackagE: mixed", b"\nprovides: lower", b"\nPROVIDES: upper (= 2)",
    b"\n continued",
]  # fmt: skip


def test_an_index_shaped_as_debians_is_read_the_quick_way() -> None:
    # Otherwise the property above would mostly compare the slow way with itself.
    at = DEBIAN_SHAPED.index(b"\nDepends:")  # after stanza 0's Provides line
    for harmless in [b"", *_HARMLESS]:
        assert scan._quick(DEBIAN_SHAPED[:at] + harmless + DEBIAN_SHAPED[at:]), harmless
    assert scan._quick(DEBIAN_SHAPED + b"\n")  # as the archive ends its index
    for spoiler in _SPOILERS:
        assert not scan._quick(DEBIAN_SHAPED[:at] + spoiler + DEBIAN_SHAPED[at:]), spoiler
    assert not scan._quick(b"Package: a\n b\n")  # the first line continued
    assert not scan._quick(b"\n" + DEBIAN_SHAPED)


def test_field_names_are_ascii_case_insensitive() -> None:
    # Unicode case folding took "Provideſ" (long s) for Provides, then failed on it.
    stanza = _stanza(1).replace(b"Package:", b"PACKAGE:") + "Provideſ: nothing\n".encode()
    record = parse_stanza(stanza, "main")
    assert record is not None
    assert (record.name, record.provides) == ("pkg1", "")
    assert scan.scan_packages(stanza).names == ["pkg1"]


def test_the_cache_holds_the_index_bytes_from_its_first_stanza(tmp_path: Path) -> None:
    cache, digest = Cache(tmp_path), hashlib.sha256(b"compressed").hexdigest()
    load_index(cache, digest, lambda: b"\n\n" + DEBIAN_SHAPED, component="main")
    path = cache.get(Kind.INDEXES, cache_key(digest))
    assert path is not None
    assert path.read_bytes().endswith(DEBIAN_SHAPED)


# -- refusals, when the stanza is used ----------------------------------------------------------

GOOD = _stanza(0).decode()
BAD = _stanza(1).decode()
_REFUSALS = {
    **{f"no {field}": (f"{field}: ", f"pkg1 has no {field} field") for field in (
        "Version", "Architecture", "Filename", "Size", "SHA256"
    )},
    "no Package": ("Package: ", r"package \? has no Package field"),
    "malformed Size": ("Size: ", "pkg1 has a malformed Size or SHA256 field"),
    "malformed SHA256": ("SHA256: ", "pkg1 has a malformed Size or SHA256 field"),
}  # fmt: skip


def _broken(refusal: str) -> str:
    prefix, _ = _REFUSALS[refusal]
    lines = BAD.splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith(prefix))
    if refusal.startswith("malformed"):
        lines[at] = prefix + ("12a" if "Size" in refusal else "xyz") + "\n"
    else:
        del lines[at]
    return "".join(lines)


@pytest.mark.parametrize("refusal", list(_REFUSALS))
def test_a_refused_stanza_is_cached_and_refused_when_used(tmp_path: Path, refusal: str) -> None:
    text = (GOOD + "\n" + _broken(refusal) + "\n" + _stanza(2).decode()).encode()
    message = _REFUSALS[refusal][1]
    with pytest.raises(IntegrityError, match=message):
        parse_packages(text, "main")  # parsing it whole refuses the index, as ever
    cache, digest = Cache(tmp_path), hashlib.sha256(text).hexdigest()
    for load in ("cold", "warm"):
        index = load_index(cache, digest, lambda: text, component="main")
        assert [r.name for r in index.named("pkg0") + index.named("pkg2")] == ["pkg0", "pkg2"]
        assert [r.name for r, _ in index.provided("virt0")] == ["pkg0", "pkg2"]
        with pytest.raises(IntegrityError, match=message) as refused:
            if refusal == "no Package":
                index[1]
            else:
                index.named("pkg1")
        assert "broken index" in (refused.value.hint or ""), load
        with pytest.raises(IntegrityError, match=message):
            list(index)
    path = cache.get(Kind.INDEXES, cache_key(digest))
    assert path is not None
    with path.open("rb") as f:
        assert re.search(message, check_index_file(path, f))  # cache verify and pull refuse it
