"""Whether one cache entry is what it claims to be: shared by ``cache verify`` and ``cache pull``.

Every check a build makes when it uses an entry, and those it cannot afford
on every build: a ``debs``/``blobs`` entry must hash to its key; a ``layers``
record must pass its schema and checksum and describe its blob exactly (the
blob present and intact, its size, and — by decompressing it — its diff_id
and uncompressed size); a parsed index must pass every checksum and hold only
records a Packages index can hold; package facts must pass their schema, a
parsed Contents index its.
Nothing is followed through a symlink.
"""

from __future__ import annotations

import hashlib
import os
import stat
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from polyarch.attest.facts import read_facts
from polyarch.cache import Kind, is_key, open_regular
from polyarch.debian.contents import decode_cached, is_current_key
from polyarch.debian.index import cache_key as index_cache_key
from polyarch.debian.index_file import check_index_file
from polyarch.image.layer_record import LayerRecord, decode_layer_record

CHUNK = 1 << 20


def other_format(index_key: str) -> bool:
    """A parsed index written by another polyarch version: its key names another format."""
    return not index_key.endswith(index_cache_key(""))


@dataclass(frozen=True, slots=True)
class _BlobFacts:
    size: int
    diff_id: str
    uncompressed_size: int


class EntryChecker:
    """Judges entries; ``blob_path(key)`` finds the blob a layer record names (or None)."""

    def __init__(self, blob_path: Callable[[str], Path | None]) -> None:
        self._blob_path = blob_path
        self._blobs: dict[tuple[str, int], _BlobFacts | str] = {}

    def problem(self, kind: Kind, name: str, path: Path) -> str:
        """Why the entry ``name`` of ``kind`` at ``path`` is bad, or the empty string."""
        if not is_key(name) or (kind.content_addressed and "-" in name):
            return "not named by a cache key"
        try:
            mode = os.lstat(path).st_mode
        except OSError as exc:
            return f"unreadable: {exc.strerror}"
        if stat.S_ISLNK(mode):
            return "a symlink (the cache never follows one)"
        f = open_regular(path)
        if f is None:
            return "not a regular file"
        with f:
            if kind.content_addressed:
                actual = hashlib.file_digest(f, "sha256").hexdigest()
                return "" if actual == name else f"its content hashes to {actual}"
            if kind == Kind.LAYERS:
                try:
                    record = decode_layer_record(f.read())
                except ValueError as exc:
                    return str(exc)
                return self._layer_problem(record) if record is not None else ""
            if kind == Kind.FACTS:
                return "" if read_facts(path) is not None else "not package facts (of this version)"
            if kind == Kind.CONTENTS:
                if not is_current_key(name):
                    return ""  # never read by this version; prune removes it
                return "" if decode_cached(f.read()) is not None else "not a parsed Contents index"
            if other_format(name):
                return ""  # never read by this version; prune removes it
            return check_index_file(path, f)

    def _layer_problem(self, record: LayerRecord) -> str:
        blob = self._blob_path(record.blob_key)
        if blob is None:
            return f"its blob {record.digest} is missing"
        facts = self._facts(record.blob_key, blob, record.uncompressed_size)
        if isinstance(facts, str):
            return f"its blob {record.digest} {facts}"
        if facts.size != record.size:
            return f"its blob {record.digest} has {facts.size} bytes, the record says {record.size}"
        if facts.diff_id != record.diff_id or facts.uncompressed_size != record.uncompressed_size:
            return f"its blob {record.digest} does not unpack to {record.diff_id}"
        return ""

    def _facts(self, key: str, blob: Path, limit: int) -> _BlobFacts | str:
        found = self._blobs.get((key, limit))
        if found is None:
            found = self._blobs[(key, limit)] = _blob_facts(key, blob, limit)
        return found


def _blob_facts(key: str, blob: Path, limit: int) -> _BlobFacts | str:
    """Size and diff_id of a gzip blob, inflating at most ``limit`` + 1 bytes of its tar.

    Damage is reported as a wrong hash first: that is what it is.
    """
    f = open_regular(blob)
    if f is None:
        return "is not a regular file"
    packed, unpacked = hashlib.sha256(), hashlib.sha256()
    size = length = 0
    # gzip, one member per layer up to 32 MiB and 4 MiB members beyond (determinism.py):
    # each member ends where the next begins.
    inflate = zlib.decompressobj(wbits=31)
    fed = False
    broken = ""
    with f:
        while chunk := f.read(CHUNK):
            packed.update(chunk)
            size += len(chunk)
            while chunk and not broken:
                try:
                    data = inflate.decompress(chunk, max(limit + 1 - length, 1))
                except zlib.error as exc:
                    broken = f"is not gzip ({exc})"
                    break
                fed = True
                unpacked.update(data)
                length += len(data)
                if length > limit:
                    broken = f"unpacks to more than {limit} bytes"
                if inflate.eof:
                    chunk = inflate.unused_data
                    inflate, fed = zlib.decompressobj(wbits=31), False
                else:
                    chunk = inflate.unconsumed_tail
    if packed.hexdigest() != key:
        return f"hashes to sha256:{packed.hexdigest()}"
    if broken:
        return broken
    if fed or size == 0:
        return "is not complete gzip (it ends inside a member)"
    return _BlobFacts(size, f"sha256:{unpacked.hexdigest()}", length)
