"""Relationship fields (Depends, Conflicts, ...) parsed by polyarch, judged by python-debian.

polyarch parses them itself (importing python-debian cost every build ~15 ms
of start-up); python-debian's ``PkgRelation`` is the independent
implementation both well-formed and malformed fields are held against.
"""

from __future__ import annotations

from typing import Any

from debian.deb822 import PkgRelation
from hypothesis import given, settings
from hypothesis import strategies as st

from polyarch.debian.universe import Alternative, Clause, parse_relation_field

_name = st.from_regex(r"[a-z0-9][a-z0-9.+-]{0,12}", fullmatch=True)
_archqual = st.sampled_from(["any", "native", "amd64", "arm64"])
_op = st.sampled_from(["<<", "<=", "=", ">=", ">>", "<", ">"])
_version = st.from_regex(r"([0-9]:)?[0-9][a-zA-Z0-9.+~-]{0,8}", fullmatch=True)
_arch = st.sampled_from(["amd64", "arm64", "i386", "linux-any", "any-arm64", "armhf"])
_space = st.sampled_from(["", " ", "  ", "\t"])


@st.composite
def _alternative(draw: st.DrawFn) -> str:
    text = draw(_name)
    if draw(st.booleans()):
        text += ":" + draw(_archqual)
    if draw(st.booleans()):
        text += (
            f"{draw(_space)}({draw(_space)}{draw(_op)}{draw(_space)}{draw(_version)}{draw(_space)})"
        )
    if draw(st.booleans()):
        arches = draw(st.lists(st.tuples(st.booleans(), _arch), min_size=1, max_size=3))
        text += draw(_space) + "[" + " ".join(("!" if n else "") + a for n, a in arches) + "]"
    if draw(st.booleans()):
        text += draw(_space) + draw(st.sampled_from(["<!nocheck>", "<stage1> <!cross>"]))
    return draw(_space) + text + draw(_space)


_well_formed = st.lists(
    st.lists(_alternative(), min_size=1, max_size=3).map("|".join), min_size=1, max_size=4
).map(",".join)
_anything = st.text(alphabet="ab1:+-.~()<>=|,[]! \t\n", max_size=40)


def _reference(text: str) -> tuple[Clause, ...]:
    def alternative(rel: dict[str, Any]) -> Alternative:
        version = rel.get("version")
        return Alternative(
            name=rel["name"],
            archqual=rel.get("archqual"),
            op=version[0] if version else None,
            version=version[1] if version else None,
            arches=tuple((bool(a.enabled), str(a.arch)) for a in rel.get("arch") or ()),
        )

    return tuple(
        tuple(alternative(rel) for rel in group) for group in PkgRelation.parse_relations(text)
    )


@settings(max_examples=400, deadline=None)
@given(_well_formed)
def test_well_formed_fields_parse_as_python_debian_parses_them(text: str) -> None:
    assert parse_relation_field(text) == _reference(text)


@settings(max_examples=400, deadline=None)
@given(_anything)
def test_malformed_fields_parse_as_python_debian_parses_them(text: str) -> None:
    assert parse_relation_field(text) == _reference(text)


def test_a_field_of_every_kind_of_alternative() -> None:
    text = "libc6 (>= 2.34), awk | mawk:any [!i386 amd64] <!nocheck>, debconf (<< 1.5) | x"
    assert parse_relation_field(text) == (
        (Alternative("libc6", op=">=", version="2.34"),),
        (Alternative("awk"), Alternative("mawk", "any", arches=((False, "i386"), (True, "amd64")))),
        (Alternative("debconf", op="<<", version="1.5"), Alternative("x")),
    )
