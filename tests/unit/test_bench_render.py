"""bench/: docs/BENCHMARKS.md is the template filled from a run's JSON; stages come from Progress."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jinja2
import pytest
from _common import Aim, Row, StageClock
from _render import render
from conftest import RepoFactory, write_project
from debrepo import DebSpec, File

from polyarch.cache import Cache
from polyarch.config import load_config
from polyarch.workflows.build import build_container
from polyarch.workflows.resolve import Session


def run_of(benchmarks: dict[str, Any]) -> dict[str, Any]:
    """What bench/run writes to bench-run.json, on a machine unlike the project's."""
    return {
        "started": "2030-01-02T03:04:05.678+00:00",
        "machine": {
            "load_average_at_start": 0.5,
            "load_average_at_end": 1.25,
            "nproc": 7,
            "memory_bytes": 3_500_000_000,
            "cpu": "Example CPU",
            "kernel": "6.1.0",
            "machine": "aarch64",
            "os": "Debian GNU/Linux 12 (bookworm)",
            "python": "3.11.2",
            "polyarch": "0.1.0 (abc1234)",
            "versions": {"mmdebstrap": "1.3.5-7", "arch-test": "0.20-1"},
        },
        "quick": None,
        "total_seconds": 543.0,
        "benchmarks": benchmarks,
    }


def build_benchmark() -> dict[str, Any]:
    rows = [
        Row("cold-process", "cold build fd (process)", [9.0, 10.0, 11.0], baseline=[90.0],
            baseline_what="mmdebstrap", aim=Aim.ratio_at_least(10)),
        Row("image", "image x86_64-linux, compressed", [10_700_000], unit="B",
            aim=Aim.below(12e6, "B"), note="sum of the gzip layers"),
        Row("warm", "  of which: warm | cached", [0.0456]),
    ]  # fmt: skip
    return {
        "benchmark": "build",
        "rows": [r.as_json() for r in rows],
        "status": "ok",
        "seconds": 75,
    }


def test_the_results_table_is_every_row_of_every_benchmark_that_ran() -> None:
    text = render(
        run_of(
            {
                "build": build_benchmark(),
                "push": {"status": "failed", "reason": "push.py exited 1: no skopeo", "seconds": 3},
            }
        )
    )
    expected = """\
| what                           | polyarch (median) | baseline (median)   | ratio | reps  | aim                 |
| ------------------------------ | ----------------- | ------------------- | ----- | ----- | ------------------- |
| cold build fd (process)        | 10.0 s            | 90.0 s (mmdebstrap) | 9.0×  | 3 / 1 | ratio >= 10: MISSED |
| image x86_64-linux, compressed | 10.7 MB           | —                   | —     | 1     | < 12.0 MB: met      |
|   of which: warm \\| cached     | 0.046 s           | —                   | —     | 1     |                     |
"""
    assert expected in text
    assert "- image x86_64-linux, compressed: sum of the gzip layers\n" in text
    assert "- **push**: push.py exited 1: no skopeo\n" in text
    assert "Run times: build 75.0 s, push 3.00 s.\n" in text
    assert "bench/run took 9.1 minutes** (543 s)" in text
    assert "on 2030-01-02 03:04 UTC" in text


def test_machine_facts_come_from_the_json() -> None:
    text = render(run_of({"build": build_benchmark()}))
    assert "| cores (nproc) | 7 |" in text
    assert "| CPU | Example CPU (aarch64) |" in text
    assert "| memory | 3.5 GB |" in text
    assert "| arch-test | 0.20-1 |" in text
    assert "2 cores" not in text


def test_sections_of_benchmarks_that_did_not_run_are_left_out() -> None:
    text = render(run_of({"build": build_benchmark()}))
    for title in (
        "## Scale",
        "## Workflow",
        "## Profile",
        "## Stages",
        "## Compression",
        "## Scale-out",
    ):
        assert title not in text
    assert text.endswith("</details>\n")


