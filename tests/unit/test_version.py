"""Debian version ordering: the rules of deb-version(7), checked against dpkg itself."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polyarch.debian.version import compare_versions, satisfies


@pytest.mark.parametrize(
    ("smaller", "larger"),
    [
        ("1.0", "1.1"),
        ("1.9", "1.10"),  # digit runs compare as numbers
        ("1.0~rc1", "1.0"),  # tilde sorts before the end of the string
        ("1.0~~", "1.0~"),
        ("1.0", "1.0+b1"),
        ("1.0", "1.0.1"),
        ("1.0a", "1.0+"),  # letters sort before other characters
        ("1.0-1", "1.0-2"),
        ("1.0-9", "1.0-10"),
        ("2.36-9", "2.36-9+deb12u4"),
        ("9.9", "1:0.1"),  # the epoch wins over everything
        ("1:2.0", "2:1.0"),
        ("1.0-1~bpo12+1", "1.0-1"),
    ],
)
def test_versions_sort_in_dpkg_order(smaller: str, larger: str) -> None:
    assert compare_versions(smaller, larger) == -1
    assert compare_versions(larger, smaller) == 1


@pytest.mark.parametrize(
    ("a", "b"),
    [("1.0", "1.0"), ("0:1.0", "1.0"), ("1.0", "1.0-0"), ("1.01", "1.1"), ("1.0-00", "1.0")],
)
def test_equivalent_spellings_compare_equal(a: str, b: str) -> None:
    assert compare_versions(a, b) == 0


@pytest.mark.parametrize(
    ("version", "op", "wanted", "expected"),
    [
        ("1.0", "<<", "1.1", True),
        ("1.1", "<<", "1.1", False),
        ("1.1", "<=", "1.1", True),
        ("1.2", "<=", "1.1", False),
        ("1.1", "=", "1.1", True),
        ("1.1", "=", "1:1.1", False),
        ("1.1", ">=", "1.1", True),
        ("1.0", ">=", "1.1", False),
        ("1.2", ">>", "1.1", True),
        ("1.1", ">>", "1.1", False),
        # The deprecated single-character operators mean <= and >=, not << and >>.
        ("1.1", "<", "1.1", True),
        ("1.1", ">", "1.1", True),
        ("1.2", "<", "1.1", False),
        ("1.0", ">", "1.1", False),
        ("1.0~rc1", ">=", "1.0", False),
        ("1:0.5", ">=", "2.0", True),
    ],
)
def test_satisfies_applies_each_operator(
    version: str, op: str, wanted: str, expected: bool
) -> None:
    assert satisfies(version, op, wanted) is expected


def test_unknown_operator_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown version relation"):
        satisfies("1.0", "!=", "1.0")


def test_bad_epoch_is_refused() -> None:
    with pytest.raises(ValueError, match="epoch"):
        compare_versions("x:1.0", "1.0")


# Small alphabets make equal prefixes, tildes and letter/digit boundaries likely,
# which is where ordering bugs live.
_chars = st.sampled_from("0123456789aAzZ.+~")
_upstream = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from("0129"),
    st.text(_chars, max_size=6),
)
_revision = st.text(st.sampled_from("019abz.+~"), min_size=1, max_size=4)
_version = st.builds(
    lambda epoch, upstream, revision: (
        (f"{epoch}:" if epoch is not None else "") + upstream + (f"-{revision}" if revision else "")
    ),
    st.one_of(st.none(), st.integers(0, 2)),
    _upstream,
    st.one_of(st.none(), _revision),
)
_suffix = st.text(_chars, max_size=3)
_pair = st.one_of(
    st.tuples(_version, _version),
    # A version against a small edit of itself: the interesting near-ties.
    _version.flatmap(lambda v: st.tuples(st.just(v), _suffix.map(lambda s: v + s))),
    _version.flatmap(lambda v: st.tuples(st.just(v), st.just(v.replace(".", "~", 1)))),
)


def _dpkg_order(pairs: list[tuple[str, str]]) -> list[int]:
    """dpkg's verdict on many pairs from one shell, so the test pays one process per batch."""
    script = (
        "while read -r a b; do "
        'if dpkg --compare-versions "$a" lt "$b"; then echo -1; '
        'elif dpkg --compare-versions "$a" eq "$b"; then echo 0; '
        "else echo 1; fi; done"
    )
    stdin = "".join(f"{a} {b}\n" for a, b in pairs).encode()
    done = subprocess.run(["sh", "-c", script], input=stdin, capture_output=True, check=True)
    return [int(line) for line in done.stdout.split()]


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="needs dpkg")
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_pair, min_size=40, max_size=40))
def test_ordering_matches_dpkg_compare_versions(pairs: list[tuple[str, str]]) -> None:
    theirs = _dpkg_order(pairs)
    mismatches = [
        (a, b, compare_versions(a, b), dpkg)
        for (a, b), dpkg in zip(pairs, theirs, strict=True)
        if compare_versions(a, b) != dpkg
    ]
    assert mismatches == []
