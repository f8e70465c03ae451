"""Which kernel runs the images: this host's, or the engine's own (a VM or another machine).

Whether a foreign system's images run is a property of the kernel that runs
the containers: its binfmt_misc handlers (qemu-user, Rosetta) decide. On a
Linux host whose engine shares this kernel, this host's
/proc/sys/fs/binfmt_misc is that answer, and it is read before anything is
loaded (``emulation``). Everywhere else — a Mac or Windows host, Docker
Desktop, OrbStack, colima, Lima or podman machine, ``DOCKER_HOST=tcp://…``
or ``ssh://…``, podman ``--remote`` — this host's handlers say nothing about
the engine: the engine is asked (``docker info``/``podman info`` for its
architecture), and a foreign system is settled by one probe run of the image
just loaded, where "exec format error" becomes an EmulationError with
advice for that engine.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from polyarch.emulation import BINFMT_DIR
from polyarch.emulation import runs_natively as _runs_natively
from polyarch.engine import Engine, EngineHost
from polyarch.errors import EmulationError, EngineError, UsageError
from polyarch.platforms import System, native_system

Where = Literal["host", "engine"]
Flavor = Literal[
    "linux", "docker-desktop", "orbstack", "colima", "lima", "podman-machine", "remote"
]

PROBE_TIMEOUT_SECONDS = 120.0
"""Starting a shell under qemu takes a second or two; minutes mean something else is wrong."""
EXEC_FORMAT_ERROR = "exec format error"
"""What runc/crun report (as do docker and podman) when the kernel has no handler for a binary."""
_HOST_NAMES = {"darwin": "macOS", "win32": "Windows", "cygwin": "Windows"}


@dataclass(frozen=True, slots=True)
class Kernel:
    """The kernel that runs an engine's containers, and why polyarch thinks so."""

    where: Where
    """``host``: this host's binfmt_misc decides; ``engine``: the engine is asked (probe run)."""
    reason: str
    native: System
    """The kernel's own system: its images run without emulation."""
    engine: Engine
    info: EngineHost
    flavor: Flavor

    def describe(self) -> str:
        """One line for doctor and messages: which kernel, as the engine reported it."""
        info = self.info
        what = f"{info.os or '?'}/{info.architecture or '?'}, kernel {info.kernel or '?'}"
        if info.operating_system:
            what += f", {info.operating_system}"
        if self.where == "host":
            return f"this host's kernel ({what}): binfmt_misc handlers read here"
        return f"the engine's kernel ({what}), asked through {self.engine.describe()}"


def locate_kernel(
    engine: Engine,
    *,
    binfmt_dir: Path = BINFMT_DIR,
    platform: str | None = None,
    host_release: str | None = None,
) -> Kernel:
    """Ask ``engine`` where its containers run, and decide whose binfmt handlers count.

    ``platform`` (default ``sys.platform``) and ``host_release`` (default this
    kernel's release) exist for tests that play another host.
    """
    info = engine.host()
    native = _system_of(info, engine)
    reason = _engine_reason(engine, info, native, binfmt_dir, platform, host_release)
    flavor = _flavor(engine, info)
    if reason is None:
        release = info.kernel
        reason = (
            f"{engine.name} runs containers on this host's kernel ({release}), "
            f"so the binfmt_misc handlers in {binfmt_dir} decide"
        )
        return Kernel("host", reason, native, engine, info, flavor)
    return Kernel("engine", reason, native, engine, info, flavor)


def runs_natively(kernel: Kernel, system: System) -> bool:
    """``system``'s images run on ``kernel`` without emulation."""
    return _runs_natively(system, kernel.native)


def probe(kernel: Kernel, system: System, reference: str) -> None:
    """One run of the loaded image ``reference``; EmulationError when its kernel cannot exec it.

    Only "exec format error" is judged here: any other outcome means the
    kernel started the image's shell, and the smoke test proper reports the rest.
    """
    try:
        result = kernel.engine.run(
            reference,
            ["-c", ":"],
            entrypoint="bash",
            platform=system.oci_platform,
            timeout=PROBE_TIMEOUT_SECONDS,
        )
        output = result.output
    except EngineError as error:  # runc failing to exec makes some engines exit 125
        output = str(error)
        if EXEC_FORMAT_ERROR not in output.lower():
            raise
    if EXEC_FORMAT_ERROR in output.lower():
        raise EmulationError(
            f"{kernel.engine.describe()} cannot run {system} images: {EXEC_FORMAT_ERROR} "
            f"(its {kernel.info.architecture or '?'} kernel has no handler for "
            f"{system.oci_architecture})",
            hint=emulation_advice(kernel, system),
        )


