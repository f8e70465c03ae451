"""publish: one annotated index over a container's systems (or any image files), pushed.

``polyarch manifest NAME`` builds every system of NAME (a warm build only
re-reads the cache), then writes ``OUT/NAME/manifest/``: an OCI layout holding
the build's index with the publish annotations added (revision, source,
version, licenses). That layout is what is pushed, so the digest printed is
the digest pushed. Its blobs are hard links into ``OUT/NAME/oci/``.

``polyarch manifest --image-file ...`` writes the same kind of layout from
image files polyarch did not build (``index_from_image_files``).

Where a push goes: ``--to REF``; else every enabled registry of the container;
else, with no registry configured, GitHub mode (``ghcr.io/<owner>/<NAME>``).
Credentials are resolved before anything is built or sent, so a missing
``$VAR`` fails fast; they live in memory only and are never printed.
"""

from __future__ import annotations

import json
import os
import tarfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from polyarch.config import Container
from polyarch.debian.copyright import debian_licenses
from polyarch.determinism import Digest, rfc3339, source_date_epoch
from polyarch.errors import ImageError, PolyarchError, UsageError
from polyarch.image.imports import index_from_image_files
from polyarch.image.layout import annotate_layout
from polyarch.image.layout_reader import read_oci_layout
from polyarch.image.oci import (
    ANNOTATION_CREATED,
    ANNOTATION_DESCRIPTION,
    ANNOTATION_LICENSES,
    ANNOTATION_REF_NAME,
    ANNOTATION_REVISION,
    ANNOTATION_SOURCE,
    ANNOTATION_TITLE,
    ANNOTATION_VERSION,
)
from polyarch.outputs import Outputs
from polyarch.platforms import SYSTEMS
from polyarch.progress import NULL_PROGRESS, Progress
from polyarch.reference import DEFAULT_TAG
from polyarch.registry.client import ANONYMOUS, RegistryAccess
from polyarch.registry.plan import Format
from polyarch.registry.push import PushResult, push_layout
from polyarch.registry.tags import ALL_AUTO_TAGS, AutoTags, tags_from_env, version_from_env
from polyarch.vcs import git_revision, git_source
from polyarch.workflows.attach import Attached, attach_evidence
from polyarch.workflows.build import BuildResult, build_container
from polyarch.workflows.resolve import Session
from polyarch.workflows.signing import sign_outputs
from polyarch.workflows.targets import Target, TargetKind, repository_ref

if TYPE_CHECKING:
    from polyarch.attest.keys import SigningKey

IMAGE_FILES_NAME = "manifest"
"""The NAME of ``OUT/NAME/manifest/`` for ``--image-file`` without ``--to``."""


@dataclass(frozen=True, slots=True)
class IndexLayout:
    """The layout that is (or would be) pushed: its index digest, platforms, annotations."""

    layout: Path
    digest: Digest
    platforms: tuple[str, ...]
    annotations: tuple[tuple[str, str], ...]
    build: BuildResult | None = None
    """The build it was made from (``polyarch manifest NAME`` without ``--no-build``)."""


@dataclass(frozen=True, slots=True)
class Published:
    """One finished push: where, what the registry got, and how long it took."""

    target: Target
    result: PushResult
    seconds: float
    attached: tuple[Attached, ...] = ()
    """The evidence attached to each platform image (docs/SUPPLY-CHAIN.md)."""


# -- tags and targets --------------------------------------------------------------------


def publish_tags(
    explicit: Sequence[str],
    *,
    version: str | None = None,
    branch: str | None = None,
    env: Mapping[str, str] | None = None,
    auto: AutoTags = ALL_AUTO_TAGS,
) -> list[str]:
    """Explicit tags, then flocken's automatic tags; ``latest`` when nothing names any tag.

    Version and branch come from the arguments, else the CI variables
    (``tags_from_env``). A push outside CI with no tag at all still needs one,
    and ``latest`` is what ``docker push`` would use, unless ``auto`` (the
    container's ``auto_tags``) turns latest off: then it is a UsageError.
    """
    tags = tags_from_env(
        os.environ if env is None else env,
        explicit=explicit,
        version=version,
        branch=branch,
        auto=auto,
    )
    if not tags and not auto.latest:
        raise UsageError(
            "no tag to push: auto_tags turns latest off and nothing else names a tag",
            hint="pass --tag, --version or --branch, or set tags in containers.toml",
        )
    return tags or [DEFAULT_TAG]


