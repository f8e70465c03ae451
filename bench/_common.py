"""What every benchmark in bench/ shares: timing, rows, JSON output, and formatting.

A benchmark measures a list of ``Row``s and hands them to ``report``:

    rows = [Row("warm-resolve", "warm resolve", measure(work, 5), aim=Aim.below(0.5))]
    report("resolve", rows, json_path=args.json)

``measure`` times a Python callable in this process; ``measure_command`` times
a whole program (interpreter start-up included). Each takes ``repetitions``
samples and runs an untimed ``setup`` before each one (a fresh cache dir for a
cold run, say). Rows report the median; a row may carry a baseline (another
tool measured in the same run) and an aim, and the table shows the ratio
(baseline / ours: above 1 means polyarch is faster or smaller) and whether the
aim is met. ``--json FILE`` writes the same rows, samples included, under the
schema ``JSON_SCHEMA``; bench/run renders docs/BENCHMARKS.md from them.

``StageClock`` is a polyarch ``Progress`` that records when each task starts
and ends, so a build's stages are timed from what the library reports.

The formatters at the end are the only ones bench/ uses: the scripts' own
tables, bench/run's document and its plot all go through them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
JSON_SCHEMA = "polyarch.bench/v2"
SUITE = "bookworm"


@dataclass(frozen=True)
class Aim:
    """A target for a row: its median below a limit, or its ratio above one."""

    text: str
    check: Callable[[Row], bool]

    @classmethod
    def below(cls, limit: float, unit: str = "s") -> Aim:
        """The median must be below ``limit`` (in ``unit``, the row's)."""
        return cls(f"< {format_value(limit, unit)}", lambda row: row.median < limit)

    @classmethod
    def ratio_at_least(cls, ratio: float) -> Aim:
        """baseline median / our median must be at least ``ratio``."""
        return cls(f"ratio >= {ratio:g}", lambda row: (row.ratio or 0.0) >= ratio)

    @classmethod
    def cost_at_most(cls, fraction: float) -> Aim:
        """Our median may exceed the baseline's by at most ``fraction`` (0.2: 20 %)."""
        return cls(
            f"<= +{fraction:.0%} of baseline",
            lambda row: (row.ratio or 0.0) >= 1 / (1 + fraction),
        )


@dataclass
class Row:
    """One measured quantity: our samples, optionally a baseline's, optionally an aim.

    ``key`` names the row for the template (stable across runs; ``what`` is
    the label people read).
    """

    key: str
    what: str
    samples: list[float]
    baseline: list[float] = field(default_factory=list)
    baseline_what: str = ""
    unit: str = "s"
    """"s" for seconds, "B" for bytes, or anything else (shown after the number)."""
    aim: Aim | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def baseline_median(self) -> float | None:
        return statistics.median(self.baseline) if self.baseline else None

    @property
    def ratio(self) -> float | None:
        """Baseline median / our median: how many times faster (or smaller) we are."""
        base = self.baseline_median
        return base / self.median if base is not None and self.median > 0 else None

    @property
    def met(self) -> bool | None:
        return self.aim.check(self) if self.aim is not None else None

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "what": self.what,
            "unit": self.unit,
            "samples": self.samples,
            "median": self.median,
            "baseline_what": self.baseline_what or None,
            "baseline_samples": self.baseline,
            "baseline_median": self.baseline_median,
            "ratio": self.ratio,
            "aim": self.aim.text if self.aim else None,
            "met": self.met,
            "note": self.note or None,
        }


# --- measuring ----------------------------------------------------------------------------


def measure(
    work: Callable[[], object], repetitions: int, *, setup: Callable[[], object] | None = None
) -> list[float]:
    """Wall-clock seconds of ``work()``, ``repetitions`` times; ``setup()`` runs untimed before each."""
    samples: list[float] = []
    for _ in range(repetitions):
        if setup is not None:
            setup()
        start = time.perf_counter()
        work()
        samples.append(time.perf_counter() - start)
    return samples


