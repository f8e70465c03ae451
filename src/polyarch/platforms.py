"""Systems: the Nix name users type, the OCI platform images carry, the Debian arch packages use."""

from __future__ import annotations

import difflib
import platform as _host_platform
from dataclasses import dataclass
from typing import Literal

from polyarch.errors import UsageError

SystemName = Literal[
    "x86_64-linux",
    "aarch64-linux",
    "armv7l-linux",
    "i686-linux",
    "powerpc64le-linux",
    "s390x-linux",
]


@dataclass(frozen=True, slots=True)
class System:
    """One target system, in all three spellings."""

    name: SystemName
    oci_os: str
    oci_architecture: str
    oci_variant: str | None
    debian_arch: str
    qemu_name: str
    """Suffix of the qemu-user binary and the binfmt_misc handler (qemu-NAME)."""

    @property
    def oci_platform(self) -> str:
        base = f"{self.oci_os}/{self.oci_architecture}"
        return f"{base}/{self.oci_variant}" if self.oci_variant else base

    def __str__(self) -> str:
        return self.name


SYSTEMS: tuple[System, ...] = (
    System("x86_64-linux", "linux", "amd64", None, "amd64", "x86_64"),
    System("aarch64-linux", "linux", "arm64", "v8", "arm64", "aarch64"),
    System("armv7l-linux", "linux", "arm", "v7", "armhf", "arm"),
    System("i686-linux", "linux", "386", None, "i386", "i386"),
    System("powerpc64le-linux", "linux", "ppc64le", None, "ppc64el", "ppc64le"),
    System("s390x-linux", "linux", "s390x", None, "s390x", "s390x"),
)

_BY_SPELLING: dict[str, System] = {}
for _s in SYSTEMS:
    for _spelling in (
        _s.name,
        _s.oci_platform,
        _s.debian_arch,
        f"{_s.oci_os}/{_s.oci_architecture}",
    ):
        _BY_SPELLING.setdefault(_spelling, _s)
_BY_SPELLING["linux/arm64/v8"] = _BY_SPELLING["aarch64-linux"]


def parse_system(text: str) -> System:
    """Accept a Nix system, an OCI platform or a Debian arch; raise UsageError otherwise."""
    system = _BY_SPELLING.get(text.strip().lower())
    if system is None:
        near = difflib.get_close_matches(text, list(_BY_SPELLING), n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise UsageError(
            f"unknown system {text!r}",
            hint=f"{hint}known: {', '.join(s.name for s in SYSTEMS)}",
        )
    return system


def system_for_platform(os: str, architecture: str, variant: str | None = None) -> System | None:
    """The system of an OCI platform (e.g. from an image config), or None."""
    for s in SYSTEMS:
        same_variant = s.oci_variant is None or variant in (None, s.oci_variant)
        if s.oci_os == os and s.oci_architecture == architecture and same_variant:
            return s
    return None


def native_system(machine: str | None = None) -> System:
    """The system whose images run here without emulation.

    An aarch64/arm64 host (Linux, or macOS where containers run in a Linux VM of
    the same architecture) maps to aarch64-linux; x86_64/amd64 to x86_64-linux.
    """
    m = (machine or _host_platform.machine()).lower()
    aliases = {
        "x86_64": "x86_64-linux",
        "amd64": "x86_64-linux",
        "aarch64": "aarch64-linux",
        "arm64": "aarch64-linux",
        "armv7l": "armv7l-linux",
        "i686": "i686-linux",
        "i386": "i686-linux",
        "ppc64le": "powerpc64le-linux",
        "s390x": "s390x-linux",
    }
    if m not in aliases:
        raise UsageError(f"cannot map host machine {m!r} to a system", hint="pass --system")
    return parse_system(aliases[m])
