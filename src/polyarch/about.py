"""What this polyarch is: its version, the versions of the libraries it runs on, and the host
programs it found (``polyarch version``), for bug reports and CI logs.

Library versions come from the installed distributions' metadata; host programs
are found on PATH and asked ``--version`` (one line kept), each with a short
timeout, so a hanging program cannot hang this command.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata

from polyarch import __version__, cmd
from polyarch.platforms import SYSTEMS

DISTRIBUTION = "polyarch"
HOST_PROGRAMS = ("docker", "podman", "skopeo", "umoci", "docker-registry", "runc")
"""Programs polyarch runs or its tests use, besides one qemu per foreign system."""
VERSION_TIMEOUT_SECONDS = 10.0
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclass(frozen=True, slots=True)
class Program:
    name: str
    path: str | None
    """None when it is not on PATH."""
    version: str | None
    """The first line it printed for ``--version``; None when it printed none."""


@dataclass(frozen=True, slots=True)
class About:
    version: str
    python: str
    platform: str
    dependencies: tuple[tuple[str, str | None], ...]
    """(distribution, installed version or None) of each dependency polyarch declares."""
    programs: tuple[Program, ...]


def about(*, programs: bool = True) -> About:
    """This polyarch, its dependencies, and (with ``programs``) the host programs it finds."""
    return About(
        version=__version__,
        python=platform.python_version(),
        platform=f"{sys.platform} {platform.machine()}",
        dependencies=dependency_versions(),
        programs=host_programs() if programs else (),
    )


def dependency_versions() -> tuple[tuple[str, str | None], ...]:
    """Every requirement of the installed polyarch (extras too), with its installed version."""
    try:
        requirements = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return ()
    found: dict[str, str | None] = {}
    for requirement in requirements:
        m = _REQUIREMENT_NAME.match(requirement)
        if not m or "extra ==" in requirement:
            continue
        name = m.group(1)
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None  # a requirement for another Python version (backports.zstd)
    return tuple(sorted(found.items(), key=lambda item: item[0].lower()))


def _qemu_programs() -> list[str]:
    return sorted({f"qemu-{s.qemu_name}-static" for s in SYSTEMS})


def host_programs() -> tuple[Program, ...]:
    """Each of ``HOST_PROGRAMS`` and the qemu-user programs, found or not."""
    return tuple(_program(name) for name in (*HOST_PROGRAMS, *_qemu_programs()))


def _program(name: str) -> Program:
    path = shutil.which(name)
    if path is None:
        return Program(name, None, None)
    try:
        result = cmd.run([path, "--version"], timeout=VERSION_TIMEOUT_SECONDS)
    except (OSError, subprocess.TimeoutExpired):
        return Program(name, path, None)
    text = (result.stdout or result.stderr).decode("utf-8", "replace").strip()
    return Program(name, path, text.splitlines()[0].strip() if text else None)
