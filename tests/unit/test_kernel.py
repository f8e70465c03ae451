"""Whose kernel is asked, and the advice per engine when it cannot run a system.

Docker Desktop, OrbStack, colima, Lima and podman machine cannot run here; their
``docker info``/``podman info`` answers are written out below as those engines
report them (a stand-in, said so), and the real docker daemon is used wherever
a test needs an engine to answer.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RepoFactory, doctor_on_docker

from polyarch.engine import Engine, EngineHost
from polyarch.kernel import Kernel, emulation_advice, locate_kernel
from polyarch.platforms import parse_system

AARCH64 = parse_system("aarch64-linux")
X86_64 = parse_system("x86_64-linux")
S390X = parse_system("s390x-linux")
DOCKER = Engine("docker", "docker")
PODMAN = Engine("podman", "podman")

# (engine, what `docker info`/`podman info` reports on a Mac, flavor, words of its advice)
REPORTED = [
    (DOCKER, EngineHost("linux", "aarch64", "6.10.14-linuxkit", "Docker Desktop", "docker-desktop", False, "unix:///Users/u/.docker/run/docker.sock"), "docker-desktop", "Use Rosetta for x86_64/amd64"),
    (DOCKER, EngineHost("linux", "aarch64", "6.12.10-orbstack", "OrbStack", "orbstack", False, "unix:///Users/u/.orbstack/run/docker.sock"), "orbstack", "Rosetta"),
    (DOCKER, EngineHost("linux", "aarch64", "6.8.0-51-generic", "Ubuntu 24.04.1 LTS", "colima", False, "unix:///Users/u/.colima/default/docker.sock"), "colima", "--vz-rosetta"),
    (DOCKER, EngineHost("linux", "aarch64", "6.8.0-51-generic", "Ubuntu 24.04.1 LTS", "lima-docker", False, "unix:///Users/u/.lima/docker/sock/docker.sock"), "lima", "qemu-user-static"),
    (PODMAN, EngineHost("linux", "arm64", "6.12.5-200.fc41.aarch64", "fedora", "localhost.localdomain", True, None), "podman-machine", "podman machine ssh"),
    (DOCKER, EngineHost("linux", "x86_64", "6.1.0-28-amd64", "Debian GNU/Linux 12 (bookworm)", "builder", True, "ssh://me@builder"), "remote", "on the machine ssh://me@builder runs on"),
]  # fmt: skip


def kernel_of(engine: Engine, info: EngineHost, flavor: str) -> Kernel:
    native = AARCH64 if info.architecture in ("aarch64", "arm64") else X86_64
    return Kernel("engine", "test", native, engine, info, flavor)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("engine", "info", "flavor", "words"), REPORTED, ids=[r[2] for r in REPORTED]
)
def test_each_engine_gets_its_own_advice(
    engine: Engine, info: EngineHost, flavor: str, words: str
) -> None:
    kernel = kernel_of(engine, info, flavor)
    foreign = X86_64 if kernel.native == AARCH64 else AARCH64
    assert words in emulation_advice(kernel, foreign)
    assert f"--install {S390X.oci_architecture}" in emulation_advice(
        kernel, S390X
    ) or "qemu-user-static" in emulation_advice(kernel, S390X)


class Reporting(Engine):
    """An Engine whose ``host()`` answers as a given engine would (a stand-in: see module doc)."""

    def __init__(self, base: Engine, info: EngineHost) -> None:
        super().__init__(base.name, base.program, {})
        object.__setattr__(self, "_info", info)

    def host(self) -> EngineHost:
        info: EngineHost = object.__getattribute__(self, "_info")
        return info


@pytest.mark.parametrize(
    ("engine", "info", "flavor", "words"), REPORTED, ids=[r[2] for r in REPORTED]
)
def test_on_a_mac_every_engine_is_asked_and_its_flavor_recognised(
    engine: Engine, info: EngineHost, flavor: str, words: str
) -> None:
    kernel = locate_kernel(Reporting(engine, info), platform="darwin")
    assert (kernel.where, kernel.flavor) == ("engine", flavor)
    assert kernel.reason.startswith("this host runs macOS")
    assert kernel.native == (AARCH64 if info.architecture in ("aarch64", "arm64") else X86_64)


def test_an_engine_on_another_kernel_release_is_a_vm() -> None:
    info = EngineHost("linux", os.uname().machine, "6.10.14-linuxkit", "Docker Desktop", "docker-desktop", False, "unix:///home/u/.docker/desktop/docker.sock")  # fmt: skip
    kernel = locate_kernel(Reporting(DOCKER, info), platform="linux", host_release="6.1.0-28-amd64")
    assert kernel.where == "engine"
    assert "the engine's kernel is 6.10.14-linuxkit, this host's is 6.1.0-28-amd64" in kernel.reason


@pytest.mark.engine
def test_the_real_docker_on_this_kernel_is_answered_by_this_hosts_binfmt(
    docker_engine: Engine,
) -> None:
    kernel = locate_kernel(docker_engine)
    assert (kernel.where, kernel.flavor) == ("host", "linux")
    assert kernel.info.kernel == os.uname().release
    assert "this host's kernel" in kernel.describe()


@pytest.mark.engine
def test_the_real_docker_seen_from_a_mac_is_asked(docker_engine: Engine) -> None:
    kernel = locate_kernel(docker_engine, platform="darwin")
    assert kernel.where == "engine"
    assert kernel.reason == "this host runs macOS; docker runs containers in its own Linux VM"
    assert "the engine's kernel (linux/" in kernel.describe()


@pytest.mark.engine
def test_the_real_podman_reports_where_it_runs(podman_engine: Engine) -> None:
    info = podman_engine.host()
    assert (info.os, info.kernel, info.remote) == ("linux", os.uname().release, False)
    assert locate_kernel(podman_engine).where == "host"


@pytest.mark.engine
def test_doctor_shows_which_kernel_it_asked_and_why(
    docker_engine: Engine,
    make_repo: RepoFactory,
    tmp_path: Path,
    cli: Callable[..., tuple[int, str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flat = doctor_on_docker(cli, make_repo, tmp_path, docker_engine, monkeypatch)
    assert "which kernel runs the containers" in flat
    assert "docker runs containers on this host's kernel" in flat
    assert "signature good" in flat
