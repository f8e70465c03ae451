"""Reading an OCI image layout (image-spec ``image-layout.md``): any layout — ours,
skopeo's, an unpacked OCI archive — walked from ``index.json``, every document
checked against its descriptor as it is met. The writing half is ``image.layout``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polyarch import media_types
from polyarch.determinism import Digest, sha256_digest
from polyarch.errors import ImageError
from polyarch.image.oci import (
    ANNOTATION_REF_NAME,
    Descriptor,
    Image,
    Platform,
    parse_descriptor,
    parse_json_object,
)
from polyarch.platforms import System

OCI_LAYOUT_VERSION = "1.0.0"
_DAMAGED = "the layout is damaged; build or copy the image again"


@dataclass(frozen=True, slots=True)
class LayoutManifest:
    """An index or image manifest met walking a layout; ``data`` matches ``descriptor``."""

    descriptor: Descriptor
    """How its parent (or index.json) names it; ``platform`` is the parent's word."""
    media_type: str
    """The document's own ``mediaType``, else the descriptor's."""
    data: bytes
    document: dict[str, Any]
    parent: LayoutManifest | None
    """The index that lists it; None for an entry of index.json."""
    config: Descriptor | None
    """An image manifest's config; None for an index."""
    layers: tuple[Descriptor, ...]
    """An image manifest's layers, or an index's manifests."""

    @property
    def digest(self) -> Digest:
        return self.descriptor.digest


@dataclass(frozen=True, slots=True)
class LayoutImage:
    """One image found in an OCI layout: its manifest, config and layer descriptors."""

    platform: Platform | None
    """From the index entry, else from the config."""
    manifest: Descriptor
    manifest_bytes: bytes
    config: Descriptor
    config_bytes: bytes
    layers: tuple[Descriptor, ...]

    @property
    def system(self) -> System | None:
        return self.platform.system if self.platform else None


@dataclass(frozen=True, slots=True)
class OciLayout:
    """An OCI image layout on disk, its tagged entries read from ``index.json``."""

    root: Path
    entries: tuple[Descriptor, ...]
    label: str = ""
    """What messages call the layout (e.g. the archive it was unpacked from); else ``root``."""

    @property
    def name(self) -> str:
        return self.label or str(self.root)

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(t for e in self.entries if (t := e.annotation(ANNOTATION_REF_NAME)))

    def blob_path(self, digest: Digest) -> Path:
        return blob_path(self.root, digest)

    def read_blob(self, descriptor: Descriptor) -> bytes:
        """The blob's bytes, after checking its size and sha256 against the descriptor."""
        try:
            data = self.blob_path(descriptor.digest).read_bytes()
        except OSError as exc:
            raise ImageError(
                f"blob {descriptor.digest} is missing from {self.name}: {exc.strerror}",
                hint=_DAMAGED,
            ) from exc
        if len(data) != descriptor.size or sha256_digest(data) != descriptor.digest:
            raise ImageError(
                f"blob {descriptor.digest} in {self.name} does not match its digest",
                hint=_DAMAGED,
            )
        return data

    def checked_blob(self, descriptor: Descriptor) -> Path:
        """The blob's path, after checking it exists with the descriptor's size.

        Not hashed here: large blobs are hashed by whoever reads them anyway.
        """
        path = self.blob_path(descriptor.digest)
        try:
            actual = path.stat().st_size
        except OSError as exc:
            raise ImageError(
                f"blob {descriptor.digest} is missing from {self.name}: {exc.strerror}",
                hint=_DAMAGED,
            ) from exc
        if actual != descriptor.size:
            raise ImageError(
                f"blob {descriptor.digest} in {self.name} has {actual} bytes, "
                f"expected {descriptor.size}",
                hint=_DAMAGED,
            )
        return path

    def resolve(self, tag: str) -> Descriptor:
        """The index.json entry named ``tag``."""
        for entry in self.entries:
            if entry.annotation(ANNOTATION_REF_NAME) == tag:
                return entry
        raise ImageError(
            f"{self.name} has no image tagged {tag!r}",
            hint=f"tags: {', '.join(self.tags) or 'none'}",
        )

    def walk(
        self, descriptor: Descriptor, *, skip_unknown: bool = False
    ) -> Iterator[LayoutManifest]:
        """Every index and image manifest under ``descriptor``, children before parents.

        Each one's bytes are checked against its descriptor; configs and layers are
        not read. OCI and Docker schema 2 types are understood (and documents that
        lack a ``mediaType``, by their fields); any other kind is an ImageError, or
        left out with ``skip_unknown``. A document listed twice is met twice.
        """
        return self._walk(descriptor, None, skip_unknown, depth=0)

    def _walk(
        self,
        descriptor: Descriptor,
        parent: LayoutManifest | None,
        skip_unknown: bool,
        depth: int,
    ) -> Iterator[LayoutManifest]:
        if depth > 4:
            raise ImageError(f"{self.name}: indexes nest too deep", hint=_DAMAGED)
        data = self.read_blob(descriptor)
        where = f"{self.name} blob {descriptor.digest}"
        document = parse_json_object(data, where)
        media_type = document.get("mediaType") or descriptor.media_type
        if not isinstance(media_type, str):
            raise ImageError(f"{where}: mediaType is not a string", hint=_DAMAGED)
        if media_type in media_types.INDEX_TYPES or "manifests" in document:
            manifests = document.get("manifests")
            if not isinstance(manifests, list):
                raise ImageError(f"{where}: index has no manifests", hint=_DAMAGED)
            children = tuple(parse_descriptor(item, where) for item in manifests)
            node = LayoutManifest(descriptor, media_type, data, document, parent, None, children)
            for child in children:
                yield from self._walk(child, node, skip_unknown, depth + 1)
            yield node
        elif media_type in media_types.MANIFEST_TYPES or "layers" in document:
            config = parse_descriptor(document.get("config"), where)
            raw_layers = document.get("layers")
            if not isinstance(raw_layers, list):
                raise ImageError(f"{where}: manifest has no layers", hint=_DAMAGED)
            layers = tuple(parse_descriptor(item, where) for item in raw_layers)
            yield LayoutManifest(descriptor, media_type, data, document, parent, config, layers)
        elif not skip_unknown:
            raise ImageError(
                f"{where}: unsupported media type {media_type}",
                hint="polyarch reads OCI and Docker image indexes and manifests",
            )

    def images(self, tag: str) -> tuple[LayoutImage, ...]:
        """Every image under ``tag``: one per index entry, or the one manifest it names."""
        found = []
        for node in self.walk(self.resolve(tag)):
            if node.config is None:
                continue
            config_bytes = self.read_blob(node.config)
            platform = node.descriptor.platform or Platform.of_config(
                parse_json_object(config_bytes, f"config {node.config.digest}")
            )
            found.append(
                LayoutImage(
                    platform, node.descriptor, node.data, node.config, config_bytes, node.layers
                )
            )
        return tuple(found)

    def image(self, tag: str, system: System) -> LayoutImage:
        """The image of ``system`` under ``tag``."""
        for candidate in self.images(tag):
            if candidate.system == system:
                return candidate
        raise ImageError(
            f"{self.name}:{tag} has no image for {system.name}",
            hint=f"build it: polyarch build NAME --system {system.name}",
        )