def run_command(
    argv: Sequence[str | Path], *, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run a program to completion; a non-zero exit stops the benchmark with its stderr."""
    done = subprocess.run(
        [str(a) for a in argv], env=dict(env) if env else None, cwd=cwd, capture_output=True
    )
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace")[-2000:]
        raise SystemExit(f"benchmark command failed ({done.returncode}): {argv}\n{tail}")
    return done


def measure_command(
    argv: Sequence[str | Path],
    repetitions: int,
    *,
    setup: Callable[[], object] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> list[float]:
    """Wall-clock seconds of running ``argv`` as a process, ``repetitions`` times."""
    return measure(lambda: run_command(argv, env=env, cwd=cwd), repetitions, setup=setup)


def python_env(**extra: str) -> dict[str, str]:
    """The environment for timing ``python -m polyarch`` as a user runs it.

    Byte code is cached (in a temporary prefix, never in the checkout), as it
    is for an installed package: without it every run would first compile
    polyarch's modules. ``extra`` adds or overrides variables.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "polyarch-bench-pycache")
    env.update(extra)
    return env


def polyarch_argv(*args: str) -> list[str]:
    """``python -m polyarch ARGS`` with this interpreter."""
    return [sys.executable, "-m", "polyarch", *args]


@contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory, removed afterwards (named so a leftover says who made it)."""
    with tempfile.TemporaryDirectory(prefix=f"polyarch-bench-{prefix}-") as path:
        yield Path(path)


def tree_bytes(path: Path) -> int:
    """Bytes of the files under ``path``, each inode once (outputs hard-link the cache)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(directory, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def debian_mirror(suite: str = SUITE) -> str:
    """The Debian mirror of this host's apt sources (read at run time, never written down)."""
    from polyarch.config import RepositoryConfig
    from polyarch.debian.sources import find_source

    return find_source(RepositoryConfig(suite=suite)).url


class StageClock:
    """A polyarch ``Progress`` that times a build's stages from the tasks it reports.

    ``build_container`` reports ``index ...`` tasks while it resolves (cold),
    ``fetching N packages`` while it downloads, one ``layers`` task per system,
    then writes the outputs without a task. Cut at the first start of each
    stage, the build's wall time splits into resolve, fetch, layers and
    outputs, which add up to the whole.
    """

    STAGES = ("resolve", "fetch", "layers", "outputs")
    _TASK_STAGE = (("fetching ", "fetch"), ("layers", "layers"))

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.ended: float | None = None
        self._starts: dict[str, float] = {}
        self._ends: dict[str, float] = {}
        self._stage_of: dict[int, str] = {}
        self.warnings: list[str] = []

    def task(self, description: str, total: float | None = None) -> int:
        task_id = len(self._stage_of) + 1
        stage = next((s for p, s in self._TASK_STAGE if description.startswith(p)), "resolve")
        self._stage_of[task_id] = stage
        self._starts.setdefault(stage, time.perf_counter())
        return task_id

    def advance(self, task_id: int, amount: float = 1) -> None:
        pass

    def done(self, task_id: int) -> None:
        self._ends[self._stage_of[task_id]] = time.perf_counter()

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def info(self, message: str) -> None:
        pass

    def stop(self) -> None:
        self.ended = time.perf_counter()

    def seconds(self) -> dict[str, float]:
        """Seconds per stage; a stage with no task (fetch on a warm build) took 0."""
        assert self.ended is not None, "stop() the clock when the build returns"
        layers_start = self._starts.get("layers", self.ended)
        layers_end = self._ends.get("layers", layers_start)
        fetch_start = self._starts.get("fetch", layers_start)
        return {
            "resolve": fetch_start - self.started,
            "fetch": layers_start - fetch_start,
            "layers": layers_end - layers_start,
            "outputs": self.ended - layers_end,
        }


# --- reporting ----------------------------------------------------------------------------


def add_common_arguments(parser: argparse.ArgumentParser, *, repetitions: int) -> None:
    """``--repetitions N`` and ``--json FILE``."""
    parser.add_argument(
        "--repetitions",
        type=int,
        default=repetitions,
        metavar="N",
        help=f"samples per measurement; the median is reported (default {repetitions})",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the rows as JSON")


def report(
    name: str,
    rows: Sequence[Row],
    *,
    json_path: Path | None = None,
    command: str = "",
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Print the table; with ``json_path`` also write ``{schema, benchmark, rows, ...}``."""
    as_json = [row.as_json() for row in rows]
    print(f"benchmark: {name}" + (f"  ({command})" if command else ""))
    print(format_table(RESULT_HEADER, [result_cells(r) for r in as_json]))
    for row in as_json:
        if row["note"]:
            print(f"  {row['what'].strip()}: {row['note']}")
    if json_path is not None:
        document = {
            "schema": JSON_SCHEMA,
            "benchmark": name,
            "command": command or None,
            "rows": as_json,
            **(extra or {}),
        }
        json_path.write_text(json.dumps(document, indent=2) + "\n")


# --- formatting ---------------------------------------------------------------------------

RESULT_HEADER = ("what", "polyarch (median)", "baseline (median)", "ratio", "reps", "aim")


def format_seconds(value: float) -> str:
    if value >= 120:
        return f"{value / 60:.1f} min"
    if value >= 10:
        return f"{value:.1f} s"
    return f"{value:.2f} s" if value >= 1 else f"{value:.3f} s"


def format_size(n: float) -> str:
    """Bytes in decimal units: ``10.5 MB``."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def format_value(value: float | None, unit: str) -> str:
    """A row's number in its unit: seconds, bytes, or a bare number and unit."""
    if value is None:
        return "—"
    if unit == "s":
        return format_seconds(value)
    if unit == "B":
        return format_size(value)
    return f"{value:g} {unit}".strip()


def format_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "—"
    return f"{ratio:.1f}×" if ratio >= 1.95 else f"{ratio:.2f}×"


def result_cells(row: Mapping[str, Any]) -> list[str]:
    """One JSON row (``Row.as_json``) as the cells of ``RESULT_HEADER``."""
    unit = row["unit"]
    baseline = format_value(row["baseline_median"], unit)
    if row["baseline_what"] and row["baseline_median"] is not None:
        baseline += f" ({row['baseline_what']})"
    reps = str(len(row["samples"]))
    if row["baseline_samples"]:
        reps += f" / {len(row['baseline_samples'])}"
    aim = f"{row['aim']}: {'met' if row['met'] else 'MISSED'}" if row["aim"] else ""
    median = format_value(row["median"], unit)
    return [row["what"], median, baseline, format_ratio(row["ratio"]), reps, aim]


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, its columns padded so that it also reads as plain text."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [[cell(c) for c in header], *([cell(c) for c in row] for row in rows)]
    widths = [max(3, *(len(line[i]) for line in lines)) for i in range(len(header))]

    def join(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([join(lines[0]), join(["-" * w for w in widths]), *map(join, lines[1:])])
