"""What ``polyarch load`` hands an engine: the build's docker-archive with its layers uncompressed.

An engine decompresses every gzip layer before it unpacks it: docker's daemon
in Go, podman twice (once to check the diff_id, once to unpack). Measured
on vfs storage (bench/layers.py), a large tool (r-cran-littler, 172 MB of
content in 11 layers) loads about 1 s faster into docker and 1.5 to 2 s
faster into podman from uncompressed layers, and decompressing them here
costs less than that: several layers at once (zlib releases the GIL), at
zlib's speed rather than Go's.

Only what is handed over changes: the config, so the image ID and the
diff_ids the engine records, are the build's; a layer's uncompressed tar is
its own diff, so each layer is checked against its diff_id on the way. The
outputs, the OCI layout and what a push sends keep their gzip layers. Over a
network (a remote docker or podman service) gzip layers are sent as they
are: there the bytes on the wire cost more than the engine's decompression.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from polyarch.determinism import Digest
from polyarch.errors import ImageError
from polyarch.image.docker_archive import (
    MANIFEST_NAME,
    parse_archive_manifest,
    write_docker_archive,
)
from polyarch.image.layout_reader import BlobLayer
from polyarch.image.oci import Image
from polyarch.platforms import System

CHUNK = 1 << 20
"""Bytes read and written at a time: memory stays bounded whatever a layer holds."""
WORKERS = 4
"""Layers decompressed at once (at most; never more than the CPUs)."""
_GZIP = 16 + zlib.MAX_WBITS  # zlib's window bits for a gzip stream


@dataclass(frozen=True, slots=True)
class _Member:
    """Where a layer's gzip bytes sit in the archive, and the diff_id the config names."""

    name: str
    offset: int
    size: int
    diff_id: Digest


def write_loadable_archive(archive: Path, system: System, dest: Path, work: Path) -> Image:
    """``archive`` (``system``'s docker-archive, as ``polyarch build`` wrote it) at ``dest``,
    every layer uncompressed.

    The uncompressed layers are spooled under ``work`` (a directory that
    exists; the caller removes it). Each is checked against the diff_id its
    config names: ImageError if one differs or the archive cannot be read.
    Returns the image as written (the build's config, the plain layers).
    """
    config, members, tags = _read(archive)
    workers = max(1, min(WORKERS, os.cpu_count() or 1, len(members)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        layers = tuple(pool.map(lambda m: _decompress(archive, m, work), members))
    image = Image(system, config, b"", layers)
    write_docker_archive(dest, image, repo_tags=tags)
    return image


_REBUILD = "rebuild it: polyarch build NAME --system S"


def _read(archive: Path) -> tuple[bytes, list[_Member], list[str]]:
    """The config, the layer members (in the config's order) and the RepoTags of ``archive``."""
    try:
        with tarfile.open(archive) as tar:
            members = {m.name: m for m in tar.getmembers()}
            (entry,) = parse_archive_manifest(_extract(tar, MANIFEST_NAME), f"{archive}: manifest")
            config = _extract(tar, entry.config)
    except (OSError, tarfile.TarError, KeyError, ValueError) as exc:
        raise ImageError(f"cannot read {archive}: {exc}", hint=_REBUILD) from exc
    rootfs = _json_object(config, archive).get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if (
        not isinstance(diff_ids, list)
        or len(diff_ids) != len(entry.layers)
        or any(n not in members for n in entry.layers)
    ):
        raise ImageError(f"{archive}: its layers do not match its config", hint=_REBUILD)
    found = [
        _Member(name, members[name].offset_data, members[name].size, Digest(str(diff_id)))
        for name, diff_id in zip(entry.layers, diff_ids, strict=True)
    ]
    return config, found, list(entry.repo_tags)


def _extract(tar: tarfile.TarFile, name: str) -> bytes:
    member = tar.extractfile(name)
    if member is None:
        raise KeyError(name)
    return member.read()


def _json_object(data: bytes, archive: Path) -> dict[str, object]:
    try:
        value = json.loads(data)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ImageError(f"{archive}: its config is not a JSON object", hint=_REBUILD)
    return value


def _decompress(archive: Path, member: _Member, work: Path) -> BlobLayer:
    """The layer ``member`` of ``archive`` as a plain tar under ``work``, checked against its diff_id.

    A layer that is already plain (no gzip magic) is copied as it is.
    """
    target = work / (member.diff_id.removeprefix("sha256:") + ".tar")
    digest, size = hashlib.sha256(), 0
    try:
        with open(archive, "rb") as source, open(target, "wb") as out:
            source.seek(member.offset)
            for chunk in _plain_chunks(source, member.size):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
    except (OSError, zlib.error) as exc:
        raise ImageError(
            f"cannot read layer {member.name} of {archive}: {exc}", hint=_REBUILD
        ) from exc
    found = Digest("sha256:" + digest.hexdigest())
    if found != member.diff_id:
        raise ImageError(
            f"layer {member.name} of {archive} unpacks to {found}, its config says {member.diff_id}",
            hint=_REBUILD,
        )
    return BlobLayer(found, found, size, size, target)  # a plain tar: its digest is its diff_id


def _plain_chunks(source: IO[bytes], size: int) -> Iterator[bytes]:
    """The uncompressed bytes of the next ``size`` bytes of ``source``: gzip (any number of
    members) or already plain."""
    left = size
    head = source.read(min(2, left))
    left -= len(head)
    if head != b"\x1f\x8b":
        yield head
        while left:
            chunk = source.read(min(CHUNK, left))
            if not chunk:
                raise zlib.error("the archive ends inside a layer")
            left -= len(chunk)
            yield chunk
        return
    inflate, pending = zlib.decompressobj(_GZIP), head
    while True:
        if not pending and left:
            pending = source.read(min(CHUNK, left))
            if not pending:
                raise zlib.error("the archive ends inside a layer")
            left -= len(pending)
        out = inflate.decompress(pending, CHUNK)
        pending = inflate.unconsumed_tail
        if out:
            yield out
        if inflate.eof:
            if not (inflate.unused_data or left):
                return
            # The next gzip member (polyarch cuts large layers into members of 4 MiB).
            pending, inflate = inflate.unused_data, zlib.decompressobj(_GZIP)
        elif not (out or pending or left):
            raise zlib.error("a layer ends inside a gzip member")
