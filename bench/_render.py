"""docs/BENCHMARKS.md from one bench/run: the template bench/BENCHMARKS.md.j2 filled from JSON.

    render(run) -> str

``run`` is what bench/run writes to bench-run.json: ``started``,
``total_seconds``, ``machine``, ``quick`` and ``benchmarks`` (each script's
JSON, with ``status`` "ok" or "failed" and ``seconds``). Every word of the
document is in the template; this module only hands it the data and the
formatters of bench/_common.py. A missing value is an error
(``StrictUndefined``), never an empty cell.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
from _common import (
    RESULT_HEADER,
    format_ratio,
    format_seconds,
    format_size,
    format_table,
    format_value,
    result_cells,
)

TEMPLATE = Path(__file__).with_name("BENCHMARKS.md.j2")


def environment(directory: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # Markdown, not HTML
    )
    env.filters.update(
        seconds=format_seconds,
        size=format_size,
        ratio=format_ratio,
        percent=lambda share: f"{share:.0%}",
        value=lambda row: format_value(row["median"], row["unit"]) if row else "—",
        median=statistics.median,
    )
    env.globals["table"] = format_table
    return env


def render(run: Mapping[str, Any], template: Path = TEMPLATE) -> str:
    """The document for one run."""
    benchmarks: Mapping[str, Mapping[str, Any]] = run["benchmarks"]
    ok = {name: data for name, data in benchmarks.items() if data["status"] == "ok"}
    rows = [row for data in ok.values() for row in data["rows"]]

    def row(benchmark: str, key: str) -> Mapping[str, Any] | None:
        """One row by its key, or None when that benchmark did not run or has no such row."""
        found = [r for r in ok.get(benchmark, {}).get("rows", []) if r["key"] == key]
        return found[0] if found else None

    return (
        environment(template.parent)
        .get_template(template.name)
        .render(
            run=run,
            machine=run["machine"],
            ok=ok,
            failed={n: d["reason"] for n, d in benchmarks.items() if d["status"] != "ok"},
            rows=rows,
            results=format_table(RESULT_HEADER, [result_cells(r) for r in rows]),
            row=row,
            raw_json=json.dumps(run, indent=1),
        )
    )
