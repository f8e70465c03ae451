"""build --push: each system image of a build pushed by digest (untagged), with its evidence.

A shard of a distributed build (docs/SCALE.md) builds some containers for
some systems and pushes each system's image manifest by digest only: no tag
moves until ``manifest --assemble`` puts the index over every system. The
manifest pushed is the build's own bytes, so its digest is the one a
one-machine build gives. The image's evidence (SBOMs, provenance, and the
signatures when signed) is attached at once, with the manifest as its
``subject``, in the same repository: the assembled index's platform images
carry it, and the assembler never reads it.

What a shard prints (``polyarch build --push --json``, schema
``polyarch.build/v1``) is what the assembler reads back: ``read_pushed``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from polyarch.determinism import DIGEST_PATTERN, Digest
from polyarch.errors import UsageError
from polyarch.platforms import System, parse_system
from polyarch.progress import NULL_PROGRESS, Progress
from polyarch.reference import parse_reference
from polyarch.registry.client import ANONYMOUS, RegistryAccess
from polyarch.registry.plan import read_image
from polyarch.registry.push import PushResult, push_plan
from polyarch.schemas import BUILD as BUILD_SCHEMA
from polyarch.workflows.attach import Attached, attach_evidence
from polyarch.workflows.build import BuildResult
from polyarch.workflows.targets import Target

NAME_FIELD = "{name}"
"""In a ``--push`` reference: replaced by each container's name."""


@dataclass(frozen=True, slots=True)
class PushedImage:
    """One system image pushed by digest: where, and what the push did."""

    container: str
    system: System
    digest: Digest
    repository: str
    """``registry/path`` (no tag): where the manifest is."""
    result: PushResult | None = None
    seconds: float = 0.0
    attached: tuple[str, ...] = ()
    """The evidence kinds attached to it (``spdx cdx provenance`` [``dsse``])."""


def repository_for(template: str, container: str) -> str:
    """``--push`` REF for one container: ``{name}`` replaced, checked to name a repository."""
    text = template.replace(NAME_FIELD, container)
    ref = parse_reference(text)
    if ref.tag or ref.digest:
        raise UsageError(
            f"--push {template!r} names a tag or digest",
            hint="give the repository only (host/path, {name} for the container's name); "
            "images are pushed by digest and tagged by manifest --assemble",
        )
    return text


def push_build(
    result: BuildResult,
    target: Target,
    *,
    access: RegistryAccess = ANONYMOUS,
    jobs: int = 8,
    record_dir: Path | None = None,
    evidence: bool = True,
    progress: Progress = NULL_PROGRESS,
) -> list[PushedImage]:
    """Push every system image of ``result`` to ``target`` by digest, then attach its evidence."""
    access = replace(access, credentials=target.credentials)
    layout = result.outputs.layout
    pushed: list[PushedImage] = []
    for built in result.systems:
        started = time.perf_counter()
        push = push_plan(
            read_image(layout, built.system),
            target.reference,
            (),
            access=access,
            jobs=jobs,
            record_dir=record_dir,
            progress=progress,
        )
        pushed.append(
            PushedImage(
                result.container.name,
                built.system,
                push.digest,
                target.repository,
                push,
                time.perf_counter() - started,
            )
        )
    if not evidence:
        return pushed
    attached = attach_evidence(layout, result.outputs.sbom, target, access=access, jobs=jobs)
    kinds = {a.system: _kinds(a) for a in attached}
    return [replace(p, attached=kinds.get(p.system, ())) for p in pushed]


def _kinds(attached: Attached) -> tuple[str, ...]:
    return tuple(t.rpartition(".")[2] for t in attached.result.tags if "." in t)


# -- what shards print, read back by the assembler -------------------------------------------


def read_pushed(paths: Iterable[Path]) -> list[PushedImage]:
    """Every pushed image listed by ``build --push --json`` outputs: files, or directories
    of ``*.json`` files. A file that is not such an output is a UsageError naming it."""
    files: list[Path] = []
    for path in paths:
        files += sorted(path.glob("*.json")) if path.is_dir() else [path]
    found: list[PushedImage] = []
    for file in files:
        try:
            document = json.loads(file.read_bytes())
        except OSError as exc:
            raise UsageError(f"cannot read {file}: {exc.strerror}") from None
        except ValueError:
            raise UsageError(
                f"{file} is not JSON", hint="give the output of polyarch build --push --json"
            ) from None
        found += _pushed_of(document, str(file))
    return found


def _pushed_of(document: Any, where: str) -> list[PushedImage]:
    hint = f"give the output of polyarch build --push --json (schema {BUILD_SCHEMA})"
    if not isinstance(document, dict) or document.get("schema") != BUILD_SCHEMA:
        raise UsageError(f"{where} is not a {BUILD_SCHEMA} document", hint=hint)
    found = []
    for entry in _list(document.get("containers"), where, hint):
        name = entry.get("container") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            raise UsageError(f"{where}: a container entry has no name", hint=hint)
        for image in _list(entry.get("images"), where, hint):
            found.append(_image_of(image, name, where, hint))
    return [p for p in found if p is not None]


def _list(value: Any, where: str, hint: str) -> Sequence[Any]:
    if not isinstance(value, list):
        raise UsageError(f"{where}: expected a list", hint=hint)
    return value


def _image_of(image: Any, name: str, where: str, hint: str) -> PushedImage | None:
    """One image entry; None when it was built but not pushed (no ``push``)."""
    if not isinstance(image, dict):
        raise UsageError(f"{where}: {name}: an image entry is not an object", hint=hint)
    digest, push = image.get("digest"), image.get("push")
    if push is None:
        return None
    repository = push.get("repository") if isinstance(push, dict) else None
    if not isinstance(digest, str) or not DIGEST_PATTERN.fullmatch(digest):
        raise UsageError(f"{where}: {name}: digest {digest!r} is not sha256:<hex>", hint=hint)
    if not isinstance(repository, str):
        raise UsageError(f"{where}: {name}: the push names no repository", hint=hint)
    ref = parse_reference(repository)
    if ref.tag or ref.digest:
        raise UsageError(f"{where}: {name}: {repository!r} is not a repository", hint=hint)
    system = parse_system(str(image.get("system")))
    return PushedImage(name, system, Digest(digest), ref.name)
