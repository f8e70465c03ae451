"""The filesystem rules: merged /usr, documentation, skeleton, and what maintainer scripts would do."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from pathlib import Path

import pytest
from debrepo import DebSpec, File, Symlink, build_deb

from polyarch.debian.deb import DebContents, DebEntry, read_deb
from polyarch.image.filesystem import (
    CA_BUNDLE,
    generated_entries,
    layer_tree,
    package_entries,
    parse_alternatives,
    skeleton_entries,
)


def f(path: str, data: bytes = b"x", mode: int = 0o644) -> DebEntry:
    return DebEntry(path, "file", mode, data)


def d(path: str, mode: int = 0o755) -> DebEntry:
    return DebEntry(path, "dir", mode)


def ln(path: str, target: str) -> DebEntry:
    return DebEntry(path, "symlink", 0o777, target=target)


def pkg(name: str, *entries: DebEntry, postinst: str | None = None) -> DebContents:
    control = f"Package: {name}\nVersion: 1.0\nArchitecture: amd64\nDescription: test\n"
    return DebContents(name, control, postinst, tuple(entries))


def tree(*groups: Iterable[DebEntry]) -> dict[str, DebEntry]:
    """Later groups win, like stacked layers (each with its parent directories)."""
    result: dict[str, DebEntry] = {}
    for group in groups:
        for entry in layer_tree([group]):
            result[entry.path] = entry
    return result


def resolve(fs: dict[str, DebEntry], path: str, hops: int = 40) -> DebEntry | None:
    """Follow symlinks inside an in-memory image the way the kernel would."""
    parts = [p for p in path.split("/") if p]
    current = "/"
    while parts:
        current = posixpath.join(current, parts.pop(0))
        entry = fs.get(current)
        if entry is None:
            return None
        if entry.kind == "symlink":
            hops -= 1
            if hops == 0:
                return None
            base = "/" if entry.target.startswith("/") else posixpath.dirname(current)
            target = posixpath.normpath(posixpath.join(base, entry.target))
            parts = [p for p in target.split("/") if p] + parts
            current = "/"
    return fs.get(current)


def paths(entries: Iterable[DebEntry]) -> set[str]:
    return {e.path for e in entries}


# merged /usr -----------------------------------------------------------------


def test_bin_sbin_and_lib_entries_move_into_usr() -> None:
    contents = pkg(
        "coreutils",
        d("/bin"),
        f("/bin/ls"),
        f("/sbin/chroot"),
        f("/lib/x86_64-linux-gnu/libacl.so.1"),
        f("/lib32/libc.so.6"),
        f("/usr/bin/env"),
    )
    assert paths(package_entries(contents, keep_docs=False)) == {
        "/usr/bin",
        "/usr/bin/ls",
        "/usr/sbin/chroot",
        "/usr/lib/x86_64-linux-gnu/libacl.so.1",
        "/usr/lib32/libc.so.6",
        "/usr/bin/env",
        "/var/lib/dpkg/status.d/coreutils",
    }


@pytest.mark.parametrize(
    ("loader", "real"),
    [
        ("/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
        ("/lib/ld-linux-aarch64.so.1", "aarch64-linux-gnu/ld-linux-aarch64.so.1"),
    ],
)
def test_dynamic_loader_path_resolves_in_the_merged_image(loader: str, real: str) -> None:
    real_abs = posixpath.normpath(posixpath.join(posixpath.dirname(loader), real))
    libc = pkg("libc6", f(real_abs, b"ld.so", 0o755), ln(loader, real))
    fs = tree(skeleton_entries(), package_entries(libc, keep_docs=False))
    found = resolve(fs, loader)
    assert found is not None and found.data == b"ld.so"


def test_relative_symlink_that_would_break_by_the_move_is_made_absolute() -> None:
    contents = pkg(
        "odd",
        f("/usr/lib/real.so"),
        ln("/lib/up.so", "../usr/lib/real.so"),
        ln("/lib/x86_64-linux-gnu/libz.so.1", "libz.so.1.2.13"),
        ln("/sbin/helper", "../bin/tool"),
    )
    by_path = {e.path: e for e in package_entries(contents, keep_docs=False)}
    assert by_path["/usr/lib/up.so"].target == "/usr/lib/real.so"
    assert by_path["/usr/lib/x86_64-linux-gnu/libz.so.1"].target == "libz.so.1.2.13"
    assert by_path["/usr/sbin/helper"].target == "../bin/tool"  # /usr/bin/tool either way


def test_path_shipped_twice_after_merging_keeps_the_file_not_the_alias() -> None:
    contents = pkg("dup", ln("/usr/bin/x", "/bin/x"), f("/bin/x", b"real"))
    by_path = {e.path: e for e in package_entries(contents, keep_docs=False)}
    assert by_path["/usr/bin/x"] == f("/usr/bin/x", b"real")


def test_root_links_point_into_usr() -> None:
    links = {e.path: e.target for e in skeleton_entries() if e.kind == "symlink"}
    assert links == {
        "/bin": "usr/bin",
        "/sbin": "usr/sbin",
        "/lib": "usr/lib",
        "/lib64": "usr/lib64",
    }


# documentation ---------------------------------------------------------------

DOCS = pkg(
    "tool",
    f("/usr/bin/tool"),
    d("/usr/share/doc"),
    d("/usr/share/doc/tool"),
    f("/usr/share/doc/tool/copyright", b"MIT"),
    f("/usr/share/doc/tool/changelog.Debian.gz"),
    d("/usr/share/doc/tool/examples"),
    f("/usr/share/doc/tool/examples/a"),
    d("/usr/share/doc/tool-extra"),
    f("/usr/share/doc/tool-extra/README"),
    ln("/usr/share/doc/tool-lib", "tool"),
    d("/usr/share/man"),
    f("/usr/share/man/man1/tool.1.gz"),
    f("/usr/share/info/tool.info.gz"),
    f("/usr/share/locale/de/LC_MESSAGES/tool.mo"),
    f("/usr/share/lintian/overrides/tool"),
    f("/usr/share/tool/data"),
)


def test_documentation_is_left_out_but_copyright_files_stay() -> None:
    assert paths(package_entries(DOCS, keep_docs=False)) == {
        "/usr/bin/tool",
        "/usr/share/doc",
        "/usr/share/doc/tool",
        "/usr/share/doc/tool/copyright",
        "/usr/share/doc/tool-lib",
        "/usr/share/tool/data",
        "/var/lib/dpkg/status.d/tool",
    }


def test_keep_docs_keeps_everything() -> None:
    kept = paths(package_entries(DOCS, keep_docs=True))
    assert kept == paths(DOCS.entries) | {"/var/lib/dpkg/status.d/tool"}


# skeleton --------------------------------------------------------------------


def test_skeleton_has_users_groups_and_temp_dirs() -> None:
    fs = tree(skeleton_entries())
    assert fs["/etc/passwd"].data.decode().splitlines() == [
        "root:x:0:0:root:/root:/bin/bash",
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin",
    ]
    assert [line.split(":")[0] for line in fs["/etc/group"].data.decode().splitlines()] == [
        "root",
        "nogroup",
    ]
    assert fs["/tmp"] == d("/tmp", 0o1777)
    assert fs["/var/tmp"] == d("/var/tmp", 0o1777)
    assert fs["/root"] == d("/root", 0o700)
    assert b"passwd: files" in fs["/etc/nsswitch.conf"].data


# /bin/sh ---------------------------------------------------------------------

BASH = pkg("bash", f("/bin/bash", b"bash", 0o755))


def test_bin_sh_links_to_bash_when_no_package_ships_it() -> None:
    generated = tree(generated_entries([BASH]))
    assert generated["/usr/bin/sh"] == ln("/usr/bin/sh", "bash")
    fs = tree(skeleton_entries(), package_entries(BASH, keep_docs=False), generated.values())
    found = resolve(fs, "/bin/sh")
    assert found is not None and found.data == b"bash"


def test_bin_sh_is_left_alone_when_a_package_ships_it() -> None:
    dash = pkg("dash", f("/bin/dash"), ln("/bin/sh", "dash"))
    assert "/usr/bin/sh" not in paths(generated_entries([BASH, dash]))


# alternatives ----------------------------------------------------------------

MAWK_POSTINST = """#!/bin/sh
set -e
if [ "$1" = configure ]; then
  update-alternatives --install /usr/bin/awk awk /usr/bin/mawk 5 \\
    --slave /usr/share/man/man1/awk.1.gz awk.1.gz /usr/share/man/man1/mawk.1.gz \\
    --slave /usr/bin/nawk nawk /usr/bin/mawk
