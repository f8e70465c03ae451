"""Scale-out study (issue 16): the 30 tools of bench/tools.txt × 2 systems built by N shards
that share nothing but a registry, then assembled, against one machine building it all.

    python bench/scaleout.py [--json FILE] [--tools bench/tools.txt] [--count 30]
                             [--shards 1,2,4] [--work DIR]

A local simulation of the CI run ``polyarch ci github`` writes (docs/SCALE.md):
a docker-registry on 127.0.0.1 (started here, stopped at the end) is the only
shared thing; every job is ``python -m polyarch`` with a HOME and a cache of
its own, as on a fresh runner. For each N (a fresh registry each):

- ``plan --all --locked --shards N --cache REF``;
- a cold CI run: each shard pulls what its builds need from the shared cache
  (nothing, the first time), builds with ``--push`` (by digest), pushes its
  new cache entries; then ``manifest --assemble --all``;
- a warm CI run (fresh runners again, the cache now in the registry).

Shards run one after the other, each alone on this (2-core, shared) machine,
as each would on a runner of its own; all pulls of a run happen before any of
its pushes, so no shard sees what another pushed in the same run, as in CI.
The projected wall time on N runners is plan + the slowest shard + the
assembly. Bytes from the mirror are the .debs in a shard's cache afterwards
(``--locked`` reads no index); bytes from the registry cache are what ``cache
pull`` downloaded; bytes pushed are image blobs plus cache blobs; what the
assembly moved is read from the registry's access log (it must ask for no
blob). Every assembled index digest must equal the one-machine build's
(``polyarch build --all --all-systems --locked``, timed cold as the baseline):
the script fails otherwise. The Debian mirror is the host's apt source; its
name is never written to the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from _common import (
    ROOT,
    Row,
    format_seconds,
    format_size,
    polyarch_argv,
    python_env,
    report,
    tree_bytes,
)
from scale import SYSTEMS, Tool, read_tools, write_config

sys.path.insert(0, str(ROOT / "tests"))

CACHE_KINDS = ("--kind", "layers", "--kind", "blobs", "--kind", "facts")


def say(text: str) -> None:
    print(f"scaleout: {text}", flush=True)


class Job:
    """One CI job: a HOME and a cache of its own, polyarch run as a process."""

    def __init__(self, home: Path, config: Path) -> None:
        self.home, self.config = home, config
        home.mkdir(parents=True, exist_ok=True)

    def run(self, *args: str) -> tuple[float, Any]:
        """Seconds it took, and its ``--json`` answer (None when it printed none)."""
        env = python_env(HOME=str(self.home), POLYARCH_CACHE_DIR=str(self.home / "cache"))
        argv = polyarch_argv("-q", "-f", str(self.config), *args)
        started = time.perf_counter()
        done = subprocess.run(argv, env=env, cwd=self.home, capture_output=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.decode()[-2000:]}")
        out = done.stdout.decode().strip()
        return seconds, json.loads(out) if out.startswith("{") else None

    def mirror_bytes(self) -> int:
        """What came from the Debian mirror: the .debs (and indexes) in this job's cache."""
        cache = self.home / "cache"
        return sum(
            tree_bytes(cache / kind) for kind in ("debs", "indexes") if (cache / kind).exists()
        )


def one_machine(config: Path, work: Path) -> dict[str, Any]:
    """The baseline: one machine builds every container for every system, cold."""
    job = Job(work / "one-machine", config)
    seconds, _ = job.run(
        "build", "--all", "--all-systems", "--locked", "--out", str(job.home / "result")
    )
    digests = {}
    for container in sorted(p.name for p in (job.home / "result").iterdir()):
        index = json.loads((job.home / "result" / container / "oci" / "index.json").read_text())
        digests[container] = index["manifests"][0]["digest"]
    say(f"one machine, cold: {format_seconds(seconds)}")
    return {"seconds": seconds, "mirror_bytes": job.mirror_bytes(), "digests": digests}


