"""The docker-archive (``docker save``) format: writing it, and reading its manifest.

Layout: ``manifest.json`` ``[{Config, RepoTags, Layers}]``, the config as
``<config hex>.json``, each layer as ``<blob hex>.tar.gz`` (gzip as stored:
``docker load`` 20.10+ and ``podman load`` decompress layers themselves), and
a ``repositories`` file mapping each repo/tag to the top layer. Reading other
tools' archives into an OCI layout is ``polyarch.image.imports``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

from polyarch.checked import CheckedFiles
from polyarch.determinism import TAR_FORMAT, canonical_json, normalise_tarinfo, source_date_epoch
from polyarch.errors import ImageError
from polyarch.image.oci import Image, LayerLike
from polyarch.reference import split_local_name

MANIFEST_NAME = "manifest.json"


def _layer_file_name(layer: LayerLike) -> str:
    # An uncompressed layer (``image.merged``) is its own diff: a plain .tar.
    suffix = ".tar" if layer.digest == layer.diff_id else ".tar.gz"
    return layer.digest.removeprefix("sha256:") + suffix


def write_docker_archive(
    dest: Path, image: Image, *, repo_tags: Sequence[str], mtime: int | None = None
) -> None:
    """Write ``image`` as a docker-archive tarball (see the module doc), atomically.

    Entries are sorted, headers normalised, every mtime ``mtime`` (default:
    SOURCE_DATE_EPOCH), so the tarball is reproducible.
    """
    members, when = _members(image, repo_tags, mtime)
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


def docker_archive_matches(
    dest: Path,
    image: Image,
    *,
    repo_tags: Sequence[str],
    mtime: int | None = None,
    checked: CheckedFiles | None = None,
) -> bool:
    """True if ``dest`` is byte for byte what ``write_docker_archive`` would write.

    Headers and small members are compared as bytes; a layer member is hashed
    and compared with the layer's digest (SHA-256 runs at GB/s where reading
    the cache's copy as well would double the I/O). Nothing is written. With
    ``checked``, an archive found to match this very content before, and
    unchanged since, is not read again.
    """
    members, when = _members(image, repo_tags, mtime)
    memo = checked if checked is not None else CheckedFiles(None)
    try:
        return memo.check(
            dest, _expected_digest(members, when), partial(_archive_matches, members, when)
        )
    except OSError:
        return False


def _expected_digest(members: dict[str, bytes | LayerLike], when: int) -> str:
    """What names the archive's bytes: every header and small member, each layer's digest."""
    expected = hashlib.sha256()
    for name in sorted(members):
        content = members[name]
        size = len(content) if isinstance(content, bytes) else content.size
        expected.update(_member_info(name, size, when).tobuf(TAR_FORMAT, _ENCODING, _ERRORS))
        expected.update(content if isinstance(content, bytes) else content.digest.encode())
    return "docker-archive:sha256:" + expected.hexdigest()


def _archive_matches(members: dict[str, bytes | LayerLike], when: int, f: BinaryIO) -> bool:
    offset = 0
    for name in sorted(members):
        content = members[name]
        size = len(content) if isinstance(content, bytes) else content.size
        header = _member_info(name, size, when).tobuf(TAR_FORMAT, _ENCODING, _ERRORS)
        pad = -size % tarfile.BLOCKSIZE
        if f.read(len(header)) != header or not _member_matches(f, content):
            return False
        if f.read(pad) != bytes(pad):
            return False
        offset += len(header) + size + pad
    # tarfile's end: two zero blocks, then zeros up to a whole record.
    end = 2 * tarfile.BLOCKSIZE
    end += -(offset + end) % tarfile.RECORDSIZE
    return f.read(end) == bytes(end) and f.read(1) == b""


def _member_matches(f: BinaryIO, content: bytes | LayerLike) -> bool:
    if isinstance(content, bytes):
        return f.read(len(content)) == content
    digest, left = hashlib.sha256(), content.size
    while left:
        chunk = f.read(min(left, 1 << 20))
        if not chunk:
            return False
        digest.update(chunk)
        left -= len(chunk)
    return "sha256:" + digest.hexdigest() == content.digest


def _members(
    image: Image, repo_tags: Sequence[str], mtime: int | None
) -> tuple[dict[str, bytes | LayerLike], int]:
    """The archive's members by name, and the mtime they get."""
    if not repo_tags:
        raise ImageError("a docker-archive needs at least one NAME:TAG", hint="pass repo_tags")
    pairs = [split_local_name(reference) for reference in repo_tags]
    tags = [f"{repo}:{tag}" for repo, tag in pairs]
    when = source_date_epoch() if mtime is None else mtime
    layer_names = [_layer_file_name(layer) for layer in image.layers]
    top = image.layers[-1].digest.removeprefix("sha256:")
    repositories: dict[str, dict[str, str]] = {}
    for repo, tag in pairs:
        repositories.setdefault(repo, {})[tag] = top
    config_name = image.config_digest.removeprefix("sha256:") + ".json"
    manifest = [{"Config": config_name, "Layers": layer_names, "RepoTags": tags}]

    members: dict[str, bytes | LayerLike] = {
        MANIFEST_NAME: canonical_json(manifest),
        "repositories": canonical_json(repositories),
        config_name: image.config,
    }
    for name, layer in zip(layer_names, image.layers, strict=True):
        members[name] = layer
    return members, when


