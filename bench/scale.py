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
- a profile (cProfile, every thread) of the warm 30-tool build and of a cold
  10-tool build, split into hash / decompress / compress / write / read /
  network / Python work.

The Debian mirror is the host's apt source (polyarch's default); its name is
never written to the JSON.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _common import ROOT, Row, add_common_arguments, debian_mirror, python_env, report

sys.path.insert(0, str(ROOT / "tests"))

SYSTEMS = ("aarch64-linux", "x86_64-linux")
NATIVE_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
SUITE = "bookworm"
MB = 1e6


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


def run_process(argv: Sequence[str], *, log: Path, env: dict[str, str] | None = None) -> Run:
    """Run ``argv`` to completion; raise with the log's tail if it fails."""
    started = time.perf_counter()
    with log.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        # wait4 gives this child's own rusage; ru_oublock counts 512-byte units
        # the kernel accounted as written to storage (page cache dirtied included).
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"{argv[0]} failed ({process.returncode}):\n{tail}")
    return Run(seconds, usage.ru_oublock * 512)


def polyarch_build(config: Path, cache: Path, out: Path, log: Path) -> Run:
    """``polyarch -q build --all --all-systems`` as a user runs it, with its own cache."""
    env = python_env(POLYARCH_CACHE_DIR=str(cache))
    argv = [sys.executable, "-m", "polyarch", "-q", "-f", str(config)]
    argv += ["build", "--all", "--all-systems", "--out", str(out)]
    return run_process(argv, log=log, env=env)


def tree_bytes(path: Path) -> int:
    """Bytes of the files under ``path``, each inode once (the outputs hard-link the cache)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(directory, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def layout_bytes(layout: Path) -> int:
    """What one image (index, manifests, configs, layers) takes when stored alone."""
    return sum(p.stat().st_size for p in (layout / "blobs" / "sha256").iterdir())


# --- the three measurements --------------------------------------------------------------


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
        print(f"scale: cold build of {n:2} tools × 2 systems: {cold[n].seconds:6.1f} s", flush=True)
    warm_cache = work / f"cold-{largest}" / "cache"
    cold_out = work / f"cold-{largest}" / "out"
    cache_bytes = tree_bytes(warm_cache)
    out_bytes = tree_bytes(cold_out)
    for n in counts:
        warm[n] = []
        for _ in range(runs):
            out = work / f"warm-{n}"
            shutil.rmtree(out, ignore_errors=True)
            warm[n].append(polyarch_build(configs[n], warm_cache, out, log))
        seconds = statistics.median(r.seconds for r in warm[n])
        print(
            f"scale: warm build of {n:2} tools × 2 systems: {seconds:6.1f} s (median of {runs})",
            flush=True,
        )
    details = {
        "counts": list(counts),
        "cold_seconds": {str(n): cold[n].seconds for n in counts},
        "cold_bytes_written": {str(n): cold[n].bytes_written for n in counts},
        "warm_seconds": {str(n): [r.seconds for r in warm[n]] for n in counts},
        "warm_median_seconds": {
            str(n): statistics.median(r.seconds for r in warm[n]) for n in counts
        },
        "warm_bytes_written_median": {
            str(n): statistics.median(r.bytes_written for r in warm[n]) for n in counts
        },
        "cache_bytes": cache_bytes,
        "output_bytes": out_bytes,
        "runs": runs,
    }
    return details, warm_cache, cold_out


def measure_registry(tools: Sequence[Tool], outputs: Path, work: Path) -> dict[str, Any]:
    """Push every image to a fresh local registry; compare what it stores with the images' sum."""
    from registry_server import run_registry  # tests/registry_server.py: 127.0.0.1, dies with us

    from polyarch.registry import push_layout

    unshared = sum(layout_bytes(outputs / t.package / "oci") for t in tools)
    layers_total = 0
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
            layers_total += result.blobs_uploaded + result.blobs_skipped + result.blobs_mounted
        seconds = time.perf_counter() - started
        stored = tree_bytes(registry.root / "docker" / "registry" / "v2" / "blobs")
        stored_all = tree_bytes(registry.root)
    print(
        f"scale: registry stores {stored / 1e6:.0f} MB for {len(tools)} images "
        f"(alone they are {unshared / 1e6:.0f} MB)",
        flush=True,
    )
    return {
        "images": len(tools),
        "push_seconds": seconds,
        "bytes_uploaded": uploaded,
        "stored_blob_bytes": stored,
        "stored_bytes": stored_all,
        "unshared_bytes": unshared,
        "blobs_pushed_or_skipped": layers_total,
    }


