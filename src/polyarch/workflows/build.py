"""build: verified packages → deterministic layers → one image per system → an index."""

from __future__ import annotations

import difflib
import functools
import os
import posixpath
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from polyarch.attest.facts import remember_facts
from polyarch.config import Container
from polyarch.config_image import TZDATA
from polyarch.debian.deb import DebContents, read_deb
from polyarch.debian.identity import check_claims
from polyarch.debian.resolver import Resolution
from polyarch.determinism import Digest, rfc3339, sha256_digest, source_date_epoch
from polyarch.errors import ImageError
from polyarch.image.custom import container_layer
from polyarch.image.filesystem import merged_usr_path
from polyarch.image.layer_plan import LayerPlan, plan_layers
from polyarch.image.layers import COMMAND_DIRS, Layer, LayerStats, build_layers, packages_to_read
from polyarch.image.oci import Image, build_image, build_index, image_annotations, index_annotations
from polyarch.outputs import Outputs, write_build_outputs
from polyarch.platforms import SYSTEMS, System
from polyarch.reference import DEFAULT_TAG, check_tag
from polyarch.workflows.evidence import BuildEvidence, SystemImage
from polyarch.workflows.resolve import Session, claim_refused, download, resolve_container
from polyarch.workflows.sharing import project_users
from polyarch.workflows.stamp import (
    BuildSummary,
    StampedImage,
    build_inputs,
    outputs_lock,
    remember_build,
)

if TYPE_CHECKING:
    from polyarch.attest.keys import SigningKey


@dataclass(frozen=True, slots=True)
class SystemBuild:
    system: System
    image: Image
    resolution: Resolution
    version: str
    """Version of the container's own package on this system."""


@dataclass(frozen=True, slots=True)
class BuildResult:
    container: Container
    outputs: Outputs
    index: bytes
    index_digest: Digest
    systems: tuple[SystemBuild, ...]
    stats: LayerStats

    @property
    def path(self) -> Path:
        """``OUT/NAME``: ``oci/`` and one ``SYSTEM.tar`` per built system."""
        return self.outputs.root

    def summary(self) -> BuildSummary:
        """What the CLI reports of this build (and a warm build answers from its stamp)."""
        return BuildSummary(
            container=self.container.name,
            path=str(self.path),
            index_digest=self.index_digest,
            images=tuple(
                StampedImage(
                    system=b.system.name,
                    digest=b.image.manifest_digest,
                    layers=len(b.image.layers),
                    size=b.image.size,
                    uncompressed=b.image.uncompressed_size,
                    version=b.version,
                )
                for b in self.systems
            ),
        )


def build_container(
    session: Session,
    container: Container,
    systems: Sequence[System],
    *,
    out_dir: Path,
    tag: str = DEFAULT_TAG,
    epoch: int | None = None,
    sign_key: SigningKey | None = None,
) -> BuildResult:
    """Build ``container`` for ``systems`` and write ``out_dir/NAME`` atomically.

    ``OUT/NAME/sbom/`` gets each image's SBOMs and provenance, also signed
    with ``sign_key`` when given (docs/SUPPLY-CHAIN.md).
    """
    check_tag(tag)  # refused before any work, not after the layers are built
    epoch = source_date_epoch() if epoch is None else epoch
    stats = LayerStats()
    inputs = None
    if sign_key is None:
        inputs = build_inputs(session, container, systems, out_dir=out_dir, tag=tag, epoch=epoch)

    resolutions, layers, reader = _systems_layers(session, container, systems, epoch, stats)
    evidence = BuildEvidence(session, container, resolutions, reader, epoch=epoch)
    if container.sbom_in_image:
        for system, resolution in resolutions.items():
            version = _version_of(container, resolution)
            layers[system] = [*layers[system], evidence.sbom_layer(system, resolution, version)]
    builds = [
        system_image(container, system, resolutions[system], layers[system], epoch=epoch)
        for system in layers
    ]
    index = build_index(
        [b.image for b in builds],
        index_annotations([(b.system, b.image.manifest) for b in builds]),
    )
    images = [
        SystemImage(b.system, b.image.manifest_digest, b.version, b.resolution) for b in builds
    ]
    outputs = Outputs(out_dir, container.name)
    files = evidence.files(images, sign_key)
    result = BuildResult(container, outputs, index, sha256_digest(index), tuple(builds), stats)
    # One writer of OUT/NAME at a time, so that the stamp describes what this build wrote.
    with outputs_lock(session.cache, outputs.root) as held:
        write_build_outputs(
            outputs,
            [b.image for b in builds],
            index,
            tag=tag,
            repo_tags=[f"{container.name}:{tag}"],
            mtime=epoch,
            evidence=files,
            checked=session.cache.checked,
        )
        if inputs is not None and held:
            remember_build(session.cache, outputs.root, inputs, result.summary())
    return result


