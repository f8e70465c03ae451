"""Where a key of a TOML document is written, so error messages can name the line.

tomllib returns plain dicts without positions, so the text is scanned again:
table headers and ``key = value`` lines, with quoted and dotted keys decoded as
TOML decodes them (``[containers."../x"]`` is the key ``../x``), and values
skipped whole (multi-line strings and arrays cannot pass for keys). The scan
is only run on text tomllib has accepted; on anything else it stops early and
the answer is the best line found so far.
"""

from __future__ import annotations

import bisect
import json
import re
import tomllib
from collections.abc import Iterator, Sequence
from typing import Any

_BLANK = re.compile(r"(?:[ \t\r\n]|#[^\n]*)*")
_KEY_PART = re.compile(
    r"""[ \t]*(?:
        (?P<bare>[A-Za-z0-9_-]+)
      | (?P<basic>"(?:[^"\\\n]|\\.)*")
      | '(?P<literal>[^'\n]*)'
    )[ \t]*""",
    re.VERBOSE,
)
_EQUALS = re.compile(r"[ \t]*=")
# One token of a value: strings whole (escapes and triple quotes included), comments,
# brackets (arrays and inline tables nest), newlines, and runs of anything else.
_VALUE_TOKEN = re.compile(
    r"""
    (?P<string>
        \"\"\"(?:[^"\\]|\\.|"(?!""))*\"\"\""{0,2}
      | '''(?:[^']|'(?!''))*''''{0,2}
      | "(?:[^"\\\n]|\\.)*"
      | '[^'\n]*'
    )
    | (?P<comment>\#[^\n]*)
    | (?P<open>[\[{])
    | (?P<close>[\]}])
    | (?P<newline>\n)
    | (?P<other>[^"'\#\[\]{}\n]+)
    """,
    re.VERBOSE | re.DOTALL,
)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def dotted(keys: Sequence[str]) -> str:
    """``containers."../x".command``: keys joined as TOML writes them, quoted where needed."""
    return ".".join(k if _BARE_KEY.fullmatch(k) else json.dumps(k) for k in keys) or "(top level)"


def line_of(text: str, keys: Sequence[str]) -> int:
    """The line that first writes ``keys`` (or something inside it), else its closest parent."""
    best_line, best_len = 1, 0
    for line, full in key_lines(text):
        common = 0
        for a, b in zip(full, keys, strict=False):
            if a != b:
                break
            common += 1
        if common == len(keys):
            return line
        if common == len(full) and common > best_len:
            best_line, best_len = line, common
    return best_line


def key_lines(text: str) -> Iterator[tuple[int, tuple[str, ...]]]:
    """(line, full key) of every table header and ``key = value`` of a TOML document."""
    newlines = [m.start() for m in re.finditer("\n", text)]
    table: tuple[str, ...] = ()
    pos = 0
    while True:
        blank = _BLANK.match(text, pos)
        pos = blank.end() if blank else pos
        if pos >= len(text):
            return
        line = bisect.bisect_left(newlines, pos) + 1
        if text[pos] == "[":
            pos += 2 if text.startswith("[[", pos) else 1
            found = _key(text, pos)
            if found is None:
                return
            table, pos = found
            yield line, table
            end = text.find("\n", pos)
            pos = len(text) if end < 0 else end
            continue
        found = _key(text, pos)
        equals = _EQUALS.match(text, found[1]) if found else None
        if found is None or equals is None:
            return
        yield line, table + found[0]
        pos = _end_of_value(text, equals.end())


def _key(text: str, pos: int) -> tuple[tuple[str, ...], int] | None:
    """A dotted key at ``pos`` as its decoded parts, and where it ends."""
    parts: list[str] = []
    while True:
        m = _KEY_PART.match(text, pos)
        if m is None:
            return None
        if m.group("basic") is not None:
            # Escapes (\u00e9, \") decoded exactly as tomllib decodes them.
            parts.append(str(tomllib.loads(f"k = {m.group('basic')}")["k"]))
        else:
            parts.append(m.group("bare") or m.group("literal"))
        pos = m.end()
        if not text.startswith(".", pos):
            return tuple(parts), pos
        pos += 1


def _end_of_value(text: str, pos: int) -> int:
    """Where the value starting at ``pos`` ends: the newline after it, outside any brackets."""
    depth = 0
    while pos < len(text):
        m = _VALUE_TOKEN.match(text, pos)
        if m is None:
            return len(text)
        kind = m.lastgroup
        if kind == "open":
            depth += 1
        elif kind == "close":
            depth -= 1
        elif kind == "newline" and depth <= 0:
            return pos
        pos = m.end()
    return pos


def array_item_line(text: str, keys: Sequence[str], index: int) -> int:
    """The line where item ``index`` (counting from 0) of the array at ``keys`` starts.

    Counts bracketed items (inline tables, arrays), as containers.lock writes
    its packages; the line of ``keys`` itself if there are fewer.
    """
    line = line_of(text, keys)
    newlines = [m.start() for m in re.finditer("\n", text)]
    pos = newlines[line - 2] + 1 if line > 1 else 0
    equals = text.find("=", pos)
    if equals < 0:
        return line
    pos, depth, seen = equals + 1, 0, -1
    while pos < len(text):
        m = _VALUE_TOKEN.match(text, pos)
        if m is None:
            break
        kind = m.lastgroup
        if kind == "open":
            if depth == 1:
                seen += 1
                if seen == index:
                    return bisect.bisect_left(newlines, pos) + 1
            depth += 1
        elif kind == "close":
            depth -= 1
            if depth <= 0:
                break
        elif kind == "newline" and depth <= 0:
            break
        pos = m.end()
    return line


def deepest_line(text: str) -> int:
    """The line where brackets nest deepest (strings and comments skipped): where to look
    when a document is nested too deeply to parse."""
    newlines = [m.start() for m in re.finditer("\n", text)]
    depth = deepest = 0
    where = pos = 0
    while pos < len(text):
        m = _VALUE_TOKEN.match(text, pos)
        if m is None:  # an unterminated string: nothing deeper follows that matters
            break
        if m.lastgroup == "open":
            depth += 1
            if depth > deepest:
                deepest, where = depth, pos
        elif m.lastgroup == "close":
            depth -= 1
        pos = m.end()
    return bisect.bisect_left(newlines, where) + 1


_KINDS = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "array": "a list",
    "object": "a table",
    "datetime": "a date-time",
    "date": "a date",
    "time": "a time",
}
"""How messages name a TOML value's kind (from msgspec's or Python's type names)."""


def kind_names(msgspec_types: str) -> str:
    """msgspec's ``str | null`` as ``a string``."""
    names = [t.strip() for t in msgspec_types.split("|") if t.strip() != "null"]
    return " or ".join(_KINDS.get(t, t) for t in names)


def kind_of(value: Any) -> str:
    """What kind of TOML value ``value`` (as tomllib returns it) is: ``a list``, ``an integer``."""
    if isinstance(value, list | dict):
        return _KINDS["array" if isinstance(value, list) else "object"]
    name = type(value).__name__
    return _KINDS.get(name, name)