BASELINE_TOOL = "mmdebstrap --variant=essential --include=PKG"
BASELINE_HOW = "both systems started together, the foreign one under qemu-user"


def measure_baseline(tools: Sequence[Tool], samples: int, work: Path, log: Path) -> dict[str, Any]:
    """mmdebstrap essential + PKG for both systems of the first ``samples`` tools."""
    if shutil.which("mmdebstrap") is None:
        raise RuntimeError("mmdebstrap is not installed: apt-get install mmdebstrap")
    arches = sorted({NATIVE_ARCH[os.uname().machine], "amd64", "arm64"})
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
                "rootfs_bytes": {a: t.stat().st_size for a, t in targets.items()},
            }
        )
        for target in targets.values():
            target.unlink()
        print(f"scale: mmdebstrap {tool.package}, both systems: {wall:6.1f} s", flush=True)
    return {
        "tool": BASELINE_TOOL,
        "how": BASELINE_HOW,
        "source": "bench/scale.py",
        "samples": measured,
        "seconds_per_container": statistics.median(m["seconds"] for m in measured),
        "bytes_written_per_container": statistics.median(m["bytes_written"] for m in measured),
        "bytes_written_is_lower_bound": False,
        "extrapolated": True,
    }


def baseline_from(build_json: Path) -> dict[str, Any] | None:
    """The mmdebstrap measurement bench/build.py made in this run (fd, both systems), if any.

    Saves running the slow foreign mmdebstrap twice. bench/build.py does not
    count bytes written, so the lower bound is its two tars.
    """
    try:
        data = json.loads(build_json.read_text())
    except (OSError, ValueError):
        return None
    rows = data.get("rows", [])
    timed = [
        r
        for r in rows
        if r.get("baseline_what") == "mmdebstrap, systems in parallel" and r.get("baseline_samples")
    ]
    if not timed:
        return None
    tars = [
        r["baseline_median"]
        for r in rows
        if r.get("baseline_what") == "mmdebstrap tar" and r.get("baseline_median")
    ]
    per_arch = data.get("mmdebstrap_seconds_per_arch") or []
    return {
        "tool": BASELINE_TOOL,
        "how": BASELINE_HOW,
        "source": "bench/build.py (fd-find), same run",
        "samples": [
            {
                "tool": "fd-find",
                "seconds": seconds,
                "per_arch_seconds": per_arch[i] if i < len(per_arch) else {},
            }
            for i, seconds in enumerate(timed[0]["baseline_samples"])
        ],
        "seconds_per_container": statistics.median(timed[0]["baseline_samples"]),
        "bytes_written_per_container": sum(tars) * MB if tars else None,
        "bytes_written_is_lower_bound": True,
        "extrapolated": True,
    }


def run_together(argvs: Sequence[Sequence[str]], *, log: Path) -> tuple[float, list[Run]]:
    """Start every ``argv`` at once; wall seconds until the last ends, and each one's Run."""
    started = time.perf_counter()
    with log.open("ab") as out:
        processes = []
        for argv in argvs:
            out.write(f"$ {' '.join(argv)} &\n".encode())
            out.flush()
            processes.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT))
        runs = []
        for process in processes:
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            runs.append(Run(time.perf_counter() - started, usage.ru_oublock * 512))
    if any(p.returncode for p in processes):
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"{argvs[0][0]} failed:\n{tail}")
    return time.perf_counter() - started, runs


# --- profile -----------------------------------------------------------------------------

