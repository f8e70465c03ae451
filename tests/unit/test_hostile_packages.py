"""Packages no file system can unpack, or that unpack to more than a package may: refused at
build time with exit 15, naming the package and the path."""

from __future__ import annotations

import io
import lzma
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RepoFactory, write_project
from debrepo import raw_deb, tar_bytes

from polyarch.debian.deb import read_deb
from polyarch.errors import PackageError

Cli = Callable[..., tuple[int, str, str]]
CONTROL = "Package: evil\nVersion: 1.0\nArchitecture: amd64\n"


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, None


LONG_NAME = "./usr/bin/" + "n" * 256
LONG_PATH = "./usr/share/" + "/".join(["d" * 250] * 17) + "/f"  # 4,275 bytes
HOSTILE = {
    "a name over 255 bytes": [_file(LONG_NAME)],
    "a path over PATH_MAX": [_file(LONG_PATH)],
    "a symlink target over PATH_MAX": [_link("./usr/bin/evil", "/" + "t/" * 2100)],
}


@pytest.mark.parametrize("what", list(HOSTILE))
def test_paths_no_file_system_can_hold_are_refused_by_the_reader(tmp_path: Path, what: str) -> None:
    deb = tmp_path / "evil.deb"
    deb.write_bytes(raw_deb(CONTROL, tar_bytes(HOSTILE[what])))
    with pytest.raises(PackageError, match=r"package evil .*(bytes long|name of \d+ bytes)"):
        read_deb(deb, "evil")


def test_a_package_that_unpacks_past_the_limit_is_refused_as_it_is_read(tmp_path: Path) -> None:
    # 64 MiB of zeros in a 10 kB data.tar.xz: a small decompression bomb.
    info = tarfile.TarInfo("./usr/share/zeros")
    info.size = 64 << 20
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    packed = lzma.compress(raw.getvalue())
    assert len(packed) < 100_000
    deb = tmp_path / "bomb.deb"
    deb.write_bytes(raw_deb(CONTROL, packed, "data.tar.xz"))
    with pytest.raises(PackageError, match=r"more than 33554432 bytes .*decompression bomb"):
        read_deb(deb, "evil", max_unpacked=32 << 20)
    assert read_deb(deb, "evil").entries[0].path == "/usr/share/zeros"  # the default allows it


def test_a_build_with_an_overlong_name_fails_at_build_not_at_docker_load(
    cli: Cli, tmp_path: Path, make_repo: RepoFactory
) -> None:
    repo, url = make_repo(arches=("amd64",))
    data = tar_bytes([_file("./usr/bin/hello", b"#!/bin/sh\n"), _file(LONG_NAME)])
    repo.add_raw("hello", "1.0", "amd64", raw_deb(CONTROL.replace("evil", "hello"), data))
    repo.publish()
    config = write_project(
        tmp_path / "p",
        url,
        repo.key.keyring,
        '[containers.hello]\npackage = "hello"\ncommand = "hello"\nsystems = ["x86_64-linux"]\n',
    )
    code, _out, err = cli(
        "-f", config, "--cache-dir", tmp_path / "cache", "build", "hello", "--system",
        "x86_64-linux", "--out", tmp_path / "out",
    )  # fmt: skip
    assert code == PackageError.exit_code, err
    assert "package hello" in err and "name of 256 bytes" in err
    assert not (tmp_path / "out" / "hello").exists()
