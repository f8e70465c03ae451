"""The package closure: which packages a container gets, and why, or a clear refusal."""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from debrepo import DebSpec

from polyarch.cache import Cache
from polyarch.debian.index import load_index
from polyarch.debian.packages import PackageRecord
from polyarch.debian.resolver import Resolution, resolve
from polyarch.debian.universe import PackageUniverse
from polyarch.errors import ResolveError
from polyarch.platforms import System, parse_system

AMD64 = parse_system("x86_64-linux")
ARM64 = parse_system("aarch64-linux")


def pkg(name: str, version: str = "1.0", arch: str = "amd64", **fields: str) -> PackageRecord:
    """A Packages stanza in memory; relationship fields are the raw index strings."""
    filename = f"pool/main/{name[0]}/{name}/{name}_{version}_{arch}.deb"
    return PackageRecord(
        name=name,
        version=version,
        architecture=arch,
        filename=filename,
        size=1000,
        sha256=hashlib.sha256(filename.encode()).hexdigest(),
        **fields,  # type: ignore[arg-type]
    )


BASE = [
    pkg("libc6", "2.36-9", multi_arch="same"),
    pkg("base-files", "12.4"),
    pkg("bash", "5.2.15-2", pre_depends="libc6 (>= 2.36)", depends="base-files (>= 2.1.12)"),
    pkg("coreutils", "9.1-1", pre_depends="libc6 (>= 2.34)"),
]


def closure(
    records: list[PackageRecord],
    roots: list[str],
    *,
    base: list[str] | None = None,
    exclude: list[str] | None = None,
    prefer: list[str] | None = None,
    system: System = AMD64,
) -> Resolution:
    universe = PackageUniverse(records, system.debian_arch)
    return resolve(
        universe,
        system=system,
        container="tool",
        base=base if base is not None else [],
        roots=roots,
        exclude=exclude or [],
        prefer=prefer or [],
    )


def versions(resolution: Resolution) -> dict[str, str]:
    return {p.record.name: p.record.version for p in resolution.packages}


# --- following dependencies -------------------------------------------------------


def test_depends_and_pre_depends_are_followed_transitively() -> None:
    records = [
        pkg("tool", depends="liba"),
        pkg("liba", pre_depends="libb"),
        pkg("libb", depends="libc6"),
        *BASE,
    ]
    assert closure(records, ["tool"]).names() == ("liba", "libb", "libc6", "tool")


def test_packages_nothing_depends_on_are_left_out() -> None:
    records = [pkg("tool"), pkg("unrelated"), *BASE]
    assert closure(records, ["tool"]).names() == ("tool",)


def test_required_by_names_the_dependents_in_the_closure() -> None:
    records = [
        pkg("tool", depends="liba, libc6"),
        pkg("liba", depends="libc6"),
        *BASE,
    ]
    by_name = {p.record.name: p for p in closure(records, ["tool"]).packages}
    assert by_name["libc6"].required_by == ("liba", "tool")
    assert by_name["liba"].required_by == ("tool",)
    assert by_name["tool"].required_by == ()


# --- versions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relation", "chosen"),
    [
        ("<< 2.0", "1.0"),
        ("<= 2.0", "2.0"),
        ("= 2.0", "2.0"),
        (">= 2.0", "3.0"),
        (">> 2.0", "3.0"),
        ("< 2.0", "2.0"),  # deprecated spelling of <=
        ("> 2.0", "3.0"),  # deprecated spelling of >=
    ],
)
def test_the_highest_version_meeting_the_constraint_is_chosen(relation: str, chosen: str) -> None:
    records = [
        pkg("tool", depends=f"libfoo ({relation})"),
        pkg("libfoo", "1.0"),
        pkg("libfoo", "3.0"),
        pkg("libfoo", "2.0"),
    ]
    assert versions(closure(records, ["tool"]))["libfoo"] == chosen


