"""Emulation is a property of the kernel that runs the containers: this host's or the engine's.

The real engines run here on this host's kernel, so the tests make polyarch
unable to read that kernel's handlers, the way a Mac, a remote DOCKER_HOST or a
container using the host's engine is: ``polyarch`` runs in a private mount
namespace with an empty tmpfs over /proc/sys/fs/binfmt_misc. The kernel's own
handlers stay registered (the engine still runs arm64 images through qemu), so
only the engine can answer — by a probe run of the image just loaded.

Images hold tiny static programs (tests/engines.py) in place of the tool and
bash, real machine code per architecture: an arm64 image passes only if the
engine really runs arm64 code. An image whose shell is for a machine no handler
knows is what "the engine cannot run this system" looks like.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import RepoFactory, base_packages, write_project
from debrepo import DebSpec, File
from engines import podman_service, tcp_dockerd, tiny_program, unknown_machine_program

from polyarch.emulation import BINFMT_DIR
from polyarch.engine import Engine
from polyarch.kernel import locate_kernel
from polyarch.platforms import parse_system

pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(
        not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("unshare"),
        reason="hiding binfmt_misc needs Linux, root and unshare",
    ),
    pytest.mark.usefixtures("emulation_ready"),
]

Cli = Callable[..., tuple[int, str, str]]
ARCHES = ("amd64", "arm64")
HIDE = 'mount -t tmpfs polyarch-hidden "$1" && shift && exec "$@"'


@dataclass(frozen=True)
class Project:
    path: Path
    cache: Path
    out: Path
    tag: str


def specs(runnable_arm64: bool) -> list[DebSpec]:
    """hello + a shell that succeeds, per arch; the arm64 shell may be for an unknown machine."""
    out: list[DebSpec] = []
    for arch in ARCHES:
        for spec in base_packages(arch):
            if spec.name == "bash":
                shell = tiny_program(arch, b"POLYARCH-OK\n", exit_zero=True)
                if arch == "arm64" and not runnable_arm64:
                    shell = unknown_machine_program()
                spec.files = {"/bin/bash": File(shell, 0o755)}
            out.append(spec)
        program = tiny_program(arch, f"hello 1.0 ({arch})\n".encode(), exit_zero=True)
        out.append(
            DebSpec(
                "hello",
                "1.0",
                arch,
                depends="libc6",
                files={"/usr/bin/hello": File(program, 0o755)},
            )
        )
    return out


@pytest.fixture
def make_project(
    make_repo: RepoFactory, tmp_path: Path, cli: Cli
) -> Iterator[Callable[[bool], Project]]:
    made: list[Project] = []

    def factory(runnable_arm64: bool = True) -> Project:
        repo, url = make_repo(specs(runnable_arm64), with_base=False)
        name = f"p{len(made)}"
        path = write_project(
            tmp_path / name,
            url,
            repo.key.keyring,
            '[containers.hello]\npackage = "hello"\ntest = ["--version"]\nexpect = "hello 1.0"\n',
        )
        project = Project(
            path, tmp_path / f"{name}-cache", tmp_path / f"{name}-out", f"t{uuid.uuid4().hex[:10]}"
        )
        code, _, err = cli(
            "-f",
            path,
            "--cache-dir",
            project.cache,
            "build",
            "hello",
            "--all-systems",
            "--out",
            project.out,
            "--tag",
            project.tag,
        )
        assert code == 0, err
        made.append(project)
        return project

    yield factory


def hidden_binfmt(
    project: Project, engine: Engine, *args: str, run_options: bool = True
) -> subprocess.CompletedProcess[str]:
    """``polyarch ARGS`` in a private mount namespace where binfmt_misc is an empty tmpfs.

    ``run_options`` adds --out, --tag and --engine (for load, test and all).
    """
    options = ["--out", str(project.out), "--tag", project.tag, "--engine", engine.name]
    argv = [
        "unshare", "--mount", "--propagation", "private", "--", "sh", "-c", HIDE, "sh",
        str(BINFMT_DIR), sys.executable, "-m", "polyarch",
        "-f", str(project.path), "--cache-dir", str(project.cache), *args,
        *(options if run_options else []),
    ]  # fmt: skip
    env = {**os.environ, **engine.env}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)


def remove_images(engine: Engine, project: Project) -> None:
    for suffix in ("", "-aarch64-linux", "-x86_64-linux"):
        engine.remove_image(f"hello:{project.tag}{suffix}")


def test_hiding_binfmt_misc_leaves_polyarch_nothing_to_read_here(
    make_project: Callable[[bool], Project], docker_engine: Engine
) -> None:
    project = make_project(True)
    result = hidden_binfmt(project, docker_engine, "emulation", "status", run_options=False)
    assert "aarch64-linux: cannot run aarch64-linux here: binfmt_misc is not mounted" in (
        result.stdout
    ), result.stderr


def test_test_and_all_multiarch_pass_through_the_engine_probe(
    make_project: Callable[[bool], Project], engine: Engine
) -> None:
    project = make_project(True)
    try:
        result = hidden_binfmt(project, engine, "test", "hello", "--system", "aarch64-linux")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "because binfmt_misc is not visible at /proc/sys/fs/binfmt_misc" in result.stderr
        assert "asking the engine's kernel" in result.stderr
        assert "aarch64-linux" in result.stdout and "passed" in result.stdout

        result = hidden_binfmt(project, engine, "all", "hello", "--multiarch")
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.count("passed") == 2
        # NAME:TAG is the engine's native image; the foreign one has its own tag
        native_id = engine.image_id(f"hello:{project.tag}")
        foreign_id = engine.image_id(f"hello:{project.tag}-aarch64-linux")
        assert native_id and foreign_id and native_id != foreign_id
    finally:
        remove_images(engine, project)


def test_an_engine_that_cannot_run_the_system_fails_with_exit_21_and_its_advice(
    make_project: Callable[[bool], Project], engine: Engine
) -> None:
    project = make_project(False)
    try:
        result = hidden_binfmt(project, engine, "test", "hello", "--system", "aarch64-linux")
        assert result.returncode == 21, result.stdout + result.stderr
        error = result.stderr.strip().splitlines()[-1]
        assert f"{engine.describe()} cannot run aarch64-linux images: exec format error" in error
        # a local Linux engine: this host's handlers are the ones to register
        assert "`polyarch emulation install` as root" in error
        assert "Traceback" not in result.stderr
    finally:
        remove_images(engine, project)


@pytest.fixture(scope="module")
def remote_docker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """A docker daemon of this test module, reached only over tcp://127.0.0.1:PORT."""
    with tcp_dockerd(tmp_path_factory.mktemp("dockerd")) as url:
        yield Engine("docker", shutil.which("docker") or "docker", {"DOCKER_HOST": url})