class DebReader:
    """Reads the closure's .debs on demand (fetched and verified first), noting each one's facts.

    Facts (``attest.facts``) are written whenever a package is read anyway,
    so a later warm build has its SBOM without reading any .deb.
    """

    def __init__(
        self,
        session: Session,
        resolutions: dict[System, Resolution],
        *,
        max_unpacked: int | None = None,
    ) -> None:
        self.session, self.resolutions = session, resolutions
        self.max_unpacked = max_unpacked
        self.names = {
            p.record.sha256: p.record.name for r in resolutions.values() for p in r.packages
        }
        self.debs: dict[str, Path] = {}
        self._lock = threading.Lock()

    def fetch(self, only: set[str]) -> None:
        """Download (or find in the cache) the packages ``only`` names, all at once."""
        self.debs.update(download(self.session, self.resolutions, only=only))

    def __call__(self, sha256: str) -> DebContents:
        if sha256 not in self.debs:
            # Not fetched up front: a layer vanished from the cache meanwhile, or facts are missing.
            with self._lock:
                self.fetch({sha256})
        contents = read_deb(self.debs[sha256], self.names[sha256], max_unpacked=self.max_unpacked)
        remember_facts(self.session.cache, sha256, contents)
        return contents


def _systems_layers(
    session: Session,
    container: Container,
    systems: Sequence[System],
    epoch: int,
    stats: LayerStats,
) -> tuple[dict[System, Resolution], dict[System, list[Layer]], DebReader]:
    """Each system resolved and its layers built; one reader holding every .deb they read."""

    def pipeline(system: System) -> tuple[Resolution, list[Layer], DebReader]:
        resolution = resolve_container(session, container, (system,))[system]
        own = {system: resolution}
        read = DebReader(session, own, max_unpacked=container.max_unpacked_bytes)
        built = build_system_layers(session, container, own, epoch=epoch, stats=stats, reader=read)
        return resolution, built[system], read

    # Each system from index to layers in its own thread: one system's index parsing
    # (pure Python, holding the GIL) overlaps the other's .deb decoding and
    # compression (lzma, libdeflate and hashlib release it), so both cores work.
    ordered = sorted(systems, key=SYSTEMS.index)
    with ThreadPoolExecutor(max_workers=len(ordered) or 1) as pool:
        done = dict(zip(ordered, pool.map(pipeline, ordered), strict=True))
    resolutions = {s: done[s][0] for s in systems}
    layers = {s: done[s][1] for s in ordered}
    reader = DebReader(session, resolutions, max_unpacked=container.max_unpacked_bytes)
    for _, _, read in done.values():
        reader.debs.update(read.debs)  # what the systems fetched, for the evidence
    return resolutions, layers, reader


def layer_plans(
    session: Session, container: Container, resolutions: dict[System, Resolution]
) -> dict[System, list[LayerPlan]]:
    """Each system's layer plan: what ``build_system_layers`` builds, and what a shard of a
    distributed build pulls from the shared cache (``workflows.cache_needs``)."""
    own = container.options.has_layer  # the container's own layer goes on top of the plan
    if own and container.max_layers < 3:
        raise ImageError(
            f"{container.name}: max_layers = {container.max_layers} leaves no layer for "
            "files, accounts and timezone",
            hint="set max_layers to 3 or more",
        )
    budget = container.max_layers - own
    return {
        s: plan_layers(
            r.packages,
            budget,
            # The whole project's sharing, so a shard of a distributed build plans as one machine.
            users_of=project_users(session, s) if container.layering == "shared" else None,
            container=container.name,
            layering=container.layering,
        )
        for s, r in resolutions.items()
    }


def build_system_layers(
    session: Session,
    container: Container,
    resolutions: dict[System, Resolution],
    *,
    epoch: int,
    stats: LayerStats,
    reader: DebReader | None = None,
) -> dict[System, list[Layer]]:
    """Each system's layers, in system-table order, from the cache or built now.

    Only the packages of layers the cache lacks are fetched (and re-hashed):
    a warm build reads no .deb at all, and an offline one needs none.
    """
    plans = layer_plans(session, container, resolutions)
    needed: set[str] = set()
    for plan in plans.values():
        needed |= packages_to_read(plan, session.cache, epoch=epoch, keep_docs=container.keep_docs)
    read = reader or DebReader(session, resolutions, max_unpacked=container.max_unpacked_bytes)
    read.fetch(needed)

    def layers_of(plan: list[LayerPlan]) -> list[Layer]:
        return build_layers(
            plan,
            read,
            session.cache,
            epoch=epoch,
            keep_docs=container.keep_docs,
            jobs=os.cpu_count() or 2,
            progress=session.progress,
            stats=stats,
        )

    ordered = sorted(resolutions, key=SYSTEMS.index)
    # Systems build side by side, so one system's big layer (libc6) never
    # leaves a core idle while the other system still has layers to compress.
    with ThreadPoolExecutor(max_workers=len(ordered) or 1) as pool:
        built = dict(zip(ordered, pool.map(layers_of, [plans[s] for s in ordered]), strict=True))
    for system, layers in built.items():
        # Warm or cold: every package is what its index record or lock entry says.
        check_claims(
            [p.record for p in resolutions[system].packages],
            [facts for layer in layers for facts in layer.debs],
            partial(claim_refused, session, container.name, system),
        )
    for system in ordered if container.options.has_layer else ():
        built[system] += _own_layer(session, container, resolutions[system], read, epoch)
    return built