fi
"""
MAWK = pkg(
    "mawk",
    f("/usr/bin/mawk", b"mawk", 0o755),
    f("/usr/share/man/man1/mawk.1.gz"),
    postinst=MAWK_POSTINST,
)


def test_postinst_alternative_makes_awk_link_to_mawk_through_etc_alternatives() -> None:
    generated = tree(generated_entries([MAWK]))
    assert generated["/usr/bin/awk"] == ln("/usr/bin/awk", "/etc/alternatives/awk")
    assert generated["/etc/alternatives/awk"] == ln("/etc/alternatives/awk", "/usr/bin/mawk")
    assert generated["/usr/bin/nawk"] == ln("/usr/bin/nawk", "/etc/alternatives/nawk")
    # The man page slave points at documentation the image leaves out: no dangling link.
    assert "/usr/share/man/man1/awk.1.gz" not in generated
    fs = tree(skeleton_entries(), package_entries(MAWK, keep_docs=False), generated.values())
    found = resolve(fs, "/bin/awk")
    assert found is not None and found.data == b"mawk"


def test_man_page_slave_is_linked_when_docs_are_kept() -> None:
    generated = tree(generated_entries([MAWK], keep_docs=True))
    assert "/usr/share/man/man1/awk.1.gz" in generated


def test_higher_priority_alternative_wins() -> None:
    gawk = pkg(
        "gawk",
        f("/usr/bin/gawk", b"gawk", 0o755),
        postinst="update-alternatives --install /usr/bin/awk awk /usr/bin/gawk 10\n",
    )
    generated = tree(generated_entries([gawk, MAWK]))
    assert generated["/etc/alternatives/awk"].target == "/usr/bin/gawk"
    # Slaves follow their master, as in Debian: mawk lost awk, so its nawk slave is not made.
    assert "/usr/bin/nawk" not in generated
    reordered = tree(generated_entries([MAWK, gawk]))
    assert reordered["/etc/alternatives/awk"].target == "/usr/bin/gawk"


def test_equal_priority_goes_to_the_package_first_by_name() -> None:
    def awk(name: str) -> DebContents:
        script = f"update-alternatives --install /usr/bin/awk awk /usr/bin/{name} 5\n"
        return pkg(name, f(f"/usr/bin/{name}"), postinst=script)

    generated = tree(generated_entries([awk("zawk"), awk("aawk")]))
    assert generated["/etc/alternatives/awk"].target == "/usr/bin/aawk"


def test_alternative_whose_target_is_missing_is_not_linked() -> None:
    ghost = pkg(
        "ghost", postinst="update-alternatives --install /usr/bin/awk awk /usr/bin/nope 99\n"
    )
    generated = tree(generated_entries([ghost, MAWK]))
    assert generated["/etc/alternatives/awk"].target == "/usr/bin/mawk"


def test_alternative_does_not_replace_a_file_a_package_ships() -> None:
    real = pkg("real-awk", f("/usr/bin/awk", b"real"))
    assert "/usr/bin/awk" not in paths(generated_entries([real, MAWK]))


def test_alternatives_parser_skips_what_it_cannot_read_literally() -> None:
    script = """
