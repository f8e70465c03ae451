"""What killed builds leave under --out is removed by the next build of that container, and
nothing a live build is writing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from cacheproject import assert_layout_intact, make_project
from conftest import RepoFactory

Cli = Callable[..., tuple[int, str, str]]

# A process that fills a staging directory of OUT/fd the way a build does, then
# either dies by SIGKILL in the middle (as `kill -9` during the swap) or waits.
STAGER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from polyarch.files import staging_dir

    out, mode = Path(sys.argv[1]), sys.argv[2]
    with staging_dir(out / "fd") as tmp:
        (tmp / "x86_64-linux.tar").write_bytes(os.urandom(1 << 20))
        print(tmp, flush=True)
        if mode == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        sys.stdin.read()
    """
)


def stage(out: Path, mode: str) -> tuple[subprocess.Popen[str], Path]:
    process = subprocess.Popen(
        [sys.executable, "-c", STAGER, str(out), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, Path(process.stdout.readline().strip())


@pytest.fixture
def project(tmp_path: Path, make_repo: RepoFactory) -> Path:
    return make_project(tmp_path, make_repo)[2]


def test_the_next_build_removes_what_a_killed_build_left_and_keeps_a_live_one(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    killed, stale = stage(out, "die")
    assert killed.wait(timeout=60) == -9
    assert stale.name.startswith(".fd.tmp-") and stale.is_dir()
    live, busy = stage(out, "wait")
    other, others = stage(out / "elsewhere", "die")  # another container's, elsewhere
    other.wait(timeout=60)
    try:
        code, _out, err = cli(
            "-f", project, "--cache-dir", tmp_path / "cache", "build", "fd", "--out", out
        )
        assert code == 0, err
        assert not stale.exists()
        assert busy.is_dir()  # a live build's staging directory is left alone
        assert others.is_dir()  # the next build of *that* output removes it
        assert sorted(p.name for p in out.iterdir()) == sorted(["fd", busy.name, "elsewhere"])
        assert_layout_intact(out / "fd")
    finally:
        assert live.stdin is not None
        live.stdin.close()
        live.wait(timeout=60)
    assert not busy.exists()  # its own process removed it


def test_staging_of_a_container_named_like_a_prefix_is_not_touched(tmp_path: Path) -> None:
    from polyarch.files import remove_stale_staging

    out = tmp_path / "out"
    process, stale = stage(out, "die")
    process.wait(timeout=60)
    neighbour = out / ".fdx.tmp-abc"
    neighbour.mkdir()
    assert remove_stale_staging(out / "fd") == [stale]
    assert neighbour.is_dir()
    os.rmdir(neighbour)
