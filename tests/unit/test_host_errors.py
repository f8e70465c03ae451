"""When the host refuses (disk full, read-only, names too long, undecodable files): one line,
its documented exit code, no traceback, nothing half-written.

Full and read-only file systems are real: a small tmpfs mounted in a private
mount namespace of the polyarch process (``unshare -m``), so nothing outside
the test sees it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cacheproject import make_project
from conftest import RepoFactory

from polyarch.errors import HostError, LockError

Cli = Callable[..., tuple[int, str, str]]
UNSHARE = shutil.which("unshare")


def _can_unshare() -> bool:
    if UNSHARE is None or os.geteuid() != 0:
        return False
    probe = subprocess.run([UNSHARE, "-m", "true"], capture_output=True)
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(
    not _can_unshare(), reason="needs root and unshare -m (private mounts)"
)


@pytest.fixture
def project(tmp_path: Path, make_repo: RepoFactory) -> Path:
    return make_project(tmp_path, make_repo)[2]


def polyarch_on_tmpfs(
    mountpoint: Path, size: str, args: list[str | Path], *, read_only: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run polyarch with a ``size`` tmpfs at ``mountpoint`` that only this process sees."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    remount = f" && mount -o remount,ro {mountpoint}" if read_only else ""
    script = (
        f"mount -t tmpfs -o size={size} tmpfs {mountpoint}{remount} && "
        f'exec {sys.executable} -m polyarch "$@"'
    )
    assert UNSHARE is not None
    return subprocess.run(
        [UNSHARE, "-m", "sh", "-c", script, "sh", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_one_line(stderr: str, *words: str) -> None:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("polyarch: error:")]
    assert len(lines) == 1, stderr
    for word in words:
        assert word in lines[0], stderr


# Inside the private mount namespace: build once, fill the disk, build again; report
# the second build's exit code and stderr, and what OUT holds afterwards.
FILL_THEN_BUILD = """
import contextlib, hashlib, io, json, sys
from pathlib import Path
from polyarch.cli import main

project, cache, out = sys.argv[1:4]
args = ["-q", "-f", project, "--cache-dir", cache, "build", "fd", "--out", out]
assert main(args) == 0
before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in Path(out, "fd").glob("*.tar")}
with contextlib.suppress(OSError), open(Path(out, "filler"), "wb") as filler:
    while True:
        filler.write(b"x" * 65536)
err = io.StringIO()
with contextlib.redirect_stderr(err):
    # Another tag: an identical rebuild would write nothing, and so never fill the disk.
    code = main([*args, "--tag", "second"])
after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in Path(out, "fd").glob("*.tar")}
listing = sorted(p.name for p in Path(out).iterdir())
print(json.dumps({"code": code, "stderr": err.getvalue(), "same": before == after, "listing": listing}))
"""


@needs_mounts
def test_a_full_output_disk_is_one_line_and_the_previous_result_stays(
    project: Path, tmp_path: Path
) -> None:
    out = tmp_path / "small"
    out.mkdir()
    script = f'mount -t tmpfs -o size=4m tmpfs {out} && exec {sys.executable} -c "$0" "$@"'
    assert UNSHARE is not None
    run = subprocess.run(
        [UNSHARE, "-m", "sh", "-c", script, FILL_THEN_BUILD, project, tmp_path / "cache", out],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.splitlines()[-1])
    assert report["code"] == HostError.exit_code, report
    assert_one_line(report["stderr"], str(out / "fd"), "no space left")
    assert report["same"]  # the previous result is whole
    assert report["listing"] == ["fd", "filler"]  # and no staging directory is left


@needs_mounts
def test_a_full_cache_disk_is_one_line(project: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    run = polyarch_on_tmpfs(
        cache, "16k", ["-f", project, "--cache-dir", cache, "build", "fd", "--out", tmp_path / "o"]
    )
    assert run.returncode == HostError.exit_code, run.stderr
    assert_one_line(run.stderr, str(cache), "no space left")


@needs_mounts
def test_a_read_only_output_directory_is_one_line(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "ro"
    run = polyarch_on_tmpfs(
        out,
        "1m",
        ["-f", project, "--cache-dir", tmp_path / "cache", "build", "fd", "--out", out],
        read_only=True,
    )
    assert run.returncode == HostError.exit_code, run.stderr
    assert_one_line(run.stderr, "read-only file system", "--out")


def test_an_output_path_too_long_for_the_file_system_is_one_line(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    out = tmp_path / ("o" * 300)
    code, _out, err = cli(
        "-f", project, "--cache-dir", tmp_path / "cache", "build", "fd", "--out", out
    )
    assert code == HostError.exit_code
    assert_one_line(err, "too long")


def test_a_binary_lockfile_is_one_line_naming_it(cli: Cli, project: Path, tmp_path: Path) -> None:
    (project.parent / "containers.lock").write_bytes(b"schema = 1\n\xff\xfe\x00binary")
    code, _out, err = cli(
        "-f", project, "--cache-dir", tmp_path / "cache", "build", "fd", "--locked"
    )
    assert code == LockError.exit_code
    assert_one_line(err, "containers.lock:2", "UTF-8")


def test_running_out_of_memory_is_one_line(
    cli: Cli, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Exhausting this machine's memory for real would hurt the other tests; a MemoryError
    # raised where the build starts stands in for it.
    from polyarch.workflows import build as build_workflow

    def exhausted(*args: object, **kwargs: object) -> object:
        raise MemoryError

    monkeypatch.setattr(build_workflow, "resolve_container", exhausted)
    code, _out, err = cli("-f", project, "--cache-dir", tmp_path / "cache", "build", "fd")
    assert code == HostError.exit_code
    assert_one_line(err, "out of memory")
