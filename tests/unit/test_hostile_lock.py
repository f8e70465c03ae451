"""containers.lock is checked against what it claims, warm or cold: every lie is exit 41 naming
its line, and a .deb that contradicts its index record is refused without a lock too."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from cacheproject import make_project
from conftest import RepoFactory, write_project
from debrepo import raw_deb, tar_bytes

from polyarch.errors import LockError, PackageError

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def project(tmp_path: Path, make_repo: RepoFactory) -> Path:
    return make_project(tmp_path, make_repo)[2]


def lock(cli: Cli, project: Path, cache: Path) -> Path:
    code, _out, err = cli("-f", project, "--cache-dir", cache, "lock")
    assert code == 0, err
    return project.parent / "containers.lock"


def build(cli: Cli, project: Path, cache: Path, out: Path) -> tuple[int, str, str]:
    return cli(
        "-f", project, "--cache-dir", cache, "build", "fd", "--all-systems", "--locked",
        "--out", out,
    )  # fmt: skip


def edit_package(path: Path, name: str, arch: str, field: str, value: str) -> int:
    """Set ``field`` of one package line of the lock (as a hand edit would); return its line."""
    lines = path.read_text().splitlines(keepends=True)
    for number, line in enumerate(lines, 1):
        if f'name = "{name}",' in line and f'architecture = "{arch}"' in line:
            pattern = rf"{field} = (\"[^\"]*\"|\d+)"
            lines[number - 1] = re.sub(pattern, f"{field} = {value}", line, count=1)
            assert lines[number - 1] != line
            path.write_text("".join(lines))
            return number
    raise AssertionError(f"{name} ({arch}) is not in the lock")


def annotations(out: Path) -> dict[str, str]:
    blobs = out / "fd" / "oci" / "blobs" / "sha256"
    index = json.loads((out / "fd" / "oci" / "index.json").read_text())
    root = json.loads((blobs / index["manifests"][0]["digest"].removeprefix("sha256:")).read_text())
    return dict(root.get("annotations", {}))


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("version", '"99.9-evil"'),
        ("name", '"fd-evil"'),
        ("architecture", '"arm64"'),
        ("size", "12345"),
    ],
)
def test_a_lock_entry_the_deb_contradicts_is_exit_41_naming_its_line(
    cli: Cli, project: Path, tmp_path: Path, field: str, value: str, warm: bool
) -> None:
    cache = tmp_path / "cache"
    path = lock(cli, project, cache)
    if warm:
        code, _out, err = build(cli, project, cache, tmp_path / "before")
        assert code == 0, err
    else:
        cache = tmp_path / "fresh-cache"
    line = edit_package(path, "fd-find", "amd64", field, value)

    code, _out, err = build(cli, project, cache, tmp_path / "out")

    assert code == LockError.exit_code, err
    assert re.search(rf"containers\.lock:{line}\b", err), err
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "fd").exists()


def test_a_lock_version_that_is_no_version_is_refused_when_read(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    path = lock(cli, project, tmp_path / "cache")
    line = edit_package(path, "hello", "arm64", "version", '"not a version!!"')
    code, _out, err = build(cli, project, tmp_path / "cache", tmp_path / "out")
    assert code == LockError.exit_code
    assert f"containers.lock:{line}:" in err and "version" in err


def test_a_lock_filename_that_leaves_the_mirror_is_refused_when_read(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    path = lock(cli, project, tmp_path / "cache")
    line = edit_package(path, "libc6", "amd64", "filename", '"../../etc/passwd"')
    code, _out, err = build(cli, project, tmp_path / "cache", tmp_path / "out")
    assert code == LockError.exit_code
    assert f"containers.lock:{line}:" in err


def test_a_locked_hash_the_mirror_does_not_serve_names_the_lock_line(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    path = lock(cli, project, tmp_path / "cache")
    line = edit_package(path, "fd-find", "arm64", "sha256", '"' + "0" * 64 + '"')
    code, _out, err = build(cli, project, tmp_path / "fresh", tmp_path / "out")
    assert code == LockError.exit_code, err
    assert f"does not match {path}:{line}" in err
    assert "does not match its index" not in err


def test_the_annotations_carry_the_version_of_the_deb(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    lock(cli, project, cache)
    code, _out, err = build(cli, project, cache, tmp_path / "out")
    assert code == 0, err
    assert annotations(tmp_path / "out")["org.opencontainers.image.version"] == "8.6.0-3"


def test_a_deb_whose_control_data_contradicts_its_index_record_is_refused(
    cli: Cli, tmp_path: Path, make_repo: RepoFactory
) -> None:
    # The signed index says "hello 2.10-3"; the .deb it names says it is "evil 6.6".
    import tarfile

    data = tar_bytes([(tarfile.TarInfo("./usr/bin/hello"), b"#!/bin/sh\n")])
    deb = raw_deb("Package: evil\nVersion: 6.6\nArchitecture: amd64\n", data)
    repo, url = make_repo(arches=("amd64",))
    repo.add_raw("hello", "2.10-3", "amd64", deb)
    repo.publish()
    config = write_project(
        tmp_path / "p",
        url,
        repo.key.keyring,
        '[containers.hello]\npackage = "hello"\ncommand = "/usr/bin/hello"\n'
        'systems = ["x86_64-linux"]\n',
    )
    code, _out, err = cli(
        "-f", config, "--cache-dir", tmp_path / "cache", "build", "hello", "--system",
        "x86_64-linux", "--out", tmp_path / "out",
    )  # fmt: skip
    assert code == PackageError.exit_code, err
    assert "name 'hello', the .deb has 'evil'" in err
    assert not (tmp_path / "out" / "hello").exists()
