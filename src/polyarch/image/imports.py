"""Read image files polyarch did not build, and make one multi-platform OCI layout of them.

Accepted: docker-archive tarballs (``docker save``, ``podman save``, Nix
dockerTools; gzip-compressed or not; layers inside plain tar or gzip), OCI
archives (a tar of an OCI layout) and OCI layout directories. Archive member
names are never used as host paths: members are copied to numbered scratch
files, and only regular files and in-archive symlinks are followed.
"""

from __future__ import annotations

import gzip
import json
import posixpath
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from polyarch import media_types
from polyarch.determinism import Digest, canonical_json, gzip_bytes, sha256_digest, sha256_file
from polyarch.errors import ImageError
from polyarch.files import atomic_copy, replace_directory
from polyarch.image.docker_archive import MANIFEST_NAME, parse_archive_manifest
from polyarch.image.layout import put_blob, write_layout_index
from polyarch.image.layout_reader import LayoutManifest, OciLayout, blob_path, read_oci_layout
from polyarch.image.oci import Platform

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True, slots=True)
class ImportedLayer:
    """A layer blob as it will be pushed, stored content-addressed in a blob directory."""

    media_type: str
    digest: Digest
    size: int
    diff_id: Digest
    path: Path


@dataclass(frozen=True, slots=True)
class ImportedImage:
    """One single-platform image read from a file."""

    source: Path
    platform: Platform
    config: bytes
    layers: tuple[ImportedLayer, ...]
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def config_digest(self) -> Digest:
        return sha256_digest(self.config)

    def manifest(self) -> bytes:
        """The OCI manifest of this image (canonical JSON)."""
        return canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": media_types.OCI_MANIFEST,
                "config": {
                    "mediaType": media_types.OCI_CONFIG,
                    "digest": self.config_digest,
                    "size": len(self.config),
                },
                "layers": [
                    {"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}
                    for layer in self.layers
                ],
            }
        )


def read_images(path: Path, store: Path) -> list[ImportedImage]:
    """Every image in the file or directory ``path``; its blobs are put in ``store/blobs/sha256``.

    ``store`` is typically the OCI layout being written; the blob files of the
    returned layers live there.
    """
    if path.is_dir():
        return _read_oci_layout(path, path, store)
    if not path.is_file():
        raise ImageError(f"image file {path} does not exist", hint="check the path")
    with _scratch(store) as scratch:
        members = _unpack(path, scratch)
        if MANIFEST_NAME in members:
            return _read_docker_archive(path, members, store)
        if "index.json" in members and "oci-layout" in members:
            return _read_oci_archive(path, members, scratch, store)
    raise ImageError(
        f"{path} is neither a docker-archive nor an OCI archive or layout",
        hint="pass a file made by docker/podman save, skopeo copy, or Nix dockerTools",
    )


# -- archives --------------------------------------------------------------------------


@contextmanager
def _scratch(store: Path) -> Iterator[Path]:
    store.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".import-", dir=store))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _clean_name(name: str) -> str | None:
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if not parts or ".." in parts or name.startswith("/"):
        return None
    return "/".join(parts)


def _unpack(archive: Path, scratch: Path) -> dict[str, Path]:
    """Stream the (possibly gzip'd) tar once: member name → scratch file."""
    members: dict[str, Path] = {}
    links: dict[str, str] = {}
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            for number, info in enumerate(tar):
                name = _clean_name(info.name)
                if name is None:
                    continue
                if info.isfile():
                    extracted = tar.extractfile(info)
                    assert extracted is not None
                    target = scratch / str(number)
                    with target.open("wb") as out:
                        shutil.copyfileobj(extracted, out, 1 << 20)
                    members[name] = target
                elif info.issym() or info.islnk():
                    # Symlinks are relative to their directory, hard links to the archive root.
                    base = PurePosixPath(name).parent if info.issym() else PurePosixPath()
                    if not info.linkname.startswith("/"):
                        resolved = _clean_name(posixpath.normpath(str(base / info.linkname)))
                        if resolved is not None:
                            links[name] = resolved
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise ImageError(
            f"{archive} is not a readable tar archive: {exc}", hint="check the file"
        ) from None
    # docker save links duplicate layers to the first copy (…/layer.tar -> ../ID/layer.tar).
    for name, link_target in links.items():
        seen = {name}
        while link_target in links and link_target not in seen:
            seen.add(link_target)
            link_target = links[link_target]
        if link_target in members:
            members[name] = members[link_target]
    return members


def _load_json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        raise ImageError(f"{what} is not valid JSON", hint="check the image file") from None


def _platform(config: bytes, source: Path) -> Platform:
    doc = _load_json(config, f"the image config in {source}")
    platform = Platform.of_config(doc) if isinstance(doc, dict) else None
    if platform is None:
        raise ImageError(
            f"the image config in {source} names no architecture/os",
            hint="rebuild it with a platform, e.g. dockerTools' `architecture`",
        )
    return platform


def _diff_ids(config: bytes, source: Path) -> list[str]:
    doc = _load_json(config, f"the image config in {source}")
    ids = doc.get("rootfs", {}).get("diff_ids", []) if isinstance(doc, dict) else []
    return [str(i) for i in ids]


def _read_docker_archive(
    source: Path, members: dict[str, Path], store: Path
) -> list[ImportedImage]:
    where = f"{MANIFEST_NAME} in {source}"
    images = []
    for entry in parse_archive_manifest(members[MANIFEST_NAME].read_bytes(), where):
        config_name = _clean_name(entry.config)
        if config_name is None or config_name not in members:
            raise ImageError(
                f"{source} lacks the config its manifest.json names", hint="check the file"
            )
        config = members[config_name].read_bytes()
        diff_ids = _diff_ids(config, source)
        if len(entry.layers) != len(diff_ids):
            raise ImageError(
                f"{source}: {len(entry.layers)} layers but {len(diff_ids)} diff_ids in the config",
                hint="the archive is inconsistent; save it again",
            )
        layers = []
        for name, diff_id in zip(entry.layers, diff_ids, strict=True):
            clean = _clean_name(name)
            if clean is None or clean not in members:
                raise ImageError(f"{source} lacks layer {name}", hint="save the image again")
            layers.append(_import_layer(members[clean], diff_id, source, store))
        images.append(ImportedImage(source, _platform(config, source), config, tuple(layers)))
    return images


def _import_layer(path: Path, diff_id: str, source: Path, store: Path) -> ImportedLayer:
    data = path.read_bytes()
    if data.startswith(_ZSTD_MAGIC):
        raise ImageError(f"{source} has a zstd layer, which docker-archive does not allow")
    if data.startswith(_GZIP_MAGIC):
        try:
            uncompressed_digest = sha256_digest(gzip.decompress(data))
        except (OSError, EOFError, zlib.error):
            raise ImageError(f"a layer in {source} is a damaged gzip file") from None
        compressed = data
    else:
        uncompressed_digest = sha256_digest(data)
        # Uncompressed layers are gzip'd the one deterministic way, so re-imports give equal digests.
        compressed = gzip_bytes(data)
    if uncompressed_digest != diff_id:
        raise ImageError(
            f"a layer in {source} does not match its diff_id {diff_id}",
            hint="the archive is corrupt; save it again",
        )
    digest = put_blob(store, compressed)
    return ImportedLayer(
        media_types.OCI_LAYER_GZIP,
        digest,
        len(compressed),
        Digest(diff_id),
        blob_path(store, digest),
    )


def _read_oci_archive(
    source: Path, members: dict[str, Path], scratch: Path, store: Path
) -> list[ImportedImage]:
    root = scratch / "layout"
    for name, member in members.items():
        if name in ("index.json", "oci-layout") or name.startswith("blobs/sha256/"):
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(member, target)
    return _read_oci_layout(root, source, store)


def _read_oci_layout(path: Path, source: Path, store: Path) -> list[ImportedImage]:
    layout = read_oci_layout(path, label=str(source))
    images: list[ImportedImage] = []
    seen: set[Digest] = set()
    for entry in layout.entries:
        # Documents of other kinds (signatures, attestations as artifacts) are not images.
        for node in layout.walk(entry, skip_unknown=True):
            if node.config is not None and node.digest not in seen:
                seen.add(node.digest)
                images.append(_import_manifest(layout, node, source, store))
    if not images:
        raise ImageError(f"{source} holds no image manifest", hint="check the image file")
    return images


def _import_manifest(
    layout: OciLayout, node: LayoutManifest, source: Path, store: Path
) -> ImportedImage:
    assert node.config is not None
    config = layout.read_blob(node.config)
    diff_ids = _diff_ids(config, source)
    if len(diff_ids) != len(node.layers):
        raise ImageError(
            f"manifest {node.digest} in {source} and its config disagree on the layers"
        )
    layers = []
    for layer, diff_id in zip(node.layers, diff_ids, strict=True):
        src = layout.checked_blob(layer)
        dest = blob_path(store, layer.digest)
        if not dest.exists():
            if sha256_file(src) != layer.digest:
                raise ImageError(f"layer {layer.digest} in {source} is corrupt")
            dest.parent.mkdir(parents=True, exist_ok=True)
            atomic_copy(src, dest)
        layer_type = media_types.DOCKER_TO_OCI.get(layer.media_type, layer.media_type)
        layers.append(ImportedLayer(layer_type, layer.digest, layer.size, Digest(diff_id), dest))
    index_annotations = node.parent.document.get("annotations") if node.parent else None
    return ImportedImage(
        source, _platform(config, source), config, tuple(layers), dict(index_annotations or {})
    )


# -- writing the index -------------------------------------------------------------------


def index_from_image_files(
    paths: Sequence[Path],
    dest_layout: Path,
    tag: str,
    *,
    annotations: dict[str, str] | None = None,
) -> Digest:
    """Write an OCI layout at ``dest_layout`` whose index covers every image in ``paths``.

    Platforms come from each image's config; two images of one platform are an
    ImageError naming both files. The layout is built beside ``dest_layout`` and
    swapped into place, replacing what was there. Returns the index digest.
    """
    if not paths:
        raise ImageError("no image files given", hint="pass at least one --image-file")
    index_digest: Digest | None = None

    def write(work: Path) -> None:
        nonlocal index_digest
        images: list[ImportedImage] = []
        by_platform: dict[tuple[str, str, str | None], ImportedImage] = {}
        for path in paths:
            for image in read_images(path, work):
                other = by_platform.get(image.platform.key())
                if other is not None:
                    raise ImageError(
                        f"{other.source} and {image.source} are both {image.platform} images",
                        hint="pass one image per platform",
                    )
                by_platform[image.platform.key()] = image
                images.append(image)
        descriptors = []
        for image in images:
            put_blob(work, image.config)
            manifest = image.manifest()
            descriptors.append(
                {
                    "mediaType": media_types.OCI_MANIFEST,
                    "digest": put_blob(work, manifest),
                    "size": len(manifest),
                    "platform": image.platform.as_json(),
                }
            )
        index: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": media_types.OCI_INDEX,
            "manifests": descriptors,
        }
        if annotations:
            index["annotations"] = dict(annotations)
        index_bytes = canonical_json(index)
        index_digest = put_blob(work, index_bytes)
        write_layout_index(work, media_types.OCI_INDEX, index_digest, len(index_bytes), tag)

    replace_directory(dest_layout, write)
    assert index_digest is not None  # write() ran to its end, or replace_directory raised
    return index_digest
