"""What every benchmark in bench/ shares: timing, the result table, JSON output.

A benchmark measures a list of ``Row``s and hands them to ``report``:

    rows = [Row("warm resolve", measure(work, 5), aim=Aim.below(0.5))]
    report("resolve", rows, json_path=args.json)

``measure`` times a Python callable in this process; ``measure_command`` times
a whole program (interpreter start-up included). Each takes ``repetitions``
samples and runs an untimed ``setup`` before each one (a fresh cache dir for a
cold run, say). Rows report the median; a row may carry a baseline (another
tool measured in the same run) and an aim, and the table shows the ratio
(baseline / ours: above 1 means polyarch is faster or smaller) and whether the
aim is met. ``--json FILE`` writes the same rows, samples included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
JSON_SCHEMA = "polyarch.bench/v1"


@dataclass(frozen=True)
class Aim:
    """A target for a row: its median below a limit, or its ratio above one."""

    text: str
    check: Callable[[Row], bool]

    @classmethod
    def below(cls, limit: float) -> Aim:
        """The median must be below ``limit`` (in the row's unit)."""
        return cls(f"< {limit:g}", lambda row: row.median < limit)

    @classmethod
    def ratio_at_least(cls, ratio: float) -> Aim:
        """baseline median / our median must be at least ``ratio``."""
        return cls(f"ratio >= {ratio:g}", lambda row: (row.ratio or 0.0) >= ratio)


@dataclass
class Row:
    """One measured quantity: our samples, optionally a baseline's, optionally an aim."""

    what: str
    samples: list[float]
    baseline: list[float] = field(default_factory=list)
    baseline_what: str = ""
    unit: str = "s"
    """"s" for seconds, "MB" for sizes (10**6 bytes), or anything else."""
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


def debian_mirror(suite: str = "bookworm") -> str:
    """The Debian mirror of this host's apt sources (read at run time, never written down)."""
    from polyarch.config import RepositoryConfig
    from polyarch.debian.sources import find_source

    return find_source(RepositoryConfig(suite=suite)).url


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


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    return f"{value:.1f} {unit}"


def format_table(title: str, rows: Sequence[Row]) -> str:
    """The rows as a plain-text table: what, median, baseline median, ratio, n, aim."""
    header = ("what", "median", "baseline median", "ratio", "n", "aim")
    lines = [header]
    for row in rows:
        ratio = row.ratio
        met = row.met
        aim = f"{row.aim.text} {'ok' if met else 'MISSED'}" if row.aim else ""
        baseline = _number(row.baseline_median, row.unit)
        if row.baseline_what and row.baseline:
            baseline += f" ({row.baseline_what})"
        lines.append(
            (
                row.what,
                _number(row.median, row.unit),
                baseline,
                f"{ratio:.1f}x" if ratio is not None else "-",
                f"{len(row.samples)}/{len(row.baseline)}"
                if row.baseline
                else str(len(row.samples)),
                aim,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [title]
    for n, line in enumerate(lines):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    notes = [f"  {row.what}: {row.note}" for row in rows if row.note]
    if notes:
        out += ["notes:", *notes]
    return "\n".join(out)


def report(
    name: str,
    rows: Sequence[Row],
    *,
    json_path: Path | None = None,
    command: str = "",
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Print the table; with ``json_path`` also write ``{schema, benchmark, host, rows, ...}``."""
    print(format_table(f"benchmark: {name}" + (f"  ({command})" if command else ""), rows))
    if json_path is not None:
        document = {
            "schema": JSON_SCHEMA,
            "benchmark": name,
            "command": command or None,
            "host": {
                "machine": platform.machine(),
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            },
            "rows": [row.as_json() for row in rows],
            **(extra or {}),
        }
        json_path.write_text(json.dumps(document, indent=2) + "\n")
