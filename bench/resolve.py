"""Benchmark: resolve fd for both systems, cold (empty cache) and warm (indexes cached).

    python bench/resolve.py [--repetitions N] [--baseline-repetitions N] [--json FILE]

Uses the real archive (the host's apt mirror) and the repository's
containers.toml. Rows:

- cold, process: ``polyarch resolve fd --all-systems --json`` with a new, empty
  cache dir per sample (InRelease, both Packages.xz downloaded and parsed);
  baseline: ``mmdebstrap --simulate --variant=essential --include=fd-find`` for
  each system (apt downloads its indexes and solves; nothing is installed).
- warm, process: the same command on a warm cache, interpreter start-up and
  imports included.
- warm, library: a new ``Session`` + ``resolve_container`` in this process per
  sample (InRelease fetched and its signature verified, both parsed indexes loaded, both
  closures resolved); aim < 0.5 s. Split into its InRelease + signature part and the
  rest.

Runs in ~1-2 minutes, most of it mmdebstrap; ``--baseline-repetitions 0``
skips the baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _common import (
    ROOT,
    SUITE,
    Aim,
    Row,
    add_common_arguments,
    debian_mirror,
    measure,
    measure_command,
    polyarch_argv,
    python_env,
    report,
    run_command,
    temp_dir,
)

from polyarch.cache import Cache
from polyarch.config import find_config, load_config
from polyarch.workflows.resolve import Session, resolve_container


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, repetitions=5)
    parser.add_argument("--baseline-repetitions", type=int, default=1, metavar="N")
    parser.add_argument("--container", default="fd")
    parser.add_argument("--config", type=Path, default=ROOT / "containers.toml")
    args = parser.parse_args()
    n = args.repetitions

    config = load_config(find_config(args.config))
    container = config.container(args.container)
    systems = container.systems
    cli = polyarch_argv(
        "resolve", container.name, "--all-systems", "--json", "-f", str(config.path)
    )
    rows: list[Row] = []

    with temp_dir("resolve") as work:
        # Cold: every sample starts from an empty cache of its own.
        cold_caches = iter(range(n))
        current = {"cache": work / "cold-unused"}

        def new_cold_cache() -> None:
            current["cache"] = work / f"cold-{next(cold_caches)}"

        cold = measure(
            lambda: run_command(cli, env=python_env(POLYARCH_CACHE_DIR=str(current["cache"]))),
            n,
            setup=new_cold_cache,
        )
        warm_cache = current["cache"]  # the last cold run left a warm cache
        warm_env = python_env(POLYARCH_CACHE_DIR=str(warm_cache))
        closure = json.loads(run_command(cli, env=warm_env).stdout)
        sizes = {s: len(v["packages"]) for s, v in closure["systems"].items()}

        baseline = measure(
            lambda: mmdebstrap_simulate(work, container.package, [s.debian_arch for s in systems]),
            args.baseline_repetitions,
        )
        rows.append(
            Row(
                "cold-process",
                f"cold resolve {container.name}, {len(systems)} systems (process)",
                cold,
                baseline=baseline,
                baseline_what="mmdebstrap --simulate",
            )
        )
        rows.append(
            Row(
                "warm-process",
                f"warm resolve {container.name}, {len(systems)} systems (process)",
                measure_command(cli, n, env=warm_env),
                note="whole `polyarch resolve` process: interpreter start-up and imports included",
            )
        )

        def library_call() -> None:
            session = Session(config=config, cache=Cache(warm_cache))
            try:
                resolve_container(session, container, systems)
            finally:
                session.close()

        def release_only() -> None:
            session = Session(config=config, cache=Cache(warm_cache))
            try:
                session.archive.releases()  # every source's InRelease, verified
            finally:
                session.close()

        library_call()  # the first call in a process also pays for lazy imports
        library = measure(library_call, n)
        release = measure(release_only, n)
        rows.append(
            Row(
                "warm-library",
                f"warm resolve {container.name}, {len(systems)} systems (library call)",
                library,
                aim=Aim.below(0.5),
                note="new Session per sample: HTTP client, InRelease + signature, index load, resolve",
            )
        )
        rows.append(
            Row(
                "warm-library-release",
                "  of which: HTTP client + every source's InRelease + signature",
                release,
            )
        )
        rows.append(
            Row(
                "warm-library-resolve",
                "  of which: index load + resolve (both systems)",
                [max(0.0, a - b) for a, b in zip(sorted(library), sorted(release), strict=True)],
                note="sorted library samples minus sorted InRelease samples",
            )
        )

    report(
        "resolve",
        rows,
        json_path=args.json,
        command="python bench/resolve.py",
        extra={"closure_sizes": sizes},
    )
    return 0


def mmdebstrap_simulate(work: Path, package: str, arches: list[str]) -> None:
    """What apt needs to answer the same question: indexes fetched, closure solved, per arch."""
    mirror = debian_mirror(SUITE)
    for arch in arches:
        argv = ["mmdebstrap", "--quiet", "--simulate", "--variant=essential"]
        argv += [f"--include={package}", f"--architectures={arch}", SUITE, "/dev/null", mirror]
        run_command(argv, cwd=work)


if __name__ == "__main__":
    sys.exit(main())
