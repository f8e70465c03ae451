"""Automatic tags as flocken makes them: version, major.minor, major, branch, latest."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from polyarch.errors import UsageError
from polyarch.reference import DEFAULT_TAG, TAG_HINT, TAG_PATTERN

_NOT_TAG_CHAR = re.compile(r"[^A-Za-z0-9_.-]")
_RELEASE = re.compile(r"^(\d+)(?:\.(\d+))?(?:\.(\d+))?(\+[0-9A-Za-z.-]+)?$")
DEFAULT_BRANCH = "main"
"""Assumed default branch when neither the caller nor the CI environment names one."""


@dataclass(frozen=True, slots=True)
class AutoTags:
    """Which automatic tags to make, one switch per kind (flocken's ``autoTags``); all on."""

    version: bool = True
    major_minor: bool = True
    major: bool = True
    branch: bool = True
    latest: bool = True


ALL_AUTO_TAGS = AutoTags()


def sanitise_tag(text: str) -> str | None:
    """Make ``text`` a valid tag: other characters become ``-``; None if nothing is left.

    ``133/merge`` → ``133-merge``, ``refs/heads/feat/x`` → ``feat-x``.
    """
    for prefix in ("refs/heads/", "refs/tags/"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    tag = _NOT_TAG_CHAR.sub("-", text.strip()).lstrip(".-")[:128]
    return tag if tag and TAG_PATTERN.fullmatch(tag) else None


def _version_tags(version: str, auto: AutoTags) -> list[str]:
    version = version.strip()
    if version[:1] in ("v", "V") and version[1:2].isdigit():
        version = version[1:]
    full = sanitise_tag(version)
    if full is None:
        return []
    tags = [full] if auto.version else []
    match = _RELEASE.match(version)
    # A pre-release (1.2.3-rc1) must not move 1.2 and 1; build metadata (+x) is no pre-release.
    if match and match.group(2) is not None:
        major, minor = match.group(1), match.group(2)
        tags += [f"{major}.{minor}"] if auto.major_minor else []
        tags += [major] if auto.major else []
    return tags


def automatic_tags(
    *,
    version: str | None,
    branch: str | None,
    default_branch: str | None,
    explicit: Sequence[str] = (),
    auto: AutoTags = ALL_AUTO_TAGS,
) -> list[str]:
    """Explicit tags, then version, major.minor, major, branch, and ``latest`` on the default branch.

    Explicit tags must already be valid (UsageError otherwise); the branch is
    sanitised. The order is fixed and duplicates are dropped. ``auto`` turns
    each kind of automatic tag off on its own (containers.toml ``auto_tags``).
    """
    tags: list[str] = []
    for tag in explicit:
        if not TAG_PATTERN.fullmatch(tag):
            raise UsageError(
                f"invalid tag {tag!r}",
                hint=TAG_HINT,
            )
        tags.append(tag)
    if version:
        tags += _version_tags(version, auto)
    if branch:
        branch_tag = sanitise_tag(branch)
        if branch_tag and auto.branch:
            tags.append(branch_tag)
        default = sanitise_tag(default_branch) if default_branch else None
        if default is not None and branch_tag == default and auto.latest:
            tags.append(DEFAULT_TAG)
    return list(dict.fromkeys(tags))


def tags_from_env(
    env: Mapping[str, str],
    *,
    explicit: Sequence[str] = (),
    version: str | None = None,
    branch: str | None = None,
    default_branch: str | None = None,
    auto: AutoTags = ALL_AUTO_TAGS,
) -> list[str]:
    """``automatic_tags`` with what the caller did not give read from CI variables.

    version: VERSION, else the pushed git tag (GITHUB_REF_NAME when
    GITHUB_REF_TYPE=tag, CI_COMMIT_TAG). branch: GITHUB_REF_NAME (``133/merge``
    on pull requests), CI_COMMIT_BRANCH, BRANCH_NAME. default branch:
    CI_DEFAULT_BRANCH, the GitHub event's repository.default_branch, else ``main``.
    """
    if version is None:
        version = version_from_env(env)
    if branch is None and env.get("GITHUB_REF_TYPE") != "tag":
        branch = env.get("GITHUB_REF_NAME") or env.get("CI_COMMIT_BRANCH") or env.get("BRANCH_NAME")
        branch = branch or None
    if default_branch is None:
        default_branch = (
            env.get("CI_DEFAULT_BRANCH") or _github_default_branch(env) or DEFAULT_BRANCH
        )
    return automatic_tags(
        version=version,
        branch=branch,
        default_branch=default_branch,
        explicit=explicit,
        auto=auto,
    )


def version_from_env(env: Mapping[str, str]) -> str | None:
    """VERSION, else the pushed git tag (GITHUB_REF_NAME when GITHUB_REF_TYPE=tag, CI_COMMIT_TAG)."""
    version = env.get("VERSION") or None
    if version is None and env.get("GITHUB_REF_TYPE") == "tag":
        version = env.get("GITHUB_REF_NAME") or None
    return version or env.get("CI_COMMIT_TAG") or None


def _github_default_branch(env: Mapping[str, str]) -> str | None:
    path = env.get("GITHUB_EVENT_PATH")
    if not path:
        return None
    try:
        event = json.loads(Path(path).read_bytes())
        value = event["repository"]["default_branch"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, str) and value else None
