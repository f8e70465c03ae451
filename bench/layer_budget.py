"""Which ``max_layers`` by default (issue 18): the layer plans of a real project, budget by budget.

    python bench/layer_budget.py [--json FILE] [--tools bench/tools.txt] [--scale-count 30]
                                 [--budgets 6,8,12,16,24,100] [--large r-cran-littler,...]

No image is built: every container of two projects is resolved against
the archive (both systems), and polyarch's own planner (``plan_layers``,
with the project's sharing from ``workflows.sharing``) plans its layers
under each budget. A layer's bytes are modelled by its packages' .deb
sizes, which is what makes the figures cheap; bench/layers.py measures
real layers, pushes and loads for the default.

- the scale set (the first ``--scale-count`` tools of bench/tools.txt):
  bytes a registry stores (each distinct layer once) against one layer per
  package, and layers per image;
- the scale set plus the large tools (``--large``): for each large tool
  on the native system, the bytes an engine on vfs copies while loading
  it (each layer starts as a copy of those below it) against one layer
  per package (``max_layers = 100``, the policy before).

The default must keep the registry within 10 % of one layer per package
(issue 18); below it, fewer layers copy less on vfs and cost fewer requests.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import ROOT, Aim, Row, add_common_arguments, report
from scale import SYSTEMS, Tool, read_tools, write_config

from polyarch.cache import Cache, default_cache_dir
from polyarch.config import load_config
from polyarch.image.layer_plan import DEFAULT_MAX_LAYERS, LayerPlan, plan_layers, plan_per_package
from polyarch.platforms import native_system, parse_system
from polyarch.workflows.resolve import Session, resolve_container
from polyarch.workflows.sharing import project_users

LARGE = "r-cran-littler:r,emacs-gtk:emacs,guestfish:guestfish"
BEFORE = 0
"""The budget key of the policy before: one layer per package, ``max_layers = 100``."""

# (system, container) → its layers, each as (what identifies it, its modelled bytes)
Plans = dict[tuple[str, str], list[tuple[tuple[Any, ...], int]]]


def plan_project(
    tools: Sequence[Tool], budgets: Sequence[int], cache: Path, work: Path
) -> dict[int, Plans]:
    """Every container's layers on every system, for each budget and for the policy before."""
    config = load_config(write_config(work, tools))
    session = Session(config=config, cache=Cache(cache))
    found: dict[int, Plans] = {b: {} for b in (BEFORE, *budgets)}
    try:
        for name in SYSTEMS:
            system = parse_system(name)
            users_of = project_users(session, system)
            for container in config.containers:
                packages = resolve_container(session, container, [system])[system].packages
                sizes = {p.record.sha256: p.record.size for p in packages}
                key = (name, container.name)
                found[BEFORE][key] = _model(plan_per_package(packages, 100), sizes, key)
                for budget in budgets:
                    plans = plan_layers(
                        packages, budget, users_of=users_of, container=container.name
                    )
                    found[budget][key] = _model(plans, sizes, key)
    finally:
        session.close()
    return found


def _model(
    plans: Sequence[LayerPlan], sizes: dict[str, int], image: tuple[str, str]
) -> list[tuple[tuple[Any, ...], int]]:
    """Each layer as what identifies it and its bytes; the generated layer is the image's own."""
    return [
        ((plan.packages, plan.skeleton, image if plan.generated else None),
         sum(sizes[sha] for _, sha in plan.packages))
        for plan in plans
    ]  # fmt: skip


def stored_bytes(plans: Plans) -> int:
    """What a registry stores for all images: each distinct layer once."""
    distinct = {layer: size for layers in plans.values() for layer, size in layers}
    return sum(distinct.values())


def vfs_copied(layers: Sequence[tuple[Any, int]]) -> int:
    """Bytes an engine on vfs copies to load an image: each layer starts as a copy of all below."""
    below = copied = 0
    for _, size in layers:
        copied += below
        below += size
    return copied


def rows_of(scale: dict[int, Plans], large: dict[int, Plans], tools: Sequence[Tool]) -> list[Row]:
    rows: list[Row] = []
    native = native_system().name
    base_stored = stored_bytes(scale[BEFORE])
    for budget, plans in scale.items():
        if budget == BEFORE:
            continue
        counts = [len(layers) for layers in plans.values()]
        default = budget == DEFAULT_MAX_LAYERS
        mark = " (the default)" if default else ""
        rows += [
            Row(f"stored-{budget}", f"budget {budget}{mark}: registry stores the scale set (.deb bytes)",
                [stored_bytes(plans)], [base_stored], "one layer per package", unit="B",
                aim=Aim.ratio_at_least(1 / 1.1) if default else None),
            Row(f"layers-max-{budget}", f"budget {budget}{mark}: layers per image, most",
                [max(counts)], [max(len(v) for v in scale[BEFORE].values())],
                "one layer per package", unit="layers"),
            Row(f"layers-mean-{budget}", f"budget {budget}{mark}: layers per image, mean",
                [round(statistics.mean(counts), 1)],
                [round(statistics.mean(len(v) for v in scale[BEFORE].values()), 1)],
                "one layer per package", unit="layers"),
        ]  # fmt: skip
        for tool in tools:
            key = (native, tool.package)
            rows.append(Row(f"vfs-{budget}-{tool.package}",
                            f"budget {budget}{mark}: vfs copies loading {tool.package} (.deb bytes)",
                            [vfs_copied(large[budget][key])], [vfs_copied(large[BEFORE][key])],
                            "one layer per package", unit="B"))  # fmt: skip
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, repetitions=1)
    parser.add_argument("--tools", default=str(ROOT / "bench" / "tools.txt"))
    parser.add_argument("--scale-count", type=int, default=30)
    parser.add_argument("--budgets", default="6,8,12,16,24,100")
    parser.add_argument("--large", default=LARGE, help="PACKAGE:COMMAND,... (loaded on vfs)")
    parser.add_argument("--cache", help="a polyarch cache (indexes; default: the user's)")
    args = parser.parse_args(argv)
    budgets = sorted({int(b) for b in args.budgets.split(",")})
    tools = read_tools(Path(args.tools))[: args.scale_count]
    large = [Tool(*item.split(":", 1)) for item in args.large.split(",") if item]
    cache = Path(args.cache) if args.cache else default_cache_dir()
    with tempfile.TemporaryDirectory(prefix="polyarch-bench-budget-") as work:
        scale = plan_project(tools, budgets, cache, Path(work) / "scale")
        more = [t for t in large if t not in tools]
        with_large = plan_project([*tools, *more], budgets, cache, Path(work) / "large")
    extra = {"budgets": budgets, "scale_count": len(tools)}
    rows = rows_of(scale, with_large, large)
    report("layer_budget", rows, json_path=args.json, command="python bench/layer_budget.py",
           extra=extra)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
