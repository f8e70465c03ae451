"""One image's layers merged into one, for loading into an engine on vfs storage.

An engine whose storage driver is vfs (docker's and podman's fallback where
overlay cannot mount: many CI and rootless hosts, and scripts/setup-host's)
makes each layer a full copy of every layer below it before unpacking it:
an image of N layers costs about N copies of itself on disk and in time.
Loaded as one layer it costs one. Only what ``polyarch load --merge-layers``
hands the engine changes: the OCI layout, the docker-archive in the outputs
and what a push sends keep every layer, so registries still share them.

The merged layer is what the engine would have unpacked: later layers win a
path, a non-directory replaces a directory's whole subtree, and OCI
whiteouts (``.wh.NAME``, ``.wh..wh..opq``) delete what is below them. A
directory keeps the place of its first appearance (parents before children)
and the metadata of its last. A hard link whose target a later layer
replaced or deleted still holds the old file in the layered image; merged,
the first such link becomes that file (its bytes spooled under ``work``)
and the others link to it. The tar is written uncompressed (the engine
would only decompress it again) into a temporary directory.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import json
import posixpath
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from polyarch.determinism import TAR_FORMAT, Digest, canonical_json
from polyarch.errors import ImageError
from polyarch.image.oci import Image, LayerLike, history_created_by

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


@dataclass(frozen=True, slots=True)
class MergedLayer:
    """The one layer of a merged image: an uncompressed tar, so its digest is its diff_id."""

    digest: Digest
    diff_id: Digest
    size: int
    uncompressed_size: int
    blob: Path
    packages: tuple[str, ...]


def merge_layers(image: Image, work: Path) -> Image:
    """``image`` with its layers merged into one tar under ``work`` (a directory that exists).

    The config keeps everything but ``rootfs`` and ``history``, which now name
    the one layer; the manifest is left empty, as a docker-archive needs none.
    """
    winners, links = _winners(image.layers)
    orphans = _orphaned_links(winners, links)
    spooled = _Spool(work, {target for _, target in orphans.values()})
    target = work / "merged.tar"
    with (
        _HashingFile(target) as out,
        # tarfile's writing mode only ever writes and tells (typeshed wants a whole file).
        tarfile.open(fileobj=cast(IO[bytes], out), mode="w", format=TAR_FORMAT) as tar,
    ):
        for index, layer in enumerate(image.layers):
            for ordinal, (member, data) in enumerate(_members(layer)):
                where = (index, ordinal)
                spooled.keep(where, member, data)
                kept = winners.get(_path(member.name))
                if where in orphans:
                    spooled.add(tar, member, *orphans[where])
                elif kept is not None and kept[:2] == where:
                    tar.addfile(kept[2], data)
    digest = out.digest
    packages = tuple(p for layer in image.layers for p in layer.packages)
    merged = MergedLayer(digest, digest, out.size, out.size, target, packages)
    return Image(image.system, _config(image, merged), b"", (merged,))


def _config(image: Image, layer: MergedLayer) -> bytes:
    config = json.loads(image.config)
    created = next((h.get("created") for h in config.get("history", []) if "created" in h), None)
    entry = {"created_by": history_created_by((f"{len(image.layers)} layers merged",))}
    config["history"] = [{**({"created": created} if created else {}), **entry}]
    config["rootfs"] = {"type": "layers", "diff_ids": [layer.diff_id]}
    return canonical_json(config)


def _path(name: str) -> str:
    """A member's path as the engine sees it: no ``./``, no trailing ``/``."""
    return posixpath.normpath("/" + name).lstrip("/")


_Kept = dict[str, tuple[int, int, tarfile.TarInfo]]
_Where = tuple[int, int]
"""An entry of the image: (layer index, entry number in that layer)."""
_Links = dict[_Where, _Where | None]
"""Hard link → the entry of its own layer it links to (None: not in its layer)."""


