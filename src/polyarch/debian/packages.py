"""One binary package as a Packages index describes it."""

from __future__ import annotations

import msgspec


class PackageRecord(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """The fields of a Packages stanza that resolution, fetching and layering need.

    Relationship fields are kept as the raw strings of the index; the resolver
    parses the ones it visits. ``array_like`` keeps the cached parsed index small.
    """

    name: str
    version: str
    architecture: str
    """The package's own arch: the system's Debian arch or ``all``."""
    filename: str
    """Pool path relative to the mirror root."""
    size: int
    sha256: str
    """Lowercase hex, without a ``sha256:`` prefix."""
    depends: str = ""
    pre_depends: str = ""
    provides: str = ""
    conflicts: str = ""
    breaks: str = ""
    multi_arch: str = ""
    essential: bool = False
    source: str = ""
    component: str = ""
