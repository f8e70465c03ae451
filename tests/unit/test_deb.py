"""Reading .deb files as streams: real dpkg-deb packages, and hostile hand-made ones."""

from __future__ import annotations

import io
import lzma
import tarfile
from pathlib import Path

import pytest
from debrepo import DebSpec, File, Symlink, build_deb, raw_deb, tar_bytes

from polyarch.debian.deb import DebEntry, normalise_path, read_deb
from polyarch.errors import PackageError

CONTROL = "Package: evil\nVersion: 1\nArchitecture: amd64\nDescription: x\n"


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes | None]:
    return tarfile.TarInfo(name), data


def _special(name: str, type_: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = type_
    info.linkname = linkname
    return info, None


def _write(tmp_path: Path, deb: bytes) -> Path:
    path = tmp_path / "evil_1_amd64.deb"
    path.write_bytes(deb)
    return path


@pytest.mark.parametrize("compression", ["xz", "zstd", "gzip", "none"])
def test_reads_packages_made_by_dpkg_deb_in_every_compression(
    tmp_path: Path, compression: str
) -> None:
    spec = DebSpec(
        "fd-find",
        "8.6.0-3",
        compression=compression,
        postinst="#!/bin/sh\nset -e\necho configured\n",
        files={
            "/usr/bin/fdfind": File(b"\x7fELF fd", 0o755),
            "/usr/lib/cargo/bin/fd": Symlink("../../../bin/fdfind"),
            "/etc/fd.conf": b"conf",
        },
    )
    contents = read_deb(build_deb(spec, tmp_path), "fd-find")

    assert contents.package == "fd-find"
    assert "Package: fd-find\n" in contents.control
    assert "Version: 8.6.0-3\n" in contents.control
    assert contents.postinst == "#!/bin/sh\nset -e\necho configured\n"
    by_path = {e.path: e for e in contents.entries}
    assert by_path["/usr/bin/fdfind"] == DebEntry("/usr/bin/fdfind", "file", 0o755, b"\x7fELF fd")
    assert by_path["/usr/lib/cargo/bin/fd"].kind == "symlink"
    assert by_path["/usr/lib/cargo/bin/fd"].target == "../../../bin/fdfind"
    assert by_path["/etc/fd.conf"].data == b"conf"
    assert by_path["/usr/bin"].kind == "dir"
    assert "/" not in by_path  # the root belongs to the skeleton layer
    assert all(not e.path.endswith("/") and e.path.startswith("/") for e in contents.entries)


def test_package_without_postinst_has_none(tmp_path: Path) -> None:
    contents = read_deb(build_deb(DebSpec("plain", files={"/usr/bin/p": b"p"}), tmp_path), "plain")
    assert contents.postinst is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("./usr/bin/x", "/usr/bin/x"),
        ("usr//bin/./x/", "/usr/bin/x"),
        ("./", "/"),
        ("../etc/x", None),
        ("./usr/../../etc/x", None),
        ("/etc/x", None),
    ],
)
def test_member_names_are_normalised_or_refused(name: str, expected: str | None) -> None:
    assert normalise_path(name) == expected


def test_hard_link_to_an_earlier_file_carries_its_content(tmp_path: Path) -> None:
    data = tar_bytes(
        [
            _file("./usr/bin/perl5.36.0", b"perl"),
            _special("./usr/bin/perl", tarfile.LNKTYPE, "./usr/bin/perl5.36.0"),
            _special("./usr/bin/perl-again", tarfile.LNKTYPE, "usr/bin/perl"),
        ]
    )
    contents = read_deb(_write(tmp_path, raw_deb(CONTROL, data)), "evil")
    links = [e for e in contents.entries if e.kind == "hardlink"]
    assert [(e.path, e.target, e.data) for e in links] == [
        ("/usr/bin/perl", "/usr/bin/perl5.36.0", b"perl"),
        ("/usr/bin/perl-again", "/usr/bin/perl5.36.0", b"perl"),
    ]


def test_symlinks_may_point_anywhere_because_they_are_never_followed(tmp_path: Path) -> None:
    data = tar_bytes(
        [
            _special("./etc/shadow-link", tarfile.SYMTYPE, "/etc/shadow"),
            _special("./usr/up", tarfile.SYMTYPE, "../../../../.."),
        ]
    )
    contents = read_deb(_write(tmp_path, raw_deb(CONTROL, data)), "evil")
    assert [(e.path, e.target) for e in contents.entries] == [
        ("/etc/shadow-link", "/etc/shadow"),
        ("/usr/up", "../../../../.."),
    ]


