"""load, test, all, manifest-test: put built images into an engine and prove they work.

The engine is only a runner here: images come from ``polyarch build``'s
outputs (``OUT/NAME/SYSTEM.tar``, or the OCI layout for manifest-test).
Foreign systems run through qemu-user via binfmt_misc; a missing handler is
reported with what to do before any container is started.
"""

from __future__ import annotations

import json
import re
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from polyarch.config import Container
from polyarch.emulation import require_runnable, runs_natively
from polyarch.engine import Engine, RunResult
from polyarch.errors import ContainerTestError, ImageError
from polyarch.image.archive import image_from_layout, read_oci_layout, write_docker_archive
from polyarch.platforms import System, native_system

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


def archive_path(out_dir: Path, container: Container, system: System) -> Path:
    return out_dir / container.name / f"{system.name}.tar"


def load_image(
    engine: Engine, container: Container, system: System, *, out_dir: Path, tag: str = "latest"
) -> str:
    """Load ``system``'s docker-archive into ``engine`` as ``NAME:TAG``; return that reference."""
    archive = archive_path(out_dir, container, system)
    if not archive.is_file():
        raise ImageError(
            f"{container.name} has no {system.name} image in {out_dir}",
            hint=f"build it: polyarch build {container.name} --system {system.name}",
        )
    return _load_as(engine, archive, f"{container.name}:{tag}")


def _load_as(engine: Engine, archive: Path, reference: str) -> str:
    loaded = engine.load(archive)
    if loaded != reference and loaded != f"localhost/{reference}":
        engine.tag(loaded, reference)
    return reference


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
    tag: str = "latest",
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
            reference = _load_foreign(engine, container, system, out_dir=out_dir, tag=tag)
        reports.append(run_smoke_test(engine, container, system, reference))
    return reports


def _load_foreign(
    engine: Engine, container: Container, system: System, *, out_dir: Path, tag: str
) -> str:
    """Load a foreign image as ``NAME:TAG-SYSTEM``; every other name keeps its image.

    Loading a docker-archive moves the names written inside it (``NAME:TAG`` of
    the build) to the loaded image; they are put back where they were.
    """
    archive = archive_path(out_dir, container, system)
    protected = {*embedded_tags(archive), f"{container.name}:{tag}"}
    previous = {ref: engine.image_id(ref) for ref in sorted(protected)}
    reference = load_image(engine, container, system, out_dir=out_dir, tag=f"{tag}-{system.name}")
    for ref, image_id in previous.items():
        if image_id is not None:
            engine.tag(image_id, ref)
        else:
            engine.untag(ref)
    return reference


def embedded_tags(archive: Path) -> list[str]:
    """The RepoTags a docker-archive gives the image it holds."""
    try:
        with tarfile.open(archive) as tar:
            member = tar.extractfile("manifest.json")
            manifest = json.loads(member.read()) if member else []
    except (OSError, tarfile.TarError, KeyError, ValueError) as exc:
        raise ImageError(f"{archive} is not a docker-archive: {exc}", hint="rebuild it") from exc
    return [tag for entry in manifest for tag in entry.get("RepoTags") or []]


def load_from_layout(
    engine: Engine, container: Container, system: System, *, out_dir: Path, tag: str = "latest"
) -> str:
    """Load ``system``'s image out of the OCI layout (the index), as ``NAME:TAG``."""
    layout = read_oci_layout(out_dir / container.name / "oci")
    image = image_from_layout(layout, tag, system)
    with tempfile.TemporaryDirectory(prefix="polyarch-load-") as tmp:
        archive = Path(tmp) / f"{system.name}.tar"
        write_docker_archive(archive, image, repo_tags=[f"{container.name}:{tag}"])
        return _load_as(engine, archive, f"{container.name}:{tag}")


def raise_for_failures(reports: Sequence[TestReport]) -> None:
    for report in reports:
        if not report.passed:
            raise report.failure()
