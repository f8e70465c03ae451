"""plan: many containers × systems split into shards a CI matrix runs, then the assembly.

A *unit* is one container on one system. Its estimated cost is in bytes of
work, from its layer plan (the lock or the indexes say which .debs make each
layer, and how big they are) and the cache state (the local cache, and the
shared one in a registry with ``cache=``):

- a layer no cache holds costs the size of its .debs (download, decompress,
  build, compress); the closure-wide generated layer a quarter of the closure;
- a cached layer costs ``CACHED_SHARE`` of that (copied into the outputs);
- every unit costs ``UNIT_COST`` more (configs, manifests, evidence, outputs).

Shards group units so their costs are even: with at least as many shards as
systems, each shard holds one system (so it runs on that system's native
runner) and each system gets shards in proportion to its cost; with fewer,
shards hold containers for all their systems. Units go, largest first, to the
shard they make cheapest, counting a layer two units share once (within a
shard it is built once): a greedy longest-processing-time packing.

The shards are ``include:`` entries of a CI matrix; ``assemble`` names, per
container, the shards whose pushed images ``manifest --assemble`` puts in one
index (docs/SCALE.md, schema in docs/JSON.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyarch.cache import Kind
from polyarch.config import Container
from polyarch.determinism import source_date_epoch
from polyarch.errors import UsageError
from polyarch.image.layers import layer_key
from polyarch.platforms import SYSTEMS, System
from polyarch.schemas import PLAN as PLAN_SCHEMA
from polyarch.workflows.build import layer_plans
from polyarch.workflows.resolve import Session, resolve_container

UNIT_COST = 1 << 20
"""Bytes of work a unit costs even when every layer is cached (outputs, evidence)."""
CACHED_SHARE = 0.05
"""What a cached layer costs, as a share of building it."""
GENERATED_SHARE = 0.25
"""What the closure-wide generated layer costs, as a share of the closure's .debs."""
NATIVE_RUNNERS: Mapping[str, str] = {
    "x86_64-linux": "ubuntu-24.04",
    "i686-linux": "ubuntu-24.04",
    "aarch64-linux": "ubuntu-24.04-arm",
}
"""GitHub-hosted runners whose CPU runs the system's binaries (the arm64 runners have
no AArch32, so armv7l is emulated). Other CIs map ``systems`` to their own machines."""
DEFAULT_RUNNER = "ubuntu-24.04"
"""Where a system without a native runner builds (any system builds anywhere) and is
tested under qemu-user."""


@dataclass(frozen=True, slots=True)
class Unit:
    """One container on one system, with what it would cost to build now."""

    container: str
    system: System
    closure_bytes: int
    layers: Mapping[str, int]
    """Layer key → its cost (built, or cached)."""
    cached: int
    """How many of its layers a cache holds."""

    @property
    def cost(self) -> int:
        return UNIT_COST + sum(self.layers.values())


@dataclass(frozen=True, slots=True)
class Shard:
    """Units one CI job builds: ``containers`` for each of ``systems``."""

    id: str
    systems: tuple[System, ...]
    containers: tuple[str, ...]
    units: tuple[Unit, ...]
    cost: int
    """Its units' costs, each layer they share counted once."""
    runner: str
    emulate: bool
    """A system of the shard does not run natively on ``runner`` (tests need qemu-user)."""


@dataclass(frozen=True, slots=True)
class Plan:
    shards: tuple[Shard, ...]
    lock_sha256: str | None = None
    cache: str | None = None
    """The shared cache read for the cache state, if any."""
    cache_layers: int = 0
    """Layers that shared cache lists."""


@dataclass
class _Bin:
    items: list[list[Unit]] = field(default_factory=list)
    keys: dict[str, int] = field(default_factory=dict)
    units: int = 0

    @property
    def cost(self) -> int:
        return self.units * UNIT_COST + sum(self.keys.values())

    def marginal(self, item: Sequence[Unit]) -> int:
        new = {k: c for u in item for k, c in u.layers.items() if k not in self.keys}
        return len(item) * UNIT_COST + sum(new.values())

    def add(self, item: list[Unit]) -> None:
        self.items.append(item)
        self.units += len(item)
        for unit in item:
            self.keys.update(unit.layers)


def plan_units(
    session: Session,
    containers: Sequence[Container],
    systems: Sequence[System] | None,
    *,
    cached_keys: Iterable[str] = (),
) -> list[Unit]:
    """Every (container, system) to build, costed; ``cached_keys`` are layer keys a shared
    cache lists (besides the local cache). ``systems`` None: each container's own."""
    shared = set(cached_keys)
    epoch = source_date_epoch()
    units = []
    for container in containers:
        chosen = [s for s in container.systems if systems is None or s in systems]
        resolutions = resolve_container(session, container, chosen)
        plans = layer_plans(session, container, resolutions)
        for system in sorted(resolutions, key=SYSTEMS.index):
            sizes = {p.record.sha256: p.record.size for p in resolutions[system].packages}
            closure = [p for layer in plans[system] for p in layer.packages]
            layers: dict[str, int] = {}
            cached = 0
            for layer in plans[system]:
                key = layer_key(layer, closure, epoch=epoch, keep_docs=container.keep_docs)
                work = sum(sizes.get(sha, 0) for _n, sha in layer.packages)
                if layer.generated:
                    work += int(GENERATED_SHARE * sum(sizes.values()))
                hit = key in shared or session.cache.get(Kind.LAYERS, key) is not None
                cached += hit
                layers[key] = int(work * CACHED_SHARE) if hit else work
            units.append(Unit(container.name, system, sum(sizes.values()), layers, cached))
    if not units:
        raise UsageError(
            "nothing to plan: no container is configured for these systems",
            hint="check --systems against the containers' systems",
        )
    return units


