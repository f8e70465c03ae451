"""Benchmark: whole commands as a user runs them, each timed as its own process.

    python bench/workflow.py [--json FILE] [--repetitions 3] [--container fd]
                             [--engines docker,podman]

Rows:

- start-up: ``polyarch --help`` and ``polyarch --version`` (interpreter,
  imports, argument parser), which every command below pays once; aim < 0.15 s;
- warm build: ``polyarch build NAME --all-systems`` on a warm cache; aim < 0.3 s;
- per engine: ``polyarch all NAME --multiarch`` with a warm cache (build
  every system, load, test every system; aim < 3 s), and its parts as the commands a
  user would run one by one: ``polyarch load NAME`` (the native image),
  ``polyarch test NAME --system NATIVE`` and ``--system FOREIGN`` (each loads
  its image, then runs the smoke tests; the foreign one under qemu-user).

A first ``polyarch all`` per engine fills the cache and the engine (not
counted). An engine that cannot run it here is reported with the reason,
and the others still run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import (
    ROOT,
    Aim,
    Row,
    add_common_arguments,
    measure_command,
    polyarch_argv,
    python_env,
    report,
    temp_dir,
)

from polyarch.config import find_config, load_config

ENGINES = ("docker", "podman")


def engine_rows(
    engine: str, command: list[str], name: str, systems: dict[str, str], n: int, env: dict[str, str]
) -> list[Row]:
    """``all --multiarch`` and its parts, on ``engine``; each a process, ``n`` samples."""
    argv = [*command, "--engine", engine]
    rows = [
        Row(
            f"all-multiarch-{engine}",
            f"polyarch all {name} --multiarch, warm, {engine} (process)",
            measure_command(polyarch_argv("all", name, "--multiarch", *argv), n, env=env),
            aim=Aim.below(3.0),
        ),
        Row(
            f"load-native-{engine}",
            f"  part: polyarch load {name}, {engine} (process)",
            measure_command(polyarch_argv("load", name, *argv), n, env=env),
        ),
    ]
    for kind, system in systems.items():
        rows.append(
            Row(
                f"test-{kind}-{engine}",
                f"  part: polyarch test {name} --system {system}, {engine} (process)",
                measure_command(polyarch_argv("test", name, "--system", system, *argv), n, env=env),
                note="loads the image, then runs the smoke tests"
                + (" under qemu-user" if kind == "foreign" else ""),
            )
        )
    return rows


def split(rows: Sequence[Row], engine: str) -> dict[str, Any]:
    """Medians of ``all --multiarch`` and of its parts on ``engine``, start-up taken out of each.

    Each part pays the start-up once, as ``all`` does; what is left is its work.
    """
    median = {r.key.removesuffix(f"-{engine}"): r.median for r in rows}
    startup = median["startup-help"]
    parts = {
        k: median[k] - startup
        for k in ("build-warm", "test-native", "test-foreign", "load-native")
        if k in median
    }
    work = {k: v for k, v in parts.items() if k != "load-native"}  # tests load their own images
    return {
        "all": median["all-multiarch"],
        "all_work": median["all-multiarch"] - startup,
        "parts_work": parts,
        "dominant": max(work, key=lambda k: work[k]),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, repetitions=3)
    parser.add_argument("--container", default="fd")
    parser.add_argument("--config", type=Path, default=ROOT / "containers.toml")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated")
    args = parser.parse_args(argv)
    n = args.repetitions

    from polyarch.platforms import native_system

    config = load_config(find_config(args.config))
    container = config.container(args.container)
    native = native_system()
    systems: dict[str, str] = {"native": native.name}
    foreign = [s.name for s in container.systems if s != native]
    if foreign:
        systems["foreign"] = foreign[0]

    rows: list[Row] = []
    unavailable: dict[str, str] = {}
    with temp_dir("workflow") as work:
        env = python_env(POLYARCH_CACHE_DIR=str(work / "cache"))
        common = ["-q", "-f", str(config.path), "--out", str(work / "out")]
        rows.append(
            Row("startup-help", "start-up: polyarch --help (process)",
                measure_command(polyarch_argv("--help"), n, env=env), aim=Aim.below(0.15))
        )  # fmt: skip
        rows.append(
            Row("startup-version", "start-up: polyarch --version (process)",
                measure_command(polyarch_argv("--version"), n, env=env), aim=Aim.below(0.15))
        )  # fmt: skip
        for engine in args.engines.split(","):
            warm_up = polyarch_argv(
                "all", container.name, "--multiarch", *common, "--engine", engine
            )
            done = subprocess.run(warm_up, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                lines = (done.stderr or done.stdout).strip().splitlines() or ["(no output)"]
                unavailable[engine] = lines[-1][:300]
                print(f"workflow: {engine}: not measured: {unavailable[engine]}", flush=True)
                continue
            if not any(r.key == "build-warm" for r in rows):  # the first engine's warm-up
                build = polyarch_argv("build", container.name, "--all-systems", *common)
                rows.append(
                    Row(
                        "build-warm",
                        f"polyarch build {container.name} --all-systems, warm (process)",
                        measure_command(build, n, env=env),
                        aim=Aim.below(0.3),
                    )
                )
            rows += engine_rows(engine, common, container.name, systems, n, env)
    if not rows or len(unavailable) == len(args.engines.split(",")):
        raise SystemExit(f"workflow: no engine could run the benchmark: {unavailable}")
    report(
        "workflow",
        rows,
        json_path=args.json,
        command=f"polyarch all {container.name} --multiarch",
        extra={
            "container": container.name,
            "systems": systems,
            "engines": {e: split(rows, e) for e in args.engines.split(",") if e not in unavailable},
            "unavailable": unavailable,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