# Leaf functions (cProfile's own time) → where the time goes; the first match wins.
# Matched against "FILENAME 'FUNCTION'"; C functions have FILENAME "~".
WAITING = "waiting (idle threads, joins)"
DECOMPRESS_INDEX = "decompress: Packages indexes (xz)"
DECOMPRESS_DEBS = "decompress: .deb contents (xz, zstd)"
CATEGORIES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("waiting", WAITING, ("'acquire' of '_thread.lock", "SimpleQueue", "threading.py 'wait'", "time.sleep")),
    ("network", "network (sockets, TLS, HTTP client)",
     ("_ssl.", "_socket.", "select.", "getaddrinfo", "httpcore/", "h11/", "httpx/")),
    ("hash", "hash (sha256)", ("_hashlib", "hashlib")),
    ("decompress-debs", DECOMPRESS_DEBS,
     ("'decompress'", "Decompressor", "zstd", "'flush' of 'zlib.Decompress", "/_compression.py",
      "/lzma.py")),
    ("compress", "compress (gzip)", ("'compress'", "'flush' of 'zlib.Compress", "zlib.crc32", "/gzip.py")),
    ("memory", "in-memory copies", ("_io.BytesIO",)),
    ("write", "write (files, links, renames)",
     ("'write' of '_io.", "'writelines'", "posix.write", "fsync", "posix.replace", "posix.rename",
      "posix.link", "posix.unlink", "posix.rmdir", "posix.mkdir", "posix.chmod", "posix.utime",
      "/shutil.py", "sendfile", "copy_file_range", "/tempfile.py", "'truncate'")),
    ("read", "read (files, stat)",
     ("'read' of '_io.", "'readinto' of '_io.", "posix.read", "posix.stat", "posix.lstat",
      "posix.scandir", "io.open", "'seek' of '_io.", "posix.open", "'close' of '_io.")),
    ("parse", "parse indexes and resolve",
     ("polyarch/debian/index.py", "polyarch/debian/resolver.py", "polyarch/debian/version.py",
      "polyarch/debian/repository.py", "msgspec")),
    ("python-debs", "read .debs and build layers (Python: ar, tar, paths)",
     ("/tarfile.py", "polyarch/image/", "polyarch/debian/deb.py")),
)  # fmt: skip
OTHER = "other Python (paths, JSON, imports, …)"
CATEGORY_KEYS = {
    **{label: key for key, label, _ in CATEGORIES},
    DECOMPRESS_INDEX: "decompress-index",
    OTHER: "other",
}
# Who called a decompressor tells an index (decompressed whole) from a .deb (streamed).
INDEX_CALLERS = ("lzma.py 'decompress'", "gzip.py 'decompress'", "polyarch/debian/index.py")


def _category(text: str) -> str | None:
    return next((c for _, c, keys in CATEGORIES if any(k in text for k in keys)), None)


def _text(key: tuple[str, int, str]) -> str:
    return f"{key[0]} '{key[2]}'"


def categorise(stats: pstats.Stats) -> dict[str, float]:
    """Own time per category, summed over every thread.

    A C function that matches no category (``str.split``, ``re.findall``...) is
    charged to its callers' categories, so parsing an index counts as parsing.
    """
    totals: dict[str, float] = {}

    def add(category: str, seconds: float) -> None:
        totals[category] = totals.get(category, 0.0) + seconds

    for key, (_, _, own, _, callers) in stats.stats.items():  # type: ignore[attr-defined]
        category = _category(_text(key))
        if category == DECOMPRESS_DEBS and key[0] == "~" and callers:
            for caller, (_, _, seconds, _) in callers.items():
                by_index = any(k in _text(caller) for k in INDEX_CALLERS)
                add(DECOMPRESS_INDEX if by_index else DECOMPRESS_DEBS, seconds)
        elif category is None and key[0] == "~" and callers:
            for caller, (_, _, seconds, _) in callers.items():
                add(_category(_text(caller)) or OTHER, seconds)
        else:
            add(category or OTHER, own)
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


@contextmanager
def every_thread_profiled() -> Iterator[list[cProfile.Profile]]:
    """cProfile the calling thread and every thread started inside the block."""
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        profile = cProfile.Profile()
        with lock:
            profiles.append(profile)
        profile.enable()
        try:
            original(self)
        finally:
            profile.disable()

    main = cProfile.Profile()
    profiles.append(main)
    threading.Thread.run = run  # type: ignore[method-assign]
    main.enable()
    try:
        yield profiles
    finally:
        main.disable()
        threading.Thread.run = original  # type: ignore[method-assign]


