"""What the project's git repository says about itself: the commit, and where to browse it.

Used for the ``revision`` and ``source`` annotations of a published index.
Outside a git repository (or without git) the answers are None: the
annotations are simply absent.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from polyarch import cmd
from polyarch.errors import PolyarchError


def git_revision(directory: Path) -> str | None:
    """The commit checked out in ``directory``'s git repository, or None outside one."""
    return _git(directory, "rev-parse", "--verify", "HEAD")


def git_toplevel(directory: Path) -> str | None:
    """The top directory of ``directory``'s git repository, or None outside one."""
    return _git(directory, "rev-parse", "--show-toplevel")


def git_source(directory: Path, env: Mapping[str, str] | None = None) -> str | None:
    """A browsable URL of ``directory``'s repository: the ``origin`` remote, else GitHub's env.

    ``git@host:owner/repo.git`` becomes ``https://host/owner/repo``; user names
    and tokens embedded in a remote URL are dropped, never published.
    """
    remote = _git(directory, "remote", "get-url", "origin")
    if remote:
        return public_url(remote)
    source = os.environ if env is None else env
    server, repository = source.get("GITHUB_SERVER_URL"), source.get("GITHUB_REPOSITORY")
    if server and repository:
        return f"{server.rstrip('/')}/{repository}"
    return None


_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?([^:/]+):(?!//)(.+)$")
_URL = re.compile(r"^(?:[a-z+]+)://(?:[^@/]*@)?([^/]+)(/.*)?$")


def public_url(remote: str) -> str | None:
    """A git remote as an https URL without credentials; None for local paths."""
    remote = remote.strip()
    if match := _URL.match(remote):
        host, path = match.group(1), match.group(2) or ""
    elif (match := _SCP_LIKE.match(remote)) and not remote.startswith(("/", ".")):
        host, path = match.group(1), "/" + match.group(2)
    else:
        return None
    if remote.startswith("file:"):
        return None
    path = path.removesuffix("/").removesuffix(".git")
    return f"https://{host}{path}"


def _git(directory: Path, *args: str) -> str | None:
    try:
        result = cmd.run(["git", "-C", str(directory), *args], timeout=30)
    except (PolyarchError, OSError):
        return None  # no git, or not a repository: the annotation is simply absent
    if result.returncode != 0:
        return None
    value = result.stdout.decode("utf-8", "replace").strip()
    return value or None
