"""Start-up: ``polyarch --help`` and ``--version`` load argparse and little else.

The timing target (≤ 0.15 s) is a benchmark (bench/startup.py); this checks its
cause, which does not depend on the machine's load: what the parser imports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cacheproject import make_project
from conftest import RepoFactory

from polyarch import __version__

# Heavy libraries and the pipeline itself: only a command's handler may import them.
NOT_AT_START = (
    "rich",
    "httpx",
    "msgspec",
    "filelock",
    "platformdirs",
    "debian",
    "tarfile",
    "polyarch.ui",
    "polyarch.config",
    "polyarch.workflows.build",
    "polyarch.workflows.resolve",
    "polyarch.image.layers",
    "polyarch.debian.deb",
)


def _modules_after(argv: list[str]) -> tuple[set[str], str]:
    script = (
        "import json, sys\n"
        "from polyarch.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    return set(json.loads(result.stderr.strip().splitlines()[-1])), result.stdout


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["build", "--help"]])
def test_help_and_version_import_no_heavy_module(argv: list[str]) -> None:
    modules, _ = _modules_after(argv)
    loaded = sorted(m for m in NOT_AT_START if m in modules)
    assert loaded == []


def test_version_prints_the_package_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "polyarch", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert result.stdout == f"polyarch {__version__}\n"


def test_a_command_still_gets_what_it_needs(tmp_path: object) -> None:
    # The handler imports its modules itself: a real command works end to end.
    result = subprocess.run(
        [sys.executable, "-m", "polyarch", "-f", "/nonexistent/containers.toml", "build", "x"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 3, result.stderr
    assert result.stderr.startswith("polyarch: error:")


def test_the_version_polyarch_names_itself_by_is_the_installed_one() -> None:
    # user_agent() and --version read __version__ (importlib.metadata costs start-up).
    from importlib.metadata import version

    from polyarch.http import user_agent

    assert __version__ == version("polyarch")
    assert user_agent() == f"polyarch/{version('polyarch')}"


# What a warm build (outputs already there, nothing to write) needs not: the lock's
# modules (no --locked), the registry's (no --push), rich (stderr is a pipe),
# python-debian (parsed by hand), httpx's own command line (click, pygments, rich).
Cli = Callable[..., tuple[int, str, str]]
NOT_IN_A_WARM_BUILD = (
    "rich",
    "debian",
    "click",
    "polyarch.lock",
    "polyarch.lock_diff",
    "polyarch.lock_check",
    "polyarch.registry.client",
    "polyarch.workflows.push_images",
    "filelock",
)


def test_a_warm_build_imports_only_what_it_uses(
    tmp_path: Path, make_repo: RepoFactory, cli: Cli
) -> None:
    project = make_project(tmp_path, make_repo)[2]
    argv = ["-f", str(project), "--cache-dir", str(tmp_path / "cache"), "build", "fd"]
    argv += ["--out", str(tmp_path / "out")]
    code, _out, err = cli(*argv)
    assert code == 0, err
    modules, stdout = _modules_after(["-q", *argv])
    assert "fd" in stdout  # it did build (the table), and nothing heavy came with it
    assert sorted(m for m in NOT_IN_A_WARM_BUILD if m in modules) == []