def test_remote_engine_loads_and_tests_both_systems(
    make_project: Callable[[bool], Project], remote_docker: Engine, docker_engine: Engine
) -> None:
    project = make_project(True)
    url = remote_docker.env["DOCKER_HOST"]
    result = hidden_binfmt(project, remote_docker, "test", "hello", "--all-systems")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"because docker talks to a remote engine ({url})" in result.stderr
    assert result.stdout.count("passed") == 2
    for ref in (f"hello:{project.tag}", f"hello:{project.tag}-aarch64-linux"):
        assert remote_docker.has_image(ref)  # loaded over TCP into that daemon ...
        assert not docker_engine.has_image(ref)  # ... not into the shared one


def test_remote_engine_that_cannot_run_the_system_names_that_machine(
    make_project: Callable[[bool], Project], remote_docker: Engine
) -> None:
    project = make_project(False)
    url = remote_docker.env["DOCKER_HOST"]
    result = hidden_binfmt(project, remote_docker, "test", "hello", "--system", "aarch64-linux")
    assert result.returncode == 21, result.stdout + result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert "exec format error" in error
    assert f"on the machine {url} runs on, register qemu-user handlers" in error


def test_a_remote_engine_is_asked_even_when_this_host_can_read_binfmt(
    remote_docker: Engine,
) -> None:
    kernel = locate_kernel(remote_docker)
    assert (kernel.where, kernel.flavor) == ("engine", "remote")
    assert kernel.native == parse_system(
        {"x86_64": "x86_64-linux", "aarch64": "aarch64-linux"}[os.uname().machine]
    )
    assert remote_docker.env["DOCKER_HOST"] in kernel.describe()


@pytest.fixture(scope="module")
def remote_podman(
    podman_engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """podman as ``podman --remote``: CONTAINER_HOST points at a service this module started."""
    with podman_service(podman_engine.env, tmp_path_factory.mktemp("podman-service")) as url:
        yield Engine("podman", podman_engine.program, {**podman_engine.env, "CONTAINER_HOST": url})


def test_podman_remote_loads_and_tests_both_systems(
    make_project: Callable[[bool], Project], remote_podman: Engine
) -> None:
    project = make_project(True)
    url = remote_podman.env["CONTAINER_HOST"]
    try:
        result = hidden_binfmt(project, remote_podman, "test", "hello", "--all-systems")
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"because podman talks to a remote engine ({url})" in result.stderr
        assert result.stdout.count("passed") == 2
        assert remote_podman.host().remote
    finally:
        remove_images(remote_podman, project)