def test_an_epoch_outranks_a_higher_upstream_version() -> None:
    records = [pkg("tool", depends="libfoo (>= 1:0)"), pkg("libfoo", "9.0"), pkg("libfoo", "1:0.1")]
    assert versions(closure(records, ["tool"]))["libfoo"] == "1:0.1"


def test_a_tilde_version_is_older_than_the_release() -> None:
    records = [
        pkg("tool", depends="libfoo (>= 2.0~)"),
        pkg("libfoo", "2.0~rc1"),
        pkg("libfoo", "1.9"),
    ]
    assert versions(closure(records, ["tool"]))["libfoo"] == "2.0~rc1"
    strict = [pkg("tool", depends="libfoo (>= 2.0)"), pkg("libfoo", "2.0~rc1")]
    with pytest.raises(ResolveError, match=r"available: 2\.0~rc1"):
        closure(strict, ["tool"])


def test_unsatisfiable_dependency_prints_the_chain_from_the_container() -> None:
    records = [
        pkg("fd-find", "8.6.0-3", depends="libmid"),
        pkg("libmid", depends="libfoo (>= 2.0)"),
        pkg("libfoo", "1.0"),
    ]
    with pytest.raises(ResolveError) as caught:
        closure(records, ["fd-find"])
    assert caught.value.message == (
        "tool (x86_64-linux, amd64): fd-find → libmid → libfoo (>= 2.0): "
        "no version satisfies; available: 1.0"
    )
    assert caught.value.hint


def test_a_missing_dependency_names_the_missing_package() -> None:
    records = [pkg("tool", depends="libgone")]
    with pytest.raises(ResolveError, match=r"tool → libgone: no package 'libgone' for amd64"):
        closure(records, ["tool"])


def test_a_name_chosen_earlier_in_another_version_is_reported_not_replaced() -> None:
    records = [
        pkg("a", depends="libfoo"),
        pkg("b", depends="libfoo (<< 2.0)"),
        pkg("libfoo", "1.0"),
        pkg("libfoo", "2.0"),
    ]
    with pytest.raises(
        ResolveError, match=r"b → libfoo \(<< 2.0\): libfoo 2.0 is already chosen \(for a\)"
    ):
        closure(records, ["a", "b"])


# --- alternatives --------------------------------------------------------------------


def test_an_alternative_already_in_the_closure_wins() -> None:
    records = [pkg("tool", depends="mawk | gawk"), pkg("mawk"), pkg("gawk")]
    assert closure(records, ["tool"], base=["gawk"]).names() == ("gawk", "tool")


def test_otherwise_the_first_alternative_is_chosen() -> None:
    records = [pkg("tool", depends="mawk | gawk"), pkg("mawk"), pkg("gawk")]
    assert closure(records, ["tool"]).names() == ("mawk", "tool")


def test_an_unsatisfiable_first_alternative_is_skipped() -> None:
    records = [pkg("tool", depends="missing | mawk (>= 2) | gawk"), pkg("mawk", "1.3"), pkg("gawk")]
    assert closure(records, ["tool"]).names() == ("gawk", "tool")


def test_when_no_alternative_works_each_one_is_explained() -> None:
    records = [pkg("tool", depends="missing | mawk (>= 2)"), pkg("mawk", "1.3")]
    with pytest.raises(ResolveError) as caught:
        closure(records, ["tool"])
    assert "tool → missing | mawk (>= 2): no alternative can be installed" in caught.value.message
    assert "missing: no package 'missing' for amd64" in caught.value.message
    assert "mawk: no version satisfies; available: 1.3" in caught.value.message


# --- virtual packages -----------------------------------------------------------------


def test_a_virtual_package_is_satisfied_by_the_first_provider_by_name() -> None:
    records = [
        pkg("tool", depends="mail-transport-agent"),
        pkg("postfix", provides="mail-transport-agent"),
        pkg("exim4-daemon-light", provides="mail-transport-agent"),
    ]
    assert closure(records, ["tool"]).names() == ("exim4-daemon-light", "tool")


