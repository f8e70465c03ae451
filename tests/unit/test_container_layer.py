"""The container's own layer (files, accounts, timezone): reproducible whatever the host files'
owners, modes and times, read back by GNU tar, absent without options, refused clearly."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RepoFactory, write_project
from debrepo import DebSpec, File

from polyarch.errors import ImageError

Cli = Callable[..., tuple[int, str, str]]
OPTIONS = """
[containers.app]
package = "hello"
command = "hello"
systems = ["x86_64-linux"]
timezone = "Europe/Berlin"
accounts.nonroot = { uid = 65532 }

[containers.app.files]
"/etc/app/app.toml" = { source = "conf/app.toml", mode = "0640", owner = "nonroot" }
"/srv/assets" = { source = "assets", owner = "nonroot" }

[containers.plain]
package = "hello"
command = "hello"
systems = ["x86_64-linux"]
"""


def specs() -> list[DebSpec]:
    return [
        DebSpec("hello", "1.0", "amd64", files={"/usr/bin/hello": File(b"#!/bin/sh\n", 0o755)}),
        DebSpec(
            "tzdata",
            "2025b-1",
            "all",
            files={
                "/usr/share/zoneinfo/Europe/Berlin": b"TZif berlin",
                "/usr/share/zoneinfo/Europe/Paris": b"TZif paris",
            },
        ),
    ]


def sources(project: Path, *, mode: int, mtime: int) -> None:
    """The host files, with host modes and times that must not reach the image."""
    (project / "conf").mkdir(parents=True, exist_ok=True)
    (project / "assets/css").mkdir(parents=True, exist_ok=True)
    files = {
        "conf/app.toml": b"a = 1\n",
        "assets/css/site.css": b"b {}\n",
        "assets/i.html": b"<p>\n",
    }
    for rel, data in files.items():
        path = project / rel
        path.write_bytes(data)
        path.chmod(mode)
        os.utime(path, (mtime, mtime))


@pytest.fixture
def project(tmp_path: Path, make_repo: RepoFactory) -> Path:
    repo, url = make_repo(specs(), arches=("amd64",))
    config = write_project(tmp_path / "project", url, repo.key.keyring, OPTIONS)
    sources(config.parent, mode=0o600, mtime=1_000_000)
    return config


def build(cli: Cli, config: Path, cache: Path, out: Path, name: str = "app") -> str:
    code, _out, err = cli("-q", "-f", config, "--cache-dir", cache, "build", name, "--out", out)
    assert code == 0, err
    index = json.loads((out / name / "oci" / "index.json").read_text())
    return str(index["manifests"][0]["digest"])


def top_layer(out: Path, name: str = "app") -> tuple[Path, dict[str, object]]:
    blobs = out / name / "oci" / "blobs" / "sha256"
    index = json.loads((out / name / "oci" / "index.json").read_text())
    image_index = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    manifest = json.loads((blobs / image_index["manifests"][0]["digest"][7:]).read_text())
    config = json.loads((blobs / manifest["config"]["digest"][7:]).read_text())
    return blobs / manifest["layers"][-1]["digest"][7:], config


def test_the_layer_does_not_depend_on_host_modes_times_or_the_cache(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    first = build(cli, project, tmp_path / "cache1", tmp_path / "out1")
    sources(project.parent, mode=0o664, mtime=2_000_000)
    assert build(cli, project, tmp_path / "cache2", tmp_path / "out2") == first
    # A changed file changes the layer (the cache key holds the contents).
    (project.parent / "conf/app.toml").write_bytes(b"a = 2\n")
    assert build(cli, project, tmp_path / "cache2", tmp_path / "out3") != first


def test_gnu_tar_lists_owners_modes_and_the_zone_link(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    build(cli, project, tmp_path / "cache", tmp_path / "out")
    blob, config = top_layer(tmp_path / "out")
    listing = subprocess.run(
        ["tar", "--numeric-owner", "-tvzf", str(blob)], check=True, capture_output=True, text=True
    ).stdout
    rows = {}
    for line in listing.splitlines():
        fields = line.split(" -> ")[0].split()
        rows[fields[-1].rstrip("/")] = fields[:2]
    assert rows["etc/app/app.toml"] == ["-rw-r-----", "65532/65532"]
    assert rows["srv/assets/css/site.css"] == ["-rw-r--r--", "65532/65532"]
    assert rows["srv/assets"] == ["drwxr-xr-x", "65532/65532"]
    assert rows["home/nonroot"] == ["drwx------", "65532/65532"]
    assert rows["etc/passwd"] == ["-rw-r--r--", "0/0"]
    assert "etc/localtime -> /usr/share/zoneinfo/Europe/Berlin" in listing
    history = config["history"]
    assert isinstance(history, list) and history[-1]["created_by"] == "polyarch: (container)"


def test_an_image_without_options_has_no_layer_of_its_own(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    build(cli, project, tmp_path / "cache", tmp_path / "out", "plain")
    _blob, config = top_layer(tmp_path / "out", "plain")
    history = config["history"]
    assert isinstance(history, list)
    assert all("(container)" not in h["created_by"] for h in history)


def test_a_zone_tzdata_lacks_is_refused_with_near_names(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    project.write_text(project.read_text().replace('"Europe/Berlin"', '"Europe/Pariss"'))
    code, _out, err = cli(
        "-q", "-f", project, "--cache-dir", tmp_path / "c", "build", "app", "--out", tmp_path / "o"
    )
    assert code == ImageError.exit_code
    assert "time zone 'Europe/Pariss' is not in tzdata" in err and "Europe/Paris" in err
    assert not (tmp_path / "o" / "app").exists()


def test_a_missing_host_file_is_refused_naming_the_container_and_destination(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    (project.parent / "conf/app.toml").unlink()
    code, _out, err = cli(
        "-q", "-f", project, "--cache-dir", tmp_path / "c", "build", "app", "--out", tmp_path / "o"
    )
    assert code == ImageError.exit_code
    assert "app: files '/etc/app/app.toml': cannot read" in err
    assert "relative to containers.toml" in err


def test_max_layers_must_leave_room_for_the_containers_layer(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    project.write_text(
        project.read_text().replace("accounts.nonroot", "max_layers = 2\naccounts.nonroot", 1)
    )
    code, _out, err = cli(
        "-q", "-f", project, "--cache-dir", tmp_path / "c", "build", "app", "--out", tmp_path / "o"
    )
    assert code == ImageError.exit_code and "set max_layers to 3 or more" in err