def _winners(layers: tuple[LayerLike, ...]) -> tuple[_Kept, _Links]:
    """Path → (layer index, entry number in it, header) of the entry the merged tar keeps;
    and each hard link's target entry.

    The entry number tells the second pass which of several entries with one
    path to write, and where.
    """
    found: _Kept = {}
    links: _Links = {}
    parents: set[str] = set()  # paths something was put under: only these have a subtree
    for index, layer in enumerate(layers):
        in_layer: dict[str, int] = {}
        for ordinal, (member, _) in enumerate(_members(layer, headers_only=True)):
            path = _path(member.name)
            if member.islnk():
                target = in_layer.get(_path(member.linkname))
                links[(index, ordinal)] = None if target is None else (index, target)
            in_layer[path] = ordinal
            parent, base = posixpath.split(path)
            if base == OPAQUE:
                _drop_below(found, parent, index, keep_self=True)
                continue
            if base.startswith(WHITEOUT):
                _drop_below(found, posixpath.join(parent, base[len(WHITEOUT) :]), index)
                continue
            earlier = found.get(path)
            if not member.isdir():
                if path in parents:  # it replaces a directory, whose whole subtree goes
                    _drop_below(found, path, index)
            elif earlier is not None and earlier[2].isdir():
                # A directory keeps its first place and takes the last metadata.
                member.name = earlier[2].name
                found[path] = (earlier[0], earlier[1], member)
                continue
            found[path] = (index, ordinal, member)
            parents.update(_ancestors(path))
    return found, links


def _ancestors(path: str) -> Iterator[str]:
    while path:
        path = posixpath.dirname(path)
        yield path


def _orphaned_links(found: _Kept, links: _Links) -> dict[_Where, tuple[str, _Where]]:
    """Kept hard links whose target entry is not kept → (the path that now holds the
    file: the first such link's, its original target entry)."""
    orphans: dict[_Where, tuple[str, _Where]] = {}
    first: dict[_Where, str] = {}
    for index, ordinal, member in sorted(found.values(), key=lambda kept: kept[:2]):
        target = links.get((index, ordinal)) if member.islnk() else None
        if target is None or found.get(_path(member.linkname), (-1, -1))[:2] == target:
            continue  # not a link, one to a lower layer (as the engine has it), or intact
        orphans[(index, ordinal)] = (first.setdefault(target, member.name), target)
    return orphans


def _drop_below(found: _Kept, path: str, layer: int, *, keep_self: bool = False) -> None:
    """Forget what layers below ``layer`` put under ``path`` (and ``path`` itself unless kept)."""
    prefix = path + "/" if path else ""
    for name, (index, _, _) in list(found.items()):
        if index < layer and (name.startswith(prefix) or (name == path and not keep_self)):
            del found[name]


def _members(
    layer: LayerLike, *, headers_only: bool = False
) -> Iterator[tuple[tarfile.TarInfo, IO[bytes] | None]]:
    """Each entry of a layer blob (gzip or plain tar), with a reader for regular files."""
    try:
        with open(layer.blob, "rb") as raw:
            magic = raw.read(2)
            raw.seek(0)
            stream: IO[bytes] = gzip.GzipFile(fileobj=raw) if magic == b"\x1f\x8b" else raw  # type: ignore[assignment]
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    data = None if headers_only or not member.isreg() else tar.extractfile(member)
                    yield member, data
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise ImageError(
            f"cannot read layer {layer.digest} at {layer.blob}: {exc}",
            hint="rebuild the image; the cache may have been pruned meanwhile",
        ) from exc


class _Spool:
    """The bytes of files that orphaned hard links held, kept until the first link is written."""

    def __init__(self, work: Path, wanted: set[_Where]) -> None:
        self.work, self.wanted = work, wanted
        self.headers: dict[_Where, tarfile.TarInfo] = {}

    def keep(self, where: _Where, member: tarfile.TarInfo, data: IO[bytes] | None) -> None:
        if where in self.wanted:
            self.headers[where] = member
            with open(self._file(where), "wb") as spool:
                shutil.copyfileobj(data or io.BytesIO(), spool)

    def add(self, tar: tarfile.TarFile, link: tarfile.TarInfo, holder: str, target: _Where) -> None:
        """Write what replaces ``link``: the file itself if it is the holder, else a link to it."""
        if link.name != holder:
            entry = copy.copy(link)
            entry.linkname = holder
            tar.addfile(entry)
            return
        entry = copy.copy(self.headers[target])
        entry.name = link.name
        with open(self._file(target), "rb") as data:
            tar.addfile(entry, data)

    def _file(self, where: _Where) -> Path:
        return self.work / f"link-{where[0]}-{where[1]}"


class _HashingFile:
    """A file that hashes what is written to it (``tarfile`` only writes and tells)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.hash = hashlib.sha256()
        self.size = 0
        self.file: IO[bytes] | None = None

    def __enter__(self) -> _HashingFile:
        self.file = open(self.path, "wb")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.file is not None
        self.file.close()

    def write(self, data: bytes) -> int:
        assert self.file is not None
        self.hash.update(data)
        self.size += len(data)
        return self.file.write(data)

    def tell(self) -> int:
        return self.size

    @property
    def digest(self) -> Digest:
        return Digest("sha256:" + self.hash.hexdigest())
