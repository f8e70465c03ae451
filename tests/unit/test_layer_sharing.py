"""Layers planned from the whole project: one container's build equals the build of all,
a new container leaves unrelated layers alone, a broken one is left out with a warning."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RepoFactory, write_project
from debrepo import DebSpec, File

from polyarch.image import layer_plan

Cli = Callable[..., tuple[int, str, str]]
ARCH = "amd64"


def specs() -> list[DebSpec]:
    def tool(name: str, depends: str) -> DebSpec:
        return DebSpec(
            name, "1.0-1", ARCH, depends=depends, files={f"/usr/bin/{name}": File(b"x", 0o755)}
        )

    return [
        DebSpec("libshared1", "1.0-1", ARCH, files={"/usr/lib/libshared.so.1": b"shared"}),
        DebSpec("libalso1", "1.0-1", ARCH, files={"/usr/lib/libalso.so.1": b"also"}),
        DebSpec("libother1", "1.0-1", ARCH, files={"/usr/lib/libother.so.1": b"other"}),
        tool("alpha", "libc6, libshared1, libalso1"),
        tool("beta", "libc6, libshared1, libalso1"),
        tool("gamma", "libc6, libother1"),
        tool("delta", "libc6, libshared1"),
    ]


def container(name: str) -> str:
    return f'[containers.{name}]\npackage = "{name}"\nsystems = ["x86_64-linux"]\n\n'


@pytest.fixture(autouse=True)
def tiny_groups_get_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    # The test's packages are a few bytes; in the real archive a group this small
    # would share the image's small layer.
    monkeypatch.setattr(layer_plan, "SHARED_MIN_BYTES", 0)


@pytest.fixture
def served(make_repo: RepoFactory) -> tuple[str, Path]:
    repo, url = make_repo(specs(), arches=(ARCH,))
    return url, repo.key.keyring


def layers(cli: Cli, project: Path, cache: Path, *args: str) -> dict[str, list[str]]:
    """Build ``args`` and return each built container's layers as their history lines."""
    out = project.parent / "result"
    code, _, err = cli("-f", project, "--cache-dir", cache, "build", *args, "--out", out)
    assert code == 0, err
    found = {}
    for result in out.iterdir():
        blobs = result / "oci" / "blobs" / "sha256"
        index = json.loads((result / "oci" / "index.json").read_text())
        image_index = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_bytes())
        manifest = json.loads((blobs / image_index["manifests"][0]["digest"][7:]).read_bytes())
        config = json.loads((blobs / manifest["config"]["digest"][7:]).read_bytes())
        found[result.name] = [
            f"{layer['digest']} {history['created_by']}"
            for layer, history in zip(manifest["layers"], config["history"], strict=True)
        ]
    return found


def test_one_container_builds_with_the_layers_a_build_of_all_gives_it(
    cli: Cli, served: tuple[str, Path], tmp_path: Path
) -> None:
    project = write_project(tmp_path / "p", *served, container("alpha") + container("beta"))
    alone = layers(cli, project, tmp_path / "cache-1", "alpha")
    every = layers(cli, project, tmp_path / "cache-2", "--all")
    assert alone["alpha"] == every["alpha"]
    # alpha and beta use libshared1 and libalso1: one layer, the same in both images.
    together = [line for line in every["alpha"] if "libalso1 libshared1" in line]
    assert len(together) == 1 and together[0] in every["beta"]


def test_a_new_container_changes_no_layer_without_a_package_it_uses(
    cli: Cli, served: tuple[str, Path], tmp_path: Path
) -> None:
    two = container("alpha") + container("beta")
    project = write_project(tmp_path / "p", *served, two)
    before = layers(cli, project, tmp_path / "cache", "--all")
    # gamma shares only the base: alpha's and beta's layers stay as they were.
    write_project(tmp_path / "p", *served, two + container("gamma"))
    with_gamma = layers(cli, project, tmp_path / "cache", "--all")
    assert with_gamma["alpha"] == before["alpha"] and with_gamma["beta"] == before["beta"]
    # delta uses libshared1 too: that group splits; only layers that held it change.
    write_project(tmp_path / "p", *served, two + container("delta"))
    with_delta = layers(cli, project, tmp_path / "cache", "--all")
    changed = set(before["alpha"]) - set(with_delta["alpha"])
    kept = set(before["alpha"]) & set(with_delta["alpha"])
    assert changed == {line for line in before["alpha"] if "libshared1" in line}
    assert next(line for line in before["alpha"] if "(filesystem)" in line) in kept
    shared = [line for line in with_delta["alpha"] if line.endswith(" libshared1")]
    assert len(shared) == 1 and shared[0] in with_delta["delta"]


def test_a_container_that_cannot_resolve_is_left_out_of_sharing_with_a_warning(
    cli: Cli, served: tuple[str, Path], tmp_path: Path
) -> None:
    broken = '[containers.broken]\npackage = "no-such-package"\nsystems = ["x86_64-linux"]\n'
    project = write_project(tmp_path / "p", *served, container("alpha") + broken)
    out = tmp_path / "p" / "result"
    code, _, err = cli("-f", project, "--cache-dir", tmp_path / "c", "build", "alpha", "--out", out)
    assert code == 0
    assert "broken (x86_64-linux) is left out of layer sharing" in err
    assert "no-such-package" in err


def test_a_security_update_changes_only_the_layers_that_hold_the_package(
    cli: Cli, make_repo: RepoFactory, tmp_path: Path
) -> None:
    repo, url = make_repo(specs(), arches=(ARCH,))
    project = write_project(
        tmp_path / "p", url, repo.key.keyring, container("alpha") + container("gamma")
    )
    before = layers(cli, project, tmp_path / "cache", "--all")
    fixed = DebSpec("libshared1", "1.0-1+deb12u1", ARCH, files={"/usr/lib/libshared.so.1": b"fix"})
    update, new_url = make_repo([fixed, *specs()[1:]], arches=(ARCH,))
    write_project(
        tmp_path / "p", new_url, update.key.keyring, container("alpha") + container("gamma")
    )
    after = layers(cli, project, tmp_path / "cache", "--all")
    assert after["gamma"] == before["gamma"], "gamma does not use libshared1"
    changed = set(before["alpha"]) - set(after["alpha"])
    assert changed and all(" libshared1" in line for line in changed)
    assert len(after["alpha"]) == len(before["alpha"])
