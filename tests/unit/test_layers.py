"""Layer planning, the deterministic tar + gzip writer, and the layer cache."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
from conftest import base_packages
from debrepo import DebSpec, File, build_deb, raw_deb, tar_bytes

import polyarch.image.layers as layers_module
from polyarch.cache import Cache
from polyarch.debian.deb import DebContents, read_deb
from polyarch.errors import PackageError
from polyarch.image.layer_plan import GENERATED_NAME, SKELETON_NAME, Layering, plan_layers
from polyarch.image.layers import Layer, LayerStats, build_layers

EPOCH = 1_700_000_000


@dataclass(frozen=True)
class Record:
    name: str
    sha256: str
    size: int = 1000


@dataclass(frozen=True)
class Resolved:
    record: Record
    base: bool


MAWK_POSTINST = (
    "#!/bin/sh\nupdate-alternatives --install /usr/bin/awk awk /usr/bin/mawk 5 \\\n"
    "  --slave /usr/bin/nawk nawk /usr/bin/mawk\n"
)


@dataclass
class World:
    """Real .debs (dpkg-deb) and what a resolver would say about them."""

    paths: dict[str, Path]  # sha256 → .deb
    names: dict[str, str]  # sha256 → package
    shas: dict[str, str]  # package → sha256
    reads: list[str]

    def resolved(self, base: list[str], tool: list[str]) -> list[Resolved]:
        return sorted(
            [Resolved(Record(n, self.shas[n]), True) for n in base]
            + [Resolved(Record(n, self.shas[n]), False) for n in tool],
            key=lambda r: r.record.name,
        )

    def read(self, sha256: str) -> DebContents:
        self.reads.append(self.names[sha256])
        return read_deb(self.paths[sha256], self.names[sha256])


BASE = ["base-files", "bash", "coreutils", "libc6"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    out = tmp_path_factory.mktemp("debs")
    specs = [
        *base_packages("amd64"),
        DebSpec("fd-find", compression="zstd", files={"/usr/bin/fdfind": File(b"fd", 0o755)}),
        DebSpec("ripgrep", compression="gzip", files={"/usr/bin/rg": File(b"rg", 0o755)}),
        DebSpec("libpcre2", compression="none", files={"/usr/lib/libpcre2.so": b"pcre"}),
        DebSpec(
            "mawk",
            postinst=MAWK_POSTINST,
            files={"/usr/bin/mawk": File(b"mawk", 0o755), "/usr/share/man/man1/mawk.1.gz": b"m"},
        ),
    ]
    paths, names, shas = {}, {}, {}
    for spec in specs:
        deb = build_deb(spec, out)
        sha = hashlib.sha256(deb.read_bytes()).hexdigest()
        paths[sha], names[sha], shas[spec.name] = deb, spec.name, sha
    return World(paths, names, shas, [])


def build(
    world: World,
    cache_dir: Path,
    tool: list[str],
    *,
    epoch: int = EPOCH,
    max_layers: int = 100,
    layering: Layering = "per-package",
    jobs: int = 2,
    stats: LayerStats | None = None,
    read: Callable[[str], DebContents] | None = None,
) -> list[Layer]:
    plans = plan_layers(world.resolved(BASE, tool), max_layers, layering=layering)
    return build_layers(
        plans,
        read or world.read,
        Cache(cache_dir),
        epoch=epoch,
        keep_docs=False,
        jobs=jobs,
        stats=stats,
    )


def members(layer: Layer) -> list[tarfile.TarInfo]:
    with tarfile.open(layer.blob, "r:gz") as tar:
        return tar.getmembers()


# planning: the per-package policy (the shared one: test_layer_plan.py) -----------


def test_plan_is_skeleton_then_base_then_tool_then_generated(world: World) -> None:
    plans = plan_layers(world.resolved(BASE, ["mawk", "fd-find"]), 100, layering="per-package")
    assert [p.names for p in plans] == [
        (SKELETON_NAME,),
        ("base-files",),
        ("bash",),
        ("coreutils",),
        ("libc6",),
        ("fd-find",),
        ("mawk",),
        (GENERATED_NAME,),
    ]


@pytest.mark.parametrize("max_layers", range(2, 11))
def test_max_layers_bounds_the_count_and_keeps_every_package_once(
    world: World, max_layers: int
) -> None:
    tool = ["fd-find", "libpcre2", "mawk", "ripgrep"]
    plans = plan_layers(world.resolved(BASE, tool), max_layers, layering="per-package")
    assert len(plans) == min(max_layers, 10)
    flat = [name for plan in plans for name in plan.names]
    assert flat == [SKELETON_NAME, *BASE, *sorted(tool), GENERATED_NAME]


def test_over_the_bound_the_tool_packages_merge_before_the_base_ones(world: World) -> None:
    tool = ["fd-find", "libpcre2", "mawk", "ripgrep"]
    plans = plan_layers(world.resolved(BASE, tool), 8, layering="per-package")
    assert [p.names for p in plans][1:] == [
        ("base-files",),
        ("bash",),
        ("coreutils",),
        ("libc6",),
        ("fd-find",),
        ("libpcre2", "mawk", "ripgrep"),
        (GENERATED_NAME,),
    ]
    plans = plan_layers(world.resolved(BASE, tool), 5, layering="per-package")
    assert [p.names for p in plans][1:] == [
        ("base-files",),
        ("bash", "coreutils", "libc6"),
        ("fd-find", "libpcre2", "mawk", "ripgrep"),
        (GENERATED_NAME,),
    ]


# determinism -----------------------------------------------------------------


def test_same_inputs_give_identical_layer_bytes_from_separate_caches(
    world: World, tmp_path: Path
) -> None:
    first = build(world, tmp_path / "a", ["fd-find", "mawk"])
    second = build(world, tmp_path / "b", ["fd-find", "mawk"], jobs=1)
    assert [la.digest for la in first] == [la.digest for la in second]
    assert [la.blob.read_bytes() for la in first] == [la.blob.read_bytes() for la in second]
    for layer in first:
        blob = layer.blob.read_bytes()
        assert layer.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
        assert layer.size == len(blob)
        tar = gzip.decompress(blob)
        assert layer.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
        assert layer.uncompressed_size == len(tar)


def test_another_source_date_epoch_gives_other_digests(world: World, tmp_path: Path) -> None:
    first = build(world, tmp_path / "a", ["fd-find"])
    later = build(world, tmp_path / "b", ["fd-find"], epoch=EPOCH + 1)
    assert not {la.digest for la in first} & {la.digest for la in later}


def test_tar_entries_are_sorted_root_owned_and_share_one_mtime(
    world: World, tmp_path: Path
) -> None:
    for layer in build(world, tmp_path, ["fd-find", "mawk"]):
        infos = members(layer)
        names = [i.name for i in infos]
        ordinary = [i.name for i in infos if not i.islnk()]
        assert ordinary == sorted(ordinary, key=lambda n: n.split("/"))
        assert len(set(names)) == len(names)
        assert {(i.uid, i.gid, i.uname, i.gname, i.mtime) for i in infos} == {(0, 0, "", "", EPOCH)}
        assert not any(n.startswith(("/", "./")) for n in names)
        for info in infos:  # every parent directory comes before its children
            parent = os.path.dirname(info.name)
            if parent:
                assert parent in names[: names.index(info.name)]


def test_gzip_header_has_mtime_zero_and_no_file_name(world: World, tmp_path: Path) -> None:
    for layer in build(world, tmp_path, ["fd-find"]):
        header = layer.blob.read_bytes()[:10]
        assert header[:3] == b"\x1f\x8b\x08"
        assert header[3] == 0  # no FNAME, FCOMMENT or FEXTRA
        assert header[4:8] == b"\0\0\0\0"


def test_skeleton_layer_has_modes_and_links_as_specified(world: World, tmp_path: Path) -> None:
    skeleton = build(world, tmp_path, ["fd-find"])[0]
    assert skeleton.packages == (SKELETON_NAME,)
    by_name = {i.name: i for i in members(skeleton)}
    assert by_name["tmp"].mode == 0o1777 and by_name["tmp"].isdir()
    assert by_name["root"].mode == 0o700
    assert by_name["bin"].issym() and by_name["bin"].linkname == "usr/bin"
    assert by_name["etc/passwd"].isreg()


# sharing and the cache ---------------------------------------------------------


def test_images_of_two_tools_share_their_base_layers(world: World, tmp_path: Path) -> None:
    fd = build(world, tmp_path / "fd", ["fd-find"])
    rg = build(world, tmp_path / "rg", ["libpcre2", "ripgrep"], max_layers=100)
    fd_by = {la.packages: la.digest for la in fd}
    rg_by = {la.packages: la.digest for la in rg}
    for shared in [(SKELETON_NAME,), *((name,) for name in BASE)]:
        assert fd_by[shared] == rg_by[shared]
    # Both generated layers hold only /usr/bin/sh: same bytes, same digest.
    assert fd_by[(GENERATED_NAME,)] == rg_by[(GENERATED_NAME,)]
    assert fd_by[("fd-find",)] not in rg_by.values()


def test_cache_hit_reads_no_deb_and_compresses_nothing(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cold = LayerStats()
    first = build(world, tmp_path, ["fd-find", "mawk"], stats=cold)
    assert (cold.hits, cold.misses) == (0, len(first))

    def forbidden(*_: object) -> NoReturn:
        raise AssertionError("no work on a cache hit")

    monkeypatch.setattr(layers_module, "GzipWriter", forbidden)
    monkeypatch.setattr(layers_module, "write_tar", forbidden)
    warm = LayerStats()
    second = build(world, tmp_path, ["fd-find", "mawk"], stats=warm, read=forbidden)
    assert (warm.hits, warm.misses, warm.debs_read) == (len(first), 0, 0)
    assert second == first


def test_each_deb_is_read_at_most_once_per_build(world: World, tmp_path: Path) -> None:
    world.reads.clear()
    stats = LayerStats()
    build(world, tmp_path / "a", ["fd-find", "mawk"], stats=stats)
    assert sorted(world.reads) == sorted([*BASE, "fd-find", "mawk"])
    assert stats.debs_read == len(world.reads)
    # A new tool: only its layer and the generated layer are built; the hit layers'
    # packages are read once for the closure-wide generated layer, never compressed.
    world.reads.clear()
    stats = LayerStats()
    build(world, tmp_path / "a", ["mawk", "ripgrep"], stats=stats)
    assert sorted(world.reads) == sorted([*BASE, "mawk", "ripgrep"])
    assert (stats.hits, stats.misses) == (6, 2)


def test_empty_generated_layer_is_left_out(world: World, tmp_path: Path) -> None:
    plans = plan_layers([Resolved(Record("libpcre2", world.shas["libpcre2"]), False)], 100)
    built = build_layers(plans, world.read, Cache(tmp_path), epoch=EPOCH, keep_docs=False)
    assert [la.packages for la in built] == [(SKELETON_NAME,), ("libpcre2",)]
    again = build_layers(plans, world.read, Cache(tmp_path), epoch=EPOCH, keep_docs=False)
    assert again == built


def test_generated_layer_holds_sh_and_the_awk_alternative(world: World, tmp_path: Path) -> None:
    generated = build(world, tmp_path, ["mawk"])[-1]
    assert generated.packages == (GENERATED_NAME,)
    links = {i.name: i.linkname for i in members(generated) if i.issym()}
    assert links == {
        "usr/bin/sh": "bash",
        "usr/bin/awk": "/etc/alternatives/awk",
        "usr/bin/nawk": "/etc/alternatives/nawk",
        "etc/alternatives/awk": "/usr/bin/mawk",
        "etc/alternatives/nawk": "/usr/bin/mawk",
    }


def test_hostile_package_stops_the_build_and_caches_no_layer_for_it(tmp_path: Path) -> None:
    bad = tmp_path / "evil.deb"
    info = tarfile.TarInfo("../../etc/cron.d/x")
    bad.write_bytes(raw_deb("Package: evil\nVersion: 1\n", tar_bytes([(info, b"x")])))
    sha = hashlib.sha256(bad.read_bytes()).hexdigest()
    plans = plan_layers([Resolved(Record("evil", sha), False)], 100)
    cache = Cache(tmp_path / "cache")
    with pytest.raises(PackageError, match=r"evil.*\.\./\.\./etc/cron\.d/x"):
        build_layers(plans, lambda s: read_deb(bad, "evil"), cache, epoch=EPOCH, keep_docs=False)
    cached = {p.name for p in (tmp_path / "cache" / "layers").rglob("*") if p.is_file()}
    assert len(cached) == 1  # the skeleton only


# independent tools -------------------------------------------------------------


def test_gnu_tar_lists_a_layer_as_root_owned_at_the_epoch(world: World, tmp_path: Path) -> None:
    bash = next(la for la in build(world, tmp_path, ["fd-find"]) if la.packages == ("bash",))
    listing = subprocess.run(
        ["tar", "--utc", "-tvzf", str(bash.blob)], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    assert any(line.endswith(" usr/bin/bash") for line in listing)
    assert any(line.endswith(" var/lib/dpkg/status.d/bash") for line in listing)
    for line in listing:
        assert line.split()[1] == "0/0"
        assert "2023-11-14 22:13" in line  # EPOCH in UTC


def test_layers_unpacked_in_order_by_gnu_tar_give_a_merged_usr_tree(
    world: World, tmp_path: Path
) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    for layer in build(world, tmp_path / "cache", ["fd-find", "mawk"]):
        subprocess.run(["tar", "-xzf", str(layer.blob), "-C", str(rootfs)], check=True)
    assert (rootfs / "bin").readlink() == Path("usr/bin")
    assert (rootfs / "bin" / "bash").read_bytes() == b"bash"  # through the relative root link
    assert (rootfs / "usr/bin/fdfind").stat().st_mode & 0o777 == 0o755
    assert (rootfs / "usr/bin/sh").readlink() == Path("bash")
    assert (rootfs / "usr/bin/awk").readlink() == Path("/etc/alternatives/awk")
    assert (rootfs / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert not (rootfs / "usr/share/man").exists()
    assert (rootfs / "usr/share/doc/libc6/copyright").read_bytes() == b"(c)"
    assert not (rootfs / "usr/share/doc/base-files").exists()
    status = sorted(p.name for p in (rootfs / "var/lib/dpkg/status.d").iterdir())
    assert status == sorted([*BASE, "fd-find", "mawk"])


def test_hard_links_survive_into_the_layer(tmp_path: Path) -> None:
    target = tarfile.TarInfo("./usr/bin/perl5.36.0")
    target.mode = 0o755
    link = tarfile.TarInfo("./usr/bin/perl")
    link.type, link.linkname = tarfile.LNKTYPE, "./usr/bin/perl5.36.0"
    deb = tmp_path / "perl.deb"
    control = "Package: perl-base\nVersion: 1\nArchitecture: amd64\n"
    deb.write_bytes(raw_deb(control, tar_bytes([(target, b"perl"), (link, None)])))
    plans = plan_layers([Resolved(Record("perl-base", "ab" * 32), False)], 100)
    built = build_layers(
        plans, lambda s: read_deb(deb, "perl-base"), Cache(tmp_path), epoch=0, keep_docs=False
    )
    infos = members(built[1])
    assert infos[-1].name == "usr/bin/perl" and infos[-1].islnk()
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    subprocess.run(["tar", "-xzf", str(built[1].blob), "-C", str(rootfs)], check=True)
    assert (rootfs / "usr/bin/perl").stat().st_nlink == 2


def test_tar_bytes_read_back_equal_what_was_packed(world: World, tmp_path: Path) -> None:
    fd = next(la for la in build(world, tmp_path, ["fd-find"]) if la.packages == ("fd-find",))
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(fd.blob.read_bytes()))) as tar:
        member = tar.extractfile("usr/bin/fdfind")
        assert member is not None and member.read() == b"fd"
