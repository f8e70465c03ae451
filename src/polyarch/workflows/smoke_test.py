"""test: prove a built image works in the engine — the tool's smoke test, and bash + coreutils.

Foreign systems run through qemu-user via binfmt_misc; a missing handler is
reported with what to do before any container is started.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from polyarch.config import Container
from polyarch.emulation import require_runnable, runs_natively
from polyarch.engine import Engine, RunResult
from polyarch.errors import ContainerTestError
from polyarch.platforms import System, native_system
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


def ensure_runnable(system: System) -> None:
    """EmulationError with what to install when ``system``'s images cannot run here."""
    if not runs_natively(system):
        require_runnable(system)


def run_smoke_test(
    engine: Engine, container: Container, system: System, reference: str
) -> TestReport:
    """Run the container's smoke test and the bash/coreutils check on ``reference``.

    Call ``ensure_runnable`` first for a foreign system, before loading it.
    """
    # Naming the platform of a foreign image keeps the engines' mismatch warning
    # out of the output that the checks read.
    platform = None if runs_natively(system) else system.oci_platform
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
) -> list[TestReport]:
    """Load and test each system's image; ``NAME:TAG`` ends up the native image.

    Foreign images are tested under a per-system tag first and the native one
    last, so a multi-system test never leaves a foreign image as ``NAME:TAG``.
    """
    native = native_system()
    ordered = sorted(systems, key=lambda s: s == native)
    reports: list[TestReport] = []
    for system in ordered:
        ensure_runnable(system)  # before loading anything: say what to install
        if system == native:
            reference = load_image(engine, container, system, out_dir=out_dir, tag=tag)
        else:
            reference = load_foreign(engine, container, system, out_dir=out_dir, tag=tag)
        reports.append(run_smoke_test(engine, container, system, reference))
    return reports


def raise_for_failures(reports: Sequence[TestReport]) -> None:
    for report in reports:
        if not report.passed:
            raise report.failure()