update-alternatives --quiet --install /usr/bin/pager pager /bin/less 77 \\
   --slave /usr/bin/pg pg /bin/less >/dev/null 2>&1 || true
update-alternatives --install /usr/bin/$NAME x /usr/bin/x 1
update-alternatives --install /usr/bin/vi vi "$(which vim)" 1
update-alternatives --remove pager /bin/more
update-alternatives --install /usr/bin/editor editor /usr/bin/ed -100; echo done
"""
    found = parse_alternatives(script, "less")
    assert [(a.link, a.name, a.path, a.priority, a.slaves) for a in found] == [
        ("/usr/bin/pager", "pager", "/bin/less", 77, (("/usr/bin/pg", "pg", "/bin/less"),)),
        ("/usr/bin/editor", "editor", "/usr/bin/ed", -100, ()),
    ]


# CA bundle -------------------------------------------------------------------


def test_ca_bundle_is_the_sorted_concatenation_of_the_certificates() -> None:
    ca = pkg(
        "ca-certificates",
        f("/usr/share/ca-certificates/mozilla/B_Root.crt", b"-----B-----\n"),
        f("/usr/share/ca-certificates/mozilla/A_Root.crt", b"-----A-----"),
        f("/usr/share/ca-certificates/mozilla/README", b"not a cert"),
    )
    local = pkg("site-ca", f("/usr/share/ca-certificates/site/C.crt", b"-----C-----\n"))
    generated = tree(generated_entries([ca, local]))
    assert generated[CA_BUNDLE] == f(CA_BUNDLE, b"-----A-----\n-----B-----\n-----C-----\n")


def test_no_ca_bundle_without_ca_certificates() -> None:
    local = pkg("site-ca", f("/usr/share/ca-certificates/site/C.crt", b"-----C-----\n"))
    assert CA_BUNDLE not in paths(generated_entries([local]))


def test_closure_without_any_of_these_effects_generates_nothing() -> None:
    assert generated_entries([pkg("libc6", f("/usr/lib/libc.so.6"))]) == []


# dpkg status -----------------------------------------------------------------


def test_status_file_is_the_control_stanza_marked_installed(tmp_path: Path) -> None:
    spec = DebSpec(
        "fd-find", "8.6.0-3", depends="libc6 (>= 2.34)", files={"/usr/bin/fdfind": b"fd"}
    )
    contents = read_deb(build_deb(spec, tmp_path), "fd-find")
    status = {e.path: e for e in package_entries(contents, keep_docs=False)}[
        "/var/lib/dpkg/status.d/fd-find"
    ]
    lines = status.data.decode().splitlines()
    assert lines[:2] == ["Package: fd-find", "Status: install ok installed"]
    assert "Version: 8.6.0-3" in lines
    assert "Depends: libc6 (>= 2.34)" in lines
    assert status.mode == 0o644


# one layer's tree --------------------------------------------------------------


def test_layer_tree_has_no_path_twice_and_later_entries_win() -> None:
    entries = layer_tree(
        [
            [d("/etc", 0o700), f("/etc/a", b"first"), f("/usr/bin/x")],
            [d("/etc", 0o755), f("/etc/a", b"second")],
        ]
    )
    assert [e.path for e in entries] == ["/etc", "/etc/a", "/usr", "/usr/bin", "/usr/bin/x"]
    by_path = {e.path: e for e in entries}
    assert by_path["/etc"].mode == 0o755
    assert by_path["/etc/a"].data == b"second"
    assert by_path["/usr"] == d("/usr")  # missing parents are added


def test_layer_tree_drops_entries_below_a_path_that_became_a_link() -> None:
    entries = layer_tree([[d("/opt/x"), f("/opt/x/y"), f("/opt/x/z/w")], [ln("/opt/x", "/srv")]])
    assert [e.path for e in entries] == ["/opt", "/opt/x"]


def test_layer_tree_keeps_hard_links_after_their_targets_or_copies_them() -> None:
    perl = f("/usr/bin/perl5.36.0", b"perl", 0o755)
    link = DebEntry("/usr/bin/perl", "hardlink", 0o755, b"perl", "/usr/bin/perl5.36.0")
    kept = layer_tree([[perl, link]])
    assert [e.path for e in kept][-2:] == ["/usr/bin/perl5.36.0", "/usr/bin/perl"]
    assert kept[-1] == link
    copied = layer_tree([[perl, link], [f("/usr/bin/perl5.36.0", b"other")]])
    assert {e.path: e for e in copied}["/usr/bin/perl"] == f("/usr/bin/perl", b"perl", 0o755)


def test_layer_tree_sorts_parents_before_children() -> None:
    entries = layer_tree([[f("/usr/bin-x/a"), f("/usr/bin/a"), d("/usr/bin"), f("/a")]])
    assert [e.path for e in entries] == [
        "/a",
        "/usr",
        "/usr/bin",
        "/usr/bin/a",
        "/usr/bin-x",
        "/usr/bin-x/a",
    ]


def test_real_package_files_land_in_merged_paths(tmp_path: Path) -> None:
    spec = DebSpec(
        "bash",
        files={"/bin/bash": File(b"bash", 0o755), "/usr/bin/bashbug": Symlink("../../bin/bash")},
    )
    contents = read_deb(build_deb(spec, tmp_path), "bash")
    fs = tree(skeleton_entries(), package_entries(contents, keep_docs=False))
    assert fs["/usr/bin/bash"].data == b"bash"
    found = resolve(fs, "/usr/bin/bashbug")
    assert found is not None and found.data == b"bash"
