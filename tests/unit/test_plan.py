"""polyarch plan: shards a CI matrix takes as they are, every unit once, costs from the
closures and the cache state (local or shared), and the documented JSON (docs/JSON.md)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cacheproject import closed_port_url
from conftest import RepoFactory
from registry_server import RunningRegistry
from scaleproject import TOOLS, make_scale_project

from polyarch.cache import Cache
from polyarch.platforms import parse_system
from polyarch.workflows.cache_transfer import push_cache
from polyarch.workflows.plan import UNIT_COST, Unit, make_plan

Cli = Callable[..., tuple[int, str, str]]
X86, ARM = parse_system("x86_64-linux"), parse_system("aarch64-linux")


@pytest.fixture
def project(tmp_path: Path, make_repo: RepoFactory) -> Path:
    return make_scale_project(tmp_path, make_repo)


def plan(cli: Cli, project: Path, cache: Path, *args: str) -> dict[str, Any]:
    code, out, err = cli("-f", project, "--cache-dir", cache, "plan", "--all", "--locked",
                         "--json", *args)  # fmt: skip
    assert code == 0, err
    value: dict[str, Any] = json.loads(out)
    return value


def test_plan_json_is_the_documented_object(cli: Cli, project: Path, tmp_path: Path) -> None:
    value = plan(cli, project, tmp_path / "cache")
    assert set(value) == {
        "schema", "shards", "matrix", "assemble", "units", "estimate", "lock_sha256", "cache",
    }  # fmt: skip
    assert value["schema"] == "polyarch.plan/v1"
    assert len(value["lock_sha256"]) == 64 and value["cache"] is None
    for entry in value["matrix"]["include"]:
        assert set(entry) == {"shard", "name", "systems", "containers", "runner", "emulate", "cost"}
        assert all(isinstance(entry[k], str) for k in ("shard", "name", "systems", "containers"))
        assert isinstance(entry["emulate"], bool) and isinstance(entry["cost"], int)
    for unit in value["units"]:
        assert set(unit) == {
            "container", "system", "shard", "cost", "closure_bytes", "layers", "cached_layers",
        }  # fmt: skip
    assert set(value["estimate"]) == {"total_cost", "largest_shard_cost", "balance"}


def test_by_default_one_shard_per_system_on_its_native_runner(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    value = plan(cli, project, tmp_path / "cache")
    shards = {e["systems"]: e for e in value["matrix"]["include"]}
    assert shards["x86_64-linux"]["runner"] == "ubuntu-24.04"
    assert shards["aarch64-linux"]["runner"] == "ubuntu-24.04-arm"
    assert not any(e["emulate"] for e in shards.values())
    assert all(e["containers"] == " ".join(TOOLS) for e in shards.values())
    assert value["assemble"] == [
        {"container": t, "systems": ["x86_64-linux", "aarch64-linux"], "shards": ["1", "2"]}
        for t in TOOLS
    ]


@pytest.mark.parametrize("shards", [1, 2, 3, 4, 6])
def test_every_unit_is_in_exactly_one_shard(
    cli: Cli, project: Path, tmp_path: Path, shards: int
) -> None:
    value = plan(cli, project, tmp_path / "cache", "--shards", str(shards))
    entries = value["matrix"]["include"]
    assert len(entries) == min(shards, len(TOOLS) * 2)
    built = [
        (name, system)
        for e in entries
        for name in e["containers"].split()
        for system in e["systems"].split(",")
    ]
    assert sorted(built) == sorted((t, s) for t in TOOLS for s in ("x86_64-linux", "aarch64-linux"))
    if shards == 1:  # fewer shards than systems: containers for every system, emulated tests
        assert entries[0]["systems"] == "x86_64-linux,aarch64-linux"
        assert entries[0]["runner"] == "ubuntu-24.04" and entries[0]["emulate"] is True


def test_the_cache_state_lowers_the_cost(cli: Cli, project: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cold = plan(cli, project, cache)
    assert all(u["cached_layers"] == 0 for u in cold["units"])
    code, _out, err = cli("-f", project, "--cache-dir", cache, "build", "alpha", "--all-systems",
                          "--locked", "--out", tmp_path / "out")  # fmt: skip
    assert code == 0, err
    warm = plan(cli, project, cache)
    by_unit = {(u["container"], u["system"]): u for u in warm["units"]}
    cold_units = {(u["container"], u["system"]): u for u in cold["units"]}
    for (name, system), unit in by_unit.items():
        if name == "alpha":
            assert unit["cached_layers"] == unit["layers"]
            assert unit["cost"] < cold_units[(name, system)]["cost"]
        else:  # the base layers alpha built are theirs too
            assert 0 < unit["cached_layers"] < unit["layers"]


def test_a_shared_cache_in_a_registry_counts_as_cached(
    cli: Cli, project: Path, tmp_path: Path, registry: RunningRegistry
) -> None:
    ci = tmp_path / "ci-cache"
    code, _out, err = cli("-f", project, "--cache-dir", ci, "build", "--all", "--all-systems",
                          "--locked", "--out", tmp_path / "out")  # fmt: skip
    assert code == 0, err
    ref = f"{registry.host}/cache:main"
    push_cache(Cache(ci), ref)
    value = plan(cli, project, tmp_path / "empty-cache", "--cache", ref)
    assert all(u["cached_layers"] == u["layers"] for u in value["units"])
    assert value["cache"]["reference"] == ref and value["cache"]["layers"] > 0


def test_a_shared_cache_it_cannot_read_only_makes_the_estimate_rougher(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    port = closed_port_url().split(":")[2].split("/")[0]
    code, out, err = cli("-f", project, "--cache-dir", tmp_path / "c", "plan", "--all",
                         "--locked", "--json", "--cache", f"127.0.0.1:{port}/cache:main")  # fmt: skip
    assert code == 0, err
    assert "planning as if" in err and json.loads(out)["cache"]["layers"] == 0


def test_runner_labels_can_be_named(cli: Cli, project: Path, tmp_path: Path) -> None:
    value = plan(cli, project, tmp_path / "cache", "--runner", "aarch64-linux=my-arm-box")
    runners = {e["systems"]: e["runner"] for e in value["matrix"]["include"]}
    assert runners == {"x86_64-linux": "ubuntu-24.04", "aarch64-linux": "my-arm-box"}


def unit(name: str, system: object, layers: dict[str, int]) -> Unit:
    return Unit(name, system, sum(layers.values()), layers, 0)  # type: ignore[arg-type]


def test_a_layer_two_units_of_a_shard_share_is_counted_once() -> None:
    mb = 1 << 20
    units = [
        unit("a", X86, {"base": 10 * mb, "a": mb}),
        unit("b", X86, {"base": 10 * mb, "b": mb}),
    ]
    (shard,) = make_plan(units, 1).shards
    assert shard.cost == 2 * UNIT_COST + 12 * mb


def test_shards_are_balanced_by_cost_and_systems_get_shards_by_their_cost() -> None:
    mb = 1 << 20
    units = [unit(f"t{i}", X86, {f"k{i}": (i + 1) * 4 * mb}) for i in range(8)]
    units.append(unit("small", ARM, {"s": mb}))
    result = make_plan(units, 4)
    x86 = [s for s in result.shards if s.systems == (X86,)]
    arm = [s for s in result.shards if s.systems == (ARM,)]
    assert len(x86) == 3 and len(arm) == 1  # the heavy system gets the shards
    costs = sorted(s.cost for s in x86)
    assert costs[-1] <= 1.2 * sum(costs) / len(costs)
