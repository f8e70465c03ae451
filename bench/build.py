"""Benchmark: build fd for both systems, cold and warm, and the image sizes, against mmdebstrap.

    python bench/build.py [--repetitions N] [--baseline-repetitions N] [--json FILE]

Uses the real archive (the host's apt mirror) and the repository's
containers.toml. Rows:

- cold build, process: ``polyarch build fd --all-systems`` with a new, empty
  cache dir per sample (indexes and .debs downloaded, layers compressed);
  baseline: ``mmdebstrap --variant=essential --include=fd-find`` for each
  system into a tar, both systems started together (the foreign one runs under
  qemu-user through binfmt_misc); aim: at least 20x faster.
- cold build, absolute: the same samples; aim < 5 s (on an idle machine).
- warm build, process: the same command on a warm cache (outputs already
  there and identical, so the build stamp answers); aim < 0.3 s. Baselines,
  interleaved: the same build with its stamp (``CACHE/stamps/``) removed
  first, so it resolves, plans and compares every output (the full warm
  build); and with the memo of checked files (``CACHE/checked/``) removed, so
  every output is hashed again.
- warm build, library call: a new ``Session`` + ``build_container`` in this
  process per sample (InRelease + signature, indexes, layers from the cache, outputs
  written); informational.
- the extra sources (issue 12): the same cold and warm builds of the
  repository's containers.toml (main + -updates + security, the default)
  against a copy with ``[sources.updates]`` and ``[sources.security]``
  switched off (the main suite alone), warm runs interleaved; aim: the warm
  build costs at most 20 % more. The cold cost is reported, without an aim.
- image size per system, compressed (sum of gzip layers) and uncompressed
  (sum of layer tars); baseline: mmdebstrap's tar, and that tar gzipped at
  level 6 (the level polyarch uses); aims < 12 MB and < 40 MB.

Every cold and warm run must give the same index digest, or the benchmark
fails. Takes ~5 minutes, most of it mmdebstrap; ``--baseline-repetitions 0``
skips the baseline.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from _common import (
    ROOT,
    SUITE,
    Aim,
    Row,
    add_common_arguments,
    debian_mirror,
    measure,
    polyarch_argv,
    python_env,
    report,
    run_command,
    temp_dir,
)

from polyarch.cache import Cache
from polyarch.checked import CHECKED_DIR
from polyarch.config import find_config, load_config
from polyarch.image import layout
from polyarch.workflows.build import build_container
from polyarch.workflows.resolve import Session
from polyarch.workflows.stamp import STAMPS_DIR

GZIP_LEVEL = 6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, repetitions=3)
    parser.add_argument("--baseline-repetitions", type=int, default=1, metavar="N")
    parser.add_argument("--container", default="fd")
    parser.add_argument("--config", type=Path, default=ROOT / "containers.toml")
    args = parser.parse_args()
    n = args.repetitions

    config = load_config(find_config(args.config))
    container = config.container(args.container)
    systems = container.systems
    rows: list[Row] = []
    digests: set[str] = set()

    with temp_dir("build") as work:
        runs = iter(range(1_000_000))
        state = {"cache": work / "unused", "out": work / "unused"}

        def cli() -> list[str]:
            return polyarch_argv(
                "build", container.name, "--all-systems", "-q",
                "-f", str(config.path), "--out", str(state["out"]),
            )  # fmt: skip

        def build_process() -> None:
            run_command(cli(), env=python_env(POLYARCH_CACHE_DIR=str(state["cache"])))

        one_source = work / "one-source" / "containers.toml"
        one_source.parent.mkdir()
        one_source.write_text(
            config.path.read_text()
            + "\n[sources.updates]\nenable = false\n\n[sources.security]\nenable = false\n"
        )
        main_only = {"cache": work / "unused", "out": work / "unused"}

        def build_main_only() -> None:
            # Another closure (no fixes), so its digest is not one of ``digests``.
            argv = polyarch_argv(
                "build", container.name, "--all-systems", "-q",
                "-f", str(one_source), "--out", str(main_only["out"]),
            )  # fmt: skip
            run_command(argv, env=python_env(POLYARCH_CACHE_DIR=str(main_only["cache"])))

        def new_main_only_run() -> None:
            i = next(runs)
            main_only["cache"], main_only["out"] = work / f"cache-m{i}", work / f"out-m{i}"

        def new_cold_run() -> None:
            i = next(runs)
            state["cache"], state["out"] = work / f"cache-{i}", work / f"out-{i}"

        def collect_digest() -> None:
            digests.add(index_digest(state["out"] / container.name))

        cold = []
        for _ in range(n):
            cold += measure(build_process, 1, setup=new_cold_run)
            collect_digest()
        cold_main_only = []
        for _ in range(n):
            cold_main_only += measure(build_main_only, 1, setup=new_main_only_run)

        def forget_checked() -> None:
            shutil.rmtree(state["cache"] / CHECKED_DIR, ignore_errors=True)

        def forget_stamps() -> None:
            shutil.rmtree(state["cache"] / STAMPS_DIR, ignore_errors=True)

        warm, warm_main_only, warm_rehashing, warm_unstamped = [], [], [], []
        for _ in range(n):  # the last cold caches, now warm; interleaved against drift
            warm += measure(build_process, 1)
            collect_digest()
            warm_main_only += measure(build_main_only, 1)
            warm_rehashing += measure(build_process, 1, setup=forget_checked)
            collect_digest()
            warm_unstamped += measure(build_process, 1, setup=forget_stamps)
            collect_digest()

        out = work / "library"

        def library_call() -> None:
            session = Session(config=config, cache=Cache(state["cache"]))
            try:
                built = build_container(session, container, systems, out_dir=out)
            finally:
                session.repository.close()
            digests.add(built.index_digest)

        library_call()  # the first call in a process also pays for lazy imports
        # Interleaved with the baseline: outputs hard-linked to the cache, as before issue 11.
        library: list[float] = []
        linked: list[float] = []
        for _ in range(n):
            library += measure(library_call, 1)
            with hard_linked_outputs():
                linked += measure(library_call, 1)
        sizes = image_sizes(state["out"] / container.name)

        baseline: list[float] = []
        baseline_sizes: dict[str, tuple[int, int]] = {}
        per_system: list[dict[str, float]] = []
        for i in range(args.baseline_repetitions):
            seconds, each, baseline_sizes = mmdebstrap_all(
                work / f"mmdebstrap-{i}", container.package, [s.debian_arch for s in systems]
            )
            baseline.append(seconds)
            per_system.append(each)

    if len(digests) != 1:
        raise SystemExit(f"builds disagree: index digests {sorted(digests)}")
    both = f"{len(systems)} systems"
    rows.append(
        Row(
            "cold-process",
            f"cold build {container.name}, {both} (process)",
            cold,
            baseline=baseline,
            baseline_what="mmdebstrap, systems in parallel",
            aim=Aim.ratio_at_least(20) if baseline else None,
        )
    )
    rows.append(
        Row(
            "cold-absolute",
            f"cold build {container.name}, {both} (process), absolute",
            cold,
            aim=Aim.below(5.0),
            note="the cold samples above; the aim holds on an idle machine (see the load average)",
        )
    )
    rows.append(
        Row(
            "warm-process",
            f"warm build {container.name}, {both} (process)",
            warm,
            baseline=warm_unstamped,
            baseline_what="the full warm build (its stamp removed)",
            aim=Aim.below(0.3),
            note="the build stamp (CACHE/stamps/) answers a build whose inputs (Releases fetched "
            "and verified afresh) and outputs are unchanged without resolving, planning or "
            "assembling; the baseline resolves, plans and compares every output",
        )
    )
    rows.append(
        Row(
            "warm-memo",
            f"warm build {container.name}, {both} (process), memo of checked files",
            warm,
            baseline=warm_rehashing,
            baseline_what="every output hashed again (no memo)",
            note="the memo of checked files (CACHE/checked/) skips hashing files unchanged "
            "since they were hashed (same inode, size, mtime, ctime); the ratio is what it saves",
        )
    )
    rows.append(
        Row(
            "warm-library",
            f"warm build {container.name}, {both} (library call)",
            library,
            baseline=linked,
            baseline_what="outputs hard-linked to the cache",
            note="layer blobs in the outputs are copies (reflinks where the file system can) so "
            "that no output shares an inode with the cache; the baseline hard-links them, as "
            "polyarch did before; the ratio is what the copies cost",
        )
    )
    sources = " + ".join(s.suite for s in config.sources)
    rows.append(
        Row(
            "warm-sources",
            f"warm build {container.name}, {both}, {sources} (process)",
            warm,
            baseline=warm_main_only,
            baseline_what=f"{SUITE} alone (updates, security off)",
            aim=Aim.cost_at_most(0.2),
        )
    )
    rows.append(
        Row(
            "cold-sources",
            f"cold build {container.name}, {both}, {sources} (process)",
            cold,
            baseline=cold_main_only,
            baseline_what=f"{SUITE} alone (updates, security off)",
            note="what the extra sources cost on an empty cache: their InRelease and indexes",
        )
    )
    for system in systems:
        compressed, uncompressed = sizes[system.oci_platform]
        base = baseline_sizes.get(system.debian_arch)
        rows.append(
            Row(
                f"image-compressed-{system.name}",
                f"image {system.name}, compressed",
                [compressed],
                baseline=[base[1]] if base else [],
                baseline_what="mmdebstrap tar, gzip -6",
                unit="B",
                aim=Aim.below(12e6, "B"),
            )
        )
        rows.append(
            Row(
                f"image-uncompressed-{system.name}",
                f"image {system.name}, uncompressed",
                [uncompressed],
                baseline=[base[0]] if base else [],
                baseline_what="mmdebstrap tar",
                unit="B",
                aim=Aim.below(40e6, "B"),
            )
        )
    report(
        "build",
        rows,
        json_path=args.json,
        command="python bench/build.py",
        extra={
            "index_digest": digests.pop(),
            # bench/scale.py's baseline when bench/run runs both (--baseline-from).
            "mmdebstrap": {
                "package": container.package,
                "seconds": baseline,
                "seconds_per_arch": per_system,
                "tar_bytes": {arch: sizes[0] for arch, sizes in baseline_sizes.items()},
            },
        },
    )
    return 0


@contextmanager
def hard_linked_outputs() -> Iterator[None]:
    """Place layer blobs in outputs by hard link (the old behaviour), for the baseline."""

    def link(source: Path, path: Path, *, mode: int = 0o644) -> None:
        os.link(source, path)

    original = layout.clone_or_copy
    layout.clone_or_copy = link  # type: ignore[assignment]
    try:
        yield
    finally:
        layout.clone_or_copy = original


def index_digest(result: Path) -> str:
    """The digest of the image index an OCI layout's index.json points at."""
    layout = json.loads((result / "oci" / "index.json").read_text())
    digest: str = layout["manifests"][0]["digest"]
    return digest


