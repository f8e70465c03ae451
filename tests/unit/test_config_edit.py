"""containers.toml edited by polyarch add: one table inserted, every other byte kept, whatever
the file's comments, spacing, order, line endings and last line."""

from __future__ import annotations

import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polyarch.config_edit import add_container_table, render_table
from polyarch.errors import ConfigError

TABLE = {"package": "ripgrep", "command": "rg", "test": ["--version"]}
comment = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\r\n"), max_size=20
).map(lambda t: f"# {t}")
blank = st.sampled_from(["", "   ", "\t"])
spacing = st.sampled_from([" = ", "=", "   =  "])


@st.composite
def tables(draw: st.DrawFn) -> str:
    """One table of a plausible containers.toml, with comments and odd spacing."""
    kind = draw(st.sampled_from(["repository", "defaults", "container", "container-dotted"]))
    eq = draw(spacing)
    tail = draw(st.one_of(st.just(""), comment.map(lambda c: "  " + c)))
    if kind == "repository":
        body = f"[repository]{tail}\nsuite{eq}'bookworm'\n"
    elif kind == "defaults":
        body = f"[defaults]\nsystems{eq}[ 'x86_64-linux',\n  'aarch64-linux' ]{tail}\n"
    else:
        name = draw(st.sampled_from(["fd", "jq", '"fd.v2"', "bat"]))
        if kind == "container":
            body = f'[containers.{name}]{tail}\npackage{eq}"{name.strip(chr(34))}"\n'
        else:
            body = f'[containers]\n{name}.package{eq}"x"{tail}\n'
    lines = draw(st.lists(st.one_of(comment, blank), max_size=3))
    return "\n".join(lines) + ("\n" if lines else "") + body


@st.composite
def documents(draw: st.DrawFn) -> str:
    parts = draw(st.lists(tables(), max_size=4))
    text = "\n".join(parts)
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        text = ""  # a table written twice: use an empty file instead
    if draw(st.booleans()):
        text = text.rstrip("\n")  # no newline at the end
    if draw(st.booleans()):
        text = text.replace("\n", "\r\n")
    return text


def one_insertion(text: str, out: str, block: str, newline: str) -> bool:
    """Whether ``out`` is ``text`` with ``block`` inserted at a line start, and only blank lines
    (plus an end to a last line that had none) around it."""
    at = out.index(block)
    for above in ("", newline, newline * 2):
        for below in ("", newline):
            i = at - len(above)
            if i < 0 or not out[:at].endswith(above):
                continue
            if (
                out[:i] + out[at + len(block) + len(below) :] == text
                and out[at + len(block) : at + len(block) + len(below)] == below
            ):
                return i == 0 or text[i - 1] == "\n" or i == len(text)
    return False


@given(documents())
def test_the_table_is_inserted_and_every_other_byte_is_kept(text: str) -> None:
    out = add_container_table(text, "rg", TABLE, "containers.toml")
    assert tomllib.loads(out)["containers"]["rg"] == TABLE
    newline = "\r\n" if "\r\n" in text else "\n"
    block = render_table("rg", TABLE).replace("\n", newline)
    assert out.count(block) == 1
    assert one_insertion(text, out, block, newline), (text, out)


def test_the_new_table_follows_the_last_container_even_before_other_tables() -> None:
    text = '[containers.fd]\npackage = "fd-find"\n\n[defaults]\nsystems = ["x86_64-linux"]\n'
    out = add_container_table(text, "rg", TABLE, "containers.toml")
    assert out == (
        '[containers.fd]\npackage = "fd-find"\n\n'
        '[containers.rg]\npackage = "ripgrep"\ncommand = "rg"\ntest = ["--version"]\n\n'
        '[defaults]\nsystems = ["x86_64-linux"]\n'
    )


def test_an_inline_containers_table_is_refused_with_what_to_do() -> None:
    with pytest.raises(ConfigError, match=r"cannot add \[containers.rg\]") as exc:
        add_container_table('containers = { fd = { package = "fd-find" } }\n', "rg", TABLE, "f")
    assert "[containers.NAME] tables" in str(exc.value.hint)