def test_a_provider_already_in_the_closure_satisfies_the_virtual_package() -> None:
    records = [
        pkg("tool", depends="mail-transport-agent"),
        pkg("postfix", provides="mail-transport-agent"),
        pkg("exim4-daemon-light", provides="mail-transport-agent"),
    ]
    result = closure(records, ["tool"], base=["postfix"])
    assert result.names() == ("postfix", "tool")
    assert result.packages[0].required_by == ("tool",)


def test_a_real_package_of_the_name_is_preferred_over_providers() -> None:
    records = [pkg("tool", depends="awk"), pkg("mawk", provides="awk"), pkg("awk")]
    assert closure(records, ["tool"]).names() == ("awk", "tool")


def test_a_versioned_provide_satisfies_a_versioned_dependency() -> None:
    records = [
        pkg("tool", depends="libfoo-abi (>= 2)"),
        pkg("libfoo2", "2.1-1", provides="libfoo-abi (= 2.1)"),
        pkg("libfoo1", "1.0-1", provides="libfoo-abi (= 1.0)"),
    ]
    assert closure(records, ["tool"]).names() == ("libfoo2", "tool")


def test_an_unversioned_provide_does_not_satisfy_a_versioned_dependency() -> None:
    records = [
        pkg("tool", depends="libfoo-abi (>= 2)"),
        pkg("libfoo", "3.0", provides="libfoo-abi"),
    ]
    with pytest.raises(ResolveError, match=r"provided by: libfoo \(unversioned\)"):
        closure(records, ["tool"])
    unversioned = [pkg("tool", depends="libfoo-abi"), pkg("libfoo", "3.0", provides="libfoo-abi")]
    assert closure(unversioned, ["tool"]).names() == ("libfoo", "tool")


def test_a_virtual_package_can_be_a_root() -> None:
    records = [pkg("mawk", provides="awk")]
    assert closure(records, ["awk"]).names() == ("mawk",)


# --- architectures ----------------------------------------------------------------------


def test_arch_all_packages_serve_every_system() -> None:
    records = [
        pkg("tool", "1.0", "amd64", depends="tool-data"),
        pkg("tool", "1.0", "arm64", depends="tool-data"),
        pkg("tool-data", "1.0", "all"),
    ]
    for system in (AMD64, ARM64):
        result = closure(records, ["tool"], system=system)
        assert [(p.record.name, p.record.architecture) for p in result.packages] == [
            ("tool", system.debian_arch),
            ("tool-data", "all"),
        ]


def test_packages_of_another_arch_are_ignored() -> None:
    records = [pkg("tool", depends="libfoo"), pkg("libfoo", "1.0", "arm64")]
    with pytest.raises(ResolveError, match="no package 'libfoo' for amd64"):
        closure(records, ["tool"])


def test_any_qualifier_is_satisfied_by_a_multi_arch_allowed_package() -> None:
    records = [pkg("tool", depends="perl:any"), pkg("perl", "5.36", multi_arch="allowed")]
    assert closure(records, ["tool"]).names() == ("perl", "tool")


def test_any_qualifier_is_refused_without_multi_arch_allowed() -> None:
    records = [pkg("tool", depends="perl:any"), pkg("perl", "5.36", multi_arch="same")]
    with pytest.raises(ResolveError, match="tool → perl:any: perl is not Multi-Arch: allowed"):
        closure(records, ["tool"])


def test_native_qualifier_is_satisfied_by_the_same_arch() -> None:
    records = [pkg("tool", depends="python3:native"), pkg("python3", "3.11", multi_arch="allowed")]
    assert closure(records, ["tool"]).names() == ("python3", "tool")


def test_arch_restrictions_that_do_not_match_are_ignored() -> None:
    records = [
        pkg(
            "tool",
            depends="libx86 [amd64 i386], libarm [arm64], libnotarm [!arm64], libnotamd [!amd64 !i386]",
        ),
        pkg("libx86"),
        pkg("libnotarm"),
    ]
    assert closure(records, ["tool"]).names() == ("libnotarm", "libx86", "tool")


# --- conflicts -----------------------------------------------------------------------------