def ci_run(config: Path, work: Path, host: str, shards: int, registry: Any) -> dict[str, Any]:
    """plan → each shard's pull → each shard's build and push → each shard's cache push →
    assemble; the figures of each step."""
    cache_ref, images = f"{host}/cache:main", f"{host}/{{name}}"
    load = {"start": os.getloadavg()[0]}
    planner = Job(work / "plan", config)
    plan_seconds, plan = planner.run("plan", "--all", "--locked", "--shards", str(shards),
                                     "--cache", cache_ref, "--json")  # fmt: skip
    entries = plan["matrix"]["include"]
    jobs = [Job(work / f"shard-{e['shard']}", config) for e in entries]
    figures: list[dict[str, Any]] = []
    for job, entry in zip(jobs, entries, strict=True):
        containers, systems = entry["containers"].split(), entry["systems"]
        seconds, pulled = job.run("cache", "pull", cache_ref, "--for", *containers,
                                  "--system", systems, "--missing-ok", "--json")  # fmt: skip
        figures.append({"shard": entry["shard"], "systems": systems, "containers": len(containers),
                        "pull_seconds": seconds, "cache_bytes": pulled["bytes"]})  # fmt: skip
    digests = work / "digests"
    digests.mkdir()
    for job, entry, f in zip(jobs, entries, figures, strict=True):
        seconds, built = job.run("build", *entry["containers"].split(), "--system", entry["systems"],
                                 "--locked", "--out", str(job.home / "result"), "--push", images,
                                 "--json")  # fmt: skip
        (digests / f"shard-{entry['shard']}.json").write_text(json.dumps(built))
        images_pushed = [i["push"] for c in built["containers"] for i in c["images"]]
        f.update(build_seconds=seconds, mirror_bytes=job.mirror_bytes(),
                 image_bytes=sum(p["bytes_uploaded"] for p in images_pushed))  # fmt: skip
    for job, f in zip(jobs, figures, strict=True):
        seconds, pushed = job.run("cache", "push", cache_ref, *CACHE_KINDS, "--json")
        f.update(cache_push_seconds=seconds, cache_push_bytes=pushed["bytes_uploaded"])
        f["seconds"] = f["pull_seconds"] + f["build_seconds"] + seconds
        f["pushed_bytes"] = f["image_bytes"] + pushed["bytes_uploaded"]
    load["shards_end"] = os.getloadavg()[0]
    offset = registry.log_size()
    assembler = Job(work / "assemble", config)
    assemble_seconds, assembled = assembler.run("manifest", "--assemble", "--all", "--to", images,
                                                "--digests", str(digests), "--json")  # fmt: skip
    asked = registry.requests_since(offset)
    load["end"] = os.getloadavg()[0]
    return {
        "plan_seconds": plan_seconds,
        "balance": plan["estimate"]["balance"],
        "shards": figures,
        "assemble_seconds": assemble_seconds,
        "assemble_requests": len(asked),
        "assemble_blob_requests": sum(1 for _m, path, _s, _n in asked if "/blobs/" in path),
        "assemble_bytes_received": sum(n for _m, _p, _s, n in asked),
        "assemble_bytes_sent": sum(i["bytes_sent"] for i in assembled["indexes"]),
        "digests": {i["container"]: i["digest"] for i in assembled["indexes"]},
        "projected_seconds": plan_seconds + max(f["seconds"] for f in figures) + assemble_seconds,
        "load_average": load,
        "registry_bytes": tree_bytes(registry.root / "docker" / "registry" / "v2" / "blobs"),
    }


def measure(config: Path, work: Path, shards: int, expected: dict[str, str]) -> dict[str, Any]:
    from registry_server import run_registry  # tests/registry_server.py: 127.0.0.1, dies with us

    with run_registry(work / "registry", access_log=True) as registry:
        cold = ci_run(config, work / "cold", registry.host, shards, registry)
        warm = ci_run(config, work / "warm", registry.host, shards, registry)
    for run, name in ((cold, "cold"), (warm, "warm")):
        if run["digests"] != expected:
            raise SystemExit(
                f"{shards} shards, {name} run: assembled digests differ from one machine's"
            )
        if run["assemble_blob_requests"]:
            raise SystemExit(f"{shards} shards, {name} run: the assembly asked for blobs")
        slowest = max(f["seconds"] for f in run["shards"])
        say(f"{shards} shards, {name}: slowest shard {format_seconds(slowest)}, projected "
            f"{format_seconds(run['projected_seconds'])}, assembly {format_seconds(run['assemble_seconds'])} "
            f"moving {format_size(run['assemble_bytes_received'] + run['assemble_bytes_sent'])}")  # fmt: skip
    return {"shards": shards, "cold": cold, "warm": warm}