def emulation_advice(kernel: Kernel, system: System) -> str:
    """What to do, for this engine, so that its kernel runs ``system``'s images."""
    arch = system.oci_architecture
    binfmt = f"docker run --privileged --rm tonistiigi/binfmt --install {arch}"
    rosetta = system.name == "x86_64-linux" and kernel.native.name == "aarch64-linux"
    advice = {
        "linux": f"register qemu-user handlers on this host: `polyarch emulation install` as root "
        f"(needs qemu-user-static), or `{binfmt}`",
        "docker-desktop": (
            "Docker Desktop: turn on Settings > General > 'Use Rosetta for x86_64/amd64 "
            f"emulation on Apple Silicon', then restart it; for other systems run `{binfmt}`"
            if rosetta
            else f"Docker Desktop: register QEMU handlers in its VM with `{binfmt}`"
        ),
        "orbstack": "OrbStack runs x86_64 through Rosetta and others through QEMU in its VM; "
        f"register a missing handler with `{binfmt}`",
        "colima": (
            "colima: recreate the VM with Rosetta (`colima start --vm-type vz --vz-rosetta`), "
            f"or register QEMU handlers in it with `{binfmt}`"
            if rosetta
            else f"colima: register QEMU handlers in its VM with `{binfmt}`"
        ),
        "lima": f"Lima: `lima sudo apt-get install -y qemu-user-static` in the VM, or `{binfmt}`",
        "podman-machine": "podman machine: `podman machine ssh sudo rpm-ostree install "
        "qemu-user-static`, then `podman machine stop` and `podman machine start`"
        + (" (podman 5.1+ on Apple silicon runs x86_64 through Rosetta)" if rosetta else ""),
        "remote": f"on the machine {kernel.info.endpoint or 'the engine'} runs on, register "
        f"qemu-user handlers with the F flag: `polyarch emulation install` there, or `{binfmt}`",
    }
    return advice[kernel.flavor]


def _system_of(info: EngineHost, engine: Engine) -> System:
    try:
        return native_system(info.architecture)
    except UsageError:
        raise EngineError(
            f"{engine.describe()} reports architecture {info.architecture!r}, "
            "which no polyarch system runs on natively",
            hint="use an engine on an x86_64 or aarch64 machine",
        ) from None


def _engine_reason(
    engine: Engine,
    info: EngineHost,
    native: System,
    binfmt_dir: Path,
    platform: str | None,
    host_release: str | None,
) -> str | None:
    """Why this host's binfmt_misc cannot answer for ``engine``; None when it can."""
    platform = platform or sys.platform
    if not platform.startswith("linux"):
        host = _HOST_NAMES.get(platform, platform)
        return f"this host runs {host}; {engine.name} runs containers in its own Linux VM"
    if info.remote:
        return f"{engine.name} talks to a remote engine ({info.endpoint or 'remote service'})"
    release = host_release or os.uname().release
    if info.kernel != release:
        return (
            f"the engine's kernel is {info.kernel or 'unknown'}, this host's is {release}: "
            "it runs in a VM or on another machine"
        )
    if native != native_system():
        return f"the engine runs {native} containers natively, this host is {native_system()}"
    if not (binfmt_dir / "register").exists():
        return (
            f"binfmt_misc is not visible at {binfmt_dir} from here (as inside a container "
            "that uses the host's engine)"
        )
    return None


def _flavor(engine: Engine, info: EngineHost) -> Flavor:
    system = info.operating_system.lower()
    host = info.hostname.lower()
    endpoint = (info.endpoint or "").lower()
    if "docker desktop" in system:
        return "docker-desktop"
    if "orbstack" in system or "orbstack" in endpoint:
        return "orbstack"
    if host == "colima" or host.startswith("colima-") or "/.colima/" in endpoint:
        return "colima"
    if host.startswith("lima-") or "/.lima/" in endpoint:
        return "lima"
    if engine.name == "podman" and info.remote and (not endpoint or "machine" in endpoint):
        return "podman-machine"  # podman machine's connection, not an explicit CONTAINER_HOST
    if info.remote:
        return "remote"
    return "linux"
