"""Workflow benchmark (issue 4): ``polyarch all fd --multiarch`` with a warm cache.

    python bench/workflow.py [--json FILE] [--repetitions 3] [--container fd] [--engine docker|podman]

Runs the real command in this process (``polyarch.cli.main``) with timers
around the three stages, so the split comes from the command users run:

- build: ``build_container`` (every system: resolve, fetch, layers, outputs);
- load: every call to the engine that puts images in or names them (load,
  tag, untag, image_id, remove_image);
- test: every ``run`` of a container (the native one directly, the foreign
  one under qemu-user through binfmt_misc);
- other: the rest (engine detection, emulation checks, tables).

A first run fills the cache (not counted); then ``--repetitions`` timed runs, median
per stage. The whole command as a process is timed as well (interpreter
start-up included). The engine is polyarch's default (docker when its daemon
answers, else podman) unless ``--engine`` says otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _common import (
    ROOT,
    Row,
    add_common_arguments,
    measure_command,
    polyarch_argv,
    python_env,
    report,
)

STAGES = ("build", "load", "test")
TEST_PARTS = ("test native", "test foreign (qemu)")
LOAD_METHODS = ("load", "tag", "untag", "image_id", "remove_image")


class StageClock:
    """Wall time spent inside the wrapped functions, per stage; nested calls count once."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys((*STAGES, *TEST_PARTS), 0.0)
        self._depth = 0

    def wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return fn(*args, **kwargs)
            self._depth += 1
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                self.seconds[stage] += elapsed
                if stage == "test":
                    # The engine is told the platform only for a foreign image.
                    part = TEST_PARTS[1] if kwargs.get("platform") else TEST_PARTS[0]
                    self.seconds[part] += elapsed
                self._depth -= 1

        return timed


@contextmanager
def stage_timers(clock: StageClock) -> Iterator[None]:
    """Patch the build entry point the CLI calls and the engine's methods."""
    import polyarch.cli.run as cli_run
    from polyarch.engine import Engine

    patches: list[tuple[object, str, object]] = [
        # The name `polyarch all` calls, where it calls it (imported into polyarch.cli.run).
        (cli_run, "build_container", clock.wrap("build", cli_run.build_container)),  # type: ignore[attr-defined]
        (Engine, "run", clock.wrap("test", Engine.run)),
    ]
    patches += [(Engine, m, clock.wrap("load", getattr(Engine, m))) for m in LOAD_METHODS]
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, value in patches:
        setattr(owner, name, value)
    try:
        yield
    finally:
        for owner, name, value in originals:
            setattr(owner, name, value)


def polyarch_args(container: str, config: Path, out: Path, engine: str | None) -> list[str]:
    args = ["-q", "-f", str(config), "all", container, "--multiarch", "--out", str(out)]
    return [*args, "--engine", engine] if engine else args


def run_in_process(args: Sequence[str]) -> dict[str, float]:
    """One ``polyarch all`` in this process; seconds per stage plus total and other."""
    from polyarch.cli import main

    clock = StageClock()
    output = io.StringIO()
    started = time.perf_counter()
    with stage_timers(clock), contextlib.redirect_stdout(output):
        code = main(list(args))
    total = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"polyarch {' '.join(args)} exited {code}:\n{output.getvalue()}")
    result = dict(clock.seconds)
    result["total"] = total
    result["other"] = total - sum(clock.seconds[s] for s in STAGES)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, repetitions=3)
    parser.add_argument("--container", default="fd")
    parser.add_argument("--config", default=str(ROOT / "containers.toml"))
    parser.add_argument("--engine", choices=["docker", "podman"])
    parser.add_argument("--cache-dir", help="polyarch cache (default: a temp dir, filled first)")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="polyarch-bench-workflow-"))
    cache = Path(args.cache_dir) if args.cache_dir else work / "cache"
    # The CLI reads its cache from the environment when it parses its arguments.
    os.environ["POLYARCH_CACHE_DIR"] = str(cache)
    poly_args = polyarch_args(args.container, Path(args.config), work / "out", args.engine)
    try:
        run_in_process(poly_args)  # warm-up: fills the cache, not counted
        runs = [run_in_process(poly_args) for _ in range(args.repetitions)]
        process = measure_command(
            polyarch_argv(*poly_args),
            args.repetitions,
            env=python_env(POLYARCH_CACHE_DIR=str(cache)),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    parts = (*STAGES, *TEST_PARTS, "other", "total")
    medians = {k: statistics.median(r[k] for r in runs) for k in parts}
    dominant = max(STAGES, key=lambda s: medians[s])
    command = f"polyarch all {args.container} --multiarch"
    rows = [
        Row(
            f"workflow: {command}, warm, as a process",
            process,
            note="interpreter start-up included",
        )
    ]
    for stage in (*STAGES, *TEST_PARTS, "other"):
        share = medians[stage] / medians["total"]
        label = f"  of which {stage}" if stage in TEST_PARTS else f"workflow: {stage}"
        rows.append(
            Row(
                label,
                [r[stage] for r in runs],
                note=f"{share:.0%} of the in-process total, dominates" if stage == dominant else "",
            )
        )
    report(
        "workflow",
        rows,
        json_path=args.json,
        command=command,
        extra={
            "runs": runs,
            "process_seconds": process,
            "median_seconds": medians,
            "dominant": dominant,
        },
    )
    print(f"workflow: {dominant} dominates ({medians[dominant] / medians['total']:.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