def test_conflicts_between_chosen_packages_are_refused_with_both_versions() -> None:
    records = [
        pkg("tool", depends="liba, libb"),
        pkg("liba", "1.0", conflicts="libb (<< 3)"),
        pkg("libb", "2.0"),
    ]
    with pytest.raises(ResolveError) as caught:
        closure(records, ["tool"])
    assert caught.value.message.startswith(
        "tool (x86_64-linux, amd64): liba 1.0 conflicts with libb 2.0 (Conflicts: libb (<< 3))"
    )


def test_breaks_between_chosen_packages_are_refused() -> None:
    records = [
        pkg("tool", depends="liba, libb"),
        pkg("liba", "1.0"),
        pkg("libb", "2.0", breaks="liba (<= 1.0)"),
    ]
    with pytest.raises(
        ResolveError, match=r"libb 2.0 conflicts with liba 1.0 \(Breaks: liba \(<= 1.0\)\)"
    ):
        closure(records, ["tool"])


def test_a_conflict_whose_version_does_not_match_is_no_conflict() -> None:
    records = [
        pkg("tool", depends="liba, libb"),
        pkg("liba", conflicts="libb (<< 2.0)"),
        pkg("libb", "2.0"),
    ]
    assert closure(records, ["tool"]).names() == ("liba", "libb", "tool")


def test_conflicting_with_a_virtual_package_one_provides_itself_is_allowed() -> None:
    records = [pkg("tool", depends="mawk"), pkg("mawk", provides="awk", conflicts="awk")]
    assert closure(records, ["tool"]).names() == ("mawk", "tool")


def test_conflicts_with_a_virtual_package_reach_its_other_providers() -> None:
    records = [
        pkg("tool", depends="mawk, gawk"),
        pkg("mawk", provides="awk", conflicts="awk"),
        pkg("gawk", "5.2", provides="awk"),
    ]
    with pytest.raises(ResolveError, match="conflicts with"):
        closure(records, ["tool"])


# --- exclude ---------------------------------------------------------------------------


def test_excluded_packages_are_dropped_with_what_only_they_pull_in() -> None:
    records = [
        pkg("foo", depends="perl-base, libc6"),
        pkg("bar", depends="perl-base"),
        pkg("perl-base", depends="libperl-only"),
        pkg("libperl-only"),
        *BASE,
    ]
    result = closure(records, ["foo", "bar"], exclude=["perl-base"])
    assert result.names() == ("bar", "foo", "libc6")
    assert result.excluded == ("perl-base",)
    assert result.warnings == ("excluded perl-base, needed by: bar, foo",)


def test_an_excluded_alternative_gives_way_to_the_next_one() -> None:
    records = [pkg("tool", depends="mawk | gawk"), pkg("mawk"), pkg("gawk")]
    result = closure(records, ["tool"], exclude=["mawk"])
    assert result.names() == ("gawk", "tool")
    assert result.excluded == ()


def test_excluding_a_provider_lets_the_next_provider_win_without_warnings() -> None:
    records = [
        pkg("base-files", pre_depends="awk"),
        pkg("gawk", provides="awk"),
        pkg("mawk", provides="awk"),
    ]
    result = closure(records, ["base-files"], exclude=["gawk"])
    assert result.names() == ("base-files", "mawk")
    assert result.warnings == ()


def test_an_exclude_that_matches_nothing_is_warned_about() -> None:
    result = closure([pkg("tool")], ["tool"], exclude=["perl-base"])
    assert result.warnings == (
        "exclude 'perl-base' has no effect: nothing in the closure needs it",
    )


# --- prefer ---------------------------------------------------------------------------


def test_a_preferred_provider_wins_over_the_first_by_name() -> None:
    records = [
        pkg("base-files", pre_depends="awk"),
        pkg("gawk", provides="awk", depends="libreadline8"),
        pkg("libreadline8"),
        pkg("mawk", provides="awk"),
    ]
    assert closure(records, ["base-files"]).names() == ("base-files", "gawk", "libreadline8")
    assert closure(records, ["base-files"], prefer=["mawk"]).names() == ("base-files", "mawk")