def test_the_stage_table_shows_each_builds_medians() -> None:
    stages = {"resolve": [4.0, 6.0, 5.0], "fetch": [0.5], "layers": [2.0], "outputs": [0.25]}
    cache = {"benchmark": "cache", "rows": [], "stages": {"cold": stages}}
    text = render(run_of({"cache": {**cache, "status": "ok", "seconds": 20}}))
    assert "| cold | 5.00 s | 0.500 s | 2.00 s | 0.250 s |\n" in text


def test_the_compression_section_shows_the_compressor_and_each_stages_gil_share() -> None:
    rows = [
        Row("compress-time", "compress", [0.5], baseline=[2.0], baseline_what="zlib"),
        Row("compress-size", "size", [98.0], baseline=[100.0], unit="B"),
        Row("gil-xz", "GIL: xz decoding", [90.0], unit="%"),
        Row("gil-index", "GIL: parsing an index", [0.0], unit="%"),
    ]
    compress = {
        "benchmark": "compress",
        "rows": [r.as_json() for r in rows],
        "compressor": "libdeflate (deflate 9.9)",
        "megabytes": 64,
        "status": "ok",
        "seconds": 30,
    }
    text = render(run_of({"compress": compress}))
    assert "## Compression and the GIL" in text
    assert "Layers are compressed by libdeflate (deflate 9.9)" in text
    assert "0.500 s against 2.00 s for the host's zlib at level 6 (4.0×)" in text
    assert "| xz decoding | 90 % |\n| parsing an index | 0 % |\n" in text


def scaleout_benchmark() -> dict[str, Any]:
    def shard(seconds: float, mirror: int, cache: int) -> dict[str, Any]:
        return {"seconds": seconds, "mirror_bytes": mirror, "cache_bytes": cache,
                "pushed_bytes": 2 * mirror}  # fmt: skip

    def run(shards: list[dict[str, Any]], projected: float) -> dict[str, Any]:
        return {"projected_seconds": projected, "shards": shards, "registry_bytes": 9_000_000,
                "assemble_seconds": 0.5, "assemble_requests": 8, "assemble_blob_requests": 0,
                "assemble_bytes_received": 12_000, "assemble_bytes_sent": 2_000,
                "plan_seconds": 0.75, "balance": 1.04}  # fmt: skip

    runs = [
        {"shards": 1, "cold": run([shard(80.0, 20e6, 0)], 82.0),
         "warm": run([shard(9.0, 0, 23e6)], 11.0)},
        {"shards": 2, "cold": run([shard(41.0, 10e6, 0), shard(39.0, 10e6, 0)], 43.0),
         "warm": run([shard(5.0, 0, 12e6), shard(4.0, 0, 11e6)], 7.0)},
    ]  # fmt: skip
    return {
        "benchmark": "scaleout", "rows": [], "status": "ok", "seconds": 300, "count": 30,
        "systems": ["aarch64-linux", "x86_64-linux"], "load_average_at_start": 2.5,
        "load_average_at_end": 3.0, "one_machine": {"seconds": 79.0, "mirror_bytes": 20e6},
        "runs": runs,
    }  # fmt: skip


def test_the_scale_out_table_has_a_column_per_shard_count() -> None:
    text = render(run_of({"scaleout": scaleout_benchmark()}))
    assert "## Scale-out: shards that share only a registry" in text
    assert "| | 1 shard | 2 shards |\n" in text
    assert (
        "| projected wall on N runners, cold (plan + slowest shard + assembly) | 82.0 s | 43.0 s |"
        in text
    )
    assert "| each shard's wall time, cold | 80.0 s | 41.0 s, 39.0 s |" in text
    assert "| bytes from the mirror, warm (all shards) | 0 B | 0 B |" in text
    assert (
        "| assembly: time, requests (of which for blobs), bytes moved | 0.500 s, 8 (0), 14.0 kB |"
        in text
    )
    assert "2.50 at the start, 3.00 at the end" in text


def test_missing_data_is_an_error_not_an_empty_cell() -> None:
    run = run_of({"build": build_benchmark()})
    broken = copy.deepcopy(run)
    del broken["machine"]["nproc"]
    with pytest.raises(jinja2.UndefinedError):
        render(broken)


