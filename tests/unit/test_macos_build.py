"""The build path on a host that is not Linux: no /proc, no gpgv, sys.platform "darwin".

A Mac cannot run here, so polyarch is made to see one: ``sys.platform`` reports
``darwin`` (set after the standard library is imported, as it would have been
there), PATH holds no gpgv or gpg, and — in a private mount namespace — /proc
is unmounted. The outputs must be byte-identical to a normal Linux build.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RepoFactory, write_project
from debrepo import DebSpec

from polyarch import files

Cli = Callable[..., tuple[int, str, str]]
UNSHARE = shutil.which("unshare")
UMOUNT = shutil.which("umount")

AS_A_MAC = """
import os, sys
from polyarch.cli import main
# The CLI imports its libraries lazily; those that choose a platform implementation
# when imported (urllib.request: _scproxy on a real Mac) are loaded as on this host.
import httpx, urllib.request
sys.platform = "darwin"
assert not os.path.exists("/proc/self"), "/proc is still there"
sys.exit(main(sys.argv[1:]))
"""


def output_digests(out: Path) -> dict[str, str]:
    """SHA-256 of every file under ``out`` (OCI layout and docker-archives), by relative path."""
    return {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def project(make_repo: RepoFactory, tmp_path: Path) -> Path:
    specs = [
        DebSpec("hello", "1.0", arch, depends="libc6", files={"/usr/bin/hello": b"hi"})
        for arch in ("amd64", "arm64")
    ]
    repo, url = make_repo(specs)
    return write_project(
        tmp_path / "p", url, repo.key.keyring, '[containers.hello]\npackage = "hello"\n'
    )


def build(cli: Cli, project: Path, cache: Path, out: Path) -> None:
    code, _, err = cli(
        "-f", project, "--cache-dir", cache, "build", "hello", "--all-systems", "--out", out
    )  # fmt: skip
    assert code == 0, err


def test_darwin_without_gpgv_builds_the_same_bytes_in_process(
    cli: Cli, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build(cli, project, tmp_path / "linux-cache", tmp_path / "linux")
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    assert not files._exchange(tmp_path, tmp_path)  # the non-Linux directory swap is used
    build(cli, project, tmp_path / "mac-cache", tmp_path / "mac")
    build(cli, project, tmp_path / "mac-cache", tmp_path / "mac")  # swaps over an old result
    assert output_digests(tmp_path / "mac") == output_digests(tmp_path / "linux")
    assert "hello/oci/index.json" in output_digests(tmp_path / "mac")


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0 or not (UNSHARE and UMOUNT),
    reason="unmounting /proc in a private mount namespace needs Linux, root and unshare",
)
def test_without_proc_or_gpgv_as_darwin_the_build_gives_the_same_digests(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    build(cli, project, tmp_path / "linux-cache", tmp_path / "linux")
    empty = tmp_path / "empty-path"
    empty.mkdir()
    argv = [
        str(UNSHARE), "--mount", "--propagation", "private", "--",
        "/bin/sh", "-c", f'{UMOUNT} -l /proc && exec "$@"', "sh",
        sys.executable, "-c", AS_A_MAC,
        "-f", str(project), "--cache-dir", str(tmp_path / "mac-cache"),
        "build", "hello", "--all-systems", "--out", str(tmp_path / "mac"),
    ]  # fmt: skip
    env = {**os.environ, "PATH": str(empty)}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert output_digests(tmp_path / "mac") == output_digests(tmp_path / "linux")

    # and a tampered InRelease is still refused, by the same process setup
    inrelease = next(project.parent.parent.glob("repo*/dists/bookworm/InRelease"))
    inrelease.write_bytes(inrelease.read_bytes().replace(b"Suite: bookworm", b"Suite: bookwork"))
    argv[argv.index("--cache-dir") + 1] = str(tmp_path / "mac-cache-2")
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 11, result.stderr
    assert "InRelease was modified after signing" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_host_path_is_named_after_a_package_or_differs_only_in_case(
    cli: Cli, make_repo: RepoFactory, tmp_path: Path
) -> None:
    # A macOS volume cannot hold two names that differ only in case: everything the build
    # writes on the host must be named by digests and fixed names, never by package files.
    specs = [
        DebSpec(
            "mixed-case-pkg",
            "1.0",
            arch,
            depends="libc6",
            files={"/usr/share/mixed/README": b"upper", "/usr/share/mixed/readme": b"lower"},
        )
        for arch in ("amd64", "arm64")
    ]
    repo, url = make_repo(specs)
    project = write_project(
        tmp_path / "p",
        url,
        repo.key.keyring,
        '[containers.tool]\npackage = "mixed-case-pkg"\ncommand = "/bin/bash"\n',
    )
    build_args = ("-f", project, "--cache-dir", tmp_path / "cache", "build", "tool")
    code, _, err = cli(*build_args, "--all-systems", "--out", tmp_path / "out")
    assert code == 0, err
    written = [
        p.relative_to(tmp_path).as_posix()
        for top in (tmp_path / "cache", tmp_path / "out")
        for p in top.rglob("*")
    ]
    assert len({p.lower() for p in written}) == len(written)
    assert not [p for p in written if "mixed" in p or "libc6" in p or ".deb" in p]
