"""The small conventions: polyarch --help (one line per command, all in the README),
--version, polyarch version --json, and polyarch list (versions from the lock or the
archive, the digest of the last build)."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pytest
from conftest import RepoFactory, write_project
from debrepo import DebSpec, File

from polyarch import __version__
from polyarch.cli import make_parser

Cli = Callable[..., tuple[int, str, str]]
REPO_ROOT = Path(__file__).resolve().parents[2]


def commands() -> dict[str, str]:
    """Every command of the parser and its one-line help."""
    parser = make_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {choice.dest: choice.help or "" for choice in sub._choices_actions}


def test_help_lists_every_command_on_one_line_each() -> None:
    help_text = subprocess.run(
        [sys.executable, "-m", "polyarch", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "80"},
    ).stdout
    listed = help_text.split("\ncommands:\n", 1)[1].splitlines()[1:]
    names = [line.split()[0] for line in listed if line.startswith("    ") and line.strip()]
    assert names == list(commands())
    assert not [line for line in listed if line.startswith(" " * 8)], "a help line wrapped"
    assert {"add", "list", "version"} <= set(names)


def test_the_readme_commands_table_has_every_command() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    table = readme.split("## Commands", 1)[1].split("\n\n", 2)[1]
    named = set(re.findall(r"`polyarch ([a-z-]+)", table))
    assert set(commands()) <= named


def test_version_flag_prints_the_version(cli: Cli) -> None:
    with pytest.raises(SystemExit) as exc:
        cli("--version")
    assert exc.value.code == 0
    result = subprocess.run(
        [sys.executable, "-m", "polyarch", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout == f"polyarch {__version__}\n"


def test_version_json_names_dependencies_and_host_programs(cli: Cli) -> None:
    code, out, err = cli("version", "--json")
    assert code == 0, err
    found = json.loads(out)
    assert found["schema"] == "polyarch.version/v1" and found["polyarch"] == __version__
    assert found["dependencies"]["msgspec"] == metadata.version("msgspec")
    assert found["dependencies"]["tomlkit"] == metadata.version("tomlkit")
    assert "pytest" not in found["dependencies"]  # extras are not what polyarch runs on
    for name, program in found["programs"].items():
        assert (program["path"] is None) == (program["version"] is None) or program["path"]
        if name == "podman" and program["path"]:
            assert program["version"].startswith("podman version ")
    assert {"docker", "podman", "skopeo", "umoci", "qemu-aarch64-static"} <= found[
        "programs"
    ].keys()


# -- polyarch list ------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, make_repo: RepoFactory) -> Path:
    specs = [
        DebSpec("hello", "2.10-3", arch, files={"/usr/bin/hello": File(b"#!/bin/sh\n", 0o755)})
        for arch in ("amd64", "arm64")
    ]
    repo, url = make_repo(specs)
    return write_project(
        tmp_path / "project",
        url,
        repo.key.keyring,
        '[containers.hello]\npackage = "hello"\n\n'
        '[containers.hi]\npackage = "hello"\ncommand = "/usr/bin/hello"\nsystems = ["x86_64-linux"]\n',
    )


def listed(cli: Cli, project: Path, tmp_path: Path, *args: str) -> list[dict[str, object]]:
    code, out, err = cli(
        "-q",
        "-f",
        project,
        "--cache-dir",
        tmp_path / "cache",
        "list",
        "--json",
        "--out",
        tmp_path / "result",
        *args,
    )
    assert code == 0, err
    document = json.loads(out)
    assert document["schema"] == "polyarch.list/v1"
    containers: list[dict[str, object]] = document["containers"]
    return containers


def test_list_shows_each_container_with_versions_from_the_archive(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    hello, hi = listed(cli, project, tmp_path)
    assert hello == {
        "name": "hello",
        "package": "hello",
        "command": "hello",
        "systems": ["x86_64-linux", "aarch64-linux"],
        "versions": {"x86_64-linux": "2.10-3", "aarch64-linux": "2.10-3"},
        "version_source": "archive",
        "last_build": None,
        "last_build_problem": None,
    }
    assert (hi["command"], hi["systems"]) == ("/usr/bin/hello", ["x86_64-linux"])


def test_list_takes_versions_from_a_current_lock_and_digests_from_the_last_build(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    common = ("-q", "-f", project, "--cache-dir", tmp_path / "cache")
    assert cli(*common, "lock")[0] == 0
    code, _out, err = cli(*common, "build", "hello", "--all-systems", "--out", tmp_path / "result")
    assert code == 0, err
    index = json.loads((tmp_path / "result/hello/oci/index.json").read_text())
    hello, hi = listed(cli, project, tmp_path, "--locked")
    assert hello["version_source"] == "lock"
    assert hello["versions"] == {"x86_64-linux": "2.10-3", "aarch64-linux": "2.10-3"}
    build = hello["last_build"]
    assert isinstance(build, dict)
    assert build["index_digest"] == index["manifests"][0]["digest"]
    assert build["manifests"].keys() == {"x86_64-linux", "aarch64-linux"}
    assert hi["last_build"] is None
    # A stale lock entry is not believed: --locked then knows no version.
    project.write_text(
        project.read_text().replace(
            'package = "hello"\n\n', 'package = "hello"\nexclude = ["libc6"]\n\n', 1
        )
    )
    hello, _hi = listed(cli, project, tmp_path, "--locked")
    assert hello["version_source"] == "none" and set(hello["versions"].values()) == {None}  # type: ignore[union-attr]


def test_list_names_a_damaged_build_instead_of_failing(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    (tmp_path / "result/hello/oci").mkdir(parents=True)
    (tmp_path / "result/hello/oci/index.json").write_text("{")
    hello, _hi = listed(cli, project, tmp_path)
    assert hello["last_build"] is None and "not an OCI image layout" in str(
        hello["last_build_problem"]
    )
    code, out, _err = cli(
        "-q", "-f", project, "--cache-dir", tmp_path / "cache", "list", "--out", tmp_path / "result"
    )
    assert code == 0 and "hello" in out and "2.10-3" in out
