"""Which package goes in which layer: the plan of one system's image, before any byte is read.

A layer serves three masters. Sharing wants one layer per package (a
registry stores each once). Loading wants few layers: an engine on vfs
storage copies every layer below each new one, and any engine pays per
layer. Pulling wants few requests. The default policy (``shared``) gives
each what matters to it, from bottom to top:

1. **base**: the skeleton (a few kB, its own layer: the same in every
   image of every system), then the base closure (bash, coreutils and what
   they need: the same packages in every image of a system), cut into a
   few layers of about ``BASE_TARGET_BYTES``. Byte-identical in every
   image of the system, whatever the project.
2. **shared**: packages other containers of the project use too, grouped
   by exactly *which* containers use them (Nix's popularity layering,
   made lossless): packages used by the same set of containers always
   appear together, so merging them costs no sharing at all. A group
   smaller than ``SHARED_MIN_BYTES`` is not worth a layer of its own; such
   packages share one layer per image (``small``).
3. **own**: the packages only this container uses, cut into layers of
   about ``LAYER_TARGET_BYTES``.
4. the generated entries (passwd, alternatives, CA bundle) on top.

Cuts are content-defined, so they stay put: walking a group in name order,
a layer ends after a package with probability ``size / target``, decided
by a hash of the package's *name*. A new version of a package (a security
update) changes only the layers that hold it, and a package joining or
leaving a group moves at most the cut beside it. Which containers use a
package comes from the whole project (``workflows.sharing``), so a build
of one container gives the same layers as a build of all. Between base
and the generated layer, layers go smallest first: on vfs each layer
copies those below it, so the big ones belong on top (order changes no
layer's bytes).

``max_layers`` bounds the count: over it, the smallest shared groups join
``small`` first, then own layers merge, then the rest (``fit_budget``).
``per-package`` (the policy before) gives each package its own layer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

from polyarch.errors import ImageError

SKELETON_NAME = "(filesystem)"
GENERATED_NAME = "(generated)"

Layering = Literal["shared", "per-package"]
LAYERINGS: tuple[Layering, ...] = get_args(Layering)
DEFAULT_LAYERING: Layering = "shared"
DEFAULT_MAX_LAYERS = 16
"""The layer budget: the smallest that keeps a 30-tool project's registry within 10 % of
one layer per package (bench/layer_budget.py); bench/layers.py measures its pushes and its
loads on vfs storage."""

LAYER_TARGET_BYTES = 32_000_000
"""Average .deb bytes per merged shared or own layer: big tools get a few layers
(emacs-gtk: 6, not 100), small ones one; measured in bench/layers.py."""
BASE_TARGET_BYTES = 4_000_000
"""Average .deb bytes per base layer: bookworm's base closure (~7 MB) gives two or
three, so a glibc update re-sends about a third of the base, not all of it."""
SHARED_MIN_BYTES = 256_000
"""A group of shared packages smaller than this goes to the image's ``small``
layer: a layer (a request, a vfs copy) costs more than the bytes it would share."""


class PackageLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def size(self) -> int: ...


class ResolvedPackageLike(Protocol):
    """What planning needs of the resolver's ``ResolvedPackage``."""

    @property
    def record(self) -> PackageLike: ...
    @property
    def base(self) -> bool: ...


UsersOf = Callable[[str], frozenset[str]]
"""Package name → the containers of the project (on this system) whose closure holds it."""


@dataclass(frozen=True)
class LayerPlan:
    """What one layer holds, bottom to top: the skeleton, packages, the generated entries."""

    packages: tuple[tuple[str, str], ...] = ()
    """(name, sha256 hex) of each package, in layer order (later wins a path)."""
    skeleton: bool = False
    generated: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        """What is inside, for annotations and tables."""
        return (
            ((SKELETON_NAME,) if self.skeleton else ())
            + tuple(name for name, _ in self.packages)
            + ((GENERATED_NAME,) if self.generated else ())
        )


Tier = Literal["base", "shared", "small", "own"]


@dataclass(frozen=True)
class _Group:
    """A planned layer before it becomes a ``LayerPlan``: its tier and its packages by name."""

    tier: Tier
    packages: tuple[PackageLike, ...]

    @property
    def size(self) -> int:
        return sum(p.size for p in self.packages)

    def merged(self, other: _Group) -> _Group:
        return _Group(self.tier, _by_name([*self.packages, *other.packages]))


