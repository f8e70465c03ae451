"""Running foreign systems: qemu-user-static through the kernel's binfmt_misc.

A foreign binary runs when binfmt_misc is mounted and a ``qemu-NAME`` handler
is registered and enabled. Inside a container it also needs the F
(fix-binary) flag: the kernel then opens the interpreter at registration, so
the container's root does not need qemu. Debian's qemu-user-static ships the
registration lines in /usr/lib/binfmt.d; ``install_handlers`` writes them with F.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from polyarch import cmd
from polyarch.errors import EmulationError, ToolMissingError
from polyarch.platforms import System, native_system

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
BINFMT_CONF_DIR = Path("/usr/lib/binfmt.d")

_INSTALL = "run `polyarch emulation install` as root"
_NEEDS_QEMU = "needs qemu-user-static: apt-get install qemu-user-static"


@dataclass(frozen=True)
class HandlerStatus:
    """What binfmt_misc says about one system on this host."""

    system: System
    native: bool
    """Runs without emulation (the host's own system, or i686 on x86_64)."""
    registered: bool
    fix_binary: bool
    """The handler has the F flag, so it works inside containers."""
    interpreter: str | None
    qemu_installed: bool
    """qemu-NAME-static is on PATH (not needed once a handler with F is registered)."""
    enabled: bool = False
    """The handler is enabled and so is binfmt_misc as a whole."""
    binfmt_mounted: bool = False
    handler: str = ""
    """Name of the binfmt_misc handler (``qemu-aarch64``)."""

    @property
    def runnable(self) -> bool:
        """Images of this system run here, also inside containers."""
        return self.native or (self.registered and self.enabled and self.fix_binary)


def runs_natively(system: System, native: System | None = None) -> bool:
    """Whether ``system`` runs on ``native`` (default: this host) without emulation."""
    host = native or native_system()
    if system == host:
        return True
    # x86_64 CPUs and kernels run i386 binaries directly.
    return host.name == "x86_64-linux" and system.name == "i686-linux"


def handler_status(
    system: System,
    *,
    binfmt_dir: Path = BINFMT_DIR,
    native: System | None = None,
    handler: str | None = None,
) -> HandlerStatus:
    """Read binfmt_misc's entry for ``system`` (``binfmt_dir/qemu-<qemu_name>``, or ``handler``)."""
    name = handler or f"qemu-{system.qemu_name}"
    mounted = (binfmt_dir / "register").exists()
    globally_enabled = _read(binfmt_dir / "status").strip() == "enabled"
    entry = _read(binfmt_dir / name) if mounted else ""
    fields = _handler_fields(entry)
    return HandlerStatus(
        system=system,
        native=runs_natively(system, native),
        registered=bool(entry),
        fix_binary="F" in fields.get("flags", ""),
        interpreter=fields.get("interpreter"),
        qemu_installed=_qemu_installed(system),
        enabled=bool(entry) and globally_enabled and entry.splitlines()[0].strip() == "enabled",
        binfmt_mounted=mounted,
        handler=name,
    )


def require_runnable(
    system: System,
    *,
    binfmt_dir: Path = BINFMT_DIR,
    native: System | None = None,
    handler: str | None = None,
) -> HandlerStatus:
    """Return the status when ``system``'s images can run here; else EmulationError saying what to do."""
    status = handler_status(system, binfmt_dir=binfmt_dir, native=native, handler=handler)
    problem = emulation_problem(status, binfmt_dir)
    if problem is not None:
        raise problem
    return status


def install_handlers(
    systems: Iterable[System],
    *,
    binfmt_dir: Path = BINFMT_DIR,
    binfmt_conf_dir: Path = BINFMT_CONF_DIR,
    native: System | None = None,
) -> list[str]:
    """Register qemu-user-static handlers with the F flag for the foreign ``systems``.

    Idempotent: handlers already registered with F are left alone, ones
    without F are re-registered. Mounts binfmt_misc when needed. Returns one
    line per system saying what was done. Needs root only when there is work.
    """
    done: list[str] = []
    pending: list[System] = []
    for system in dict.fromkeys(systems):
        status = handler_status(system, binfmt_dir=binfmt_dir, native=native)
        if status.native:
            done.append(f"{system}: runs natively, no handler needed")
        elif status.runnable:
            done.append(f"{system}: {status.handler} already registered with the F flag")
        else:
            pending.append(system)
    if not pending:
        return done
    _require_linux()
    _require_root("registering binfmt_misc handlers")
    if not (binfmt_dir / "register").exists():
        _mount_binfmt_misc(binfmt_dir)
        done.append(f"mounted binfmt_misc at {binfmt_dir}")
    if _read(binfmt_dir / "status").strip() == "disabled":
        _write(binfmt_dir / "status", "1")
        done.append("enabled binfmt_misc")
    for system in pending:
        name = f"qemu-{system.qemu_name}"
        conf = binfmt_conf_dir / f"{name}.conf"
        done.append(f"{system}: {register_handler(name, conf, binfmt_dir=binfmt_dir)}")
    return done


def register_handler(name: str, conf: Path, *, binfmt_dir: Path = BINFMT_DIR) -> str:
    """Register handler ``name`` from a binfmt.d file's line, adding the F flag; say what was done.

    A handler of that name without F (or disabled) is removed first. ``name``
    may differ from the one in the file, so tests can register a handler of their own.
    """
    entry = _read(binfmt_dir / name)
    if entry and "F" in _handler_fields(entry).get("flags", "") and entry.startswith("enabled"):
        return f"{name} already registered with the F flag"
    line = _registration_line(conf)
    parts = line.split(":")
    # :name:type:offset:magic:mask:interpreter:flags — magic and mask are \x-escaped, so no ':' inside.
    if len(parts) != 8:
        raise EmulationError(
            f"{conf} has no valid binfmt_misc line",
            hint="reinstall qemu-user-static: apt-get install --reinstall qemu-user-static",
        )
    _, _, kind, offset, magic, mask, interpreter, flags = parts
    if not Path(interpreter).exists():
        raise EmulationError(
            f"{interpreter} (named in {conf}) does not exist",
            hint="apt-get install --reinstall qemu-user-static",
        )
    _require_root("registering binfmt_misc handlers")
    if entry:
        _write(binfmt_dir / name, "-1")
    if "F" not in flags:
        flags += "F"
    _write(binfmt_dir / "register", f":{name}:{kind}:{offset}:{magic}:{mask}:{interpreter}:{flags}")
    if "F" not in _handler_fields(_read(binfmt_dir / name)).get("flags", ""):
        raise EmulationError(
            f"the kernel did not keep the F flag for {name}",
            hint=f"check {binfmt_dir / name}; the kernel needs binfmt_misc with fix-binary support",
        )
    return f"{'re-registered' if entry else 'registered'} {name} -> {interpreter} (flags {flags})"


def unregister_handler(name: str, *, binfmt_dir: Path = BINFMT_DIR) -> bool:
    """Remove handler ``name``; False if it was not registered."""
    if not (binfmt_dir / name).exists():
        return False
    _require_root("removing a binfmt_misc handler")
    _write(binfmt_dir / name, "-1")
    return True


def emulation_problem(
    status: HandlerStatus, binfmt_dir: Path = BINFMT_DIR
) -> EmulationError | None:
    """Why ``status.system`` cannot run here, most fundamental cause first; None if it can."""
    if status.native or status.runnable:
        return None
    system, name = status.system, status.handler
    if not status.registered and not status.qemu_installed:
        return EmulationError(
            f"cannot run {system} here: qemu-user-static is not installed",
            hint=f"apt-get install qemu-user-static, then {_INSTALL}",
        )
    if not status.binfmt_mounted:
        return EmulationError(
            f"cannot run {system} here: binfmt_misc is not mounted at {binfmt_dir}",
            hint=f"{_INSTALL} (it mounts binfmt_misc and registers the qemu handlers)",
        )
    if not status.registered:
        return EmulationError(
            f"no binfmt_misc handler for {system}", hint=f"{_INSTALL} ({_NEEDS_QEMU})"
        )
    if not status.enabled:
        return EmulationError(
            f"the binfmt_misc handler {name} for {system} is disabled",
            hint=f"{_INSTALL} (or: echo 1 > {binfmt_dir / name}; echo 1 > {binfmt_dir / 'status'})",
        )
    return EmulationError(
        f"the binfmt_misc handler {name} for {system} lacks the F (fix-binary) flag, "
        "so it cannot run inside containers",
        hint=f"{_INSTALL} to re-register it with F",
    )


def _handler_fields(entry: str) -> dict[str, str]:
    """``interpreter``/``flags``/``offset``/``magic``/``mask`` of a /proc/sys/fs/binfmt_misc entry."""
    fields: dict[str, str] = {}
    for line in entry.splitlines()[1:]:
        key, _, value = line.partition(" ")
        fields[key.rstrip(":")] = value.strip()
    return fields


def _registration_line(conf: Path) -> str:
    try:
        text = conf.read_text()
    except FileNotFoundError:
        raise EmulationError(
            f"{conf} is missing", hint="apt-get install qemu-user-static"
        ) from None
    for line in text.splitlines():
        if line.startswith(":"):
            return line.strip()
    raise EmulationError(
        f"{conf} has no binfmt_misc registration line",
        hint="reinstall qemu-user-static: apt-get install --reinstall qemu-user-static",
    )


def _qemu_installed(system: System) -> bool:
    try:
        cmd.which(f"qemu-{system.qemu_name}-static")
    except ToolMissingError:
        return False
    return True


def _require_linux() -> None:
    if not sys.platform.startswith("linux"):
        raise EmulationError(
            "binfmt_misc handlers live in the Linux kernel that runs the containers, "
            f"and this host runs {sys.platform}",
            hint="register them in your engine's VM instead: `polyarch doctor` says how",
        )


def _require_root(what: str) -> None:
    geteuid = getattr(os, "geteuid", None)  # absent on Windows
    if geteuid is None or geteuid() != 0:
        raise EmulationError(f"{what} needs root", hint="run `sudo polyarch emulation install`")


def _mount_binfmt_misc(binfmt_dir: Path) -> None:
    argv = ["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt_dir)]
    result = cmd.run(argv, timeout=30)
    if result.returncode != 0:
        raise EmulationError(
            f"{cmd.quoted(argv)} failed: {result.stderr.decode(errors='replace').strip()}",
            hint="load the binfmt_misc kernel module (modprobe binfmt_misc) or mount it on the host",
        )


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _write(path: Path, text: str) -> None:
    """Write to a binfmt_misc control file (the kernel acts on the write; no temp file possible)."""
    try:
        path.write_text(text + "\n")
    except OSError as error:
        raise EmulationError(
            f"the kernel refused writing {text!r} to {path}: {error.strerror}",
            hint="check the registration line in /usr/lib/binfmt.d and dmesg",
        ) from None


__all__ = [
    "BINFMT_CONF_DIR",
    "BINFMT_DIR",
    "HandlerStatus",
    "emulation_problem",
    "handler_status",
    "install_handlers",
    "register_handler",
    "require_runnable",
    "runs_natively",
    "unregister_handler",
]