def profile_build(config: Path, cache: Path, out: Path, dump: Path) -> dict[str, Any]:
    """Build every container of ``config`` in this process under cProfile; where time went."""
    from polyarch.cache import Cache
    from polyarch.config import load_config
    from polyarch.workflows.build import build_container
    from polyarch.workflows.resolve import Session

    session = Session(config=load_config(config), cache=Cache(cache))
    started = time.perf_counter()
    try:
        with every_thread_profiled() as profiles:
            for container in session.config.containers:
                build_container(session, container, container.systems, out_dir=out)
    finally:
        session.repository.close()
    wall = time.perf_counter() - started
    stats = pstats.Stats(profiles[0])
    for profile in profiles[1:]:
        stats.add(profile)
    stats.dump_stats(str(dump))
    categories = categorise(stats)
    busy = {k: v for k, v in categories.items() if k != WAITING}
    busy_total = sum(busy.values())
    top = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:12]  # type: ignore[attr-defined]
    return {
        "containers": len(session.config.containers),
        "wall_seconds": wall,
        "threads": len(profiles),
        "busy_thread_seconds": busy_total,
        "categories": {
            k: {
                "key": CATEGORY_KEYS[k],
                "seconds": v,
                "share": v / busy_total if busy_total else 0.0,
            }
            for k, v in busy.items()
        },
        "waiting_thread_seconds": categories.get(WAITING, 0.0),
        "top_functions": [
            {"function": _label(key), "own_seconds": value[2], "calls": value[1]}
            for key, value in top
        ],
    }


def _label(key: tuple[str, int, str]) -> str:
    filename, line, function = key
    if filename == "~":
        return function
    if "/src/polyarch/" in filename:
        path = "polyarch/" + filename.split("/src/polyarch/", 1)[1]
    else:  # the standard library or a dependency: its file name says enough
        path = filename.split("site-packages/")[-1].rsplit("/", 1)[-1]
    return f"{path}:{line}({function})"


def measure_profiles(
    tools: Sequence[Tool], warm_cache: Path, cold_count: int, work: Path
) -> dict[str, Any]:
    """Profile the warm build of every tool and a cold build of the first ``cold_count``."""
    everything = write_config(work / "profile-config-all", tools)
    warm = profile_build(everything, warm_cache, work / "profile-warm-out", work / "warm.pstats")
    print(f"scale: profiled warm build: {warm['wall_seconds']:.1f} s", flush=True)
    some = write_config(work / "profile-config-cold", tools[:cold_count])
    cold = profile_build(
        some, work / "profile-cold-cache", work / "profile-cold-out", work / "cold.pstats"
    )
    print(f"scale: profiled cold build: {cold['wall_seconds']:.1f} s", flush=True)
    return {"warm": warm, "cold": cold}


# --- rows --------------------------------------------------------------------------------

EXTRAPOLATED = "baseline: mmdebstrap per container (both systems, measured) × n, extrapolated"


def rows_of(result: dict[str, Any]) -> list[Row]:
    """The table rows of this benchmark (bench/_common.py's ``Row``)."""
    poly = result["polyarch"]
    base = result.get("baseline")
    reg = result.get("registry")
    n = max(poly["counts"])
    per = base["seconds_per_container"] if base else 0.0
    rows: list[Row] = []
    for count in poly["counts"]:
        rows.append(
            Row(
                f"scale: cold build, {count} tools × 2 systems",
                [poly["cold_seconds"][str(count)]],
                baseline=[per * count] if base else [],
                baseline_what="mmdebstrap, extrapolated" if base else "",
                note=EXTRAPOLATED if base else "",
            )
        )
    for count in poly["counts"]:
        rows.append(
            Row(
                f"scale: warm build, {count} tools × 2 systems",
                poly["warm_seconds"][str(count)],
                note="no baseline: mmdebstrap has no cache, its warm cost is its cold cost"
                if count == n
                else "",
            )
        )
    base_bytes = base.get("bytes_written_per_container") if base else None
    lower = bool(base and base.get("bytes_written_is_lower_bound"))
    rows.append(
        Row(
            f"scale: bytes written, cold build of {n} tools × 2 systems",
            [poly["cold_bytes_written"][str(n)] / MB],
            baseline=[base_bytes * n / MB] if base_bytes else [],
            baseline_what=("mmdebstrap tars only, lower bound" if lower else "mmdebstrap")
            + ", extrapolated"
            if base_bytes
            else "",
            unit="MB",
            note=EXTRAPOLATED if base_bytes else "",
        )
    )
    if reg:
        rows.append(
            Row(
                f"scale: registry storage after pushing {reg['images']} indexes × 2 systems",
                [reg["stored_blob_bytes"] / MB],
                baseline=[reg["unshared_bytes"] / MB],
                baseline_what="same images, no sharing",
                unit="MB",
                note="baseline: the images' sizes summed, as if no layer were shared",
            )
        )
        rows.append(
            Row(
                f"scale: push {reg['images']} indexes × 2 systems to a local registry",
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
    result: dict[str, Any] = {"tools": [asdict(t) for t in chosen]}
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
