"""The shared layering policy: base layers, groups by who uses them, own layers, the budget.

Plans are pure functions of names, sha256s, sizes and who uses what, so
these tests need no .deb; the bytes behind a plan are test_layers.py's.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import pytest

from polyarch.image.layer_plan import (
    BASE_TARGET_BYTES,
    GENERATED_NAME,
    LAYER_TARGET_BYTES,
    SHARED_MIN_BYTES,
    SKELETON_NAME,
    LayerPlan,
    cut,
    plan_layers,
)


@dataclass(frozen=True)
class Record:
    name: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Resolved:
    record: Record
    base: bool


def pkg(name: str, size: int = 1_000_000, *, base: bool = False, version: str = "1") -> Resolved:
    sha = hashlib.sha256(f"{name} {version}".encode()).hexdigest()
    return Resolved(Record(name, sha, size), base)


BASE = [pkg(n, 1_500_000, base=True) for n in ("base-files", "bash", "coreutils", "libc6")]


@dataclass
class Project:
    """Closures of several containers on one system, as the resolver would give them."""

    closures: dict[str, list[Resolved]]

    def users(self) -> Mapping[str, frozenset[str]]:
        found: dict[str, set[str]] = {}
        for container, closure in self.closures.items():
            for p in closure:
                found.setdefault(p.record.name, set()).add(container)
        return {k: frozenset(v) for k, v in found.items()}

    def plan(self, container: str, max_layers: int = 16) -> list[LayerPlan]:
        users = self.users()
        return plan_layers(
            self.closures[container],
            max_layers,
            users_of=lambda name: users.get(name, frozenset()),
            container=container,
        )

    def layers(self) -> dict[str, set[tuple[tuple[str, str], ...]]]:
        """Each container's layers as package tuples (what a layer's digest is a function of)."""
        return {c: {p.packages for p in self.plan(c) if not p.generated} for c in self.closures}


def names(plans: Sequence[LayerPlan]) -> list[tuple[str, ...]]:
    return [p.names for p in plans]


def flat(plans: Sequence[LayerPlan]) -> list[str]:
    return sorted(n for p in plans for n in p.names)


def example() -> Project:
    ssl = pkg("libssl3", 2_000_000)
    krb = [pkg(n, 400_000) for n in ("libgssapi-krb5-2", "libk5crypto3", "libkrb5-3")]
    return Project(
        {
            "curl": [*BASE, ssl, *krb, pkg("libcurl4"), pkg("curl", 300_000)],
            "git": [*BASE, ssl, *krb, pkg("libcurl3-gnutls"), pkg("git", 9_000_000)],
            "wget": [*BASE, ssl, pkg("wget", 900_000)],
            "fd": [*BASE, pkg("fd-find", 1_200_000)],
        }
    )


def test_base_at_the_bottom_generated_on_top_and_every_package_once() -> None:
    project = example()
    for container, closure in project.closures.items():
        plans = project.plan(container)
        assert plans[0] == LayerPlan(skeleton=True)  # the same in every image of every system
        assert plans[-1] == LayerPlan(generated=True)
        expected = sorted([SKELETON_NAME, GENERATED_NAME, *(p.record.name for p in closure)])
        assert flat(plans) == expected
        # The base closure fills the layers from the bottom, before anything else.
        base = {p.record.sha256 for p in closure if p.base}
        kinds = [all(sha in base for _, sha in p.packages) for p in plans[1:-1]]
        assert kinds == sorted(kinds, reverse=True)


def test_the_base_layers_are_the_same_in_every_image_of_the_project() -> None:
    project = example()
    bases = {
        c: [p for p in project.plan(c) if p.skeleton or _all_base(p)] for c in project.closures
    }
    first = bases["curl"]
    assert first and all(b == first for b in bases.values())


def _all_base(plan: LayerPlan) -> bool:
    return bool(plan.packages) and all(
        n in {"base-files", "bash", "coreutils", "libc6"} for n in plan.names
    )


def test_packages_used_by_the_same_containers_share_one_layer_in_each_of_them() -> None:
    layers = example().layers()
    krb = tuple(sorted(n for n in ("libgssapi-krb5-2", "libk5crypto3", "libkrb5-3")))
    # libssl3 is used by curl, git and wget; the krb5 libraries by curl and git only.
    for container in ("curl", "git", "wget"):
        assert any(tuple(n for n, _ in layer) == ("libssl3",) for layer in layers[container])
    for container in ("curl", "git"):
        assert any(tuple(n for n, _ in layer) == krb for layer in layers[container])
    # The very same layer (same packages, hence same bytes) in each image that uses it.
    assert len({la for c in ("curl", "git") for la in layers[c] if "libk5crypto3" in str(la)}) == 1


def test_a_small_shared_group_goes_to_the_images_small_layer() -> None:
    tiny = pkg("libtiny1", SHARED_MIN_BYTES // 4)
    project = Project(
        {
            "a": [*BASE, tiny, pkg("a-tool", 5_000_000)],
            "b": [*BASE, tiny, pkg("b-tool", 5_000_000)],
        }
    )
    plans = project.plan("a")
    assert ("libtiny1",) in names(plans)  # its own layer: the image's small layer
    assert ("a-tool",) in names(plans)  # own packages never mix with shared ones


def test_without_the_project_everything_outside_the_base_is_the_containers_own() -> None:
    closure = example().closures["git"]
    plans = plan_layers(closure, 16, container="git")
    own = [p.record for p in closure if not p.base]
    runs = [tuple(p.name for p in run) for run in cut(own, LAYER_TARGET_BYTES)]
    base = {p.record.name for p in closure if p.base}
    assert sorted(n for n in names(plans[1:-1]) if not base & set(n)) == sorted(runs)


def test_own_packages_are_cut_into_layers_of_about_the_target_size() -> None:
    own = [pkg(f"lib{i:03}", 2_000_000) for i in range(100)]  # 200 MB of .debs
    plans = plan_layers([*BASE, *own], 100, container="big")
    middle = [p for p in plans if not p.skeleton and not p.generated]
    assert 3 <= len(middle) <= 15
    # Layers above the base go smallest first: vfs copies every layer below a new one.
    sizes = [len(p.packages) for p in middle]
    assert sizes == sorted(sizes)


@pytest.mark.parametrize("max_layers", range(2, 14))
def test_max_layers_bounds_the_count_and_keeps_every_package_once(max_layers: int) -> None:
    rng = random.Random(max_layers)
    own = [pkg(f"own{i:03}", rng.randrange(10_000, 30_000_000)) for i in range(60)]
    shared = [pkg(f"shared{i:02}", rng.randrange(300_000, 3_000_000)) for i in range(12)]
    users = {p.record.name: frozenset({"big", f"other{i % 5}"}) for i, p in enumerate(shared)}
    closure = [*BASE, *own, *shared]
    plans = plan_layers(
        closure, max_layers, users_of=lambda n: users.get(n, frozenset()), container="big"
    )
    assert len(plans) <= max_layers
    assert flat(plans) == sorted([SKELETON_NAME, GENERATED_NAME, *(p.record.name for p in closure)])
    assert plans[0].skeleton and plans[-1].generated
    assert (plans[0] == LayerPlan(skeleton=True)) == (max_layers > 2)


def test_over_budget_the_smallest_shared_groups_give_up_their_layers_first() -> None:
    groups = {f"lib{i}": frozenset({"me", f"other{i}"}) for i in range(6)}
    shared = [pkg(f"lib{i}", 1_000_000 * (i + 1)) for i in range(6)]
    closure = [*BASE, *shared, pkg("me", 1_000_000)]
    unbounded = plan_layers(
        closure, 100, users_of=lambda n: groups.get(n, frozenset()), container="me"
    )
    bounded = plan_layers(
        closure, len(unbounded) - 2, users_of=lambda n: groups.get(n, frozenset()), container="me"
    )
    kept = {p.names for p in bounded}
    # Two layers fewer: the three smallest groups share the small layer, the others stay.
    assert {("lib3",), ("lib4",), ("lib5",), ("lib0", "lib1", "lib2")} <= kept


def test_per_package_layering_gives_each_package_its_own_layer() -> None:
    closure = example().closures["curl"]
    plans = plan_layers(closure, 100, layering="per-package")
    assert len(plans) == len(closure) + 2
    assert all(len(p.packages) == 1 for p in plans[1:-1])


# stability -------------------------------------------------------------------------------


def test_a_package_update_changes_only_the_layers_that_hold_it() -> None:
    before = example()
    after = Project(
        {
            c: [replace(p, record=replace(p.record, sha256="f" * 64, size=p.record.size + 4096))
                if p.record.name == "libssl3" else p for p in closure]
            for c, closure in before.closures.items()
        }
    )  # fmt: skip
    for container in before.closures:
        old, new = before.layers()[container], after.layers()[container]
        gone = old - new
        assert all(any(n == "libssl3" for n, _ in layer) for layer in gone), container
        assert len(gone) == (1 if container != "fd" else 0)


def test_a_new_container_changes_no_layer_without_a_package_it_uses() -> None:
    before = example()
    after = Project(
        {**before.closures, "ssh": [*BASE, pkg("libk5crypto3", 400_000), pkg("ssh", 1_000_000)]}
    )
    uses = {"libk5crypto3", "ssh", *(p.record.name for p in BASE)}
    for container in before.closures:
        old, new = before.layers()[container], after.layers()[container]
        for layer in old - new:
            # Only the group libk5crypto3 left changed: it held a package ssh uses.
            assert uses & {n for n, _ in layer}, (container, layer)
    assert before.layers()["fd"] == after.layers()["fd"]
    assert before.layers()["wget"] == after.layers()["wget"]


def test_a_build_of_one_container_plans_as_a_build_of_all() -> None:
    # The plan of a container depends on the project and its own closure, never on the
    # order or the subset of containers a command builds.
    project = example()
    reordered = Project(dict(reversed(list(project.closures.items()))))
    for container in project.closures:
        assert project.plan(container) == reordered.plan(container)


def test_cuts_depend_on_each_package_alone() -> None:
    rng = random.Random(7)
    packages = [pkg(f"p{i:03}", rng.randrange(100_000, 20_000_000)).record for i in range(80)]
    runs = cut(packages, LAYER_TARGET_BYTES)
    assert [p for run in runs for p in run] == sorted(packages, key=lambda p: p.name)
    gone = packages[40]
    k = next(i for i, run in enumerate(runs) if gone in run)
    after = cut(packages[:40] + packages[41:], LAYER_TARGET_BYTES)
    # Removing one package changes its own run, and the next one only if the cut after
    # the removed package goes with it; every other run is untouched.
    touched = {runs[k]} | ({runs[k + 1]} if runs[k][-1] == gone and k + 1 < len(runs) else set())
    assert all(r in after for r in runs if r not in touched)
    assert len(set(after) - set(runs)) <= 1


def test_the_base_closure_is_cut_into_a_few_layers() -> None:
    base = [pkg(f"b{i:02}", 500_000, base=True) for i in range(16)]  # 8 MB of .debs
    plans = plan_layers(base, 16)
    base_layers = [p for p in plans if not p.generated]
    assert 1 <= len(base_layers) <= 8
    assert sum(len(p.packages) for p in base_layers) == 16
    assert BASE_TARGET_BYTES < 8_000_000
