"""Scale study (issue 7): the 30 tool containers of bench/tools.txt × 2 systems.

    python bench/scale.py [--json FILE] [--repetitions 3] [--tools bench/tools.txt]
                          [--counts 1,10,30] [--baseline-samples 1 | --baseline-from BUILD_JSON]
                          [--profile-cold 10] [--no-registry] [--work DIR]

Measures, with polyarch as a process (``polyarch -q build --all --all-systems``):

- cold builds of the first 1, 10 and 30 tools, each in its own empty cache
  (downloads of indexes and .debs included), once each;
- warm builds of the same sets with the 30-tool cache, ``--repetitions`` times, median;
- bytes written (the kernel's count of bytes written to storage, from the
  child's rusage) and the size of what is left on disk;
- every image pushed to a docker-registry on 127.0.0.1 (started here, stopped
  at the end): bytes the registry stores against the sum of the images' sizes
  without sharing;
- the baseline: ``mmdebstrap --variant=essential --include=PKG`` for both
  systems (started together, the foreign one under qemu-user), for one tool
  only, or taken from bench/build.py's run of it (``--baseline-from``): one
  foreign mmdebstrap takes minutes under qemu. The curve for 1, 10, 30
  containers is that per-container time × n, a linear extrapolation, and is
  marked so;
- a profile (cProfile, every thread; bench/_profile.py) of the warm 30-tool
  build and of a cold 10-tool build, split into hash / decompress / compress /
  write / read / network / Python work.

The Debian mirror is the host's apt source (polyarch's default); its name is
never written to the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _common import (
    ROOT,
    SUITE,
    Row,
    add_common_arguments,
    debian_mirror,
    format_seconds,
    format_size,
    polyarch_argv,
    python_env,
    report,
    tree_bytes,
)
from _profile import profile_build

sys.path.insert(0, str(ROOT / "tests"))

from polyarch.platforms import parse_system

SYSTEMS = ("aarch64-linux", "x86_64-linux")


@dataclass(frozen=True)
class Tool:
    package: str
    command: str


@dataclass(frozen=True)
class Run:
    """One timed process: wall seconds and bytes it (and its children) wrote to storage."""

    seconds: float
    bytes_written: int


def read_tools(path: Path) -> list[Tool]:
    """``PACKAGE COMMAND`` per line; ``#`` comments and blank lines skipped."""
    tools = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            package, command = line.split()
            tools.append(Tool(package, command))
    return tools


