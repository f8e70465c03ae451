"""Systems in their three spellings, and the native one."""

from __future__ import annotations

import pytest

from polyarch.errors import UsageError
from polyarch.platforms import SYSTEMS, native_system, parse_system, system_for_platform


@pytest.mark.parametrize(
    ("spelling", "name"),
    [
        ("x86_64-linux", "x86_64-linux"),
        ("linux/amd64", "x86_64-linux"),
        ("amd64", "x86_64-linux"),
        ("aarch64-linux", "aarch64-linux"),
        ("linux/arm64", "aarch64-linux"),
        ("linux/arm64/v8", "aarch64-linux"),
        ("arm64", "aarch64-linux"),
        ("linux/arm/v7", "armv7l-linux"),
        ("armhf", "armv7l-linux"),
        ("linux/386", "i686-linux"),
        ("i386", "i686-linux"),
        ("ppc64el", "powerpc64le-linux"),
        ("linux/ppc64le", "powerpc64le-linux"),
        ("s390x", "s390x-linux"),
    ],
)
def test_every_spelling_names_one_system(spelling: str, name: str) -> None:
    assert parse_system(spelling).name == name


def test_the_table_round_trips() -> None:
    for s in SYSTEMS:
        assert parse_system(s.oci_platform) is s
        assert parse_system(s.debian_arch) is s
        assert system_for_platform(s.oci_os, s.oci_architecture, s.oci_variant) is s


@pytest.mark.parametrize(
    ("machine", "name"),
    [
        ("aarch64", "aarch64-linux"),
        ("arm64", "aarch64-linux"),
        ("x86_64", "x86_64-linux"),
        ("AMD64", "x86_64-linux"),
    ],
)
def test_native_system_follows_the_host_machine(machine: str, name: str) -> None:
    # "arm64" is what macOS on Apple silicon reports; its containers run in an aarch64 Linux VM.
    assert native_system(machine).name == name


def test_unknown_system_suggests_a_near_one() -> None:
    with pytest.raises(UsageError) as exc:
        parse_system("aarch64-linx")
    assert "did you mean 'aarch64-linux'" in str(exc.value)
