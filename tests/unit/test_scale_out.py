"""A CI run simulated on this machine: a docker-registry on 127.0.0.1 the only shared thing,
shard jobs with a HOME and cache each, then ``manifest --assemble``. Every assembled
index is byte for byte the index a one-machine build of the same lock gives, and the
assembly moves no blob (the registry's own access log says what was asked)."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from cacheproject import closed_port_url, point_mirror_at
from conftest import RegistryStarter, RepoFactory
from registry_server import RunningRegistry
from scaleproject import TOOLS, index_digests, make_scale_project, run_polyarch, run_shard

from polyarch.engine import Engine

Cli = Callable[..., tuple[int, str, str]]
BLOB_TRANSFER = ("/blobs/",)


@pytest.fixture
def project(tmp_path: Path, make_repo: RepoFactory) -> Path:
    return make_scale_project(tmp_path, make_repo)


@pytest.fixture
def logged_registry(start_registry: RegistryStarter) -> RunningRegistry:
    return start_registry(access_log=True)


def one_machine(tmp_path: Path, project: Path) -> dict[str, str]:
    """``polyarch build --all --all-systems --locked`` on a machine of its own."""
    home = tmp_path / "one-machine"
    run_polyarch(home, "-q", "-f", project, "build", "--all", "--all-systems", "--locked",
                 "--out", home / "result")  # fmt: skip
    return index_digests(home / "result")


def ci_run(
    tmp_path: Path, project: Path, registry: RunningRegistry, run: str, shards: int
) -> tuple[dict[str, Any], list[dict[str, dict[str, object]]], Path]:
    """plan → every shard at once → nothing assembled yet; the plan, each shard's answers,
    and the directory of their build outputs (what CI hands to the assembly)."""
    plan = json.loads(
        run_polyarch(
            tmp_path / run / "plan", "-f", project, "plan", "--all", "--locked",
            "--shards", str(shards), "--cache", f"{registry.host}/cache:main", "--json",
        )
    )  # fmt: skip
    entries = plan["matrix"]["include"]
    with ThreadPoolExecutor(max_workers=len(entries)) as pool:
        answers = list(
            pool.map(
                lambda e: run_shard(
                    tmp_path / run / f"shard-{e['shard']}",
                    project,
                    f"{registry.host}/cache:main",
                    f"{registry.host}/{{name}}",
                    e,
                ),
                entries,
            )
        )
    digests = tmp_path / run / "digests"
    digests.mkdir()
    for entry, answer in zip(entries, answers, strict=True):
        (digests / f"shard-{entry['shard']}.json").write_text(json.dumps(answer["build"]))
    return plan, answers, digests


def assemble(
    tmp_path: Path, project: Path, registry: RunningRegistry, digests: Path, *extra: str
) -> dict[str, Any]:
    out = run_polyarch(
        tmp_path / "assembler", "-f", project, "manifest", "--assemble", "--all",
        "--to", f"{registry.host}/{{name}}", "--digests", digests, "--json", *extra,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out)
    return result


def test_a_ci_run_of_shards_sharing_only_a_registry_gives_the_one_machine_digests(
    tmp_path: Path, project: Path, logged_registry: RunningRegistry
) -> None:
    expected = one_machine(tmp_path, project)
    plan, answers, digests = ci_run(tmp_path, project, logged_registry, "cold", shards=2)
    assert {e["systems"] for e in plan["matrix"]["include"]} == {"x86_64-linux", "aarch64-linux"}
    assert all(a["pull"]["members"] == 0 for a in answers)  # a first run: no cache yet

    before = logged_registry.log_size()
    assembled = assemble(tmp_path, project, logged_registry, digests)
    asked = logged_registry.requests_since(before)

    assert {i["container"]: i["digest"] for i in assembled["indexes"]} == expected
    assert asked, "the access log shows no request"
    assert not [r for r in asked if "/blobs/" in r[1]], "the assembly touched a blob"
    methods = {(m, "/manifests/" in path or path == "/v2/") for m, path, _s, _n in asked}
    assert methods <= {("GET", True), ("HEAD", True), ("PUT", True)}
    moved = sum(n for _m, _p, _s, n in asked)
    assert moved == sum(i["bytes_received"] for i in assembled["indexes"]) + 2 * len(
        [r for r in asked if r[1] == "/v2/"]
    )  # manifests, and "{}" for each /v2/ ping: nothing else came out of the registry
    assert {i["tags"][0] for i in assembled["indexes"]} == {"latest"}


def test_a_second_run_takes_every_layer_from_the_shared_cache_and_needs_no_mirror(
    tmp_path: Path, project: Path, logged_registry: RunningRegistry
) -> None:
    _plan, cold, digests = ci_run(tmp_path, project, logged_registry, "cold", shards=2)
    first = assemble(tmp_path, project, logged_registry, digests)
    assert all(a["push"]["pushed"] for a in cold)

    point_mirror_at(project, closed_port_url())  # from here on, no Debian mirror at all
    plan, warm, digests = ci_run(tmp_path, project, logged_registry, "warm", shards=2)
    assert all(u["cached_layers"] == u["layers"] for u in plan["units"])
    for answer in warm:
        assert answer["pull"]["downloaded"] > 0
        assert answer["push"]["pushed"] is False  # the family lists every entry already
    for shard in (tmp_path / "warm").glob("shard-*"):
        assert not (shard / "cache" / "debs").exists()  # no .deb came from anywhere
    again = assemble(tmp_path, project, logged_registry, digests)
    assert [i["digest"] for i in again["indexes"]] == [i["digest"] for i in first["indexes"]]


@pytest.mark.parametrize("shards", [1, 3])
def test_any_number_of_shards_gives_the_same_indexes(
    tmp_path: Path, project: Path, logged_registry: RunningRegistry, shards: int
) -> None:
    expected = one_machine(tmp_path, project)
    plan, _answers, digests = ci_run(tmp_path, project, logged_registry, "run", shards=shards)
    assert len(plan["matrix"]["include"]) == shards
    assembled = assemble(tmp_path, project, logged_registry, digests)
    assert {i["container"]: i["digest"] for i in assembled["indexes"]} == expected


def test_assembled_indexes_pull_and_pass_their_smoke_tests(
    tmp_path: Path, project: Path, registry: RunningRegistry, engine: Engine, cli: Cli
) -> None:
    _plan, _answers, digests = ci_run(tmp_path, project, registry, "run", shards=2)
    code, out, err = cli(
        "-f", project, "--cache-dir", tmp_path / "assembler-cache", "manifest", "--assemble",
        "--all", "--to", f"{registry.host}/{{name}}", "--digests", digests,
        "--test", "--engine", engine.name,
    )  # fmt: skip
    assert code == 0, err
    assert out.count("passed") == len(TOOLS)


def test_assembling_elsewhere_mounts_the_images_and_copies_their_signed_evidence(
    tmp_path: Path, project: Path, logged_registry: RunningRegistry, cli: Cli
) -> None:
    code, _out, err = cli("keygen", "--out", tmp_path / "ci")
    assert code == 0, err
    home = tmp_path / "shard"
    pushed = run_polyarch(
        home, "-f", project, "build", "--all", "--all-systems", "--locked", "--out",
        home / "result", "--push", f"{logged_registry.host}/staging/{{name}}",
        "--sign-key", tmp_path / "ci.key", "--json",
    )  # fmt: skip
    (tmp_path / "shard.json").write_text(pushed)
    before = logged_registry.log_size()
    out = run_polyarch(
        tmp_path / "assembler", "-f", project, "manifest", "--assemble", "--all",
        "--to", f"{logged_registry.host}/pub/{{name}}", "--digests", tmp_path / "shard.json",
        "--json",
    )  # fmt: skip
    asked = logged_registry.requests_since(before)
    blob_requests = {(m, s) for m, path, s, _n in asked if "/blobs/" in path}
    assert blob_requests <= {("HEAD", 200), ("HEAD", 404), ("POST", 201)}  # mounts, no bytes
    assert all("mount=" in path for m, path, _s, _n in asked if m == "POST")
    indexes = json.loads(out)["indexes"]
    assert all(i["blobs_mounted"] > 0 and i["referrers_copied"] > 0 for i in indexes)
    for tool in TOOLS:
        code, out, err = cli(
            "verify", f"{logged_registry.host}/pub/{tool}:latest", "--key", tmp_path / "ci.pub"
        )
        assert code == 0, out + err


def test_the_assembly_refuses_what_does_not_add_up(
    tmp_path: Path, project: Path, registry: RunningRegistry, cli: Cli
) -> None:
    home = tmp_path / "shard"
    one = json.loads(
        run_polyarch(
            home, "-f", project, "build", "alpha", "beta", "--system", "x86_64-linux",
            "--locked", "--out", home / "result", "--push", f"{registry.host}/{{name}}", "--json",
        )
    )  # fmt: skip
    (tmp_path / "x86.json").write_text(json.dumps(one))
    common = ("-f", project, "--cache-dir", tmp_path / "c", "manifest", "--assemble")
    code, _out, err = cli(*common, "alpha", "--to", f"{registry.host}/alpha",
                          "--digests", tmp_path / "x86.json")  # fmt: skip
    assert code == 2 and "no pushed image of alpha for aarch64-linux" in err
    beta = one["containers"][1]["images"][0]["digest"]
    code, _out, err = cli(*common, "alpha", "--to", f"{registry.host}/beta",
                          "--digest", f"x86_64-linux={beta}",
                          "--digest", f"aarch64-linux={beta}")  # fmt: skip
    assert code == 16 and "image of 'beta', not of alpha" in err
    (tmp_path / "junk.json").write_text('{"schema": "polyarch.plan/v1"}')
    code, _out, err = cli(*common, "--all", "--to", f"{registry.host}/{{name}}",
                          "--digests", tmp_path / "junk.json")  # fmt: skip
    assert code == 2 and "is not a polyarch.build/v1 document" in err
    assert len(err.strip().splitlines()) == 1


def test_build_push_pushes_each_system_image_by_digest_and_no_tag(
    tmp_path: Path, project: Path, registry: RunningRegistry, run_skopeo: Callable[..., str]
) -> None:
    home = tmp_path / "shard"
    answer = json.loads(
        run_polyarch(
            home, "-f", project, "build", "alpha", "gamma", "--system", "x86_64-linux,aarch64-linux",
            "--locked", "--out", home / "result", "--push", f"{registry.host}/{{name}}",
            "--no-evidence", "--json",
        )
    )  # fmt: skip
    assert answer["schema"] == "polyarch.build/v1"
    assert [c["container"] for c in answer["containers"]] == ["alpha", "gamma"]
    for container in answer["containers"]:
        assert set(container) == {"container", "path", "index", "images"}
        assert [i["system"] for i in container["images"]] == ["x86_64-linux", "aarch64-linux"]
        for image in container["images"]:
            assert set(image) == {
                "system",
                "platform",
                "digest",
                "size",
                "layers",
                "version",
                "push",
            }
            push = image["push"]
            assert (
                push["reference"] == f"{registry.host}/{container['container']}@{image['digest']}"
            )
            raw = run_skopeo(
                "inspect", "--raw", "--tls-verify=false", f"docker://{push['reference']}"
            )
            assert json.loads(raw)["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
        listed = httpx.get(f"http://{registry.host}/v2/{container['container']}/tags/list")
        # Pushed by digest: the registry knows the repository by no tag at all.
        assert listed.status_code == 404 or not listed.json().get("tags"), listed.text


def test_build_push_refuses_a_tag_before_building(tmp_path: Path, project: Path, cli: Cli) -> None:
    code, _out, err = cli("-f", project, "--cache-dir", tmp_path / "c", "build", "alpha",
                          "--all-systems", "--out", tmp_path / "out", "--push",
                          "127.0.0.1:5000/{name}:v1")  # fmt: skip
    assert code == 2 and "names a tag or digest" in err
    assert not (tmp_path / "out").exists()
    code, _out, err = cli("-f", project, "build", "alpha", "--no-evidence")
    assert code == 2 and "are for --push" in err