def write_config(directory: Path, tools: Sequence[Tool]) -> Path:
    """A containers.toml for ``tools``; ``[repository]`` keeps the host default (apt sources)."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        "[repository]",
        f'suite = "{SUITE}"',
        'components = ["main"]',
        "",
        "[defaults]",
        f"systems = [{', '.join(json.dumps(s) for s in SYSTEMS)}]",
        "",
    ]
    for tool in tools:
        lines += [
            f"[containers.{tool.package}]",
            f'package = "{tool.package}"',
            f'command = "{tool.command}"',
            "",
        ]
    path = directory / "containers.toml"
    path.write_text("\n".join(lines))
    return path


def run_together(
    argvs: Sequence[Sequence[str]], *, log: Path, env: dict[str, str] | None = None
) -> tuple[float, list[Run]]:
    """Start every ``argv`` at once; wall seconds until the last ends, and each one's Run.

    A failure raises with the log's tail.
    """
    started = time.perf_counter()
    with log.open("ab") as out:
        processes = []
        for argv in argvs:
            out.write(f"$ {' '.join(argv)}\n".encode())
            out.flush()
            processes.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env))
        runs = []
        for process in processes:
            # wait4 gives this child's own rusage; ru_oublock counts 512-byte units
            # the kernel accounted as written to storage (page cache dirtied included).
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            runs.append(Run(time.perf_counter() - started, usage.ru_oublock * 512))
    if any(p.returncode for p in processes):
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"{argvs[0][0]} failed:\n{tail}")
    return time.perf_counter() - started, runs


def polyarch_build(config: Path, cache: Path, out: Path, log: Path) -> Run:
    """``polyarch -q build --all --all-systems`` as a user runs it, with its own cache."""
    argv = polyarch_argv("-q", "-f", str(config), "build", "--all", "--all-systems")
    argv += ["--out", str(out)]
    _, (run,) = run_together([argv], log=log, env=python_env(POLYARCH_CACHE_DIR=str(cache)))
    return run


def layout_bytes(layout: Path) -> int:
    """What one image (index, manifests, configs, layers) takes when stored alone."""
    return sum(p.stat().st_size for p in (layout / "blobs" / "sha256").iterdir())


def say(text: str) -> None:
    print(f"scale: {text}", flush=True)


# --- the measurements --------------------------------------------------------------------


def measure_polyarch(
    tools: Sequence[Tool], counts: Sequence[int], runs: int, work: Path, log: Path
) -> tuple[dict[str, Any], Path, Path]:
    """Cold and warm builds of the first n tools; returns details, the warm cache, the outputs."""
    cold: dict[int, Run] = {}
    warm: dict[int, list[Run]] = {}
    configs = {n: write_config(work / f"config-{n}", tools[:n]) for n in counts}
    largest = max(counts)
    for n in counts:
        # Largest last, so its cache (every package of every tool) serves the warm runs.
        cache = work / f"cold-{n}" / "cache"
        out = work / f"cold-{n}" / "out"
        cold[n] = polyarch_build(configs[n], cache, out, log)
        say(f"cold build of {n:2} tools × 2 systems: {format_seconds(cold[n].seconds)}")
    warm_cache = work / f"cold-{largest}" / "cache"
    cold_out = work / f"cold-{largest}" / "out"
    for n in counts:
        warm[n] = []
        for _ in range(runs):
            out = work / f"warm-{n}"
            shutil.rmtree(out, ignore_errors=True)
            warm[n].append(polyarch_build(configs[n], warm_cache, out, log))
        seconds = statistics.median(r.seconds for r in warm[n])
        say(f"warm build of {n:2} tools × 2 systems: {format_seconds(seconds)} (median of {runs})")
    first, last = min(counts), largest
    details = {
        "counts": list(counts),
        "largest": largest,
        "cold_seconds": {str(n): cold[n].seconds for n in counts},
        "cold_bytes_written": {str(n): cold[n].bytes_written for n in counts},
        "warm_seconds": {str(n): [r.seconds for r in warm[n]] for n in counts},
        "warm_median_seconds": {
            str(n): statistics.median(r.seconds for r in warm[n]) for n in counts
        },
        "warm_bytes_written_median": {
            str(n): statistics.median(r.bytes_written for r in warm[n]) for n in counts
        },
        # The slope of the cold curve past its first point: what one more container costs.
        "cold_seconds_per_extra_container": (cold[last].seconds - cold[first].seconds)
        / max(last - first, 1),
        "cache_bytes": tree_bytes(warm_cache),
        "output_bytes": tree_bytes(cold_out),
        "runs": runs,
    }
    return details, warm_cache, cold_out


def measure_registry(tools: Sequence[Tool], outputs: Path, work: Path) -> dict[str, Any]:
    """Push every image to a fresh local registry; compare what it stores with the images' sum."""
    from registry_server import run_registry  # tests/registry_server.py: 127.0.0.1, dies with us

    from polyarch.registry.push import push_layout

    unshared = sum(layout_bytes(outputs / t.package / "oci") for t in tools)
    uploaded = 0
    with run_registry(work / "registry") as registry:
        started = time.perf_counter()
        for tool in tools:
            result = push_layout(
                outputs / tool.package / "oci",
                f"http://{registry.host}/{tool.package}:latest",
                record_dir=work / "registry-records",
            )
            uploaded += result.bytes_uploaded
        seconds = time.perf_counter() - started
        stored = tree_bytes(registry.root / "docker" / "registry" / "v2" / "blobs")
    say(
        f"registry stores {format_size(stored)} for {len(tools)} images ({format_size(unshared)} alone)"
    )
    return {
        "images": len(tools),
        "push_seconds": seconds,
        "bytes_uploaded": uploaded,
        "stored_blob_bytes": stored,
        "unshared_bytes": unshared,
        "saved_share": 1 - stored / unshared if unshared else 0.0,
    }


