"""doctor: what can run here (engine, emulation per system) and whether the archive answers.

Emulation is asked of the kernel that runs the containers (``polyarch.kernel``):
this host's binfmt_misc when the engine shares this kernel, else the engine's.

Library only: it returns rows, the CLI renders them. A problem is a row with
advice, never an exception: doctor exists to show every problem at once.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from polyarch.cache import Cache
from polyarch.config import CONFIG_NAME, find_config, load_config, parse_config
from polyarch.debian.archive import Archive
from polyarch.debian.sources import find_sources
from polyarch.emulation import BINFMT_DIR, emulation_problem, handler_status
from polyarch.engine import detect_engine
from polyarch.errors import PolyarchError
from polyarch.kernel import Kernel, emulation_advice, locate_kernel, runs_natively
from polyarch.platforms import SYSTEMS, System


@dataclass(frozen=True)
class DoctorRow:
    """One line of ``polyarch doctor``: can this system's images run here, and if not, why."""

    system: System
    can_run: bool | None
    """None: the engine's own kernel decides, by a probe run of the image when testing."""
    engine: str | None
    """The engine that would run the images (``docker (unix:///…)``), None when there is none."""
    engine_ok: bool
    handler: str
    """``native``, the interpreter of the registered handler, or what is missing."""
    fix_binary: bool | None
    """The handler's F flag; None for native systems and missing handlers."""
    advice: str | None
    """What to do when ``can_run`` is false: the engine's problem, then emulation's, joined by "; "."""


@dataclass(frozen=True)
class KernelReport:
    """Which kernel doctor asked about emulation, and why; and how the engine stores layers."""

    kernel: str
    reason: str
    storage: str = ""
    """The engine's storage driver as it reports it (``vfs``, ``overlay2``, ...); empty if unknown."""
    storage_cost: str | None = None
    """What that driver costs when loading images, and what to do; None when nothing."""


VFS_COST = (
    "vfs stores every layer as a full copy of the layers below it: loading an image of N "
    "layers writes and copies up to N times its size (polyarch images have a few layers, "
    "max_layers bounds them); `polyarch load NAME --merge-layers` loads it as one layer, "
    "and an overlay driver (overlay2, fuse-overlayfs) avoids the copies altogether"
)


def storage_cost(driver: str) -> str | None:
    """What loading costs on the storage ``driver``, when it costs more than on overlay."""
    return VFS_COST if driver == "vfs" else None


def diagnose(
    systems: Sequence[System] | None = None,
    *,
    preferred_engine: str | None = None,
    binfmt_dir: Path = BINFMT_DIR,
    native: System | None = None,
) -> list[DoctorRow]:
    """Per system: can its images run here (engine answering, binfmt handler, F flag), and advice."""
    return diagnose_with_kernel(
        systems, preferred_engine=preferred_engine, binfmt_dir=binfmt_dir, native=native
    )[1]


def diagnose_with_kernel(
    systems: Sequence[System] | None = None,
    *,
    preferred_engine: str | None = None,
    binfmt_dir: Path = BINFMT_DIR,
    native: System | None = None,
) -> tuple[KernelReport, list[DoctorRow]]:
    """``diagnose``, plus which kernel was asked: this host's binfmt_misc or the engine's."""
    engine: str | None = None
    engine_problem: PolyarchError | None = None
    kernel: Kernel | None = None
    try:
        found = detect_engine(preferred_engine)
        engine = found.describe()
        kernel = locate_kernel(found, binfmt_dir=binfmt_dir)
    except PolyarchError as error:
        engine_problem = error
    if kernel is not None and kernel.where == "engine":
        report = _report(kernel)
        return report, [_engine_row(kernel, s, engine) for s in systems or SYSTEMS]
    if kernel is None and not sys.platform.startswith("linux"):
        # No engine, and this host's kernel never runs the containers: nothing else to show.
        report = KernelReport("none", f"no engine answered, and this host runs {sys.platform}")
        advice = str(engine_problem)
        return report, [
            DoctorRow(s, False, None, False, "no engine", None, advice) for s in systems or SYSTEMS
        ]
    if kernel is None:
        report = KernelReport(
            f"this host's kernel (binfmt_misc at {binfmt_dir})",
            "no engine answered to ask, so only this host's handlers can be shown",
        )
    else:
        report = _report(kernel)
        native = native or kernel.native
    rows = [_host_row(s, engine, engine_problem, binfmt_dir, native) for s in systems or SYSTEMS]
    return report, rows


def _report(kernel: Kernel) -> KernelReport:
    driver = kernel.info.storage_driver
    return KernelReport(kernel.describe(), kernel.reason, driver, storage_cost(driver))


def _engine_row(kernel: Kernel, system: System, engine: str | None) -> DoctorRow:
    if runs_natively(kernel, system):
        return DoctorRow(system, True, engine, True, "native", None, None)
    advice = f"a probe run decides when testing; if it fails: {emulation_advice(kernel, system)}"
    return DoctorRow(system, None, engine, True, "the engine's (probed)", None, advice)


def _host_row(
    system: System,
    engine: str | None,
    engine_problem: PolyarchError | None,
    binfmt_dir: Path,
    native: System | None,
) -> DoctorRow:
    status = handler_status(system, binfmt_dir=binfmt_dir, native=native)
    problem = emulation_problem(status, binfmt_dir)
    if status.native:
        handler = "native"
    elif status.registered:
        handler = status.interpreter or status.handler
    elif not status.binfmt_mounted:
        handler = "binfmt_misc not mounted"
    else:
        handler = "no handler"
    advice = "; ".join(str(p) for p in (engine_problem, problem) if p is not None)
    return DoctorRow(
        system=system,
        can_run=engine_problem is None and problem is None,
        engine=engine,
        engine_ok=engine_problem is None,
        handler=handler,
        fix_binary=None if status.native or not status.registered else status.fix_binary,
        advice=advice or None,
    )


def archive_checks(config_file: str | Path | None, cache: Cache) -> list[tuple[str, str]]:
    """Each source's mirror and keyring: found, reachable, signature good; (check, result) rows."""
    try:
        config = load_config(find_config(config_file))
        where = CONFIG_NAME
    except PolyarchError:
        config, where = parse_config("", Path(CONFIG_NAME)), "defaults (no containers.toml here)"
    rows = [("config", where)]
    try:
        sources = find_sources(config)
    except PolyarchError as exc:
        return [*rows, ("problem", str(exc))]
    with Archive(sources, cache) as archive:
        for repo in archive.repositories:
            source = repo.source
            rows += [
                (f"{source.name}: mirror", f"{source.url} {source.suite}"),
                (f"{source.name}: keyring", str(source.keyring)),
            ]
            try:
                release = repo.release()
                result = f"signature good, {release.codename or release.suite} of {release.date:%Y-%m-%d}"
                rows.append((f"{source.name}: {release.file_name}", result))
            except PolyarchError as exc:
                rows.append((f"{source.name}: problem", str(exc)))
    return rows