def _own_layer(
    session: Session,
    container: Container,
    resolution: Resolution,
    read: Callable[[str], DebContents],
    epoch: int,
) -> list[Layer]:
    """The container's own layer (files, accounts, timezone) as a list of none or one."""
    tzdata = next((p.record for p in resolution.packages if p.record.name == TZDATA), None)
    layer = container_layer(
        container.options,
        container=container.name,
        base=session.config.directory,
        cache=session.cache,
        epoch=epoch,
        tzdata=(tzdata.sha256, functools.partial(read, tzdata.sha256)) if tzdata else None,
    )
    return [layer] if layer else []


def system_image(
    container: Container,
    system: System,
    resolution: Resolution,
    layers: Sequence[Layer],
    *,
    epoch: int,
) -> SystemBuild:
    """The image (config + manifest) of one system over its layers."""
    created = rfc3339(epoch)
    version = _version_of(container, resolution)
    image = build_image(
        system,
        layers,
        entrypoint=entrypoint_args(container, layers, system),
        cmd=container.options.cmd,
        created=created,
        env=container.env,
        workdir=container.workdir,
        user=container.user,
        labels=container.labels,
        annotations=_annotations(container, version, created),
    )
    return SystemBuild(system, image, resolution, version)


def _annotations(container: Container, version: str, created: str) -> dict[str, str]:
    return image_annotations(
        title=container.name,
        version=version,
        created=created,
        description=container.description,
        extra=container.options.annotations,
    )


def _version_of(container: Container, resolution: Resolution) -> str:
    for p in resolution.packages:
        if p.record.name == container.package:
            return p.record.version
    # The root was a virtual package: report the version of whatever provides it.
    return next(p.record.version for p in resolution.packages if not p.base)


def entrypoint_of(
    container: Container, layers: Sequence[Layer], system: System, command: str | None = None
) -> str:
    """The absolute path of the container's command (or of ``command``) in this image.

    An absolute path is taken as written, once it is known to be in the image;
    a bare name is looked up in the PATH directories of the image, in PATH
    order, like a shell would.
    """
    command = command or container.command
    present = {path for layer in layers for path in layer.commands}
    if command.startswith("/"):
        if not _may_be_present(command, present):
            raise ImageError(
                f"{container.name} ({system.name}): command {command!r} is not in the image",
                hint="check the path, or give the bare name of a program in PATH",
            )
        return command
    for directory in COMMAND_DIRS:
        candidate = f"{directory}/{command}"
        if candidate in present:
            return candidate
    names = sorted({p.rsplit("/", 1)[1] for p in present if p.rsplit("/", 1)[0] in COMMAND_DIRS})
    near = difflib.get_close_matches(command, names, n=3)
    hint = f"did you mean {' or '.join(near)}?" if near else "set command to the binary's name"
    raise ImageError(
        f"{container.name} ({system.name}): command {command!r} is not in the image",
        hint=hint,
    )


def _may_be_present(command: str, present: set[str]) -> bool:
    """Whether an absolute ``command`` can be in an image whose layers list ``present``.

    True when the path (merged-/usr spelling too) is there, or when one of
    its directories is a symlink in the image: what that resolves to is not
    known without reading the layers, so it is not refused.
    """
    path = posixpath.normpath(command)
    if path in present or merged_usr_path(path) in present:
        return True
    parent = posixpath.dirname(merged_usr_path(path))
    while parent not in ("/", ""):
        if parent in present:
            return True
        parent = posixpath.dirname(parent)
    return False


def entrypoint_args(container: Container, layers: Sequence[Layer], system: System) -> list[str]:
    """The image's Entrypoint: ``entrypoint`` (its program found like command), else command."""
    given = container.options.entrypoint
    if given:
        return [entrypoint_of(container, layers, system, given[0]), *given[1:]]
    return [entrypoint_of(container, layers, system)]