def rows_of(result: dict[str, Any]) -> list[Row]:
    base = result["one_machine"]["seconds"]
    n = result["count"]
    what = f"{n} tools × {len(SYSTEMS)} systems"
    rows: list[Row] = []
    for m in result["runs"]:
        k, cold, warm = m["shards"], m["cold"], m["warm"]
        each = ", ".join(format_seconds(f["seconds"]) for f in cold["shards"])
        rows += [
            Row(f"cold-projected-{k}", f"scale-out: {k} shards, cold, projected wall on {k} runners ({what})",
                [cold["projected_seconds"]], baseline=[base], baseline_what="one machine",
                note=f"plan + slowest shard + assembly; shards alone took {each}"),
            Row(f"warm-projected-{k}", f"scale-out: {k} shards, warm (cache in the registry), projected wall",
                [warm["projected_seconds"]], baseline=[base], baseline_what="one machine, cold"),
            Row(f"shard-seconds-{k}", f"  {k} shards, cold: each shard's wall time",
                [f["seconds"] for f in cold["shards"]]),
            Row(f"mirror-bytes-{k}", f"  {k} shards, cold: bytes from the mirror, all shards",
                [sum(f["mirror_bytes"] for f in cold["shards"])],
                baseline=[result["one_machine"]["mirror_bytes"]], baseline_what="one machine", unit="B"),
            Row(f"cache-bytes-{k}", f"  {k} shards, warm: bytes from the registry cache, all shards",
                [sum(f["cache_bytes"] for f in warm["shards"])], unit="B",
                note=f"from the mirror: {format_size(sum(f['mirror_bytes'] for f in warm['shards']))}"),
            Row(f"pushed-bytes-{k}", f"  {k} shards, cold: bytes pushed (images + cache), all shards",
                [sum(f["pushed_bytes"] for f in cold["shards"])], unit="B"),
            Row(f"registry-bytes-{k}", f"  {k} shards: registry storage after both runs",
                [warm["registry_bytes"]], unit="B"),
            Row(f"assemble-seconds-{k}", f"  {k} shards, cold: manifest --assemble --all",
                [cold["assemble_seconds"]],
                note=f"{cold['assemble_requests']} requests, {cold['assemble_blob_requests']} for blobs"),
            Row(f"assemble-bytes-{k}", f"  {k} shards, cold: bytes the assembly moved (manifests only)",
                [cold["assemble_bytes_received"] + cold["assemble_bytes_sent"]], unit="B"),
        ]  # fmt: skip
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the rows as JSON")
    parser.add_argument("--repetitions", type=int, default=1, help="ignored: one run of each")
    parser.add_argument("--tools", default=str(ROOT / "bench" / "tools.txt"))
    parser.add_argument("--count", type=int, default=30, help="tools to build (default 30)")
    parser.add_argument("--shards", default="1,2,4", help="shard counts (default 1,2,4)")
    parser.add_argument("--work", help="keep work files here (default: a temp dir, removed)")
    args = parser.parse_args(argv)

    tools: list[Tool] = read_tools(Path(args.tools))[: args.count]
    work = (
        Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="polyarch-bench-scaleout-"))
    )
    started = time.perf_counter()
    result: dict[str, Any] = {"tools": [asdict(t) for t in tools], "count": len(tools),
                              "systems": list(SYSTEMS), "load_average_at_start": os.getloadavg()[0]}  # fmt: skip
    try:
        config = write_config(work / "project", tools)
        lock_seconds, _ = Job(work / "lock", config).run("lock")
        say(f"locked {len(tools)} tools in {format_seconds(lock_seconds)}")
        result["one_machine"] = one_machine(config, work)
        result["runs"] = [
            measure(config, work / f"shards-{k}", int(k), result["one_machine"]["digests"])
            for k in args.shards.split(",")
        ]
        result["load_average_at_end"] = os.getloadavg()[0]
        result["seconds"] = time.perf_counter() - started
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    report("scaleout", rows_of(result), json_path=args.json, command="python bench/scaleout.py",
           extra=result)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
