"""Parsing Packages indexes, and the parsed-index cache."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import msgspec
import pytest
from debian import deb822
from hypothesis import given, settings
from hypothesis import strategies as st

from polyarch.cache import Cache, Kind
from polyarch.debian.index import PackageIndex, cache_key, load_index
from polyarch.debian.index_file import build_tables, check_index_file, write_index_file
from polyarch.debian.packages import PackageRecord, parse_packages
from polyarch.debian.scan import scan_packages
from polyarch.errors import CacheError, IntegrityError

SHA = "ab" * 32

INDEX = f"""\
Package: libc6
Source: glibc
Version: 2.36-9+deb12u4
Installed-Size: 12990
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Architecture: amd64
Multi-Arch: same
Replaces: libc6-amd64
Depends: libgcc-s1
Recommends: libidn2-0 (>= 2.0.5~)
Breaks: aide (<< 0.17.3-4+b3),
 busybox (<< 1.30.1-6),
\tchrony (<< 4.2-3~)
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system.
 .
 Package: not-a-package
 Depends: not-a-dependency
Filename: pool/main/g/glibc/libc6_2.36-9+deb12u4_amd64.deb
Size: 2757360
SHA256: {SHA.upper()}

Package: bash
Essential: yes
Version: 5.2.15-2+b2
Architecture: amd64
Pre-Depends: libc6 (>= 2.36), libtinfo6 (>= 6)
Depends: base-files (>= 2.1.12), debianutils (>= 5.6-0.1)
Package-Type: deb
Filename: pool/main/b/bash/bash_5.2.15-2+b2_amd64.deb
Size: 1491932
SHA256: {"cd" * 32}
"""


def test_stanzas_become_records_in_index_order_with_continuations_joined() -> None:
    libc6, bash = parse_packages(INDEX.encode(), "main")
    assert libc6 == PackageRecord(
        name="libc6",
        version="2.36-9+deb12u4",
        architecture="amd64",
        filename="pool/main/g/glibc/libc6_2.36-9+deb12u4_amd64.deb",
        size=2757360,
        sha256=SHA,
        depends="libgcc-s1",
        breaks="aide (<< 0.17.3-4+b3), busybox (<< 1.30.1-6), chrony (<< 4.2-3~)",
        multi_arch="same",
        source="glibc",
        component="main",
    )
    assert bash.essential is True
    assert bash.pre_depends == "libc6 (>= 2.36), libtinfo6 (>= 6)"
    assert (libc6.essential, bash.source, bash.provides) == (False, "", "")


def test_field_lookalikes_inside_a_description_are_not_fields() -> None:
    libc6 = parse_packages(INDEX.encode(), "main")[0]
    assert libc6.name == "libc6"
    assert "not-a-dependency" not in libc6.depends


def test_field_names_are_case_insensitive() -> None:
    text = INDEX.replace("Package: bash", "package: bash").replace("SHA256: cd", "sha256: cd")
    assert parse_packages(text.encode(), "main")[1].name == "bash"


def test_whitespace_only_separator_lines_and_crlf_separate_stanzas() -> None:
    text = INDEX.replace("\n\nPackage: bash", "\n \t\nPackage: bash")
    assert [r.name for r in parse_packages(text.encode(), "c")] == ["libc6", "bash"]
    crlf = INDEX.replace("\n", "\r\n")
    assert [r.name for r in parse_packages(crlf.encode(), "c")] == ["libc6", "bash"]


def test_empty_index_has_no_records() -> None:
    assert parse_packages(b"", "main") == []
    assert parse_packages(b"\n\n\n", "main") == []


@pytest.mark.parametrize("field", ["SHA256", "Size", "Filename", "Version"])
def test_stanza_without_a_required_field_is_refused(field: str) -> None:
    text = "\n".join(line for line in INDEX.splitlines() if not line.startswith(f"{field}:"))
    with pytest.raises(IntegrityError, match=f"libc6 has no {field}"):
        parse_packages(text.encode(), "main")


def test_malformed_sha256_is_refused() -> None:
    with pytest.raises(IntegrityError, match="malformed"):
        parse_packages(INDEX.replace(SHA.upper(), "xyz").encode(), "main")


_token = st.text(alphabet="ab01+-.~()<>=|, \t", min_size=1, max_size=30)
_name = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789+-.", min_size=1, max_size=20)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(_name, _token, st.lists(_token, max_size=3), st.booleans()),
        min_size=1,
        max_size=5,
    )
)
def test_parser_agrees_with_python_debian(
    packages: list[tuple[str, str, list[str], bool]],
) -> None:
    stanzas = []
    for name, depends, continuation, essential in packages:
        depends_field = depends.strip() or "x"
        lines = [f"Package: {name}", "Version: 1.0", "Architecture: all"]
        lines.append(f"Depends: {depends_field}")
        lines += [f" {c.strip() or 'y'}" for c in continuation]
        if essential:
            lines.append("Essential: yes")
        lines += [
            "Description: d",
            " Depends: fake",
            f"Filename: pool/{name}.deb",
            "Size: 1",
            f"SHA256: {SHA}",
        ]
        stanzas.append("\n".join(lines) + "\n")
    text = "\n".join(stanzas)
    ours = parse_packages(text.encode(), "main")
    reference = list(deb822.Packages.iter_paragraphs(text.splitlines(True), use_apt_pkg=False))
    assert len(ours) == len(reference)
    for record, para in zip(ours, reference, strict=True):
        assert record.name == para["Package"]
        # deb822 keeps the line breaks; we join continuation lines with one space.
        assert record.depends == re.sub(r"\s*\n\s*", " ", para["Depends"]).strip()
        assert record.essential == (para.get("Essential") == "yes")


def test_parsed_index_is_cached_under_the_compressed_files_hash(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    calls: list[int] = []

    def raw() -> bytes:
        calls.append(1)
        return INDEX.encode()

    digest = hashlib.sha256(b"compressed").hexdigest()
    first = load_index(cache, digest, raw, component="main")
    second = load_index(cache, digest, raw, component="main")
    assert first == second
    assert len(first) == 2
    assert calls == [1]
    assert cache.get(Kind.INDEXES, cache_key(digest)) is not None


def test_unreadable_cached_index_is_rebuilt(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    digest = hashlib.sha256(b"compressed").hexdigest()
    cache.put(Kind.INDEXES, cache_key(digest), b"\xc1 not msgpack")
    records = load_index(cache, digest, lambda: INDEX.encode(), component="main")
    assert [r.name for r in records] == ["libc6", "bash"]
    assert load_index(cache, digest, lambda: b"", component="main") == records


# -- the lazily decoded cache --------------------------------------------------


def _rec(
    name: str, version: str = "1", *, arch: str = "amd64", provides: str = ""
) -> PackageRecord:
    return PackageRecord(
        name=name,
        version=version,
        architecture=arch,
        filename=f"pool/{name}_{version}.deb",
        size=1,
        sha256=hashlib.sha256(f"{name}{version}{arch}".encode()).hexdigest(),
        provides=provides,
    )


def _stanza(record: PackageRecord) -> str:
    lines = [
        f"Package: {record.name}",
        f"Version: {record.version}",
        f"Architecture: {record.architecture}",
    ]
    if record.provides:
        lines.append(f"Provides: {record.provides}")
    lines += [f"Filename: {record.filename}", f"Size: {record.size}", f"SHA256: {record.sha256}"]
    return "\n".join(lines) + "\n"


RECORDS = [
    _rec("mawk", provides="awk"),
    _rec("zlib1g", "1:1.2"),
    _rec("gawk", "5.2", provides="awk (= 5.2), gawk-doc-shim"),
    _rec("zlib1g", "1:1.3"),
    *(_rec(f"lib{i}") for i in range(40)),  # past msgpack's 16-item fixarray
]
TEXT = "\n".join(_stanza(r) for r in RECORDS).encode()


def _cached_twice(tmp_path: Path) -> tuple[PackageIndex, PackageIndex, Path]:
    cache = Cache(tmp_path)
    digest = hashlib.sha256(b"compressed").hexdigest()
    cold = load_index(cache, digest, lambda: TEXT, component="main")
    warm = load_index(cache, digest, lambda: b"", component="main")
    path = cache.get(Kind.INDEXES, cache_key(digest))
    assert path is not None
    return cold, warm, path


def test_warm_index_has_the_same_records_in_index_order(tmp_path: Path) -> None:
    cold, warm, _ = _cached_twice(tmp_path)
    assert (
        list(warm)
        == list(cold)
        == [r.__class__(**{**msgspec.structs.asdict(r), "component": "main"}) for r in RECORDS]
    )
    assert len(warm) == len(RECORDS)
    assert warm[2].name == "gawk" and warm[-1].name == "lib39"
    assert [r.name for r in warm[1:4]] == ["zlib1g", "gawk", "zlib1g"]


def test_lookups_by_name_and_provided_name_decode_the_same_records(tmp_path: Path) -> None:
    for index in _cached_twice(tmp_path)[:2]:
        assert [r.version for r in index.named("zlib1g")] == ["1:1.2", "1:1.3"]
        assert index.named("awk") == []
        provided = index.provided("awk")
        assert [(r.name, v) for r, v in provided] == [("mawk", None), ("gawk", "5.2")]
        # The same object, whichever way it was found: the resolver relies on it.
        assert provided[1][0] is index.named("gawk")[0]
        assert index.provided("gawk-doc-shim")[0][0] is index.named("gawk")[0]
        assert {"awk", "gawk-doc-shim", "mawk", "lib39"} <= index.names()


def test_concatenated_indexes_keep_component_order(tmp_path: Path) -> None:
    _, warm, _ = _cached_twice(tmp_path)
    extra = PackageIndex.from_records([_rec("zlib1g", "1:1.4", arch="all")])
    both = PackageIndex.concat([warm, extra])
    assert len(both) == len(RECORDS) + 1
    assert [r.version for r in both.named("zlib1g")] == ["1:1.2", "1:1.3", "1:1.4"]
    assert both[-1].version == "1:1.4"


def test_truncated_cached_index_is_rebuilt(tmp_path: Path) -> None:
    _, _, path = _cached_twice(tmp_path)
    path.write_bytes(path.read_bytes()[:-7])
    cache = Cache(tmp_path)
    rebuilt = load_index(
        cache, hashlib.sha256(b"compressed").hexdigest(), lambda: TEXT, component="main"
    )
    assert [r.name for r in rebuilt.named("gawk")] == ["gawk"]
    assert path.stat().st_size > 0


_DAMAGE = {
    # One flipped byte in the field that names the .deb: before, a build failed
    # blaming the mirror for serving a file that "does not match its index".
    "record": RECORDS[-1].sha256.encode(),
    # The header (tables) comes before the records: the first "gawk" is in the names
    # table, the first "gawk-doc-shim" in the table of provided names.
    "names table": b"gawk",
    "provided table": b"gawk-doc-shim",
    # The empty line that ends a record: a warm run never reads it, cache verify does.
    "separator": b"\n\nPackage: lib39",
}


@pytest.mark.parametrize("where", list(_DAMAGE))
def test_a_damaged_cached_index_is_evicted_with_a_warning_and_parsed_again(
    tmp_path: Path, where: str
) -> None:
    _, _, path = _cached_twice(tmp_path)
    data = bytearray(path.read_bytes())
    data[data.find(_DAMAGE[where])] ^= 0x01
    path.write_bytes(bytes(data))
    with path.open("rb") as f:
        assert check_index_file(path, f)  # cache verify and pull see it
    cache = Cache(tmp_path)
    loads: list[int] = []

    def raw() -> bytes:
        loads.append(1)
        return TEXT

    index = load_index(cache, hashlib.sha256(b"compressed").hexdigest(), raw, component="main")
    assert index.named("mawk")[0].name == "mawk"
    assert [r.sha256 for r in index.named("lib39")] == [RECORDS[-1].sha256]
    assert [(r.name, r.sha256) for r in index] == [(r.name, r.sha256) for r in RECORDS]
    assert loads == [1]
    assert (
        len(cache.progress.warnings) == 1 and "removed indexes entry" in cache.progress.warnings[0]
    )
    # The cache holds a good entry again.
    again = load_index(cache, hashlib.sha256(b"compressed").hexdigest(), raw, component="main")
    assert list(again) == list(index) and loads == [1]


def test_a_damaged_index_that_cannot_be_parsed_again_is_a_cache_error(tmp_path: Path) -> None:
    _, _, path = _cached_twice(tmp_path)
    data = bytearray(path.read_bytes())
    data[-30:] = b"\xc0" * 30
    path.write_bytes(bytes(data))
    index = load_index(
        Cache(tmp_path), hashlib.sha256(b"compressed").hexdigest(), lambda: b"", component="main"
    )
    assert index.named("gawk")[0].name == "gawk"  # untouched records still load
    with pytest.raises(CacheError, match="damaged"):
        index.named("lib39")


@pytest.mark.parametrize("forgery", ["none", "name", "provided"])
def test_cache_verify_refuses_tables_that_do_not_match_the_records(
    tmp_path: Path, forgery: str
) -> None:
    # Every checksum recomputed: only the records, parsed, can say the tables lie.
    scanned = scan_packages(TEXT)
    names, provides = list(scanned.names), list(scanned.provides)
    if forgery == "name":
        names[0] = "bash"  # mawk's record, looked up as bash
    elif forgery == "provided":
        provides[1] = "awk"  # zlib1g, as a provider of awk
    path = tmp_path / "index"
    with path.open("wb") as f:
        tables = build_tables(names, provides)
        write_index_file(f, path, scanned.records, scanned.ends, tables, "main")
    with path.open("rb") as f:
        problem = check_index_file(path, f)
    assert problem == ("" if forgery == "none" else "its tables do not match its records")
