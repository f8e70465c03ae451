"""Where ``polyarch manifest --push`` goes, with credentials resolved before anything is built.

``--to REF`` overrides everything for one run; else every enabled registry of
the container; else, with no registry configured, GitHub mode
(``ghcr.io/<owner>/<NAME>``). A missing ``$VAR`` fails fast; credentials live
in memory only and are never printed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from polyarch.config import Container
from polyarch.errors import ConfigError, UsageError
from polyarch.progress import NULL_PROGRESS, Progress
from polyarch.reference import Reference, parse_reference
from polyarch.registry.credentials import Credentials, github_target, resolve_credentials


class TargetKind(Enum):
    """Where a push target came from."""

    CONFIGURED = "configured"
    """A ``registries`` table of the container in containers.toml."""
    EXPLICIT = "explicit"
    """Named for this run (``--to``)."""
    GITHUB = "github"
    """GitHub mode: ``ghcr.io/<owner>/<name>`` with the workflow's token."""


@dataclass(frozen=True, slots=True)
class Target:
    """One place a push goes: a repository (no tag) and the credentials for it."""

    kind: TargetKind
    name: str
    """The registry's table name in containers.toml; for the other kinds, the kind's value."""
    reference: Reference
    credentials: Credentials | None = field(default=None, compare=False)
    """Never printed: Credentials hides its secret in repr."""

    @property
    def repository(self) -> str:
        """``registry/repository``, as the user reads it."""
        return self.reference.name

    def ref_with_tag(self, tag: str) -> str:
        """What ``push_layout`` takes; keeps ``http://`` when the user asked for it."""
        scheme = "http://" if self.reference.plain_http else ""
        return f"{scheme}{self.reference.name}:{tag}"


def repository_ref(text: str, where: str) -> Reference:
    ref = parse_reference(text)
    if ref.tag or ref.digest:
        raise UsageError(
            f"{where} {text!r} names a tag or digest",
            hint="give the repository only; tags come from tags, --tag, --version and --branch",
        )
    return ref


def push_targets(
    container: Container | None,
    *,
    to: str | None = None,
    username: str | None = None,
    password_stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    docker_config: Path | None = None,
    progress: Progress = NULL_PROGRESS,
) -> list[Target]:
    """Where ``--push`` goes, with credentials resolved now (``$VAR`` read from ``env``).

    ``to`` overrides everything for one run. Otherwise the container's enabled
    registries (``{name}`` in ``repo`` is the container's name); with none
    configured, GitHub mode when GITHUB_TOKEN, GITHUB_ACTOR and GITHUB_REPOSITORY
    are set: ``ghcr.io/<owner>/<NAME>`` (``ghcr.io/<owner>/<repo>`` for image files).
    """
    source = os.environ if env is None else env
    if to is not None:
        ref = repository_ref(to, "--to")
        return [
            Target(
                TargetKind.EXPLICIT,
                TargetKind.EXPLICIT.value,
                ref,
                _credentials(ref, username, None, password_stdin, source, docker_config),
            )
        ]
    if container is not None and container.registries:
        return _configured_targets(
            container, username, password_stdin, source, docker_config, progress
        )
    if source.get("GITHUB_TOKEN"):
        # GitHub mode; github_target names whichever of ACTOR and REPOSITORY is missing.
        repository, credentials = github_target(source)
        if container is not None:
            owner = repository.split("/")[1]
            repository = f"ghcr.io/{owner}/{container.name}"
        ref = repository_ref(repository, "GitHub mode")
        return [Target(TargetKind.GITHUB, TargetKind.GITHUB.value, ref, credentials)]
    if container is None:
        raise UsageError("nowhere to push the images", hint="pass --to REF")
    raise UsageError(
        f"nowhere to push {container.name}",
        hint=(
            f'add [containers.{container.name}.registries.NAME] repo = "host/path" to '
            "containers.toml, pass --to REF, or run in GitHub Actions with GITHUB_TOKEN set"
        ),
    )


def _configured_targets(
    container: Container,
    username: str | None,
    password_stdin: bytes | None,
    env: Mapping[str, str],
    docker_config: Path | None,
    progress: Progress,
) -> list[Target]:
    enabled = [r for r in container.registries if r.enable]
    for r in container.registries:
        if not r.enable:
            progress.info(f"registry {r.name}: enable = false, skipped")
    if not enabled:
        raise UsageError(
            f"every registry of {container.name} has enable = false",
            hint="enable one in containers.toml, or pass --to REF",
        )
    if password_stdin is not None and len(enabled) > 1:
        raise UsageError(
            "--password-stdin with several registries: it is unclear whose password it is",
            hint='push to one with --to REF, or put password = "$VAR" in each registry',
        )
    targets = []
    for r in enabled:
        try:
            ref = repository_ref(r.repo.replace("{name}", container.name), "repo")
        except UsageError as exc:
            raise ConfigError(
                f"containers.{container.name}.registries.{r.name}: {exc.message}", hint=exc.hint
            ) from None
        credentials = _credentials(
            ref, username or r.username, r.password, password_stdin, env, docker_config
        )
        targets.append(Target(TargetKind.CONFIGURED, r.name, ref, credentials))
    return targets


def _credentials(
    ref: Reference,
    username: str | None,
    password: str | None,
    password_stdin: bytes | None,
    env: Mapping[str, str],
    docker_config: Path | None,
) -> Credentials | None:
    if password_stdin is not None and username is None:
        raise UsageError(
            f"--password-stdin for {ref.registry} needs a user name",
            hint="pass --username, or set username in the registry's table",
        )
    return resolve_credentials(
        ref.registry,
        username=username if (password is not None or password_stdin is not None) else None,
        password=password,
        password_stdin=password_stdin,
        docker_config=docker_config,
        env=env,
    )