def plan_layers(
    packages: Sequence[ResolvedPackageLike],
    max_layers: int,
    *,
    users_of: UsersOf | None = None,
    container: str = "",
    layering: Layering = "shared",
) -> list[LayerPlan]:
    """Group a system's closure into at most ``max_layers`` layers (module docstring).

    ``users_of`` says which containers of the project use a package; without
    it every package outside the base counts as the container's own.
    """
    if max_layers < 2:
        raise ImageError(f"max_layers is {max_layers}", hint="set max_layers to 2 or more")
    if layering == "per-package":
        return plan_per_package(packages, max_layers)
    base, rest = _split(packages)
    classes: dict[frozenset[str], list[PackageLike]] = {}
    own: list[PackageLike] = []
    for p in rest:
        users = (users_of(p.name) if users_of else frozenset()) | {container}
        if len(users) > 1:
            classes.setdefault(users, []).append(p)
        else:
            own.append(p)
    shared = [_Group("shared", _by_name(c)) for c in classes.values()]
    small = [p for g in shared if g.size < SHARED_MIN_BYTES for p in g.packages]
    shared = [g for g in shared if g.size >= SHARED_MIN_BYTES]
    if max_layers == 2:  # no room for the skeleton's own layer
        (only,) = fit_budget(base, shared, small, own, 1) or [_Group("base", ())]
        return [_plan(only, skeleton=True), LayerPlan(generated=True)]
    groups = fit_budget(base, shared, small, own, max_layers - 2)
    return [LayerPlan(skeleton=True), *(_plan(g) for g in groups), LayerPlan(generated=True)]


def fit_budget(
    base: Sequence[PackageLike],
    shared: Sequence[_Group],
    small: Sequence[PackageLike],
    own: Sequence[PackageLike],
    budget: int,
) -> list[_Group]:
    """The layers below the generated one, at most ``budget`` (at least 1) of them.

    Over budget, what costs least sharing goes first: the smallest shared
    group joins ``small`` (its bytes are then stored once per image instead
    of once), then the own layers merge, then ``small`` joins them, then the
    base layers merge, and last of all everything becomes one layer.
    """
    shared = sorted(shared, key=lambda g: (g.size, g.packages[0].name))
    small = list(small)
    while True:
        layers = _layout(base, shared, small, own)
        if len(layers) <= budget or not shared:
            break
        small += shared.pop(0).packages
    own_groups = [g for g in layers if g.tier == "own"]
    others = [g for g in layers if g.tier != "own"]
    excess = len(layers) - budget
    if excess > 0 and len(own_groups) > 1:
        own_groups = _merge_smallest(own_groups, len(own_groups) - excess)
    layers = _ordered(others + own_groups)
    steps: list[tuple[set[Tier], Tier]] = [({"small", "own"}, "own"), ({"base"}, "base")]
    for tiers, tier in steps:
        if len(layers) > budget:
            layers = _join(layers, tiers, tier)
    if len(layers) > budget:
        layers = [_Group("base", _flatten(layers))]
    return layers


def plan_per_package(packages: Sequence[ResolvedPackageLike], max_layers: int) -> list[LayerPlan]:
    """The policy before ``shared``: one layer per package, base first, then the tool's.

    Order, bottom to top: the skeleton; the base closure by name; the tool's
    packages by name; the generated layer. Over ``max_layers``, the tool's
    packages from the top of their group merge into one layer, then the base
    ones; only below four layers do the topmost layers merge across groups.
    """
    base_packages, rest = _split(packages)
    base = [LayerPlan(packages=((p.name, p.sha256),)) for p in base_packages]
    tool = [LayerPlan(packages=((p.name, p.sha256),)) for p in rest]

    def excess() -> int:
        return 2 + len(base) + len(tool) - max_layers

    tool = _merge_top(tool, excess())
    base = _merge_top(base, excess())
    plans = [LayerPlan(skeleton=True), *base, *tool, LayerPlan(generated=True)]
    while len(plans) > max_layers:
        plans[-2:] = [_merged(plans[-2:])]
    return plans


# --- cutting and ordering ---------------------------------------------------------------


