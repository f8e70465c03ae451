"""How the engine stores layers: read from its own `info`, and what doctor says about vfs."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RepoFactory, doctor_on_docker

from polyarch.engine import Engine
from polyarch.workflows.doctor import VFS_COST, storage_cost

# What each engine's own CLI prints for its storage driver, asked independently of polyarch.
DRIVER_FORMAT = {"docker": "{{.Driver}}", "podman": "{{.Store.GraphDriverName}}"}


def test_the_engine_reports_the_storage_driver_its_info_names(engine: Engine) -> None:
    own = subprocess.run(
        [engine.program, "info", "--format", DRIVER_FORMAT[engine.name]],
        env={**os.environ, **engine.env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert own and engine.host().storage_driver == own


def test_only_vfs_has_a_cost_and_its_advice_names_merge_layers() -> None:
    assert storage_cost("vfs") == VFS_COST and "--merge-layers" in VFS_COST
    for driver in ("overlay2", "overlay", "fuse-overlayfs", "btrfs", "zfs", ""):
        assert storage_cost(driver) is None


@pytest.mark.engine
def test_doctor_says_how_the_engine_stores_layers_and_what_vfs_costs(
    docker_engine: Engine,
    make_repo: RepoFactory,
    tmp_path: Path,
    cli: Callable[..., tuple[int, str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flat = doctor_on_docker(cli, make_repo, tmp_path, docker_engine, monkeypatch)
    driver = docker_engine.host().storage_driver
    assert "how the engine stores layers" in flat and driver in flat
    # scripts/setup-host starts dockerd on vfs; on an overlay host doctor says there is no copy.
    expected = VFS_COST if driver == "vfs" else "no copy per layer"
    assert " ".join(expected.split()[:12]) in flat
