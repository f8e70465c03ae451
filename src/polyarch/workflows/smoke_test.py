"""test: prove a built image works in the engine — the tool's smoke test, and bash + coreutils.

One container start per system, and the systems tested side by side:

1. **entrypoint (static)**: the image config's ``Entrypoint`` is the container's
   command (read from ``OUT/NAME/SYSTEM.tar``, the image that is loaded; no
   container needed);
2. one ``run`` whose entrypoint is bash: it executes that ``Entrypoint`` with
   the test arguments (**smoke**), then the bash + coreutils **shell check**,
   and prints each one's output and exit code between markers, so each check
   is judged on its own and a failure still names the check, with its output.

When bash itself cannot run (no markers come back), the smoke test is run the
plain way (the engine runs the image's entrypoint), so it is still judged.

Foreign systems run through an emulator registered in the kernel that runs the
containers (``polyarch.kernel``). When that is this host's kernel, a missing
handler is reported with what to do before anything is loaded
(``ensure_runnable``); when it is the engine's own (a VM, another machine), one
probe run of the loaded image settles it (``probe_runnable``).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from polyarch import emulation
from polyarch.config import Container
from polyarch.emulation import require_runnable
from polyarch.engine import Engine, RunResult
from polyarch.errors import ContainerTestError, ImageError
from polyarch.image.docker_archive import archive_config
from polyarch.image.layers import COMMAND_DIRS
from polyarch.kernel import Kernel, locate_kernel, probe, runs_natively
from polyarch.outputs import Outputs
from polyarch.platforms import System
from polyarch.reference import DEFAULT_TAG
from polyarch.workflows.load import load_foreign, load_image

TEST_TIMEOUT_SECONDS = 300.0
"""A smoke test under qemu can be slow, but never minutes; longer means it waits for input."""

# The tool-container promise: bash runs, and coreutils work inside it.
SHELL_CHECK = 'set -e; n=$(ls / | wc -l); test "$n" -gt 3; echo polyarch-ok | tr a-z A-Z'
SHELL_EXPECT = "POLYARCH-OK"
OUTPUT_TAIL_LINES = 15
# Run by bash as ``bash -c SCRIPT MARK ENTRYPOINT... ARGS...``: each check's output, then
# "MARK NAME EXIT" on a line of its own. The tool gets no stdin, as in `docker run`.
_ONE_RUN = (
    'mark=$0; out=$("$@" 2>&1 </dev/null); code=$?; printf \'%s\\n%s smoke %d\\n\' "$out" "$mark" "$code"; '
    f"out=$( ( {SHELL_CHECK} ) 2>&1 ); code=$?; "
    'printf \'%s\\n%s shell %d\\n\' "$out" "$mark" "$code"'
)


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


def image_entrypoint(out_dir: Path, container: Container, system: System) -> list[str]:
    """The ``Entrypoint`` of ``system``'s image config in ``OUT/NAME/SYSTEM.tar`` (what is loaded)."""
    archive = Outputs(out_dir, container.name).archive(system)
    if not archive.is_file():
        raise ImageError(
            f"{container.name} has no {system.name} image in {out_dir}",
            hint=f"build it: polyarch build {container.name} --system {system.name}",
        )
    config = json.loads(archive_config(archive))
    entrypoint = (config.get("config") or {}).get("Entrypoint")
    if not isinstance(entrypoint, list) or not all(isinstance(a, str) for a in entrypoint):
        raise ImageError(
            f"{container.name} ({system.name}): the image config has no Entrypoint list",
            hint=f"rebuild it: polyarch build {container.name}",
        )
    return entrypoint


def run_smoke_test(
    engine: Engine,
    container: Container,
    system: System,
    reference: str,
    *,
    native: System,
    entrypoint: Sequence[str],
) -> TestReport:
    """Check ``entrypoint`` (the image config's), then run the smoke test and the shell check.

    One container start; see the module doc. ``native`` is the system of the
    kernel that runs the containers. Call ``ensure_runnable`` and
    ``probe_runnable`` first for a foreign system.
    """
    # Naming the platform of a foreign image keeps the engines' mismatch warning
    # out of the output that the checks read.
    platform = None if emulation.runs_natively(system, native) else system.oci_platform
    started = time.monotonic()
    checks = [_static_entrypoint(container, entrypoint)]
    if checks[0].passed:
        checks += _one_run(engine, container, reference, platform, entrypoint)
    return TestReport(container.name, system, reference, tuple(checks), time.monotonic() - started)


def _static_entrypoint(container: Container, entrypoint: Sequence[str]) -> Check:
    # The command, or containers.toml's entrypoint: its program (found like command), its arguments.
    given = container.options.entrypoint
    command, fixed = (given[0], list(given[1:])) if given else (container.command, [])
    ok = (
        bool(entrypoint)
        and list(entrypoint[1:]) == fixed
        and (
            entrypoint[:1] == [command]
            if command.startswith("/")
            else entrypoint[0] in (f"{d}/{command}" for d in COMMAND_DIRS)
        )
    )
    return Check(
        "entrypoint (image config)",
        "Entrypoint = " + json.dumps(list(entrypoint)),
        0,
        "",
        ok,
        "" if ok else f"expected the command {command!r}",
    )


