"""A project for the supply-chain tests: a generated repository whose packages have the
shapes SBOMs must get right (Source fields, DEP-5 copyright files, os-release, a ``+`` in a
name, an epoch, a virtual package, a doc directory that links to another package's)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import RepoFactory, write_project
from debrepo import DebSpec, File, Symlink, TestRepo

ARCHES = {"amd64": "x86_64-linux", "arm64": "aarch64-linux"}
DEP5 = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"


@dataclass
class Spec(DebSpec):
    """A package with a Source field and a real-looking maintainer."""

    source: str = ""
    maintainer: str = "Debian Test Team <team@lists.example.org>"

    def control(self) -> str:
        text = super().control().replace("Test <test@example.invalid>", self.maintainer)
        if self.source:
            text = text.replace("\nArchitecture:", f"\nSource: {self.source}\nArchitecture:", 1)
        return text


def world(arch: str) -> list[DebSpec]:
    """A base system and a tool with the shapes SBOMs must get right."""
    return [
        Spec(
            "libc6",
            "2.36-9+deb12u4",
            arch,
            multi_arch="same",
            source="glibc",
            files={
                "/lib/libc.so.6": b"libc",
                "/usr/share/doc/libc6/copyright": (
                    DEP5 + "Files: *\nCopyright: GNU\nLicense: LGPL-2.1+\n\n"
                    "Files: debian/*\nCopyright: Debian\nLicense: GPL-2+\n"
                ).encode(),
            },
        ),
        Spec(
            "base-files",
            "12.4+deb12u5",
            arch,
            essential=True,
            files={
                "/usr/lib/os-release": (
                    b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
                    b'VERSION_ID="12"\nVERSION_CODENAME=bookworm\nID=debian\n'
                ),
                "/etc/os-release": Symlink("../usr/lib/os-release"),
                "/usr/share/doc/base-files/copyright": b"This is Debian's base-files.\n",
            },
        ),
        Spec(
            "bash",
            "5.2.15-2+b2",
            arch,
            essential=True,
            source="bash (5.2.15-2)",
            pre_depends="libc6 (>= 2.36)",
            depends="base-files (>= 2.1.12)",
            files={
                "/bin/bash": b"bash",
                "/usr/share/doc/bash/copyright": (
                    DEP5 + "Files: *\nCopyright: FSF\nLicense: GPL-3+\n\n"
                    "Files: lib/odd/*\nCopyright: someone\nLicense: odd-permissive\n\n"
                    "License: odd-permissive\n Do what you like.\n .\n Really.\n"
                ).encode(),
            },
        ),
        Spec(
            "coreutils",
            "9.1-1",
            arch,
            essential=True,
            pre_depends="libc6 (>= 2.34)",
            files={"/bin/ls": b"ls", "/usr/bin/env": b"env"},
        ),
        Spec(
            "gcc-12-base",
            "12.2.0-14",
            arch,
            multi_arch="same",
            source="gcc-12",
            files={
                "/usr/share/doc/gcc-12-base/copyright": (
                    DEP5 + "Files: *\nCopyright: FSF\n"
                    "License: GPL-3+ with GCC-exception-3.1 exception\n"
                ).encode()
            },
        ),
        Spec(
            "libstdc++6",
            "12.2.0-14",
            arch,
            multi_arch="same",
            source="gcc-12",
            depends="gcc-12-base (= 12.2.0-14), libc6",
            files={
                "/usr/lib/libstdc++.so.6": b"c++",
                "/usr/share/doc/libstdc++6": Symlink("gcc-12-base"),
            },
        ),
        Spec("mawk", "1.3.4-1", arch, provides="awk", files={"/usr/bin/mawk": b"mawk"}),
        Spec(
            "hello",
            "1:2.10-3",
            arch,
            source="hello-src",
            depends="libc6 (>= 2.36), libstdc++6, awk",
            files={
                "/usr/bin/hello": File(b"#!/bin/sh\necho hello\n", 0o755),
                "/usr/share/doc/hello/copyright": (
                    DEP5 + "Files: *\nCopyright: 2024 Test\nLicense: Expat or Apache-2.0\n"
                ).encode(),
            },
        ),
    ]


CONTAINERS = """
[containers.hello]
package = "hello"
command = "hello"
"""


@dataclass
class Project:
    config: Path
    repo: TestRepo
    url: str

    @property
    def result(self) -> Path:
        return self.config.parent / "result" / "hello"


def new_project(tmp_path: Path, make_repo: RepoFactory) -> Project:
    specs = [spec for arch in ARCHES for spec in world(arch)]
    repo, url = make_repo(specs, with_base=False)
    config = write_project(tmp_path / "project", url, repo.key.keyring, CONTAINERS)
    return Project(config, repo, url)


def load(path: Path) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(path.read_bytes())
    return value
