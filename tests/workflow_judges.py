"""The independent judges of GitHub Actions workflows: the workflow schema that
check-jsonschema ships, and zizmor (both installed by the test extra)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: pip install -e '.[test]'")
    return found


def schema_check(workflow: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema with GitHub's workflow schema on ``workflow``."""
    return subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(workflow)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
