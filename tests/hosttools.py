"""Test packages made of this host's own programs, so images built from a generated repository
can run real commands (``id``, ``stat``, ``cat``, ``date``, bash) in the real engines.

The programs and every library ``ldd`` says they load are copied byte for byte
from the host into packages named like Debian's (libc6, bash, coreutils, with
the same dependency shape as tests/conftest.py's miniature world), for the
host's own architecture only. ``zone_file`` reads the host's tzdata for a
tzdata package. No network is used: everything comes from this machine.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

from debrepo import DebSpec, File

from polyarch.platforms import native_system

COREUTILS = ("id", "stat", "cat", "readlink", "ls", "wc", "tr", "test", "date", "echo", "env")
"""The coreutils programs the image-option tests run (and the smoke test's shell check)."""
_LDD_LINE = re.compile(r"^\s*(?:\S+ => )?(/\S+) \(0x[0-9a-f]+\)$")


def native_arch() -> str:
    return native_system().debian_arch


def _program(name: str) -> Path:
    found = shutil.which(name, path="/usr/bin:/bin")
    assert found, f"this host has no {name}"
    return Path(found)


def _libraries(programs: list[Path]) -> dict[str, bytes]:
    """Every library the programs load (and the dynamic loader), by the path they are loaded from."""
    ldd = shutil.which("ldd")
    assert ldd, "these tests need ldd (libc-bin) to find the host programs' libraries"
    found: dict[str, bytes] = {}
    for program in programs:
        listing = subprocess.run(
            [ldd, str(program)], capture_output=True, text=True, check=True
        ).stdout
        for line in listing.splitlines():
            m = _LDD_LINE.match(line)
            if m:
                found[m.group(1)] = Path(m.group(1)).resolve().read_bytes()
    return found


@cache
def host_world() -> tuple[DebSpec, ...]:
    """libc6, base-files, bash and coreutils of this host, for its own architecture."""
    arch = native_arch()
    coreutils = {f"/usr/bin/{n}": _program(n) for n in COREUTILS}
    bash = _program("bash")
    libraries = _libraries([bash, *coreutils.values()])
    executable = 0o755
    return (
        DebSpec(
            "libc6",
            "2.36-9",
            arch,
            multi_arch="same",
            files={path: File(data, executable) for path, data in libraries.items()},
        ),
        DebSpec("base-files", "12.4", arch, essential=True, files={"/etc/debian_version": b"12\n"}),
        DebSpec(
            "bash",
            "5.2.15-2",
            arch,
            pre_depends="libc6 (>= 2.36)",
            depends="base-files (>= 2.1.12)",
            essential=True,
            files={"/bin/bash": File(bash.read_bytes(), executable)},
        ),
        DebSpec(
            "coreutils",
            "9.1-1",
            arch,
            pre_depends="libc6 (>= 2.34)",
            essential=True,
            files={p: File(path.read_bytes(), executable) for p, path in coreutils.items()},
        ),
    )


def zone_file(zone: str) -> bytes:
    """The host's compiled zone file (tzdata), for a tzdata test package."""
    return Path("/usr/share/zoneinfo", zone).read_bytes()


def script(body: str) -> File:
    """An executable bash script for a test package (bash is the host's, in the image)."""
    return File(f"#!/bin/bash\n{body}\n".encode(), 0o755)