def cut(packages: Sequence[PackageLike], target: int) -> list[tuple[PackageLike, ...]]:
    """Content-defined cuts of ``packages`` (in name order) into runs of about ``target`` bytes.

    A run ends after a package when the hash of its name, as a fraction of
    1, is below ``size / target``: a decision that depends on that package
    alone, so adding, removing or updating one package moves no other cut.
    """
    runs: list[tuple[PackageLike, ...]] = []
    current: list[PackageLike] = []
    for p in _by_name(packages):
        current.append(p)
        if _name_fraction(p.name) * target < p.size:
            runs.append(tuple(current))
            current = []
    if current:
        runs.append(tuple(current))
    return runs


def _name_fraction(name: str) -> float:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") / 2**64


def _layout(
    base: Sequence[PackageLike],
    shared: Sequence[_Group],
    small: Sequence[PackageLike],
    own: Sequence[PackageLike],
) -> list[_Group]:
    layers = [_Group("base", run) for run in cut(base, BASE_TARGET_BYTES)]
    for group in shared:
        layers += [_Group("shared", run) for run in cut(group.packages, LAYER_TARGET_BYTES)]
    if small:
        layers.append(_Group("small", _by_name(small)))
    layers += [_Group("own", run) for run in cut(own, LAYER_TARGET_BYTES)]
    return _ordered(layers)


def _ordered(layers: Sequence[_Group]) -> list[_Group]:
    """Base layers first, in name order; the others smallest first (vfs copies what is below)."""
    base = [g for g in layers if g.tier == "base"]
    rest = sorted(
        (g for g in layers if g.tier != "base"),
        key=lambda g: (g.size, g.packages[0].name if g.packages else ""),
    )
    return base + rest


def _merge_smallest(groups: list[_Group], count: int) -> list[_Group]:
    """Merge neighbours (in name order) with the smallest sum until ``count`` groups are left."""
    groups = sorted(groups, key=lambda g: g.packages[0].name)
    while len(groups) > max(count, 1):
        i = min(range(len(groups) - 1), key=lambda i: groups[i].size + groups[i + 1].size)
        groups[i : i + 2] = [groups[i].merged(groups[i + 1])]
    return groups


def _join(layers: list[_Group], tiers: set[Tier], tier: Tier) -> list[_Group]:
    """Every layer of ``tiers`` merged into one of ``tier``."""
    joined = [g for g in layers if g.tier in tiers]
    if len(joined) < 2:
        return layers
    together = _Group(tier, _flatten(joined))
    return _ordered([g for g in layers if g.tier not in tiers] + [together])


def _flatten(layers: Sequence[_Group]) -> tuple[PackageLike, ...]:
    return _by_name([p for g in layers for p in g.packages])


def _by_name(packages: Sequence[PackageLike]) -> tuple[PackageLike, ...]:
    return tuple(sorted(packages, key=lambda p: (p.name, p.sha256)))


def _split(
    packages: Sequence[ResolvedPackageLike],
) -> tuple[list[PackageLike], list[PackageLike]]:
    """Base and other packages, each by name, every .deb once."""
    seen: set[str] = set()
    base: list[PackageLike] = []
    rest: list[PackageLike] = []
    for p in sorted(packages, key=lambda p: (p.record.name, p.record.sha256)):
        if p.record.sha256 not in seen:
            seen.add(p.record.sha256)
            (base if p.base else rest).append(p.record)
    return base, rest


def _plan(group: _Group, *, skeleton: bool = False) -> LayerPlan:
    return LayerPlan(packages=tuple((p.name, p.sha256) for p in group.packages), skeleton=skeleton)


def _merge_top(group: list[LayerPlan], excess: int) -> list[LayerPlan]:
    """Merge the top ``excess + 1`` layers of a group into one (fewer if the group is small)."""
    if excess <= 0 or len(group) < 2:
        return group
    keep = max(len(group) - excess - 1, 0)
    return [*group[:keep], _merged(group[keep:])]


def _merged(plans: Sequence[LayerPlan]) -> LayerPlan:
    return LayerPlan(
        packages=tuple(p for plan in plans for p in plan.packages),
        skeleton=any(plan.skeleton for plan in plans),
        generated=any(plan.generated for plan in plans),
    )
