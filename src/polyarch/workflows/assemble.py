"""manifest --assemble: a container's index made in the registry from what its shards pushed.

Each shard pushed its system images by digest (``build --push``,
``workflows.push_images``) and printed where. The assembler reads only those
manifests (GET by digest), builds the index with the same rule a local build
uses (``image.oci.index_annotations``, ``image_index``), so the digest equals
the one ``polyarch build NAME --all-systems`` gives from the same lock, and
PUTs it under its tags. No blob is downloaded or uploaded: images pushed to
another repository of the registry are mounted (``registry.assemble``).

Evidence: each shard attached its images' SBOMs, provenance and signatures
with them, so an index assembled in the shards' repository carries them with
no work; when it is assembled elsewhere, they are copied with the images
(manifests PUT, blobs mounted). The index itself gets no evidence of its own,
as with ``manifest --push``: evidence is about platform images.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from polyarch import media_types
from polyarch.config import Container
from polyarch.determinism import Digest, sha256_digest
from polyarch.errors import ImageError, UsageError
from polyarch.image.oci import ANNOTATION_TITLE, image_index, index_annotations
from polyarch.platforms import SYSTEMS, System
from polyarch.progress import NULL_PROGRESS, Progress
from polyarch.reference import parse_reference
from polyarch.registry.assemble import Assembler, AssemblyCounts
from polyarch.registry.client import ANONYMOUS, RegistryAccess
from polyarch.registry.referrers import Subject
from polyarch.workflows.push_images import PushedImage
from polyarch.workflows.targets import Target


@dataclass(frozen=True, slots=True)
class Assembled:
    """One index assembled in one target repository."""

    container: str
    target: Target
    digest: Digest
    tags: tuple[str, ...]
    images: tuple[PushedImage, ...]
    """What it lists, in the system table's order."""
    annotations: tuple[tuple[str, str], ...]
    counts: AssemblyCounts
    requests: int
    seconds: float

    @property
    def reference(self) -> str:
        return f"{self.target.repository}@{self.digest}"


def images_for(container: Container, pushed: Sequence[PushedImage]) -> dict[System, PushedImage]:
    """The pushed image of each system of ``container``: exactly one each, or a UsageError."""
    found: dict[System, PushedImage] = {}
    for image in pushed:
        if image.container != container.name:
            continue
        if image.system not in container.systems:
            raise UsageError(
                f"{container.name} is not configured for {image.system.name}, "
                f"but a shard pushed {image.digest} for it",
                hint="plan and build from the same containers.toml",
            )
        seen = found.get(image.system)
        if seen is not None and seen.digest != image.digest:
            raise UsageError(
                f"two shards pushed different images of {container.name} for "
                f"{image.system.name}: {seen.digest} and {image.digest}",
                hint="build every shard from the same containers.lock (--locked)",
            )
        found[image.system] = image
    missing = [s.name for s in container.systems if s not in found]
    if missing:
        raise UsageError(
            f"no pushed image of {container.name} for {', '.join(missing)}",
            hint="give the build --push --json output of every shard (did one fail?)",
        )
    return found


def assemble_index(
    container: Container,
    images: dict[System, PushedImage],
    target: Target,
    tags: Sequence[str],
    *,
    access: RegistryAccess = ANONYMOUS,
    evidence: bool = True,
    progress: Progress = NULL_PROGRESS,
) -> Assembled:
    """Make ``container``'s index in ``target`` from ``images`` and PUT it under ``tags``."""
    if not tags:
        raise UsageError("no tag to push", hint="pass --tag")
    started = time.perf_counter()
    ordered = [images[s] for s in sorted(images, key=SYSTEMS.index)]
    for image in ordered:
        if parse_reference(image.repository).api_host != target.reference.api_host:
            raise UsageError(
                f"{container.name} ({image.system.name}) is in {image.repository}, on another "
                f"registry than {target.repository}: blobs cannot be mounted across registries",
                hint="push the shards to the registry of the index (build --push REF)",
            )
    access = replace(access, credentials=target.credentials)
    task = progress.task(f"assemble {target.repository}", total=len(ordered))
    with access.client(target.reference) as client:
        client.ping()
        assembler = Assembler(client, target.reference.repository)
        manifests = []
        for image in ordered:
            data = _manifest(assembler, container, image, evidence)
            manifests.append((image.system, data))
            progress.advance(task)
        annotations = index_annotations(manifests)
        index = image_index(manifests, annotations)
        for tag in dict.fromkeys(tags):
            assembler.put(index, media_types.OCI_INDEX, tag)
        requests = client.requests
    progress.done(task)
    return Assembled(
        container.name,
        target,
        sha256_digest(index),
        tuple(dict.fromkeys(tags)),
        tuple(ordered),
        tuple(sorted(annotations.items())),
        assembler.counts,
        requests,
        time.perf_counter() - started,
    )


def _manifest(
    assembler: Assembler, container: Container, image: PushedImage, evidence: bool
) -> bytes:
    """The image manifest ``image`` names, checked, and present in the index's repository."""
    source = parse_reference(image.repository).repository
    data, document = assembler.read(source, image.digest)
    where = f"{image.repository}@{image.digest} ({container.name}, {image.system.name})"
    if document.get("mediaType") != media_types.OCI_MANIFEST or "config" not in document:
        raise ImageError(
            f"{where} is not an OCI image manifest",
            hint="give the digests that polyarch build --push printed",
        )
    title = (document.get("annotations") or {}).get(ANNOTATION_TITLE)
    if title != container.name:
        raise ImageError(
            f"{where} is an image of {title!r}, not of {container.name}",
            hint="give the digests that polyarch build --push printed for this container",
        )
    if source != assembler.repository:
        assembler.copy_image(source, data, document)
        if evidence:
            subject = Subject(media_types.OCI_MANIFEST, image.digest, len(data))
            assembler.copy_referrers(source, subject)
    return data
