"""Shared fixtures: a test OpenPGP key, small signed Debian repositories served on 127.0.0.1,
docker-registry, skopeo and umoci; and the engine/registry markers derived from fixtures.

The fast tier, ``pytest -m "not integration and not engine and not registry"``,
runs no container engine, registry or OCI tool: a test that uses one through a
fixture below (directly or through other fixtures) is marked here, so the
markers cannot be forgotten. A test that runs one of these programs some other
way carries the marker itself.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from debrepo import DebSpec, File, TestKey, TestRepo, serve
from engine_fixtures import docker_engine, emulation_ready, engine, podman_engine
from engines import tiny_program
from hypothesis import settings
from registry_server import REGISTRY, RunningRegistry, run_registry

from polyarch import cmd
from polyarch.engine import Engine
from polyarch.platforms import native_system

__all__ = ["docker_engine", "emulation_ready", "engine", "podman_engine"]

# The machines are shared and noisy: a property is about results, never about
# how long one example took.
settings.register_profile("polyarch", deadline=None)
settings.load_profile("polyarch")

ENGINE_FIXTURES = frozenset({"docker_engine", "podman_engine", "engine", "emulation_ready"})
REGISTRY_FIXTURES = frozenset({"start_registry", "run_skopeo", "run_umoci"})


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        # fixturenames is the closure: fixtures used by the test's fixtures count too.
        used = set(getattr(item, "fixturenames", ()))
        if used & ENGINE_FIXTURES:
            item.add_marker(pytest.mark.engine)
        if used & REGISTRY_FIXTURES:
            item.add_marker(pytest.mark.registry)


@pytest.fixture(scope="session")
def test_key(tmp_path_factory: pytest.TempPathFactory) -> TestKey:
    return TestKey(tmp_path_factory.mktemp("gnupg"))


@pytest.fixture(scope="session")
def other_key(tmp_path_factory: pytest.TempPathFactory) -> TestKey:
    """A second key that is in no keyring the tests trust."""
    return TestKey(tmp_path_factory.mktemp("gnupg-other"), uid="stranger <x@example.invalid>")


@pytest.fixture(scope="session")
def third_key(tmp_path_factory: pytest.TempPathFactory) -> TestKey:
    """A third key, for a third source (a vendor's repository) that signs with its own."""
    return TestKey(tmp_path_factory.mktemp("gnupg-third"), uid="vendor <v@example.invalid>")


def base_packages(arch: str) -> list[DebSpec]:
    """A miniature bash + coreutils + libc6 world with the real dependency shape."""
    return [
        DebSpec(
            "libc6",
            "2.36-9",
            arch,
            multi_arch="same",
            files={
                "/lib/x86_64-linux-gnu/libc.so.6": b"libc",
                "/usr/share/doc/libc6/copyright": b"(c)",
            },
        ),
        DebSpec(
            "base-files",
            "12.4",
            arch,
            essential=True,
            files={"/etc/debian_version": b"12.0\n", "/usr/share/doc/base-files/README": b"doc"},
        ),
        DebSpec(
            "bash",
            "5.2.15-2",
            arch,
            pre_depends="libc6 (>= 2.36)",
            depends="base-files (>= 2.1.12)",
            essential=True,
            files={"/bin/bash": b"bash"},
        ),
        DebSpec(
            "coreutils",
            "9.1-1",
            arch,
            pre_depends="libc6 (>= 2.34)",
            essential=True,
            files={"/bin/ls": b"ls", "/usr/bin/env": b"env"},
        ),
    ]


RepoFactory = Callable[..., tuple[TestRepo, str]]


@pytest.fixture
def make_repo(tmp_path: Path, test_key: TestKey) -> Iterator[RepoFactory]:
    """Build and serve a repository: ``make_repo(specs, arches=..., publish=...)`` → (repo, url)."""
    with ExitStack() as stack:
        count = 0

        def factory(
            specs: list[DebSpec] | None = None,
            *,
            arches: tuple[str, ...] = ("amd64", "arm64"),
            with_base: bool = True,
            key: TestKey | None = None,
            suite: str = "bookworm",
            release_fields: dict[str, str] | None = None,
            pool: str = "pool",
            **publish: object,
        ) -> tuple[TestRepo, str]:
            nonlocal count
            count += 1
            repo = TestRepo(
                tmp_path / f"repo{count}",
                key or test_key,
                suite=suite,
                arches=arches,
                release_fields=release_fields,
                pool=pool,
            )
            for arch in arches:
                for spec in base_packages(arch) if with_base else []:
                    repo.add(spec)
            for spec in specs or []:
                repo.add(spec)
            repo.publish(**publish)  # type: ignore[arg-type]
            url = stack.enter_context(serve(repo.root))
            return repo, url

        yield factory


ONE_SOURCE = "[sources.updates]\nenable = false\n\n[sources.security]\nenable = false\n\n"
"""The served test repository alone: bookworm's default -updates and -security switched off."""


def doctor_on_docker(
    cli: Callable[..., tuple[int, str, str]],
    make_repo: RepoFactory,
    tmp_path: Path,
    docker: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """``polyarch doctor --engine docker`` on a project of a signed test repository: its
    output as one line of words (table borders and wrapping gone); it must exit 0."""
    repo, url = make_repo()
    project = write_project(tmp_path / "p", url, repo.key.keyring, "")
    monkeypatch.setenv("DOCKER_HOST", docker.env["DOCKER_HOST"])
    code, out, err = cli(
        "-f", project, "--cache-dir", tmp_path / "c", "doctor", "--engine", "docker"
    )
    assert code == 0, err
    return " ".join(" ".join(out.split()).replace("│", "").split())


def write_project(
    directory: Path, url: str, keyring: Path, containers: str, sources: str = ONE_SOURCE
) -> Path:
    """A containers.toml for a served test repository (and ``sources`` tables); returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "containers.toml"
    path.write_text(
        f'[repository]\nurl = "{url}"\nkeyring = "{keyring}"\nsuite = "bookworm"\n\n'
        + sources
        + '[defaults]\nsystems = ["x86_64-linux", "aarch64-linux"]\n\n'
        + containers
    )
    return path


def build_native_hello(
    cli: Callable[..., tuple[int, str, str]],
    tmp_path: Path,
    make_repo: RepoFactory,
    *,
    message: bytes,
    library: bytes,
    tag_prefix: str,
) -> tuple[Path, str, Path]:
    """Build a runnable ``hello`` (one layer per package) for this machine's system under a
    fresh tag: (containers.toml, the tag, its ``OUT/hello``)."""
    arch = native_system().debian_arch
    specs = [
        DebSpec("libgreet1", "1.0", arch, files={"/usr/lib/libgreet.so.1": library}),
        DebSpec(
            "hello",
            "1.0",
            arch,
            depends="libc6, libgreet1",
            files={"/usr/bin/hello": File(tiny_program(arch, message), 0o755)},
        ),
    ]
    repo, url = make_repo(specs, arches=(arch,))
    system = native_system().name
    body = (
        f'[containers.hello]\npackage = "hello"\nsystems = ["{system}"]\nlayering = "per-package"\n'
    )
    project = write_project(tmp_path / "p", url, repo.key.keyring, body)
    tag = f"{tag_prefix}{uuid.uuid4().hex[:10]}"
    code, _, err = cli(
        "-f", project, "--cache-dir", tmp_path / "c", "build", "hello",
        "--out", tmp_path / "result", "--tag", tag,
    )  # fmt: skip
    assert code == 0, err
    return project, tag, tmp_path / "result" / "hello"


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run ``polyarch ARGS`` in-process: returns (exit code, stdout, stderr)."""
    from polyarch.cli import main

    def run(*args: str | Path) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


# -- registry and OCI tools ----------------------------------------------------------------

RegistryStarter = Callable[..., RunningRegistry]
Tool = Callable[..., str]


@pytest.fixture
def start_registry(tmp_path: Path) -> Iterator[RegistryStarter]:
    """``start_registry(tls=..., htpasswd=..., token=...)`` → a docker-registry on 127.0.0.1,
    killed at the end of the test (options as in ``registry_server.run_registry``)."""
    if REGISTRY is None:
        pytest.skip("needs docker-registry (scripts/setup-host installs it)")
    with ExitStack() as stack:
        count = 0

        def start(**options: Any) -> RunningRegistry:
            nonlocal count
            count += 1
            workdir = tmp_path / f"registry{count}"
            return stack.enter_context(run_registry(workdir, **options))

        yield start


@pytest.fixture
def registry(start_registry: RegistryStarter) -> RunningRegistry:
    """A plain-HTTP docker-registry without authentication."""
    return start_registry()


def _tool(program: str) -> Tool:
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"needs {program} (scripts/setup-host installs it)")

    def run(*args: str | Path) -> str:
        argv = [path, *map(str, args)]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, f"{cmd.quoted(argv)}: {result.stderr}"
        return result.stdout

    return run


@pytest.fixture(scope="session")
def run_skopeo() -> Tool:
    """``run_skopeo(ARGS…)`` → skopeo's stdout; a failure fails the test with skopeo's stderr."""
    return _tool("skopeo")


@pytest.fixture(scope="session")
def run_umoci() -> Tool:
    """``run_umoci(ARGS…)`` → umoci's stdout; a failure fails the test with umoci's stderr."""
    return _tool("umoci")
