"""Plot build time against the number of tool containers (issue 7), from bench/scale.py's JSON.

    python bench/plot.py SCALE_JSON OUT_PNG

Three lines: polyarch cold (empty cache, one run per point), polyarch warm
(median), and the mmdebstrap baseline, drawn dashed because it is the
measured per-container time × n (a linear extrapolation of a few samples).
Needs matplotlib (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import format_seconds


def plot_scale(scale: dict[str, Any], out: Path) -> None:
    """Write the PNG for one bench/scale.py result."""
    import matplotlib

    matplotlib.use("Agg")  # no display; a file only
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    poly = scale["polyarch"]
    counts = [int(n) for n in poly["counts"]]
    cold = [poly["cold_seconds"][str(n)] for n in counts]
    warm = [poly["warm_median_seconds"][str(n)] for n in counts]

    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    ax.plot(counts, cold, "o-", color="#1f77b4", label="polyarch, cold cache (downloads included)")
    ax.plot(
        counts,
        warm,
        "s-",
        color="#2ca02c",
        label=f"polyarch, warm cache (median of {poly['runs']})",
    )
    baseline = scale.get("baseline")
    if baseline:
        per = baseline["seconds_per_container"]
        ax.plot(
            counts,
            [per * n for n in counts],
            "^--",
            color="#d62728",
            label="mmdebstrap essential + tool, every system (extrapolated: one container × n)",
        )
    tops = [*cold, *warm]
    if baseline:
        tops.append(baseline["seconds_per_container"] * max(counts))
    ax.set_ylim(min(warm) / 2.2, max(tops) * 2.5)  # room for the labels above the points
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(counts, [str(n) for n in counts])
    ax.minorticks_off()
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel(f"tool containers built (each for {' and '.join(scale['systems'])})")
    ax.set_ylabel("total build time (s, log scale)")
    ax.set_title("Build time vs number of containers")
    labels = [(x, y, (6, -12)) for line in (cold, warm) for x, y in zip(counts, line, strict=True)]
    if baseline:
        labels += [(n, baseline["seconds_per_container"] * n, (-14, 7)) for n in counts]
    for x, y, offset in labels:
        ax.annotate(
            format_seconds(y), (x, y), textcoords="offset points", xytext=offset, fontsize=8
        )
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False)
    fig.tight_layout()
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    data = json.loads(Path(args[0]).read_text())
    # Accept bench/scale.py's own JSON or bench/run's merged one.
    scale = data.get("benchmarks", {}).get("scale", data)
    plot_scale(scale, Path(args[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