_ENCODING, _ERRORS = tarfile.ENCODING, "surrogateescape"  # tarfile.open's defaults


def _member_info(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    info.size = size
    return normalise_tarinfo(info, mtime)


def _add_member(tar: tarfile.TarFile, name: str, content: bytes | LayerLike, mtime: int) -> None:
    if isinstance(content, bytes):
        tar.addfile(_member_info(name, len(content), mtime), io.BytesIO(content))
        return
    info = _member_info(name, content.size, mtime)
    try:
        # Never through a symlink: a layer file is ours, or it is not read.
        fd = os.open(content.blob, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as blob:
            if os.fstat(blob.fileno()).st_size != content.size:
                raise ImageError(
                    f"layer {content.digest} at {content.blob} does not have {content.size} bytes",
                    hint="run `polyarch cache prune` and rebuild",
                )
            tar.addfile(info, blob)
    except OSError as exc:
        raise ImageError(
            f"cannot read layer {content.digest} at {content.blob}: {exc.strerror}",
            hint="rebuild; the cache may have been pruned meanwhile",
        ) from exc


@dataclass(frozen=True, slots=True)
class ArchiveEntry:
    """One image of a docker-archive's ``manifest.json``: member names, as written there."""

    config: str
    layers: tuple[str, ...]
    repo_tags: tuple[str, ...]


def parse_archive_manifest(data: bytes, where: str) -> tuple[ArchiveEntry, ...]:
    """The entries of a docker-archive's ``manifest.json``; ImageError if it is not one."""
    try:
        entries = json.loads(data)
    except ValueError:
        raise ImageError(f"{where} is not valid JSON", hint="check the image file") from None
    if not isinstance(entries, list) or not entries:
        raise ImageError(f"{where} lists no images", hint="check the image file")
    parsed = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise ImageError(f"{where}: an entry is not an object", hint="check the image file")
        layers, tags = entry.get("Layers") or [], entry.get("RepoTags") or []
        if not isinstance(layers, list) or not isinstance(tags, list):
            raise ImageError(f"{where}: Layers or RepoTags is not a list", hint="check the file")
        parsed.append(
            ArchiveEntry(
                str(entry.get("Config", "")), tuple(map(str, layers)), tuple(map(str, tags))
            )
        )
    return tuple(parsed)


def archive_entries(archive: Path) -> tuple[ArchiveEntry, ...]:
    """The images a docker-archive's ``manifest.json`` lists."""
    return parse_archive_manifest(_member(archive, MANIFEST_NAME), f"{archive}: {MANIFEST_NAME}")


def archive_config(archive: Path) -> bytes:
    """The image config of a docker-archive's first image (what an engine loads from it)."""
    return _member(archive, archive_entries(archive)[0].config)


def _member(archive: Path, name: str) -> bytes:
    try:
        with tarfile.open(archive) as tar:
            member = tar.extractfile(name)
            return member.read() if member else b"[]"
    except (OSError, tarfile.TarError, KeyError) as exc:
        raise ImageError(f"{archive} is not a docker-archive: {exc}", hint="rebuild it") from exc


def embedded_tags(archive: Path) -> list[str]:
    """The RepoTags a docker-archive gives the image it holds."""
    return [tag for entry in archive_entries(archive) for tag in entry.repo_tags]


def image_id_of(archive: Path) -> str:
    """The image ID (config digest hex) docker and podman give the archive's first image."""
    return archive_entries(archive)[0].config.removesuffix(".json")
