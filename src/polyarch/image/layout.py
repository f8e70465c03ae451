"""Writing the OCI image layout on disk (image-spec ``image-layout.md``).

``write_oci_layout`` writes what ``polyarch build`` puts in ``OUT/NAME/oci/``;
``annotate_layout`` writes a copy whose index carries more annotations
(``polyarch manifest``). ``index.json`` is written by ``write_layout_index``
only: one entry, the root, named by ``org.opencontainers.image.ref.name``.
Reading any layout, checked as it is walked, is ``image.layout_reader``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

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
from polyarch.image.layout_reader import OCI_LAYOUT_VERSION, blob_path, read_oci_layout
from polyarch.image.oci import (
    ANNOTATION_REF_NAME,
    Image,
    LayerLike,
    parse_descriptor,
    parse_json_object,
)

if TYPE_CHECKING:
    from polyarch.checked import CheckedFiles
from polyarch.reference import DEFAULT_TAG, check_tag

BLOB_MODE = 0o444
"""Blobs are content-addressed and never change; read-only says so."""


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