def test_a_preferred_alternative_wins_over_the_first_one() -> None:
    records = [pkg("tool", depends="liba | libb"), pkg("liba"), pkg("libb")]
    assert closure(records, ["tool"], prefer=["libb"]).names() == ("libb", "tool")


def test_what_is_already_chosen_wins_over_a_preference() -> None:
    records = [pkg("tool", depends="awk"), pkg("gawk", provides="awk"), pkg("mawk", provides="awk")]
    result = closure(records, ["tool"], base=["gawk"], prefer=["mawk"])
    assert result.names() == ("gawk", "tool")


# --- base -------------------------------------------------------------------------------


def test_the_base_closure_is_flagged_and_unchanged_by_the_tool() -> None:
    records = [
        pkg("fd-find", "8.6.0-3", depends="libc6 (>= 2.34), libgcc-s1 (>= 4.2)"),
        pkg("libgcc-s1", "12.2.0-14", depends="libc6 (>= 2.35)"),
        *BASE,
    ]
    alone = closure(records, [], base=["bash", "coreutils"])
    with_tool = closure(records, ["fd-find"], base=["bash", "coreutils"])
    base_names = ("base-files", "bash", "coreutils", "libc6")
    assert alone.names() == base_names
    assert all(p.base for p in alone.packages)
    assert tuple(p.record.name for p in with_tool.packages if p.base) == base_names
    assert {p.record.name for p in with_tool.packages if not p.base} == {"fd-find", "libgcc-s1"}


def test_the_base_is_resolved_before_the_tool_can_steer_an_alternative() -> None:
    # Alone, the tool would pick mawk; the base asks for gawk first and so wins.
    records = [
        pkg("tool", depends="mawk | gawk"),
        pkg("base-tool", depends="gawk | mawk"),
        pkg("mawk"),
        pkg("gawk"),
    ]
    result = closure(records, ["tool"], base=["base-tool"])
    assert result.names() == ("base-tool", "gawk", "tool")


# --- determinism and errors ---------------------------------------------------------------


def test_shuffled_input_gives_an_identical_resolution() -> None:
    records = [
        pkg("tool", depends="mail-transport-agent, awk | mawk, libfoo (>= 1), liba | libb"),
        pkg("postfix", provides="mail-transport-agent"),
        pkg("exim4-daemon-light", provides="mail-transport-agent", depends="libfoo"),
        pkg("mawk", provides="awk"),
        pkg("gawk", provides="awk"),
        pkg("libfoo", "1.0"),
        pkg("libfoo", "1.0", "all"),
        pkg("libfoo", "2.0"),
        pkg("liba", depends="libc6"),
        pkg("libb"),
        *BASE,
    ]
    expected = closure(records, ["tool", "bash"], base=["coreutils"], exclude=["base-files"])
    rng = random.Random(1234)
    for _ in range(20):
        shuffled = records[:]
        rng.shuffle(shuffled)
        assert (
            closure(shuffled, ["bash", "tool"], base=["coreutils"], exclude=["base-files"])
            == expected
        )


def test_an_unknown_root_suggests_near_names() -> None:
    records = [pkg("fd-find", arch="arm64"), *BASE]
    with pytest.raises(ResolveError) as caught:
        closure(records, ["fd-fnd"], system=ARM64)
    assert caught.value.message == (
        "tool: no package 'fd-fnd' for arm64 (aarch64-linux); did you mean 'fd-find'?"
    )


def test_an_unknown_base_package_is_refused_too() -> None:
    with pytest.raises(
        ResolveError, match=r"no package 'bsh' for amd64 \(x86_64-linux\); did you mean 'bash'"
    ):
        closure(BASE, [], base=["bsh"])


