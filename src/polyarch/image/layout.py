"""The OCI image layout on disk (image-spec ``image-layout.md``): writing and reading it.

``write_oci_layout`` writes what ``polyarch build`` puts in ``OUT/NAME/oci/``;
``read_oci_layout`` opens any layout (ours, skopeo's, an unpacked OCI archive)
and checks every document against its descriptor as it walks it;
``annotate_layout`` writes a copy whose index carries more annotations
(``polyarch manifest``). ``index.json`` is written by ``write_layout_index``
only: one entry, the root, named by ``org.opencontainers.image.ref.name``.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyarch import media_types
from polyarch.determinism import Digest, canonical_json, sha256_digest
from polyarch.errors import ImageError
from polyarch.files import (
    clone_or_copy,
    has_digest,
    replace_directory,
    same_content,
    staging_dir,
)
from polyarch.image.oci import (
    ANNOTATION_REF_NAME,
    Descriptor,
    Image,
    LayerLike,
    Platform,
    parse_descriptor,
    parse_json_object,
)
from polyarch.platforms import System

if TYPE_CHECKING:
    from polyarch.checked import CheckedFiles
from polyarch.reference import DEFAULT_TAG, check_tag

OCI_LAYOUT_VERSION = "1.0.0"
BLOB_MODE = 0o444
"""Blobs are content-addressed and never change; read-only says so."""
_DAMAGED = "the layout is damaged; build or copy the image again"


def _layout_index_files(media_type: str, digest: Digest, size: int, tag: str) -> dict[str, bytes]:
    """``oci-layout`` and an ``index.json`` naming one root document ``tag``, by file name."""
    check_tag(tag)
    entry = {
        "mediaType": media_type,
        "digest": digest,
        "size": size,
        "annotations": {ANNOTATION_REF_NAME: tag},
    }
    top = {"schemaVersion": 2, "mediaType": media_types.OCI_INDEX, "manifests": [entry]}
    return {
        "oci-layout": canonical_json({"imageLayoutVersion": OCI_LAYOUT_VERSION}),
        "index.json": canonical_json(top),
    }


def write_layout_index(root: Path, media_type: str, digest: Digest, size: int, tag: str) -> None:
    """Write ``oci-layout`` and an ``index.json`` naming one root document ``tag``."""
    for name, data in _layout_index_files(media_type, digest, size, tag).items():
        _write_file(root / name, data)


def put_blob(root: Path, data: bytes) -> Digest:
    """Store ``data`` as a blob of the layout at ``root`` (if absent); return its digest."""
    digest = sha256_digest(data)
    target = blob_path(root, digest)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_file(target, data, BLOB_MODE)
    return digest


def _refuse_existing(dest: Path) -> None:
    if dest.exists() or dest.is_symlink():
        raise ImageError(f"{dest} already exists", hint="remove it or write somewhere else")


def _write_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.write_bytes(data)
    os.chmod(path, mode)


def _place_layer_blob(layer: LayerLike, target: Path) -> None:
    """Put a copy of the layer's gzip file in place (a reflink where the file system can).

    Never a hard link: an output that shares an inode with the cache lets
    damage travel both ways (a user editing ``result/`` corrupts the cache, a
    bit flipped in the cache corrupts results built before it), and
    ``chmod`` on the output would change the cache file, or whatever file a
    poisoned cache made it.
    """
    try:
        actual = layer.blob.lstat().st_size
    except OSError as exc:
        raise ImageError(
            f"layer {layer.digest} is missing at {layer.blob}: {exc.strerror}",
            hint="rebuild; the cache may have been pruned meanwhile",
        ) from exc
    if actual != layer.size:
        raise ImageError(
            f"layer {layer.digest} at {layer.blob} has {actual} bytes, expected {layer.size}",
            hint="run `polyarch cache prune` and rebuild",
        )
    try:
        clone_or_copy(layer.blob, target, mode=BLOB_MODE)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOENT):
            raise ImageError(
                f"layer {layer.digest} at {layer.blob} is not a regular file",
                hint="rebuild; the cache may have been pruned meanwhile",
            ) from exc
        raise


def _index_manifest_digests(index: bytes) -> set[str]:
    document = parse_json_object(index, "image index")
    manifests = document.get("manifests")
    if document.get("mediaType") != media_types.OCI_INDEX or not isinstance(manifests, list):
        raise ImageError(
            "the given index is not an OCI image index", hint="build it with image_index"
        )
    return {parse_descriptor(m, "image index").digest for m in manifests}


def write_oci_layout(dest: Path, images: Sequence[Image], index: bytes, *, tag: str) -> None:
    """Write an OCI image layout at ``dest`` (which must not exist), atomically.

    ``index.json`` has one entry: the image ``index`` (media type image index),
    named ``tag`` by ``org.opencontainers.image.ref.name``. ``blobs/sha256/``
    holds the index, each image's manifest and config, and every layer once.
    The same inputs give the same files, byte for byte.
    """
    check_tag(tag)
    _refuse_existing(dest)
    listed = _index_manifest_digests(index)
    given = {image.manifest_digest for image in images}
    if listed != given:
        raise ImageError(
            "the image index does not list exactly the images being written",
            hint="build the index from the same images",
        )
    with staging_dir(dest) as tmp:
        blobs = tmp / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        contents = _layout_blobs(images, index)
        for digest in sorted(contents):
            content, target = contents[digest], blob_path(tmp, digest)
            if isinstance(content, bytes):
                _write_file(target, content, BLOB_MODE)
            else:
                _place_layer_blob(content, target)
        write_layout_index(tmp, media_types.OCI_INDEX, sha256_digest(index), len(index), tag)
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; the layout is for everyone to read
        os.rename(tmp, dest)


def _layout_blobs(images: Sequence[Image], index: bytes) -> dict[Digest, bytes | LayerLike]:
    """Every blob of the layout of ``images`` under ``index``, by digest."""
    # Shared layers (and identical configs) are stored once, like in a registry.
    contents: dict[Digest, bytes | LayerLike] = {sha256_digest(index): index}
    for image in images:
        contents[image.manifest_digest] = image.manifest
        contents[image.config_digest] = image.config
        for layer in image.layers:
            contents[layer.digest] = layer
    return contents


def layout_matches(
    dest: Path,
    images: Sequence[Image],
    index: bytes,
    *,
    tag: str,
    checked: CheckedFiles | None = None,
) -> bool:
    """True if ``dest`` holds exactly what ``write_oci_layout`` would write, byte for byte.

    Small files are compared as bytes, layer blobs hashed against their
    digest (not again if ``checked`` knows them unchanged); nothing else may
    be there. A changed, added or removed file, or a blob sharing the cache's
    inode, makes it False.
    """
    expected: dict[str, bytes | LayerLike] = dict(
        _layout_index_files(media_types.OCI_INDEX, sha256_digest(index), len(index), tag)
    )
    for digest, content in _layout_blobs(images, index).items():
        expected[f"blobs/sha256/{digest.removeprefix('sha256:')}"] = content
    try:
        present = {
            str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_symlink() or not p.is_dir()
        }
    except OSError:
        return False
    return present == expected.keys() and all(
        same_content(dest / name, content)
        if isinstance(content, bytes)
        else has_digest(
            dest / name, content.digest, content.size, not_inode_of=content.blob, checked=checked
        )
        for name, content in expected.items()
    )


def blob_path(root: Path, digest: Digest) -> Path:
    """Where the OCI layout at ``root`` keeps blob ``digest`` (a checked sha256 digest)."""
    return root / "blobs" / "sha256" / digest.removeprefix("sha256:")


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
class _LayoutLayer:
    """A layer blob of an OCI layout, seen as a ``LayerLike``."""

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
        layers.append(_LayoutLayer(descriptor.digest, Digest(diff_id), descriptor.size, 0, path))
    return Image(system, found.config_bytes, found.manifest_bytes, tuple(layers))


def annotate_layout(
    source: Path, dest: Path, annotations: Mapping[str, str], *, tag: str = DEFAULT_TAG
) -> Digest:
    """Write at ``dest`` a layout of ``source``'s one index with ``annotations`` merged in.

    Only the index blob is new; every other blob is a copy of ``source``'s (a
    reflink where the file system can). The layout is made beside ``dest`` and swapped
    into place, replacing what was there. Returns the new index digest.
    """
    layout = read_oci_layout(source)
    if len(layout.entries) != 1:
        raise ImageError(
            f"{source} holds {len(layout.entries)} images, expected one index",
            hint="rebuild it with polyarch build",
        )
    entry = layout.entries[0]
    document = parse_json_object(layout.read_blob(entry), f"{source} index")
    if "manifests" not in document:
        raise ImageError(f"{source} does not hold an image index", hint="rebuild it")
    document["annotations"] = {**document.get("annotations", {}), **annotations}
    index = canonical_json(document)

    def fill(work: Path) -> None:
        blobs = work / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        for blob in (source / "blobs" / "sha256").iterdir():
            if blob.name != entry.digest.removeprefix("sha256:"):
                clone_or_copy(blob, blobs / blob.name, mode=BLOB_MODE)
        put_blob(work, index)
        write_layout_index(work, entry.media_type, sha256_digest(index), len(index), tag)

    replace_directory(dest, fill)
    return sha256_digest(index)
