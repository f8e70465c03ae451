"""containers.toml edited in place: one ``[containers.NAME]`` table added, every other byte kept.

tomlkit (a style-preserving TOML library) decides where the table belongs —
after the last ``[containers.*]`` table, wherever that is in the file — and
renders it. The result is then checked to be the original text with one block
inserted at a line boundary, so the user's comments, spacing, order and quoting
stay byte for byte; a blank line separates the new table from its neighbours.
"""

from __future__ import annotations

from collections.abc import Mapping

from polyarch.errors import ConfigError


def render_table(name: str, values: Mapping[str, object]) -> str:
    """``[containers.NAME]`` and its keys, as TOML text ending in a newline."""
    import tomlkit

    table = tomlkit.table()
    for key, value in values.items():
        table.add(key, value)
    document = tomlkit.document()
    containers = tomlkit.table(is_super_table=True)
    containers.add(name, table)
    document.add("containers", containers)
    return tomlkit.dumps(document)


def add_container_table(text: str, name: str, values: Mapping[str, object], where: str) -> str:
    """``text`` with ``[containers.NAME]`` added; ConfigError if it cannot be added cleanly."""
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    newline = "\r\n" if "\r\n" in text else "\n"
    block = render_table(name, values).replace("\n", newline)
    try:
        document = tomlkit.parse(text)
        containers = document.get("containers")
        if containers is None:
            document.add("containers", tomlkit.parse(render_table(name, values))["containers"])
        else:
            containers[name] = tomlkit.parse(render_table(name, values))["containers"][name]
        placed = tomlkit.dumps(document)
    except (TOMLKitError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"{where}: cannot add [containers.{name}]: {exc}",
            hint="write containers as [containers.NAME] tables, not one inline table",
        ) from None
    at = _insertion_point(text, placed)
    if at is None:
        at = len(text)  # tomlkit changed something else: the end of the file is always safe
    before, after = text[:at], text[at:]
    if before.strip():  # a blank line above the table (and an end to a last line without one)
        block = (
            newline * (0 if before.endswith(newline * 2) else 1 + (not before.endswith(newline)))
            + block
        )
    if after.strip() and not after.startswith(newline):
        block += newline  # and one below it
    return before + block + after


def _insertion_point(original: str, changed: str) -> int | None:
    """Where ``changed`` is ``original`` with one block inserted, at a line start; else None."""
    inserted = len(changed) - len(original)
    if inserted <= 0:
        return None
    prefix = _common(original, changed)
    suffix = _common(original[::-1], changed[::-1])
    lowest, highest = max(len(original) - suffix, 0), min(prefix, len(original))
    if lowest > highest:
        return None
    # Any point in [lowest, highest] splits it the same way; take a line boundary.
    for at in range(highest, lowest - 1, -1):
        if at == 0 or original[at - 1] == "\n":
            return at
    return None


def _common(a: str, b: str) -> int:
    """How many characters ``a`` and ``b`` share from the start."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