HOSTILE = {
    "path traversal": (tar_bytes([_file("../../etc/x")]), "data.tar", "../../etc/x"),
    "traversal inside a path": (
        tar_bytes([_file("./usr/../../etc/x")]),
        "data.tar",
        "./usr/../../etc/x",
    ),
    "absolute member": (tar_bytes([_file("/etc/x")]), "data.tar", "/etc/x"),
    "hard link outside": (
        tar_bytes([_special("./usr/bin/x", tarfile.LNKTYPE, "../outside")]),
        "data.tar",
        "./usr/bin/x",
    ),
    "hard link to a file the package lacks": (
        tar_bytes([_special("./usr/bin/x", tarfile.LNKTYPE, "./etc/passwd")]),
        "data.tar",
        "./usr/bin/x",
    ),
    "character device": (
        tar_bytes([_special("./dev/mem", tarfile.CHRTYPE)]),
        "data.tar",
        "./dev/mem",
    ),
    "fifo": (tar_bytes([_special("./run/pipe", tarfile.FIFOTYPE)]), "data.tar", "./run/pipe"),
    "absolute symlink escape": (
        tar_bytes([_special("./usr/lib/x", tarfile.SYMTYPE, "/etc"), _file("./usr/lib/x/cron")]),
        "data.tar",
        "/usr/lib/x/cron",
    ),
    "relative symlink escape": (
        tar_bytes(
            [_special("./usr/share/up", tarfile.SYMTYPE, "../../.."), _file("./usr/share/up/x")]
        ),
        "data.tar",
        "/usr/share/up/x",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_package_is_refused_naming_package_and_path(tmp_path: Path, case: str) -> None:
    data, member, bad = HOSTILE[case]
    with pytest.raises(PackageError) as caught:
        read_deb(_write(tmp_path, raw_deb(CONTROL, data, member)), "evil")
    assert "evil" in str(caught.value)
    assert bad in str(caught.value)


def _big_tar() -> bytes:
    return tar_bytes([_file(f"./usr/share/f{i}", bytes([i]) * 3000) for i in range(40)])


def test_truncated_data_tar_xz_is_refused(tmp_path: Path) -> None:
    compressed = lzma.compress(_big_tar())
    deb = raw_deb(CONTROL, compressed[: len(compressed) // 2], "data.tar.xz")
    with pytest.raises(PackageError, match=r"evil.*data\.tar\.xz is truncated or corrupt"):
        read_deb(_write(tmp_path, deb), "evil")


def test_data_tar_truncated_at_a_header_boundary_is_refused(tmp_path: Path) -> None:
    # tarfile alone would end such an archive silently, losing files.
    whole = _big_tar()
    cut = 512 * 21  # the fourth member's header: 1 header + 6 data blocks per member
    assert whole[cut : cut + 20].startswith(b"./usr/share/f3")
    with pytest.raises(PackageError, match="evil"):
        read_deb(_write(tmp_path, raw_deb(CONTROL, whole[:cut])), "evil")


def test_corrupt_header_in_the_middle_is_refused(tmp_path: Path) -> None:
    whole = bytearray(_big_tar())
    header = 512 * 7  # the second member's header (1 header + 6 data blocks per member)
    assert whole[header : header + 20].startswith(b"./usr/share/f")
    whole[header + 150] ^= 0xFF  # breaks the header checksum
    with pytest.raises(PackageError, match="evil"):
        read_deb(_write(tmp_path, raw_deb(CONTROL, bytes(whole))), "evil")


def test_deb_cut_short_is_refused(tmp_path: Path) -> None:
    deb = build_deb(DebSpec("cut", files={"/usr/bin/c": b"c" * 5000}), tmp_path).read_bytes()
    with pytest.raises(PackageError, match="cut"):
        read_deb(_write(tmp_path, deb[:-200]), "cut")


def test_file_that_is_not_a_deb_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("x"))
    with pytest.raises(PackageError, match="not a Debian package"):
        read_deb(_write(tmp_path, buffer.getvalue()), "evil")


def test_deb_without_data_member_is_refused(tmp_path: Path) -> None:
    deb = raw_deb(CONTROL, b"", "nothing-here")
    with pytest.raises(PackageError, match="missing"):
        read_deb(_write(tmp_path, deb), "evil")
