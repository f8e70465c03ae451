"""TOML values written by hand, for files whose layout polyarch fixes (containers.lock).

tomllib only reads; the lock's writer chooses its own order and line breaks
(one package per line, so a refresh diffs well), and takes its values from here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import msgspec

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def key(text: str) -> str:
    """A key: bare when TOML allows it, else quoted."""
    return text if _BARE_KEY.fullmatch(text) else string(text)


def string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def value(item: object) -> str:
    """A value on one line: structs and dicts as inline tables (dict keys sorted)."""
    if isinstance(item, msgspec.Struct):
        # Fields in declaration order; None (an optional field not set) is left out.
        fields = [(f, getattr(item, f)) for f in item.__struct_fields__]
        return "{ " + ", ".join(f"{f} = {value(v)}" for f, v in fields if v is not None) + " }"
    if isinstance(item, dict):
        inner = ", ".join(f"{key(k)} = {value(v)}" for k, v in sorted(item.items()))
        return f"{{ {inner} }}" if inner else "{}"
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int):
        return str(item)
    if isinstance(item, str):
        return string(item)
    if isinstance(item, Iterable):
        return "[" + ", ".join(value(v) for v in item) + "]"
    raise TypeError(f"cannot write {type(item).__name__} as TOML")


def lines(items: Iterable[object]) -> str:
    """An array with one item per line."""
    return "[\n" + "".join(f"  {value(item)},\n" for item in items) + "]"
