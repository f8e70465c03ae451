"""Which package goes in which layer: the plan of one system's image, before any byte is read.

Each package gets its own layer, so a package's layer is the same in every
image of a system and a registry stores it once; ``max_layers`` bounds the
count by merging the least shared layers first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from polyarch.errors import ImageError

SKELETON_NAME = "(filesystem)"
GENERATED_NAME = "(generated)"


class PackageLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def sha256(self) -> str: ...


class ResolvedPackageLike(Protocol):
    """What planning needs of the resolver's ``ResolvedPackage``."""

    @property
    def record(self) -> PackageLike: ...
    @property
    def base(self) -> bool: ...


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


def plan_layers(packages: Sequence[ResolvedPackageLike], max_layers: int) -> list[LayerPlan]:
    """Group a system's closure into at most ``max_layers`` layers.

    Order, bottom to top: the skeleton; the base closure's packages (base
    roots bash + coreutils and what they need), by name; the tool's own
    packages, by name; the generated layer (``build_layers`` drops it when
    empty). Each package gets its own layer, which maximises sharing between
    images. Over ``max_layers``, the least shared layers merge first: the
    tool's packages from the top of their group into one layer, then, if
    still too many, the base packages from the top of theirs; only below four
    layers do the topmost layers merge across groups.
    """
    if max_layers < 2:
        raise ImageError(f"max_layers is {max_layers}", hint="set max_layers to 2 or more")
    seen: set[str] = set()
    base: list[LayerPlan] = []
    tool: list[LayerPlan] = []
    for p in sorted(packages, key=lambda p: (p.record.name, p.record.sha256)):
        if p.record.sha256 in seen:
            continue
        seen.add(p.record.sha256)
        (base if p.base else tool).append(LayerPlan(packages=((p.record.name, p.record.sha256),)))

    def excess() -> int:
        return 2 + len(base) + len(tool) - max_layers

    tool = _merge_top(tool, excess())
    base = _merge_top(base, excess())
    plans = [LayerPlan(skeleton=True), *base, *tool, LayerPlan(generated=True)]
    while len(plans) > max_layers:
        plans[-2:] = [_merged(plans[-2:])]
    return plans


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
