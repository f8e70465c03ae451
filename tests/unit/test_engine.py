"""Engine detection and the Engine class against the real docker and podman."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from engines import tiny_program, tiny_sleeper, write_docker_archive

from polyarch import cmd
from polyarch.engine import POLYARCH_DOCKER_SOCKET, Engine, detect_engine
from polyarch.errors import EngineError, ToolMissingError, UsageError
from polyarch.platforms import native_system, parse_system

# Tests using docker_engine, podman_engine, engine or emulation_ready are marked
# `engine` by conftest.py; the tests that run the docker client themselves say so.
NATIVE_ARCH = native_system().oci_architecture
FOREIGN = parse_system("aarch64-linux" if NATIVE_ARCH == "amd64" else "x86_64-linux")
FOREIGN_ARCH = FOREIGN.oci_architecture
FOREIGN_PLATFORM = FOREIGN.oci_platform


@pytest.fixture
def dead_socket(tmp_path: Path) -> str:
    """A DOCKER_HOST where nothing listens."""
    return f"unix://{tmp_path / 'nobody-listens.sock'}"


@pytest.fixture
def image_name() -> str:
    return f"polyarch-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def loaded(engine: Engine, tmp_path: Path, image_name: str) -> Iterator[tuple[Engine, str]]:
    """A tiny native image loaded into ``engine``; removed afterwards."""
    archive = write_docker_archive(
        tmp_path / "hello.tar",
        files={
            "/hello": tiny_program(NATIVE_ARCH, b"hello from the image\n"),
            "/bye": tiny_program(NATIVE_ARCH, b"bye from the image\n"),
        },
        entrypoint=["/hello"],
        architecture=NATIVE_ARCH,
        repo_tag=f"{image_name}:one",
    )
    ref = engine.load(archive)
    yield engine, ref
    engine.remove_image(ref)


# --- detection ------------------------------------------------------------------------------


def test_unknown_engine_name_is_refused() -> None:
    with pytest.raises(UsageError, match="unknown container engine 'rkt'") as caught:
        detect_engine("rkt")
    assert "docker, podman" in str(caught.value)


def test_unknown_engine_in_polyarch_engine_variable_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POLYARCH_ENGINE", "containerd")
    with pytest.raises(UsageError, match="containerd"):
        detect_engine()


def test_docker_is_preferred_when_its_daemon_answers(
    docker_engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("POLYARCH_ENGINE", raising=False)
    monkeypatch.setenv("DOCKER_HOST", docker_engine.env["DOCKER_HOST"])
    found = detect_engine()
    assert found.name == "docker"
    assert found.env["DOCKER_HOST"] == docker_engine.env["DOCKER_HOST"]


def test_setup_host_socket_is_found_without_docker_host(
    docker_engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if docker_engine.env["DOCKER_HOST"] != f"unix://{POLYARCH_DOCKER_SOCKET}":
        pytest.skip("the tests use a DOCKER_HOST of their own, not setup-host's daemon")
    monkeypatch.delenv("POLYARCH_ENGINE", raising=False)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    found = detect_engine()
    assert (found.name, found.env["DOCKER_HOST"]) == ("docker", f"unix://{POLYARCH_DOCKER_SOCKET}")


@pytest.mark.engine
def test_podman_is_used_when_docker_does_not_answer(
    dead_socket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POLYARCH_ENGINE", raising=False)
    monkeypatch.setenv("DOCKER_HOST", dead_socket)
    assert detect_engine().name == "podman"


@pytest.mark.engine
def test_chosen_docker_that_does_not_answer_says_how_to_start_it(
    dead_socket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", dead_socket)
    with pytest.raises(EngineError) as caught:
        detect_engine("docker")
    message = str(caught.value)
    assert f"docker daemon not answering at {dead_socket}" in message
    assert "scripts/setup-host" in message
    assert "--engine podman" in message


def test_preferred_podman_is_honoured_while_docker_answers(
    docker_engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", docker_engine.env["DOCKER_HOST"])
    assert detect_engine("podman").name == "podman"


def test_polyarch_engine_variable_chooses_and_argument_overrides_it(
    docker_engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", docker_engine.env["DOCKER_HOST"])
    monkeypatch.setenv("POLYARCH_ENGINE", "podman")
    assert detect_engine().name == "podman"
    assert detect_engine("docker").name == "docker"


def test_no_installed_engine_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POLYARCH_ENGINE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no docker, no podman
    with pytest.raises(EngineError, match="no container engine") as caught:
        detect_engine()
    assert "apt-get install podman" in str(caught.value)
    assert caught.value.exit_code == 20


@pytest.mark.parametrize(("name", "package"), [("docker", "docker.io"), ("podman", "podman")])
def test_chosen_engine_that_is_not_installed_names_its_package(
    name: str, package: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissingError, match=f"{name} is not installed") as caught:
        detect_engine(name)
    assert f"apt-get install {package}" in str(caught.value)


# --- the Engine class against both real engines ----------------------------------------------


def test_loaded_image_runs_and_is_removed(loaded: tuple[Engine, str], image_name: str) -> None:
    engine, ref = loaded
    # podman qualifies short names: localhost/NAME:TAG
    assert ref.endswith(f"{image_name}:one")
    assert engine.has_image(ref)

    result = engine.run(ref, ["a", "b"], timeout=60)
    assert result.output.strip() == "hello from the image"
    assert result.exit_code == 2  # the program exits with its argument count
    assert ref in result.command and "--network=none" in result.command

    engine.remove_image(ref)
    assert not engine.has_image(ref)
    engine.remove_image(ref)  # removing what is gone is not an error


def test_entrypoint_can_be_overridden(loaded: tuple[Engine, str]) -> None:
    engine, ref = loaded
    result = engine.run(ref, [], entrypoint="/bye", timeout=60)
    assert (result.exit_code, result.output.strip()) == (0, "bye from the image")


def test_tagged_image_runs_under_its_new_name(loaded: tuple[Engine, str], image_name: str) -> None:
    engine, ref = loaded
    engine.tag(ref, f"{image_name}:latest")
    try:
        assert engine.run(f"{image_name}:latest", [], timeout=60).output.startswith("hello")
    finally:
        engine.remove_image(f"{image_name}:latest")
    assert engine.has_image(ref)  # removing one tag keeps the other


def test_command_that_does_not_exist_is_a_failed_run_not_an_engine_error(
    loaded: tuple[Engine, str],
) -> None:
    engine, ref = loaded
    result = engine.run(ref, [], entrypoint="/no-such-tool", timeout=60)
    assert result.exit_code == 127
    assert "/no-such-tool" in result.output


def test_running_an_image_that_is_not_loaded_fails_without_pulling(
    engine: Engine,
    image_name: str,
) -> None:
    with pytest.raises(EngineError, match="could not run the container") as caught:
        engine.run(f"{image_name}:absent", ["x"], timeout=60)
    message = str(caught.value)
    assert "--pull=never" in message
    assert "Unable to find image" not in message  # docker's words before a pull


def test_loading_a_missing_archive_says_to_build(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="does not exist") as caught:
        engine.load(tmp_path / "fd" / "x86_64-linux.tar")
    assert "polyarch build" in str(caught.value)


def test_loading_a_corrupt_archive_is_an_engine_error(engine: Engine, tmp_path: Path) -> None:
    archive = tmp_path / "corrupt.tar"
    archive.write_bytes(b"this is not a tar archive" * 100)
    with pytest.raises(EngineError, match="load") as caught:
        engine.load(archive)
    assert cmd.quoted([engine.program, "load", "--input", str(archive)]) in str(caught.value)


def test_run_that_exceeds_its_timeout_is_stopped_and_removed(
    engine: Engine,
    tmp_path: Path,
    image_name: str,
) -> None:
    archive = write_docker_archive(
        tmp_path / "sleeper.tar",
        files={"/sleep": tiny_sleeper(NATIVE_ARCH)},
        entrypoint=["/sleep"],
        architecture=NATIVE_ARCH,
        repo_tag=f"{image_name}:sleeper",
    )
    ref = engine.load(archive)
    try:
        with pytest.raises(EngineError, match="did not finish within 3s"):
            engine.run(ref, [], timeout=3)
        # The engine removes the killed container asynchronously (--rm); give it a moment.
        deadline = time.monotonic() + 15
        while True:
            left = cmd.run(
                [
                    engine.program,
                    "ps",
                    "--all",
                    "--filter",
                    f"ancestor={ref}",
                    "--format",
                    "{{.Names}}",
                ],
                env={**os.environ, **engine.env},
                timeout=60,
            )
            assert left.returncode == 0
            if not left.stdout.strip() or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert left.stdout.strip() == b"", "the timed-out container was left behind"
    finally:
        engine.remove_image(ref)


@pytest.mark.usefixtures("emulation_ready")
def test_foreign_image_runs_under_qemu_emulation(
    engine: Engine,
    tmp_path: Path,
    image_name: str,
) -> None:
    archive = write_docker_archive(
        tmp_path / "foreign.tar",
        files={"/hello": tiny_program(FOREIGN_ARCH, f"hello from {FOREIGN_ARCH}\n".encode())},
        entrypoint=["/hello"],
        architecture=FOREIGN_ARCH,
        variant=FOREIGN.oci_variant,
        repo_tag=f"{image_name}:foreign",
    )
    ref = engine.load(archive)
    try:
        result = engine.run(ref, ["x"], platform=FOREIGN_PLATFORM, timeout=60)
        assert (result.exit_code, result.output.splitlines()[0]) == (
            1,
            f"hello from {FOREIGN_ARCH}",
        )
    finally:
        engine.remove_image(ref)