def measure_baseline(tools: Sequence[Tool], samples: int, work: Path, log: Path) -> dict[str, Any]:
    """mmdebstrap essential + PKG for every system of the first ``samples`` tools, together."""
    if shutil.which("mmdebstrap") is None:
        raise RuntimeError("mmdebstrap is not installed: scripts/setup-host packages")
    arches = [parse_system(s).debian_arch for s in SYSTEMS]
    mirror = debian_mirror(SUITE)
    measured: list[dict[str, Any]] = []
    for tool in tools[:samples]:
        targets = {arch: work / f"mmdebstrap-{tool.package}-{arch}.tar" for arch in arches}
        argvs = [
            ["mmdebstrap", "--quiet", "--variant=essential", f"--include={tool.package}",
             f"--architectures={arch}", SUITE, str(target), mirror]
            for arch, target in targets.items()
        ]  # fmt: skip
        wall, runs = run_together(argvs, log=log)
        measured.append(
            {
                "tool": tool.package,
                "seconds": wall,
                "per_arch_seconds": {a: r.seconds for a, r in zip(arches, runs, strict=True)},
                "bytes_written": sum(r.bytes_written for r in runs),
            }
        )
        for target in targets.values():
            target.unlink()
        say(f"mmdebstrap {tool.package}, every system: {format_seconds(wall)}")
    return {
        "source": "scale",
        "samples": measured,
        "seconds_per_container": statistics.median(m["seconds"] for m in measured),
        "bytes_written_per_container": statistics.median(m["bytes_written"] for m in measured),
        "bytes_written_is_lower_bound": False,
    }


def baseline_from(build_json: Path) -> dict[str, Any] | None:
    """The mmdebstrap measurement bench/build.py made in this run (fd, every system), if any.

    Saves running the slow foreign mmdebstrap twice. bench/build.py does not
    count bytes written, so the lower bound is its tars.
    """
    try:
        done = json.loads(build_json.read_text()).get("mmdebstrap") or {}
    except (OSError, ValueError):
        return None
    if not done.get("seconds"):
        return None
    per_arch = done["seconds_per_arch"]
    return {
        "source": "build",
        "samples": [
            {"tool": done["package"], "seconds": s, "per_arch_seconds": per_arch[i]}
            for i, s in enumerate(done["seconds"])
        ],
        "seconds_per_container": statistics.median(done["seconds"]),
        "bytes_written_per_container": sum(done["tar_bytes"].values()) or None,
        "bytes_written_is_lower_bound": True,
    }


def measure_profiles(
    tools: Sequence[Tool], warm_cache: Path, cold_count: int, work: Path
) -> dict[str, Any]:
    """Profile the warm build of every tool and a cold build of the first ``cold_count``."""
    everything = write_config(work / "profile-config-all", tools)
    warm = profile_build(everything, warm_cache, work / "profile-warm-out", work / "warm.pstats")
    say(f"profiled warm build: {format_seconds(warm['wall_seconds'])}")
    some = write_config(work / "profile-config-cold", tools[:cold_count])
    cold = profile_build(
        some, work / "profile-cold-cache", work / "profile-cold-out", work / "cold.pstats"
    )
    say(f"profiled cold build: {format_seconds(cold['wall_seconds'])}")
    return {"warm": warm, "cold": cold}


# --- rows --------------------------------------------------------------------------------

EXTRAPOLATED = "mmdebstrap per container (every system, measured) × n, extrapolated"


