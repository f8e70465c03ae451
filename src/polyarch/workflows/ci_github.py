"""ci github: the GitHub Actions workflow of a distributed build, written for the user's repository.

The workflow is ``data/github-workflow.yml`` with this project's values filled
in: where containers.toml lives in the repository, how many shards, the
schedule, how polyarch is installed, and the actions, each pinned to a commit
(``ACTIONS``, one table: zizmor's blanket policy wants hashes, and a tag can
move). docs/SCALE.md describes the jobs; tests/unit/test_ci_github.py checks
the output with GitHub's workflow schema (check-jsonschema) and zizmor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from polyarch import __version__, vcs
from polyarch.errors import UsageError
from polyarch.files import atomic_write

WORKFLOW_PATH = Path(".github") / "workflows" / "polyarch.yml"
"""Where the workflow goes, from the root of the git repository."""

ACTIONS = {
    "CHECKOUT": ("actions/checkout", "3d3c42e5aac5ba805825da76410c181273ba90b1", "v7.0.1"),
    "SETUP_PYTHON": ("actions/setup-python", "ece7cb06caefa5fff74198d8649806c4678c61a1", "v6.3.0"),
    "LOGIN": ("docker/login-action", "4907a6ddec9925e35a0a9e82d7399ccc52663121", "v4.1.0"),
    "UPLOAD": ("actions/upload-artifact", "bbbca2ddaa5d8feaa63e36b76fdaad77386f024f", "v7.0.0"),
    "DOWNLOAD": ("actions/download-artifact", "3e5f45b2cfb9172054b4087a40e8e0b5a5461e7c", "v8.0.1"),
}
"""Every action the workflow uses: repository, the commit of the release, the release."""
_PLACEHOLDER = re.compile(r"@@([A-Z_]+)@@")
_CRON_FIELD = re.compile(r"^[0-9*/,-]+$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,100}$")
_BRANCH = re.compile(r"^[A-Za-z0-9._/-]+$")


@dataclass(frozen=True, slots=True)
class WorkflowOptions:
    shards: int | None = None
    """None: one shard per system (``polyarch plan``'s default)."""
    schedule: str = "17 4 * * *"
    """When the scheduled job looks for packages with newer versions (cron, UTC)."""
    branch: str = "main"
    """Pushes to this branch build and publish."""
    python: str = "3.11"
    install: str = f"polyarch=={__version__}"
    """What ``pip install`` installs."""
    cache_tag: str = "main"


def workflow_text(config_dir: Path, options: WorkflowOptions) -> str:
    """The workflow for the repository holding ``config_dir`` (containers.toml's directory)."""
    _check(options)
    root = repository_root(config_dir)
    relative = config_dir.resolve().relative_to(root.resolve()).as_posix()
    workdir = "." if relative in ("", ".") else relative
    values = {
        "VERSION": __version__,
        "BRANCH": options.branch,
        "CRON": options.schedule,
        "INSTALL": options.install,
        "SHARDS": "0" if options.shards is None else str(options.shards),
        "CACHE_TAG": options.cache_tag,
        "PYTHON": options.python,
        "WORKDIR": workdir,
        "PREFIX": "" if workdir == "." else f"{workdir}/",
        **{name: f"{repo}@{sha} # {release}" for name, (repo, sha, release) in ACTIONS.items()},
    }
    from importlib.resources import files  # here: the CLI imports this module for defaults

    template = (files("polyarch") / "data" / "github-workflow.yml").read_text()
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def repository_root(directory: Path) -> Path:
    """The git repository's top directory, else ``directory`` itself."""
    top = vcs.git_toplevel(directory)
    return Path(top) if top else directory


def write_workflow(config_dir: Path, options: WorkflowOptions, *, force: bool = False) -> Path:
    """Write the workflow to ``.github/workflows/polyarch.yml`` of the repository; refuse to
    replace a different file unless ``force``."""
    text = workflow_text(config_dir, options)
    path = repository_root(config_dir) / WORKFLOW_PATH
    if path.exists() and not force and path.read_text(errors="replace") != text:
        raise UsageError(
            f"{path} exists and differs from what polyarch would write",
            hint="pass --force to replace it (your changes to it are lost)",
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text.encode())
    return path


def _check(options: WorkflowOptions) -> None:
    fields = options.schedule.split()
    if len(fields) != 5 or not all(_CRON_FIELD.fullmatch(f) for f in fields):
        raise UsageError(
            f"--schedule {options.schedule!r} is not a cron line",
            hint='five fields, e.g. "17 4 * * *" (04:17 UTC every day)',
        )
    if options.shards is not None and options.shards < 1:
        raise UsageError("--shards must be at least 1")
    if not _TAG.fullmatch(options.cache_tag):
        raise UsageError(f"--cache-tag {options.cache_tag!r} is not a tag")
    if not _BRANCH.fullmatch(options.branch):
        raise UsageError(f"--branch {options.branch!r} is not a branch name")
    if not re.fullmatch(r"3\.\d+", options.python):
        raise UsageError(f"--python {options.python!r}: give a version such as 3.11")
    if not options.install or any(c in options.install for c in "\"'\n$`\\"):
        raise UsageError(
            f"--install {options.install!r}: give a pip requirement without quotes or $",
            hint="e.g. polyarch==0.1.0 or git+https://host/owner/polyarch@TAG",
        )