def _one_run(
    engine: Engine,
    container: Container,
    reference: str,
    platform: str | None,
    entrypoint: Sequence[str],
) -> list[Check]:
    args = list(container.test)
    mark = f"@@polyarch-{uuid.uuid4().hex[:12]}"
    result = engine.run(
        reference,
        ["-c", _ONE_RUN, mark, *entrypoint, *args],
        entrypoint="bash",
        platform=platform,
        timeout=TEST_TIMEOUT_SECONDS,
    )
    sections = _sections(result.output, mark)
    smoke_name = " ".join([container.command, *args])
    shell_name = "bash -c (coreutils check)"
    if "smoke" not in sections:
        # Not a bash that runs scripts: the smoke test runs the plain way, and the
        # shell check is judged as `bash -c CHECK` always was, on this run's output.
        shell = _judge(
            shell_name,
            result,
            output_ok=SHELL_EXPECT in result.output,
            problem=f"no {SHELL_EXPECT} in output (bash did not run the check)",
        )
        return [_plain_smoke(engine, container, reference, platform), shell]
    expect = container.expect
    code, output = sections["smoke"]
    smoke = _judge(
        smoke_name,
        RunResult(code, output, result.command),
        output_ok=expect is None or re.search(expect, output, re.M) is not None,
        problem=f"output does not match expect = {expect!r}",
    )
    code, output = sections.get("shell", (result.exit_code or 1, result.output))
    shell = _judge(
        shell_name,
        RunResult(code, output, result.command),
        output_ok=SHELL_EXPECT in output,
        problem=f"no {SHELL_EXPECT} in output",
    )
    return [smoke, shell]


def _sections(output: str, mark: str) -> dict[str, tuple[int, str]]:
    """``{check: (exit code, output)}`` from the one run's marked output."""
    found: dict[str, tuple[int, str]] = {}
    rest = output
    for match in re.finditer(rf"^{re.escape(mark)} (smoke|shell) (-?\d+)$", output, re.M):
        before, _, rest = rest.partition(match.group(0))
        found[match.group(1)] = (int(match.group(2)), before.strip("\n"))
    return found


def _plain_smoke(
    engine: Engine, container: Container, reference: str, platform: str | None
) -> Check:
    args = list(container.test)
    result = engine.run(reference, args, platform=platform, timeout=TEST_TIMEOUT_SECONDS)
    expect = container.expect
    return _judge(
        " ".join([container.command, *args]),
        result,
        output_ok=expect is None or re.search(expect, result.output, re.M) is not None,
        problem=f"output does not match expect = {expect!r}",
    )


def _judge(name: str, result: RunResult, *, output_ok: bool, problem: str) -> Check:
    """A check passes when the command exits 0 and its output is as expected."""
    if result.exit_code != 0:
        reason = "non-zero exit"
    elif not output_ok:
        reason = problem
    else:
        reason = ""
    return Check(name, result.command, result.exit_code, result.output, not reason, reason)


def test_published(
    engine: Engine, container: Container, reference: str, kernel: Kernel
) -> TestReport:
    """Pull ``reference`` (an index in a registry) for the native system of ``kernel`` and run
    the smoke test on what the engine got: what a user of the published image runs."""
    native = kernel.native
    engine.pull(reference, platform=native.oci_platform)
    entrypoint = engine.entrypoint(reference)
    return run_smoke_test(
        engine, container, native, reference, native=native, entrypoint=entrypoint
    )


def run_smoke_tests(
    engine: Engine,
    container: Container,
    systems: Sequence[System],
    *,
    out_dir: Path,
    tag: str = DEFAULT_TAG,
    kernel: Kernel | None = None,
) -> list[TestReport]:
    """Load and test each system's image, the systems side by side; ``NAME:TAG`` ends up native.

    Native means native to the kernel that runs the containers (``kernel``,
    default: asked of ``engine``). Loads go one after the other (a foreign
    load briefly moves ``NAME:TAG`` and puts it back), foreign ones first, so
    a multi-system test never leaves a foreign image as ``NAME:TAG``; each
    system's test starts as soon as its image is loaded, so the slow emulated
    runs overlap the rest. Reports come back in the order of ``systems``.
    """
    kernel = kernel or locate_kernel(engine)
    native = kernel.native
    for system in systems:
        ensure_runnable(kernel, system)  # before loading anything: say what to install
    entrypoints = {s: image_entrypoint(out_dir, container, s) for s in systems}
    ordered = sorted(systems, key=lambda s: s == native)

    def test(system: System, reference: str) -> TestReport:
        probe_runnable(kernel, system, reference)
        return run_smoke_test(
            engine, container, system, reference, native=native, entrypoint=entrypoints[system]
        )

    running: dict[System, Future[TestReport]] = {}
    with ThreadPoolExecutor(max_workers=len(ordered) or 1) as pool:
        for system in ordered:
            load = load_image if system == native else load_foreign
            reference = load(engine, container, system, out_dir=out_dir, tag=tag)
            running[system] = pool.submit(test, system, reference)
        return [running[s].result() for s in systems]


def raise_for_failures(reports: Sequence[TestReport]) -> None:
    for report in reports:
        if not report.passed:
            raise report.failure()