def make_plan(
    units: Sequence[Unit],
    shards: int | None = None,
    *,
    runners: Mapping[str, str] | None = None,
    lock_sha256: str | None = None,
    cache: str | None = None,
    cache_layers: int = 0,
) -> Plan:
    """Group ``units`` into ``shards`` shards (None or 0: one per system) of even cost."""
    systems = sorted({u.system for u in units}, key=SYSTEMS.index)
    wanted = shards or len(systems)
    if wanted < 1:
        raise UsageError("--shards must be at least 1 (0: one per system)")
    groups: dict[tuple[System, ...], list[list[Unit]]]
    if wanted >= len(systems):
        groups = {(s,): [[u] for u in units if u.system == s] for s in systems}
    else:
        groups = _by_container(units)
    counts = _apportion(wanted, {k: sum(u.cost for i in v for u in i) for k, v in groups.items()})
    made: list[Shard] = []
    for key in sorted(groups, key=lambda k: [SYSTEMS.index(s) for s in k]):
        for box in _pack(groups[key], counts[key]):
            made.append(_shard(str(len(made) + 1), key, box, runners or {}))
    return Plan(tuple(made), lock_sha256, cache, cache_layers)


def _by_container(units: Sequence[Unit]) -> dict[tuple[System, ...], list[list[Unit]]]:
    """Each container's units as one item, grouped by the systems it has (a shard builds
    every one of its containers for every one of its systems)."""
    per: dict[str, list[Unit]] = {}
    for u in units:
        per.setdefault(u.container, []).append(u)
    groups: dict[tuple[System, ...], list[list[Unit]]] = {}
    for item in per.values():
        key = tuple(sorted({u.system for u in item}, key=SYSTEMS.index))
        groups.setdefault(key, []).append(item)
    return groups


def _apportion(total: int, costs: Mapping[Any, int]) -> dict[Any, int]:
    """``total`` shards over the groups by cost (D'Hondt), at least one each."""
    counts = dict.fromkeys(costs, 1)
    for _ in range(max(total - len(costs), 0)):
        best = max(costs, key=lambda k: (costs[k] / (counts[k] + 1), -list(costs).index(k)))
        counts[best] += 1
    return counts


def _pack(items: Sequence[list[Unit]], count: int) -> list[_Bin]:
    """Largest first, each into the bin it makes cheapest; empty bins dropped."""
    bins = [_Bin() for _ in range(max(min(count, len(items)), 1))]
    for item in sorted(items, key=lambda i: (-sum(u.cost for u in i), i[0].container)):
        best = min(range(len(bins)), key=lambda b: (bins[b].cost + bins[b].marginal(item), b))
        bins[best].add(item)
    return [b for b in bins if b.items]


def _shard(id: str, systems: tuple[System, ...], box: _Bin, runners: Mapping[str, str]) -> Shard:
    units = tuple(u for item in box.items for u in item)
    containers = tuple(sorted({u.container for u in units}))
    table = {**NATIVE_RUNNERS, **runners}
    runner = table.get(systems[0].name, DEFAULT_RUNNER) if len(systems) == 1 else DEFAULT_RUNNER
    emulate = any(
        table.get(s.name, DEFAULT_RUNNER) != runner or s.name not in table for s in systems
    )
    return Shard(id, systems, containers, units, box.cost, runner, emulate)


def lock_digest(path: Path) -> str | None:
    """The SHA256 of containers.lock, so every shard can tell it builds the planned lock."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def plan_json(plan: Plan) -> dict[str, Any]:
    """The plan as ``polyarch plan --json`` prints it (schema ``polyarch.plan/v1``)."""
    costs = [s.cost for s in plan.shards]
    assemble: dict[str, dict[str, Any]] = {}
    for shard in plan.shards:
        for u in shard.units:
            entry = assemble.setdefault(
                u.container, {"container": u.container, "systems": [], "shards": []}
            )
            entry["systems"].append(u.system)
            if shard.id not in entry["shards"]:
                entry["shards"].append(shard.id)
    return {
        "schema": PLAN_SCHEMA,
        "shards": len(plan.shards),
        "matrix": {"include": [_matrix_entry(s, len(plan.shards)) for s in plan.shards]},
        "assemble": [
            {**e, "systems": [s.name for s in sorted(e["systems"], key=SYSTEMS.index)]}
            for _name, e in sorted(assemble.items())
        ],
        "units": [
            {
                "container": u.container,
                "system": u.system.name,
                "shard": s.id,
                "cost": u.cost,
                "closure_bytes": u.closure_bytes,
                "layers": len(u.layers),
                "cached_layers": u.cached,
            }
            for s in plan.shards
            for u in s.units
        ],
        "estimate": {
            "total_cost": sum(u.cost for s in plan.shards for u in s.units),
            "largest_shard_cost": max(costs),
            "balance": round(max(costs) * len(costs) / sum(costs), 3),
        },
        "lock_sha256": plan.lock_sha256,
        "cache": {"reference": plan.cache, "layers": plan.cache_layers} if plan.cache else None,
    }


def _matrix_entry(shard: Shard, total: int) -> dict[str, Any]:
    systems = ",".join(s.name for s in shard.systems)
    return {
        "shard": shard.id,
        "name": f"{shard.id}/{total} {systems} ({len(shard.containers)} containers)",
        "systems": systems,
        "containers": " ".join(shard.containers),
        "runner": shard.runner,
        "emulate": shard.emulate,
        "cost": shard.cost,
    }
