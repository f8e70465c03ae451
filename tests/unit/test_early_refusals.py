"""Mistakes caught where they are made: at build, before loading, at the signature check."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cacheproject import CONTAINERS, make_project
from conftest import RepoFactory, write_project

from polyarch.config import load_config
from polyarch.errors import ImageError, SignatureError
from polyarch.workflows.load import load_from_layout, load_image

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def project(tmp_path: Path, make_repo: RepoFactory) -> Path:
    return make_project(tmp_path, make_repo)[2]


def with_command(project: Path, command: str) -> Path:
    text = project.read_text().replace('command = "hello"', f'command = "{command}"')
    project.write_text(text)
    return project


def build_hello(cli: Cli, project: Path, tmp_path: Path) -> tuple[int, str, str]:
    return cli(
        "-f", project, "--cache-dir", tmp_path / "cache", "build", "hello", "--all-systems",
        "--out", tmp_path / "out",
    )  # fmt: skip


@pytest.mark.parametrize("command", ["/usr/bin/hullo", "/opt/hello/bin/hello", "/usr/bin"])
def test_an_absolute_command_missing_from_the_image_is_caught_at_build(
    cli: Cli, project: Path, tmp_path: Path, command: str
) -> None:
    code, _out, err = build_hello(cli, with_command(project, command), tmp_path)
    assert code == ImageError.exit_code, err
    assert f"command {command!r} is not in the image" in err
    assert not (tmp_path / "out" / "hello").exists()


@pytest.mark.parametrize("command", ["/usr/bin/hello", "/bin/hello"])
def test_an_absolute_command_in_the_image_builds(
    cli: Cli, project: Path, tmp_path: Path, command: str
) -> None:
    code, _out, err = build_hello(cli, with_command(project, command), tmp_path)
    assert code == 0, err


class NeverAsked:
    """Not an engine: any use of it fails the test (the tag must be refused before)."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the engine was asked for {name!r}")


def test_load_with_an_invalid_tag_is_refused_before_the_engine_loads_anything(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    code, _out, err = cli(
        "-f", project, "--cache-dir", tmp_path / "cache", "build", "fd", "--out", tmp_path / "out"
    )
    assert code == 0, err
    container = load_config(project).container("fd")
    system = container.systems[0]
    for load in (load_image, load_from_layout):
        with pytest.raises(ImageError, match=r"'\.\./x' is not a valid image tag"):
            load(NeverAsked(), container, system, out_dir=tmp_path / "out", tag="../x")  # type: ignore[arg-type]
    code, _out, err = cli("-f", project, "load", "fd", "--tag", "../x", "--out", tmp_path / "out")
    assert code == ImageError.exit_code
    assert "is not a valid image tag" in err and "dockerd" not in err


def test_build_with_an_invalid_tag_is_refused_before_any_work(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    code, _out, err = cli(
        "-f", project, "--cache-dir", tmp_path / "cache", "build", "fd", "--tag", "../x"
    )
    assert code == ImageError.exit_code
    assert "is not a valid image tag" in err
    assert not (tmp_path / "cache").exists()


def test_an_unsigned_archive_is_a_signature_error_not_a_404(
    cli: Cli, tmp_path: Path, make_repo: RepoFactory
) -> None:
    repo, url = make_repo(inrelease=False, release_gpg=False)
    config = write_project(tmp_path / "p", url, repo.key.keyring, CONTAINERS)
    code, _out, err = cli("-f", config, "--cache-dir", tmp_path / "cache", "resolve", "hello")
    assert code == SignatureError.exit_code, err
    assert "is not signed" in err and "404" not in err