def test_every_error_names_the_system() -> None:
    failing = [
        ([pkg("tool", depends="libgone")], ["tool"]),
        ([pkg("tool", depends="liba"), pkg("liba", conflicts="tool")], ["tool"]),
        ([pkg("tool")], ["tol"]),
    ]
    for records, roots in failing:
        with pytest.raises(ResolveError, match=re.escape("x86_64-linux")):
            closure(records, roots)


# --- end to end ---------------------------------------------------------------------------


def test_a_generated_repository_resolves_through_the_verified_index(
    make_repo: Callable[..., tuple[Any, str]], tmp_path: Path
) -> None:
    repository = pytest.importorskip("polyarch.debian.repository")

    specs = [
        DebSpec(
            "fd-find",
            "8.6.0-3",
            arch,
            depends="libc6 (>= 2.34), libgcc-s1 | libgcc1",
            files={"/usr/bin/fdfind": b"fd"},
        )
        for arch in ("amd64", "arm64")
    ] + [
        DebSpec("libgcc-s1", "12.2.0-14", arch, depends="libc6 (>= 2.35)", multi_arch="same")
        for arch in ("amd64", "arm64")
    ]
    repo, url = make_repo(specs)
    # A Recommends in the real index must not be followed.
    repo.add_raw(
        "fd-find", "8.6.0-4", "amd64", b"unused", extra="Depends: libc6\nRecommends: libgcc-s1\n"
    )
    repo.publish()
    source = repository.Source(
        url=url, suite="bookworm", components=("main",), keyring=repo.key.keyring
    )
    with repository.Repository(source, Cache(tmp_path / "cache")) as archive:
        results = {
            system.name: resolve(
                PackageUniverse(archive.index(system.debian_arch), system.debian_arch),
                system=system,
                container="fd",
                base=["bash", "coreutils"],
                roots=["fd-find"],
            )
            for system in (AMD64, ARM64)
        }
    amd64, arm64 = results["x86_64-linux"], results["aarch64-linux"]
    assert amd64.names() == ("base-files", "bash", "coreutils", "fd-find", "libc6")
    assert versions(amd64)["fd-find"] == "8.6.0-4"
    assert arm64.names() == ("base-files", "bash", "coreutils", "fd-find", "libc6", "libgcc-s1")
    assert {p.record.architecture for p in arm64.packages} == {"arm64"}
    assert [p.record.name for p in arm64.packages if p.base] == [
        "base-files",
        "bash",
        "coreutils",
        "libc6",
    ]


def test_universe_over_a_cached_index_resolves_exactly_like_one_over_records(
    tmp_path: Path,
) -> None:
    records = [
        *BASE,
        pkg("mawk", "1.3.4", provides="awk"),
        pkg("gawk", "5.2", provides="awk (= 5.2)"),
        pkg("tool", "2.0", depends="awk, libc6 (>= 2.30), zlib1g"),
        pkg("zlib1g", "1:1.2"),
        pkg("zlib1g", "1:1.3"),
        pkg("zlib1g", "1:1.4", arch="arm64"),
    ]
    cache = Cache(tmp_path)
    digest = hashlib.sha256(b"index").hexdigest()
    text = "\n".join(
        "".join(
            f"{field}: {value}\n"
            for field, value in (
                ("Package", r.name),
                ("Version", r.version),
                ("Architecture", r.architecture),
                ("Depends", r.depends),
                ("Pre-Depends", r.pre_depends),
                ("Provides", r.provides),
                ("Multi-Arch", r.multi_arch),
                ("Filename", r.filename),
                ("Size", str(r.size)),
                ("SHA256", r.sha256),
            )
            if value
        )
        for r in records
    ).encode()
    load_index(cache, digest, lambda: text, component="")
    warm = load_index(cache, digest, lambda: b"", component="")
    from_cache = resolve(
        PackageUniverse(warm, "amd64"),
        system=AMD64,
        container="tool",
        base=["bash"],
        roots=["tool"],
    )
    from_records = closure(records, ["tool"], base=["bash"])
    assert from_cache == from_records
    assert versions(from_cache)["zlib1g"] == "1:1.3"
    assert "gawk" in versions(from_cache)  # providers are ordered by name
