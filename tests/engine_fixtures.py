"""Fixtures for the real engines and qemu emulation (import them into conftest.py).

``docker_engine`` starts dockerd via scripts/setup-host when none answers (it
stays up afterwards: unix socket only, no bridge, no iptables, reused next
time); ``podman_engine`` uses podman with its own config and vfs storage in
a pytest temporary directory; ``engine`` is parametrized over both.
``emulation_ready`` makes sure the qemu handlers with the F flag are registered.
A machine that cannot provide them fails these tests with what to do: CI has both.
"""

from __future__ import annotations

import pytest
from engines import docker_engine as start_docker_engine
from engines import podman_engine as make_podman_engine

from polyarch.emulation import install_handlers, require_runnable, runs_natively
from polyarch.engine import Engine, EngineName
from polyarch.errors import PolyarchError
from polyarch.platforms import SYSTEMS

ENGINES: tuple[EngineName, ...] = ("docker", "podman")


@pytest.fixture(scope="session")
def docker_engine() -> Engine:
    """docker talking to an answering daemon (started here if needed)."""
    try:
        return start_docker_engine()
    except (RuntimeError, PolyarchError) as error:
        pytest.fail(f"docker is not usable: {error}")


@pytest.fixture(scope="session")
def podman_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """podman with a private containers.conf/storage.conf that work on this host."""
    try:
        return make_podman_engine(tmp_path_factory.mktemp("podman"))
    except PolyarchError as error:
        pytest.fail(f"podman is not usable: {error}")


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Engine:
    """Each real engine in turn."""
    value: Engine = request.getfixturevalue(f"{request.param}_engine")
    return value


@pytest.fixture(scope="session")
def emulation_ready() -> None:
    """qemu handlers (with F) for every foreign system, registered if missing (needs root then)."""
    foreign = [s for s in SYSTEMS if not runs_natively(s)]
    try:
        install_handlers(foreign)
        for system in foreign:
            require_runnable(system)
    except PolyarchError as error:
        pytest.fail(f"emulation is not usable: {error} (run scripts/setup-host as root)")