def test_stage_clock_splits_a_real_build_into_stages_that_add_up(
    tmp_path: Path, make_repo: RepoFactory
) -> None:
    # Guards the Progress tasks the clock relies on: if build_container stops
    # reporting fetch or layers tasks, the cold build's stages come out 0.
    specs = [
        DebSpec("tool", "1.0-1", arch, files={"/usr/bin/tool": File(b"#!/bin/sh\n", 0o755)})
        for arch in ("amd64", "arm64")
    ]
    repo, url = make_repo(specs)
    project = write_project(
        tmp_path / "p", url, repo.key.keyring, '[containers.tool]\npackage = "tool"\n'
    )
    config = load_config(project)
    container = config.container("tool")

    def timed_build() -> dict[str, float]:
        clock = StageClock()
        session = Session(config=config, cache=Cache(tmp_path / "cache"), progress=clock)
        try:
            build_container(session, container, container.systems, out_dir=tmp_path / "out")
        finally:
            clock.stop()
            session.repository.close()
        total = clock.ended - clock.started if clock.ended else 0.0
        assert sum(clock.seconds().values()) == pytest.approx(total)
        return clock.seconds()

    cold = timed_build()
    assert all(cold[s] > 0 for s in StageClock.STAGES), cold
    warm = timed_build()
    assert warm["fetch"] == 0.0  # every layer cached: no .deb read


def layers_benchmark() -> dict[str, Any]:
    update = {"push": {"bytes_uploaded": 4_000_000, "blobs_uploaded": 6, "requests": 9},
              "changed": {"layers": 3, "bytes": 3_900_000, "unrelated_layers": 0,
                          "unrelated_bytes": 0}}  # fmt: skip
    add = {"layers": 2, "bytes": 1_000_000, "unrelated_layers": 0, "unrelated_bytes": 0,
           "container": "curl"}  # fmt: skip
    policy = {"registry": {"stored_blob_bytes": 200_000_000, "requests": 900,
                           "bytes_uploaded": 1, "blobs_uploaded": 1},
              "updates": {"libssl3": update}, "add": add}  # fmt: skip
    tool = {"layers": {"before": 100, "shared": 10}, "bytes": {"before": 1, "shared": 78_000_000},
            "load": {"docker": {"before": [40.0], "shared": [5.0], "shared-merged": [4.0]},
                     "podman": {"before": [30.0], "shared": [6.0], "shared-merged": [3.0]}}}  # fmt: skip
    return {
        "benchmark": "layers", "rows": [], "status": "ok", "seconds": 600, "scale_count": 30,
        "load_average": [1.0, 2.0, 3.0, 4.0],
        "loads": {"system": "x86_64-linux", "tools": {"r-cran-littler": tool}},
        "scale": {"before": policy, "shared": {**policy, "registry": {
            **policy["registry"], "stored_blob_bytes": 205_000_000, "requests": 300}}},
    }  # fmt: skip


def test_the_layers_section_compares_the_policies_from_the_json() -> None:
    text = render(run_of({"layers": layers_benchmark()}))
    assert "| r-cran-littler (78.0 MB) | 100 → **10** | 40.0 s → **5.00 s** (8.0×) |" in text
    assert "| 4.00 s (10.0×), 3.00 s (10.0×) |" in text
    assert "stores **205.0 MB** against 200.0 MB one layer per package (+2.5 %)" in text
    assert "| libssl3 updated | shared | 3 | 3.9 MB | 4.0 MB (6 blobs) | 0 |" in text
    assert "| curl added | shared | 2 | 1.0 MB | — | 0 |" in text


def test_the_layer_budget_section_names_the_budgets_and_the_scale_set() -> None:
    budget = {"benchmark": "layer_budget", "rows": [], "status": "ok", "seconds": 2,
              "budgets": [8, 16], "scale_count": 30}  # fmt: skip
    text = render(run_of({"layer_budget": budget}))
    assert "## Layer budget: the default `max_layers`" in text
    assert "resolves the scale set (30 tools of bench/tools.txt" in text
    assert "under each budget (8, 16)" in text