def publish_version(version: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The version to annotate: ``--version``, else VERSION or the CI's git tag, else None."""
    if version:
        return version
    return version_from_env(os.environ if env is None else env)


# -- annotations ---------------------------------------------------------------------------


def image_licenses(layout_path: Path, package: str) -> str | None:
    """Licenses of ``package`` from its copyright file inside the image (first system's).

    The layer is found by the config's history (``polyarch: PKG ...``), so only
    that one layer is read. None when the package, its layer or its
    copyright file cannot be found, or the file names no known license.
    """
    layout = read_oci_layout(layout_path)
    if len(layout.entries) != 1:
        return None
    tag = layout.entries[0].annotation(ANNOTATION_REF_NAME) or DEFAULT_TAG
    image = layout.images(tag)[0]
    try:
        history = json.loads(image.config_bytes).get("history", [])
    except ValueError:
        return None
    layered = [h for h in history if isinstance(h, dict) and not h.get("empty_layer")]
    if len(layered) != len(image.layers):
        return None
    wanted = f"usr/share/doc/{package}/copyright"
    for entry, layer in zip(layered, image.layers, strict=True):
        created_by = str(entry.get("created_by", ""))
        if not created_by.startswith("polyarch:") or package not in created_by.split()[1:]:
            continue
        try:
            with tarfile.open(layout.blob_path(layer.digest), mode="r|*") as tar:
                for member in tar:
                    if member.isfile() and member.name.removeprefix("./") == wanted:
                        data = tar.extractfile(member)
                        if data is not None:
                            return debian_licenses(data.read(1 << 20).decode("utf-8", "replace"))
        except (OSError, tarfile.TarError):
            return None
    return None


def publish_annotations(
    directory: Path,
    *,
    version: str | None,
    title: str | None = None,
    description: str | None = None,
    licenses: str | None = None,
    created: str | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The ``org.opencontainers.image.*`` annotations a published index gets.

    revision and source come from the git repository holding ``directory``
    (absent outside one); ``created`` defaults to SOURCE_DATE_EPOCH's time.
    """
    annotations = {ANNOTATION_CREATED: created or rfc3339(source_date_epoch())}
    for key, value in (
        (ANNOTATION_TITLE, title),
        (ANNOTATION_DESCRIPTION, description),
        (ANNOTATION_VERSION, version),
        (ANNOTATION_LICENSES, licenses),
        (ANNOTATION_REVISION, git_revision(directory)),
        (ANNOTATION_SOURCE, git_source(directory, env)),
    ):
        if value:
            annotations[key] = value
    return annotations


def _describe(layout_path: Path, digest: Digest, build: BuildResult | None) -> IndexLayout:
    layout = read_oci_layout(layout_path)
    tag = layout.tags[0] if layout.tags else DEFAULT_TAG
    platforms = tuple(str(i.platform) for i in layout.images(tag) if i.platform is not None)
    document = json.loads(layout.read_blob(layout.entries[0]))
    annotations = tuple(sorted(document.get("annotations", {}).items()))
    return IndexLayout(layout_path, digest, platforms, annotations, build)


def container_index(
    session: Session,
    container: Container,
    *,
    out_dir: Path,
    version: str | None = None,
    build: bool = True,
    env: Mapping[str, str] | None = None,
    sign_key: SigningKey | None = None,
) -> IndexLayout:
    """Build ``container`` for all its systems, then write ``OUT/NAME/manifest/``, annotated.

    With ``build=False`` the existing ``OUT/NAME/oci/`` is used, and must hold
    exactly the container's systems. The annotated version is ``version``
    (from ``publish_version``), else the tool package's Debian version.
    ``sign_key`` signs the evidence in ``OUT/NAME/sbom/`` (built or existing).
    """
    built: BuildResult | None = None
    outputs = Outputs(out_dir, container.name)
    source = outputs.layout
    if build:
        built = build_container(
            session, container, container.systems, out_dir=out_dir, sign_key=sign_key
        )
    else:
        _check_built_systems(source, container)
        if sign_key is not None:
            sign_outputs(outputs.root, sign_key)
    licenses = image_licenses(source, container.package)
    annotations = publish_annotations(
        session.config.directory,
        version=version,
        title=container.name,
        description=container.description,
        licenses=licenses,
        env=env,
    )
    # The build's index already carries created and the Debian version; keep those
    # unless this publish names its own version. Keys containers.toml sets stay the user's.
    annotations.pop(ANNOTATION_CREATED)
    for key, _value in container.options.annotations:
        annotations.pop(key, None)
    dest = outputs.manifest
    digest = annotate_layout(source, dest, annotations)
    return _describe(dest, digest, built)


def _check_built_systems(source: Path, container: Container) -> None:
    layout = read_oci_layout(source)
    tag = layout.tags[0] if layout.tags else DEFAULT_TAG
    have = {i.system for i in layout.images(tag)}
    want = set(container.systems)
    if have != want:
        names = ", ".join(s.name for s in SYSTEMS if s in have) or "none"
        raise ImageError(
            f"{source} holds {names}, not every system of {container.name}",
            hint=f"run polyarch build {container.name} --all-systems, or drop --no-build",
        )


def image_files_index(
    paths: Sequence[Path],
    dest: Path,
    *,
    title: str | None = None,
    version: str | None = None,
    env: Mapping[str, str] | None = None,
) -> IndexLayout:
    """An annotated index over image files (one platform each) written as layout ``dest``."""
    annotations = publish_annotations(Path.cwd(), version=version, title=title, env=env)
    digest = index_from_image_files(list(paths), dest, DEFAULT_TAG, annotations=annotations)
    return _describe(dest, digest, None)


def image_files_dest(out_dir: Path, to: str | None) -> Path:
    """``OUT/<last component of --to>/manifest``, or ``OUT/manifest/manifest`` without --to."""
    name = repository_ref(to, "--to").repository.rsplit("/", 1)[-1] if to else IMAGE_FILES_NAME
    return Outputs(out_dir, name).manifest


# -- pushing ----------------------------------------------------------------------------------


def push_index(
    index: IndexLayout,
    target: Target,
    tags: Sequence[str],
    *,
    format: Format = "oci",
    access: RegistryAccess = ANONYMOUS,
    jobs: int = 8,
    record_dir: Path | None = None,
    progress: Progress = NULL_PROGRESS,
    evidence: Path | None = None,
) -> Published:
    """Push ``index`` to ``target`` under ``tags`` (the first by the index PUT, the rest as tags).

    ``access`` gives the TLS choices; the credentials are the target's own.
    ``evidence`` (``OUT/NAME/sbom``) is attached to each platform image after
    the index (``workflows.attach``).
    """
    if not tags:
        raise UsageError("no tag to push", hint="pass --tag")
    start = time.perf_counter()
    attached: list[Attached] = []
    try:
        result = push_layout(
            index.layout,
            target.ref_with_tag(tags[0]),
            tags=tags,
            access=replace(access, credentials=target.credentials),
            format=format,
            jobs=jobs,
            record_dir=record_dir,
            progress=progress,
        )
        if evidence is not None:
            attached = attach_evidence(index.layout, evidence, target, access=access, jobs=jobs)
    except PolyarchError as exc:
        if target.kind is not TargetKind.CONFIGURED:
            raise
        # Name the registry table, so a user with several knows which one to fix.
        raise type(exc)(f"registry {target.name}: {exc.message}", hint=exc.hint) from exc
    return Published(target, result, time.perf_counter() - start, tuple(attached))
