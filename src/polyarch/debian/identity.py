"""What a .deb says it is, and whether that is what its index record or lock entry claims.

A package's identity is written twice: in the index (or containers.lock) that
led polyarch to it, and in the .deb's own control data. The SHA256 chain
proves the file is the one the index names, not that the index names it
truthfully: an archive or a hand-edited lock can call a .deb of ``coreutils``
``bash``, or give it a version it does not have, and the image's annotations
and dpkg status database would repeat the lie. So the control data is read
when the layer is built, kept in the layer record (``DebFacts``), and
compared with the claim on every build, warm or cold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, Protocol

import msgspec

from polyarch.debian.deb import DebContents

PACKAGE_NAME_PATTERN = r"^[a-z0-9][a-z0-9+.-]+$"
"""Debian policy 5.6.1 (two characters at least, lowercase)."""
VERSION_PATTERN = r"^(?:[0-9]+:)?[A-Za-z0-9][A-Za-z0-9.+~:-]*$"
"""Debian policy 5.6.12, leniently: characters and the epoch, not every placement rule."""
ARCHITECTURE_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
HEX64_PATTERN = r"^[0-9a-f]{64}$"

PackageName = Annotated[str, msgspec.Meta(pattern=PACKAGE_NAME_PATTERN, max_length=255)]
Version = Annotated[str, msgspec.Meta(pattern=VERSION_PATTERN, max_length=255)]
Architecture = Annotated[str, msgspec.Meta(pattern=ARCHITECTURE_PATTERN, max_length=64)]
Hex64 = Annotated[str, msgspec.Meta(pattern=HEX64_PATTERN)]
Size = Annotated[int, msgspec.Meta(ge=0)]


class DebFacts(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A .deb as it describes itself: control ``Package``/``Version``/``Architecture``,
    and the size and SHA256 of the file that was read."""

    name: PackageName
    version: Version
    architecture: Architecture
    size: Size
    sha256: Hex64


class Claim(Protocol):
    """What an index record or a lock entry says of a package."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def architecture(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def sha256(self) -> str: ...


def control_fields(control: str) -> dict[str, str]:
    """The fields of one control stanza: names lower-cased, continuation lines joined
    (stripped) by newlines. A field given twice keeps its first value: one rule for the
    identity check, the SBOM facts and status.d, so a package cannot show each a
    different name or version."""
    fields: dict[str, str] = {}
    key: str | None = None
    for line in control.splitlines():
        if line[:1] in (" ", "\t"):
            if key is not None:
                fields[key] += "\n" + line.strip()
            continue
        name, sep, value = line.partition(":")
        name = name.strip().lower()
        key = name if sep and name not in fields else None
        if key is not None:
            fields[key] = value.strip()
    return fields


def facts_of(contents: DebContents, sha256: str, size: int) -> DebFacts:
    """The facts of a .deb read as ``contents`` (verified as ``sha256``, ``size`` bytes).

    ValueError if its control data lacks a field or has one no package may have.
    """
    fields = control_fields(contents.control)
    try:
        return msgspec.convert(
            {
                "name": fields.get("package", ""),
                "version": fields.get("version", ""),
                "architecture": fields.get("architecture", ""),
                "size": size,
                "sha256": sha256,
            },
            DebFacts,
        )
    except msgspec.ValidationError as exc:
        raise ValueError(f"its control data is not valid: {exc}") from None


def mismatches(claim: Claim, facts: DebFacts) -> list[str]:
    """``field: claimed 'x', the .deb has 'y'`` for each field where the two differ."""
    found = []
    for field in ("name", "version", "architecture", "size", "sha256"):
        claimed, actual = getattr(claim, field), getattr(facts, field)
        if claimed != actual:
            found.append(f"{field} {claimed!r}, the .deb has {actual!r}")
    return found


def check_claims(
    claims: Iterable[Claim],
    facts: Iterable[DebFacts],
    refuse: Callable[[Claim, list[str]], Exception],
) -> None:
    """Raise ``refuse(claim, differences)`` for the first claim its .deb's facts contradict.

    Facts are found by SHA256 (the one thing the chain of hashes proves); a
    claim without facts is refused too: nothing says what that .deb is.
    """
    by_sha = {f.sha256: f for f in facts}
    for claim in claims:
        found = by_sha.get(claim.sha256)
        if found is None:
            raise refuse(claim, ["no layer record describes this .deb"])
        different = mismatches(claim, found)
        if different:
            raise refuse(claim, different)