def _blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / digest.replace(":", "/", 1)


def image_sizes(result: Path) -> dict[str, tuple[int, int]]:
    """OCI platform ("linux/arm64/v8") → (compressed, uncompressed) bytes of its layers."""
    layout = result / "oci"
    index = json.loads(_blob(layout, index_digest(result)).read_text())
    sizes: dict[str, tuple[int, int]] = {}
    for entry in index["manifests"]:
        platform = entry["platform"]
        name = "/".join(
            [platform["os"], platform["architecture"]]
            + ([platform["variant"]] if "variant" in platform else [])
        )
        manifest = json.loads(_blob(layout, entry["digest"]).read_text())
        compressed = sum(layer["size"] for layer in manifest["layers"])
        uncompressed = sum(
            gunzipped_size(_blob(layout, layer["digest"])) for layer in manifest["layers"]
        )
        sizes[name] = (compressed, uncompressed)
    return sizes


def gunzipped_size(path: Path) -> int:
    """Bytes of the tar inside a gzip layer, every member of it (large layers have several)."""
    total = 0
    with gzip.open(path) as f:
        while chunk := f.read(1 << 20):
            total += len(chunk)
    return total


def gzipped_size(path: Path) -> int:
    deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    total = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            total += len(deflate.compress(chunk))
    return total + len(deflate.flush())


def mmdebstrap_all(
    work: Path, package: str, arches: list[str]
) -> tuple[float, dict[str, float], dict[str, tuple[int, int]]]:
    """mmdebstrap of every arch, started together: (wall seconds, seconds per arch, sizes per arch).

    Sizes are (tar bytes, gzipped tar bytes).
    """
    work.mkdir(parents=True)
    mirror = debian_mirror(SUITE)

    def one(arch: str) -> float:
        argv = ["mmdebstrap", "--quiet", "--variant=essential", f"--include={package}"]
        argv += [f"--architectures={arch}", SUITE, str(work / f"{arch}.tar"), mirror]
        started = time.perf_counter()
        run_command(argv, cwd=work)
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(len(arches)) as pool:
        each = dict(zip(arches, pool.map(one, arches), strict=True))
    seconds = time.perf_counter() - started
    sizes = {}
    for arch in arches:
        tar = work / f"{arch}.tar"
        sizes[arch] = (tar.stat().st_size, gzipped_size(tar))
        tar.unlink()
    return seconds, each, sizes


if __name__ == "__main__":
    sys.exit(main())
