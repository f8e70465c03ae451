"""polyarch test / load on images built from the generated repository, in the real engines."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RepoFactory, write_project
from debrepo import DebSpec, File
from engines import tiny_program

import polyarch.workflows.smoke_test as smoke_test
from polyarch.config import load_config
from polyarch.emulation import require_runnable
from polyarch.engine import Engine, EngineHost
from polyarch.errors import ContainerTestError, EmulationError, ImageError
from polyarch.kernel import Kernel
from polyarch.platforms import native_system, parse_system
from polyarch.workflows.load import load_foreign, load_image
from polyarch.workflows.smoke_test import raise_for_failures, run_smoke_tests

Cli = Callable[..., tuple[int, str, str]]
# hello is built for both; whichever of the two this host is not runs under emulation.
NATIVE = native_system()
FOREIGN = parse_system("aarch64-linux" if NATIVE.name == "x86_64-linux" else "x86_64-linux")


@pytest.fixture
def built(cli: Cli, tmp_path: Path, make_repo: RepoFactory) -> Iterator[tuple[Path, str]]:
    """hello for both systems; its program prints a line and exits with (number of args)."""
    specs = [
        DebSpec(
            "hello",
            "1.0",
            arch,
            depends="libc6",
            files={"/usr/bin/hello": File(tiny_program(arch, b"hello from polyarch\n"), 0o755)},
        )
        for arch in ("amd64", "arm64")
    ]
    repo, url = make_repo(specs)
    project = write_project(
        tmp_path / "p",
        url,
        repo.key.keyring,
        # A broken test spec: an extra argument makes the program exit 1.
        '[containers.hello]\npackage = "hello"\ntest = ["--version"]\n',
    )
    tag = f"t{uuid.uuid4().hex[:10]}"
    code, _, err = cli(
        "-f",
        project,
        "--cache-dir",
        tmp_path / "c",
        "build",
        "hello",
        "--all-systems",
        "--out",
        tmp_path / "result",
        "--tag",
        tag,
    )
    assert code == 0, err
    yield project, tag


def test_a_failing_smoke_test_shows_command_exit_code_and_output(
    engine: Engine, built: tuple[Path, str], tmp_path: Path
) -> None:
    project, tag = built
    container = load_config(project).container("hello")
    try:
        reports = run_smoke_tests(engine, container, [NATIVE], out_dir=tmp_path / "result", tag=tag)
        assert not reports[0].passed
        with pytest.raises(ContainerTestError) as exc:
            raise_for_failures(reports)
        message = str(exc.value)
        assert "hello --version failed: non-zero exit" in message
        assert "exit code: 1" in message
        assert "hello from polyarch" in message  # the container's own output
        assert f"hello:{tag}" in message  # the command that ran
    finally:
        engine.remove_image(f"hello:{tag}")


def test_load_gives_the_native_image_its_name(
    engine: Engine, built: tuple[Path, str], tmp_path: Path
) -> None:
    project, tag = built
    container = load_config(project).container("hello")
    reference = load_image(engine, container, NATIVE, out_dir=tmp_path / "result", tag=tag)
    try:
        assert reference == f"hello:{tag}"
        result = engine.run(reference, [], timeout=60)
        assert (result.exit_code, result.output.strip()) == (0, "hello from polyarch")
    finally:
        engine.remove_image(reference)


def test_loading_a_system_that_was_not_built_says_to_build_it(
    built: tuple[Path, str], tmp_path: Path
) -> None:
    project, _tag = built
    container = load_config(project).container("hello")
    with pytest.raises(ImageError) as exc:
        load_image(
            Engine("podman", "podman"),
            container,
            parse_system("s390x-linux"),
            out_dir=tmp_path / "result",
        )
    assert "polyarch build hello --system s390x-linux" in str(exc.value)


def test_a_system_without_a_binfmt_handler_fails_with_advice_before_loading(
    built: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real check, pointed at a handler name that this test controls and never registers.
    def unregistered(system, **kwargs):  # type: ignore[no-untyped-def]
        return require_runnable(system, handler="qemu-polyarch-test-unregistered")

    monkeypatch.setattr(smoke_test, "require_runnable", unregistered)
    project, tag = built
    container = load_config(project).container("hello")
    never = Engine("docker", "/nonexistent/docker")  # would fail loudly if anything were loaded
    # What locate_kernel says of an engine on this host's kernel (it cannot ask `never`).
    info = EngineHost("linux", os.uname().machine, os.uname().release, "Debian", "vm", False, None)
    here = Kernel("host", "test", native_system(), never, info, "linux")
    with pytest.raises(EmulationError) as exc:
        run_smoke_tests(
            never,
            container,
            [FOREIGN],
            out_dir=tmp_path / "result",
            tag=tag,
            kernel=here,
        )
    assert "polyarch emulation install" in str(exc.value)
    assert FOREIGN.name in str(exc.value)


def test_loading_an_image_the_engine_already_has_under_that_name_loads_nothing(
    engine: Engine, built: tuple[Path, str], tmp_path: Path
) -> None:
    project, tag = built
    container = load_config(project).container("hello")
    loads: list[Path] = []

    class Counting(Engine):
        def load(self, archive: Path, **kwargs: Any) -> str:
            loads.append(archive)
            return super().load(archive, **kwargs)

    counting = Counting(engine.name, engine.program, engine.env)
    out = tmp_path / "result"
    try:
        for _ in range(2):
            load_image(counting, container, NATIVE, out_dir=out, tag=tag)
            load_foreign(counting, container, FOREIGN, out_dir=out, tag=tag)
        assert len(loads) == 2  # the second round found both images in place
        assert engine.run(f"hello:{tag}", [], timeout=60).exit_code == 0
    finally:
        engine.remove_image(f"hello:{tag}")
        engine.remove_image(f"hello:{tag}-{FOREIGN.name}")