def rows_of(result: dict[str, Any]) -> list[Row]:
    """The table rows of this benchmark (bench/_common.py's ``Row``)."""
    poly = result["polyarch"]
    base = result.get("baseline")
    reg = result.get("registry")
    n = poly["largest"]
    systems = f"{len(SYSTEMS)} systems"
    per = base["seconds_per_container"] if base else 0.0
    rows: list[Row] = []
    for count in poly["counts"]:
        rows.append(
            Row(
                f"cold-{count}",
                f"scale: cold build, {count} tools × {systems}",
                [poly["cold_seconds"][str(count)]],
                baseline=[per * count] if base else [],
                baseline_what="mmdebstrap, extrapolated" if base else "",
                note=f"baseline: {EXTRAPOLATED}" if base else "",
            )
        )
    for count in poly["counts"]:
        rows.append(
            Row(
                f"warm-{count}",
                f"scale: warm build, {count} tools × {systems}",
                poly["warm_seconds"][str(count)],
            )
        )
    base_bytes = base["bytes_written_per_container"] if base else None
    lower = ", tars only (a lower bound)" if base and base["bytes_written_is_lower_bound"] else ""
    rows.append(
        Row(
            "cold-bytes-written",
            f"scale: bytes written, cold build of {n} tools × {systems}",
            [poly["cold_bytes_written"][str(n)]],
            baseline=[base_bytes * n] if base_bytes else [],
            baseline_what=f"mmdebstrap{lower}, extrapolated" if base_bytes else "",
            unit="B",
            note=f"baseline: {EXTRAPOLATED}" if base_bytes else "",
        )
    )
    if reg:
        rows.append(
            Row(
                "registry-bytes",
                f"scale: registry storage after pushing {reg['images']} indexes × {systems}",
                [reg["stored_blob_bytes"]],
                baseline=[reg["unshared_bytes"]],
                baseline_what="same images, no sharing",
                unit="B",
                note="baseline: the images' sizes summed, as if no layer were shared",
            )
        )
        rows.append(
            Row(
                "registry-push",
                f"scale: push {reg['images']} indexes × {systems} to a local registry",
                [reg["push_seconds"]],
            )
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, repetitions=3)
    parser.add_argument("--tools", default=str(ROOT / "bench" / "tools.txt"))
    parser.add_argument("--counts", default="1,10,30", help="growth curve points (default 1,10,30)")
    parser.add_argument("--baseline-samples", type=int, default=1, metavar="N",
                        help="tools to run mmdebstrap for, both systems (0: no baseline)")  # fmt: skip
    parser.add_argument("--baseline-from", type=Path, metavar="BUILD_JSON",
                        help="use bench/build.py's mmdebstrap run of this bench/run instead")  # fmt: skip
    parser.add_argument("--profile-cold", type=int, default=10, metavar="N",
                        help="tools in the profiled cold build (0: no profile)")  # fmt: skip
    parser.add_argument("--no-registry", action="store_true", help="skip the push")
    parser.add_argument("--work", help="keep work files here (default: a temp dir, removed)")
    args = parser.parse_args(argv)

    tools = read_tools(Path(args.tools))
    counts = sorted({min(int(c), len(tools)) for c in args.counts.split(",")})
    chosen = tools[: max(counts)]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="polyarch-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "scale.log"
    started = time.perf_counter()
    result: dict[str, Any] = {"tools": [asdict(t) for t in chosen], "systems": list(SYSTEMS)}
    try:
        polyarch, warm_cache, outputs = measure_polyarch(tools, counts, args.repetitions, work, log)
        result["polyarch"] = polyarch
        if not args.no_registry:
            result["registry"] = measure_registry(chosen, outputs, work)
        if args.profile_cold > 0:
            result["profile"] = measure_profiles(
                chosen, warm_cache, min(args.profile_cold, len(tools)), work
            )
        baseline = baseline_from(args.baseline_from) if args.baseline_from else None
        if baseline is None and args.baseline_samples > 0:
            baseline = measure_baseline(tools, args.baseline_samples, work, log)
        if baseline is not None:
            result["baseline"] = baseline
        result["seconds"] = time.perf_counter() - started
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    report(
        "scale",
        rows_of(result),
        json_path=args.json,
        command="python bench/scale.py",
        extra=result,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
