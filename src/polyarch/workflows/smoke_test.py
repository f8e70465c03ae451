"""test: prove a built image works in the engine — the tool's smoke test, and bash + coreutils.

Foreign systems run through an emulator registered in the kernel that runs the
containers (``polyarch.kernel``). When that is this host's kernel, a missing
handler is reported with what to do before anything is loaded
(``ensure_runnable``); when it is the engine's own (a VM, another machine), one
probe run of the loaded image settles it (``probe_runnable``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from polyarch import emulation
from polyarch.config import Container
from polyarch.emulation import require_runnable
from polyarch.engine import Engine, RunResult
from polyarch.errors import ContainerTestError
from polyarch.kernel import Kernel, locate_kernel, probe, runs_natively
from polyarch.platforms import System
from polyarch.reference import DEFAULT_TAG
from polyarch.workflows.load import load_foreign, load_image

TEST_TIMEOUT_SECONDS = 300.0
"""A smoke test under qemu can be slow, but never minutes; longer means it waits for input."""

# The tool-container promise: bash runs, and coreutils work inside it.
SHELL_CHECK = 'set -e; n=$(ls / | wc -l); test "$n" -gt 3; echo polyarch-ok | tr a-z A-Z'
SHELL_EXPECT = "POLYARCH-OK"
OUTPUT_TAIL_LINES = 15


@dataclass(frozen=True, slots=True)
class Check:
    """One command run in the container, and what came of it."""

    name: str
    command: str
    exit_code: int
    output: str
    passed: bool
    reason: str


@dataclass(frozen=True, slots=True)
class TestReport:
    """Every check of one system's image."""

    __test__ = False  # not a pytest class

    container: str
    system: System
    reference: str
    checks: tuple[Check, ...]
    seconds: float

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def failure(self) -> ContainerTestError:
        """The error to raise for a failed report: command, exit code, output's tail."""
        bad = next(c for c in self.checks if not c.passed)
        tail = "\n".join(bad.output.rstrip().splitlines()[-OUTPUT_TAIL_LINES:])
        return ContainerTestError(
            f"{self.container} ({self.system.name}): {bad.name} failed: {bad.reason}\n"
            f"  command: {bad.command}\n  exit code: {bad.exit_code}\n  output (tail):\n"
            + "\n".join(f"    {line}" for line in tail.splitlines() or ["(none)"])
        )


def ensure_runnable(kernel: Kernel, system: System) -> None:
    """Before loading: EmulationError with what to install when this host's handlers say no.

    Only for a kernel that is this host's; the engine's own kernel is asked by
    ``probe_runnable`` once the image is loaded.
    """
    if kernel.where == "host" and not runs_natively(kernel, system):
        require_runnable(system, native=kernel.native)


def probe_runnable(kernel: Kernel, system: System, reference: str) -> None:
    """After loading: for the engine's own kernel, one run of ``reference`` settles emulation.

    EmulationError (exit 21) with advice for that engine when it cannot exec the image.
    """
    if kernel.where == "engine" and not runs_natively(kernel, system):
        probe(kernel, system, reference)


def run_smoke_test(
    engine: Engine,
    container: Container,
    system: System,
    reference: str,
    *,
    native: System,
) -> TestReport:
    """Run the container's smoke test and the bash/coreutils check on ``reference``.

    ``native`` is the system of the kernel that runs the containers. Call
    ``ensure_runnable`` and ``probe_runnable`` first for a foreign system.
    """
    # Naming the platform of a foreign image keeps the engines' mismatch warning
    # out of the output that the checks read.
    platform = None if emulation.runs_natively(system, native) else system.oci_platform
    started = time.monotonic()
    checks = [
        _smoke(engine, container, reference, platform),
        _shell(engine, reference, platform),
    ]
    return TestReport(container.name, system, reference, tuple(checks), time.monotonic() - started)


def _smoke(engine: Engine, container: Container, reference: str, platform: str | None) -> Check:
    args = list(container.test)
    result = engine.run(reference, args, platform=platform, timeout=TEST_TIMEOUT_SECONDS)
    expect = container.expect
    return _judge(
        " ".join([container.command, *args]),
        result,
        expect is None or re.search(expect, result.output, re.M) is not None,
        f"output does not match expect = {expect!r}",
    )


def _shell(engine: Engine, reference: str, platform: str | None) -> Check:
    result = engine.run(
        reference,
        ["-c", SHELL_CHECK],
        entrypoint="bash",
        platform=platform,
        timeout=TEST_TIMEOUT_SECONDS,
    )
    return _judge(
        "bash -c (coreutils check)",
        result,
        SHELL_EXPECT in result.output,
        f"no {SHELL_EXPECT} in output",
    )


def _judge(name: str, result: RunResult, output_ok: bool, output_problem: str) -> Check:
    """A check passes when the command exits 0 and its output is as expected."""
    if result.exit_code != 0:
        reason = "non-zero exit"
    elif not output_ok:
        reason = output_problem
    else:
        reason = ""
    return Check(name, result.command, result.exit_code, result.output, not reason, reason)


def run_smoke_tests(
    engine: Engine,
    container: Container,
    systems: Sequence[System],
    *,
    out_dir: Path,
    tag: str = DEFAULT_TAG,
    kernel: Kernel | None = None,
) -> list[TestReport]:
    """Load and test each system's image; ``NAME:TAG`` ends up the native image.

    Native means native to the kernel that runs the containers (``kernel``,
    default: asked of ``engine``). Foreign images are tested under a
    per-system tag first and the native one last, so a multi-system test
    never leaves a foreign image as ``NAME:TAG``.
    """
    kernel = kernel or locate_kernel(engine)
    native = kernel.native
    ordered = sorted(systems, key=lambda s: s == native)
    for system in ordered:
        ensure_runnable(kernel, system)  # before loading anything: say what to install
    reports: list[TestReport] = []
    for system in ordered:
        if system == native:
            reference = load_image(engine, container, system, out_dir=out_dir, tag=tag)
        else:
            reference = load_foreign(engine, container, system, out_dir=out_dir, tag=tag)
        probe_runnable(kernel, system, reference)
        reports.append(run_smoke_test(engine, container, system, reference, native=native))
    return reports


def raise_for_failures(reports: Sequence[TestReport]) -> None:
    for report in reports:
        if not report.passed:
            raise report.failure()