def read_oci_layout(path: Path, *, label: str | None = None) -> OciLayout:
    """Open an OCI image layout: check ``oci-layout``, read the entries of ``index.json``.

    ``label`` is what error messages call it (default: ``path``).
    """
    name = label or str(path)
    try:
        marker = (path / "oci-layout").read_bytes()
        top = (path / "index.json").read_bytes()
    except OSError as exc:
        raise ImageError(
            f"{name} is not an OCI image layout: {exc.strerror}",
            hint="point at an OCI layout directory, such as the oci/ that `polyarch build` writes",
        ) from exc
    version = parse_json_object(marker, f"{name}/oci-layout").get("imageLayoutVersion")
    if version != OCI_LAYOUT_VERSION:
        raise ImageError(f"{name}: unsupported imageLayoutVersion {version!r}", hint=_DAMAGED)
    where = f"{name}/index.json"
    manifests = parse_json_object(top, where).get("manifests")
    if not isinstance(manifests, list):
        raise ImageError(f"{where} has no manifests", hint=_DAMAGED)
    return OciLayout(path, tuple(parse_descriptor(m, where) for m in manifests), label or "")


@dataclass(frozen=True, slots=True)
class BlobLayer:
    """A layer blob in a file (of an OCI layout, or unpacked for ``load``), as a ``LayerLike``."""

    digest: Digest
    diff_id: Digest
    size: int
    uncompressed_size: int
    blob: Path
    packages: tuple[str, ...] = ()


def image_from_layout(layout: OciLayout, tag: str, system: System) -> Image:
    """``system``'s image under ``tag`` of an OCI layout, ready for ``write_docker_archive``.

    The blobs are checked against their descriptors; the diff_ids come from the
    config. The uncompressed size is not recorded in a layout and is reported as 0.
    """
    found = layout.image(tag, system)
    config = json.loads(found.config_bytes)
    diff_ids = config.get("rootfs", {}).get("diff_ids", [])
    if len(diff_ids) != len(found.layers):
        raise ImageError(
            f"{layout.root}:{tag} ({system.name}): config lists {len(diff_ids)} diff_ids "
            f"for {len(found.layers)} layers",
            hint="the layout is damaged; rebuild it",
        )
    layers = []
    for descriptor, diff_id in zip(found.layers, diff_ids, strict=True):
        path = layout.checked_blob(descriptor)
        layers.append(BlobLayer(descriptor.digest, Digest(diff_id), descriptor.size, 0, path))
    return Image(system, found.config_bytes, found.manifest_bytes, tuple(layers))


def blob_path(root: Path, digest: Digest) -> Path:
    """Where the OCI layout at ``root`` keeps blob ``digest`` (a checked sha256 digest)."""
    return root / "blobs" / "sha256" / digest.removeprefix("sha256:")
