"""The one place polyarch runs other programs.

Programs are found with ``shutil.which`` first, so a missing one is a clear
error naming the package to install; arguments are lists, never a shell.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from polyarch.errors import ToolMissingError

# Which Debian package provides each program we call (for the error message).
PROVIDED_BY = {
    "docker": "docker.io",
    "dockerd": "docker.io",
    "podman": "podman",
    "skopeo": "skopeo",
    "umoci": "umoci",
    "git": "git",
    "docker-registry": "docker-registry",
    "mmdebstrap": "mmdebstrap",
}


def which(program: str) -> str:
    """Absolute path of ``program`` or ToolMissingError saying what to install."""
    found = shutil.which(program)
    if found is None:
        package = PROVIDED_BY.get(program)
        if package is None and program.startswith("qemu-"):
            package = "qemu-user-static"
        hint = f"install it: apt-get install {package}" if package else "install it"
        raise ToolMissingError(f"{program} is not installed or not on PATH", hint=hint)
    return found


def quoted(argv: Sequence[str | Path]) -> str:
    """The command as a user could paste it into a shell."""
    return shlex.join(str(a) for a in argv)


def run(
    argv: Sequence[str | Path],
    *,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a program, capture its output, never raise on a non-zero exit.

    The caller decides what a failure means and which error to raise.
    """
    program = which(str(argv[0]))
    return subprocess.run(
        [program, *(str(a) for a in argv[1:])],
        input=input,
        capture_output=True,
        env=dict(env) if env is not None else None,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )
