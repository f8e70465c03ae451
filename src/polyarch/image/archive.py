"""Writing images to disk: the OCI image layout, docker-archive tarballs, atomic publication.

Outputs of ``polyarch build NAME`` (see ``write_build_outputs``)::

    OUT/NAME/oci/          OCI image layout; index.json -> the image index (tag in ref.name)
    OUT/NAME/SYSTEM.tar    docker-archive of one system's image (docker load, podman load)

``OUT/NAME`` always holds exactly the result of the last successful build: a
build of only ``--system S`` replaces the whole directory, so it then holds
``S.tar`` and an index over S alone. Keeping the other systems' tarballs would
make ``oci/`` and the tarballs disagree about what was built, and would keep
images whose packages no longer match the lock.
"""

from __future__ import annotations

import ctypes
import errno
import io
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polyarch.determinism import (
    TAR_FORMAT,
    Digest,
    canonical_json,
    normalise_tarinfo,
    sha256_digest,
    source_date_epoch,
)
from polyarch.errors import ImageError
from polyarch.files import link_or_copy
from polyarch.image.oci import (
    ANNOTATION_REF_NAME,
    INDEX_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    MEDIA_TYPE_INDEX,
    TAG_PATTERN,
    Descriptor,
    Image,
    LayerLike,
    Platform,
    parse_descriptor,
    parse_json_object,
)
from polyarch.platforms import System

OCI_LAYOUT_VERSION = "1.0.0"
BLOB_MODE = 0o444
"""Blobs are content-addressed and never change; read-only says so (also through hard links)."""

# A docker reference "[host[:port]/]path[:tag]", lower-case path components.
_REPOSITORY = re.compile(
    r"(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*"
)


def _check_tag(tag: str) -> None:
    if not TAG_PATTERN.fullmatch(tag):
        raise ImageError(
            f"tag {tag!r} is not a valid image tag",
            hint="use letters, digits, '.', '_' and '-', at most 128 characters",
        )


def split_repo_tag(reference: str) -> tuple[str, str]:
    """``[host/]repo[:tag]`` → (repo, tag); the tag defaults to ``latest``."""
    if "@" in reference:
        raise ImageError(
            f"{reference!r} names a digest, not a tag", hint="give NAME:TAG, e.g. fd:latest"
        )
    repo, sep, tag = reference.rpartition(":")
    if not sep or "/" in tag:  # no colon, or the colon belongs to host:port
        repo, tag = reference, "latest"
    if not _REPOSITORY.fullmatch(repo):
        raise ImageError(
            f"{reference!r} is not a valid image name",
            hint="use lower-case NAME:TAG, e.g. fd:latest",
        )
    _check_tag(tag)
    return repo, tag


# --------------------------------------------------------------------------- files


@contextmanager
def _staging_dir(dest: Path) -> Iterator[Path]:
    """A fresh directory beside ``dest``; removed unless the caller renamed it away."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _refuse_existing(dest: Path) -> None:
    if dest.exists() or dest.is_symlink():
        raise ImageError(f"{dest} already exists", hint="remove it or write somewhere else")


def _write_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.write_bytes(data)
    os.chmod(path, mode)


def _place_layer_blob(layer: LayerLike, target: Path) -> None:
    """Hard-link the layer's gzip file into place, or copy it when linking is impossible.

    A hard link is safe because a blob is immutable: its name is its sha256, the
    cache replaces entries by rename (never rewrites in place), and the linked
    file is made read-only, so no writer can change the bytes both names share.
    Links fail across file systems or where the cache is not ours; then we copy.
    """
    try:
        actual = layer.blob.stat().st_size
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
    link_or_copy(layer.blob, target)
    os.chmod(target, BLOB_MODE)


# --------------------------------------------------------------------------- OCI layout


def _index_manifest_digests(index: bytes) -> set[str]:
    document = parse_json_object(index, "image index")
    manifests = document.get("manifests")
    if document.get("mediaType") != MEDIA_TYPE_INDEX or not isinstance(manifests, list):
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
    _check_tag(tag)
    _refuse_existing(dest)
    listed = _index_manifest_digests(index)
    given = {image.manifest_digest for image in images}
    if listed != given:
        raise ImageError(
            "the image index does not list exactly the images being written",
            hint="build the index from the same images",
        )
    index_descriptor = {
        "mediaType": MEDIA_TYPE_INDEX,
        "digest": sha256_digest(index),
        "size": len(index),
        "annotations": {ANNOTATION_REF_NAME: tag},
    }
    top = {"schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX, "manifests": [index_descriptor]}
    with _staging_dir(dest) as tmp:
        blobs = tmp / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        # Shared layers (and identical configs) are stored once, like in a registry.
        contents: dict[Digest, bytes | LayerLike] = {sha256_digest(index): index}
        for image in images:
            contents[image.manifest_digest] = image.manifest
            contents[image.config_digest] = image.config
            for layer in image.layers:
                contents[layer.digest] = layer
        for digest in sorted(contents):
            content, target = contents[digest], blob_path(tmp, digest)
            if isinstance(content, bytes):
                _write_file(target, content, BLOB_MODE)
            else:
                _place_layer_blob(content, target)
        _write_file(tmp / "oci-layout", canonical_json({"imageLayoutVersion": OCI_LAYOUT_VERSION}))
        _write_file(tmp / "index.json", canonical_json(top))
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; the layout is for everyone to read
        os.rename(tmp, dest)


# --------------------------------------------------------------------------- docker-archive


def _layer_file_name(layer: LayerLike) -> str:
    return layer.digest.removeprefix("sha256:") + ".tar.gz"


def write_docker_archive(
    dest: Path, image: Image, *, repo_tags: Sequence[str], mtime: int | None = None
) -> None:
    """Write ``image`` as a docker-archive tarball (``docker save`` format), atomically.

    Layout: ``manifest.json`` ``[{Config, RepoTags, Layers}]``, the config as
    ``<config hex>.json``, each layer as ``<blob hex>.tar.gz`` (gzip as stored:
    ``docker load`` 20.10+ and ``podman load`` decompress layers themselves),
    and a ``repositories`` file mapping each repo/tag to the top layer, as
    ``docker save`` writes it. Entries are sorted, headers normalised, every
    mtime ``mtime`` (default: SOURCE_DATE_EPOCH), so the tarball is reproducible.
    """
    if not repo_tags:
        raise ImageError("a docker-archive needs at least one NAME:TAG", hint="pass repo_tags")
    pairs = [split_repo_tag(reference) for reference in repo_tags]
    tags = [f"{repo}:{tag}" for repo, tag in pairs]
    when = source_date_epoch() if mtime is None else mtime
    layer_names = [_layer_file_name(layer) for layer in image.layers]
    top = layer_names[-1].removesuffix(".tar.gz")
    repositories: dict[str, dict[str, str]] = {}
    for repo, tag in pairs:
        repositories.setdefault(repo, {})[tag] = top
    config_name = image.config_digest.removeprefix("sha256:") + ".json"
    manifest = [{"Config": config_name, "Layers": layer_names, "RepoTags": tags}]

    members: dict[str, bytes | LayerLike] = {
        "manifest.json": canonical_json(manifest),
        "repositories": canonical_json(repositories),
        config_name: image.config,
    }
    for name, layer in zip(layer_names, image.layers, strict=True):
        members[name] = layer

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.tmp-", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            tarfile.open(fileobj=raw, mode="w", format=TAR_FORMAT) as tar,
        ):
            for name in sorted(members):
                _add_member(tar, name, members[name], when)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _add_member(tar: tarfile.TarFile, name: str, content: bytes | LayerLike, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    if isinstance(content, bytes):
        info.size = len(content)
        tar.addfile(normalise_tarinfo(info, mtime), io.BytesIO(content))
        return
    info.size = content.size
    try:
        with open(content.blob, "rb") as blob:
            if os.fstat(blob.fileno()).st_size != content.size:
                raise ImageError(
                    f"layer {content.digest} at {content.blob} does not have {content.size} bytes",
                    hint="run `polyarch cache prune` and rebuild",
                )
            tar.addfile(normalise_tarinfo(info, mtime), blob)
    except OSError as exc:
        raise ImageError(
            f"cannot read layer {content.digest} at {content.blob}: {exc.strerror}",
            hint="rebuild; the cache may have been pruned meanwhile",
        ) from exc


# --------------------------------------------------------------------------- publishing


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    renameat2.restype = ctypes.c_int
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def publish_outputs(out_dir: Path, name: str, build: Callable[[Path], None]) -> Path:
    """Run ``build(staging_dir)``, then make the staging dir ``out_dir/name``; return that path.

    ``build`` writes everything into a fresh ``out_dir/.NAME.tmp-*`` directory.
    Only when it returns is the result swapped in: on Linux in one atomic
    exchange, elsewhere by renaming the old result aside and the new one in
    (restoring the old one if that fails); the old result is then deleted. If
    ``build`` raises, the staging dir is removed and ``out_dir/name`` is
    untouched, so readers see the previous result or the new one, never a mix.
    """
    if not name or name.startswith(".") or "/" in name or "\0" in name:
        raise ImageError(f"{name!r} cannot name an output directory", hint="use a container name")
    final = out_dir / name
    if (final.exists() or final.is_symlink()) and not final.is_dir():
        raise ImageError(f"{final} exists and is not a directory", hint="remove it or use --out")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImageError(f"cannot create {out_dir}: {exc.strerror}", hint="use --out") from exc
    with _staging_dir(final) as tmp:
        os.chmod(tmp, 0o755)
        build(tmp)
        try:
            if not final.exists():
                os.rename(tmp, final)
            elif _exchange(tmp, final):
                pass  # tmp now holds the old result; _staging_dir deletes it
            else:
                aside = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=out_dir))
                os.rename(final, aside)  # onto an empty directory: allowed by POSIX
                try:
                    os.rename(tmp, final)
                except OSError:
                    os.rename(aside, final)
                    raise
                shutil.rmtree(aside, ignore_errors=True)
        except OSError as exc:
            raise ImageError(
                f"cannot move the new result into {final}: {exc.strerror}",
                hint="check permissions of the output directory",
            ) from exc
    return final


def write_build_outputs(
    out_dir: Path,
    name: str,
    images: Sequence[Image],
    index: bytes,
    *,
    tag: str,
    repo_tags: Sequence[str],
    mtime: int | None = None,
) -> Path:
    """Publish ``OUT/NAME/oci/`` and one ``OUT/NAME/SYSTEM.tar`` per image; return ``OUT/NAME``."""

    def build(staging: Path) -> None:
        write_oci_layout(staging / "oci", images, index, tag=tag)
        for image in images:
            write_docker_archive(
                staging / f"{image.system.name}.tar", image, repo_tags=repo_tags, mtime=mtime
            )

    return publish_outputs(out_dir, name, build)


# --------------------------------------------------------------------------- reading


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

    @property
    def is_index(self) -> bool:
        return self.config is None


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
        if media_type in INDEX_MEDIA_TYPES or "manifests" in document:
            manifests = document.get("manifests")
            if not isinstance(manifests, list):
                raise ImageError(f"{where}: index has no manifests", hint=_DAMAGED)
            children = tuple(parse_descriptor(item, where) for item in manifests)
            node = LayoutManifest(descriptor, media_type, data, document, parent, None, children)
            for child in children:
                yield from self._walk(child, node, skip_unknown, depth + 1)
            yield node
        elif media_type in MANIFEST_MEDIA_TYPES or "layers" in document:
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


_DAMAGED = "the layout is damaged; build or copy the image again"


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
