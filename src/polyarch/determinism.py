"""Everything that makes the same inputs give the same bytes, in one place.

- one timestamp for every file and every ``created`` field: SOURCE_DATE_EPOCH,
  else ``DEFAULT_EPOCH``;
- canonical JSON (sorted keys, no whitespace, UTF-8) for every JSON blob;
- gzip by libdeflate (the ``deflate`` package, pinned exactly: its version
  defines the bytes), never the host's zlib, whose output differs between
  zlib and zlib-ng; mtime 0, no file name, OS 255, a fixed level; a layer is
  a series of gzip members of ``GZIP_MEMBER_SIZE`` input bytes each, so it is
  compressed in bounded memory whatever its size;
- tar headers normalised: uid/gid 0, empty user/group names, PAX format.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final, NewType

import deflate

if TYPE_CHECKING:
    import tarfile

Digest = NewType("Digest", str)
"""An OCI digest: ``sha256:<64 hex>``."""
DIGEST_PATTERN = re.compile(r"\Asha256:[0-9a-f]{64}\Z")
"""The only digests polyarch accepts from anywhere (a file name is made of the hex)."""

DEFAULT_EPOCH = 0
"""Used when SOURCE_DATE_EPOCH is unset: 1970-01-01T00:00:00Z, as Nix and apko do."""

GZIP_LEVEL = 6
GZIP_SINGLE_MEMBER_MAX = 32 << 20
"""A layer tar up to this size is one gzip member; a larger one is cut into members.

libdeflate compresses whole buffers only, so a layer of any size is compressed
in bounded memory by cutting it. One member is what every gzip reader reads
(Python's ``tarfile`` in stream mode and Rust's ``GzDecoder`` read the first
member only), so layers stay whole up to a size that tool containers'
layers stay far below (libc6 is 13 MB), and only larger ones are cut. Part of
the output format: changing it changes digests.
"""
GZIP_MEMBER_SIZE = 4 << 20
"""Input bytes per gzip member of a layer larger than ``GZIP_SINGLE_MEMBER_MAX``.

docker, podman, skopeo, umoci and containerd (Go's compress/gzip), pigz and
Python's gzip module read multi-member files as one stream (tests check the
first four). 4 MiB members cost about 0.04 % in size against one member.
"""
COMPRESSOR = (
    f"libdeflate (deflate {deflate.__version__}) level {GZIP_LEVEL}; one gzip member up to "
    f"{GZIP_SINGLE_MEMBER_MAX >> 20} MiB, else {GZIP_MEMBER_SIZE >> 20} MiB members"
)
"""What made the layers, recorded in every image's annotations."""
_GZIP_XFL = {0: 4, 1: 4, 8: 2, 9: 2, 10: 2, 11: 2, 12: 2}
"""The header's XFL byte libdeflate writes per level (else 0), kept so members equal its own gzip."""
TAR_FORMAT: Final = 2
"""``tarfile.PAX_FORMAT`` (a test checks): tarfile is not imported here, for the CLI's start-up."""


def source_date_epoch(environ: dict[str, str] | None = None) -> int:
    """SOURCE_DATE_EPOCH if set to an integer >= 0, else DEFAULT_EPOCH."""
    value = (environ if environ is not None else os.environ).get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return DEFAULT_EPOCH
    try:
        epoch = int(value)
    except ValueError:
        from polyarch.errors import UsageError

        raise UsageError(
            f"SOURCE_DATE_EPOCH={value!r} is not an integer", hint="unset it or set seconds"
        ) from None
    return max(epoch, 0)


def rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def canonical_json(value: Any) -> bytes:
    """The one JSON encoding of ``value``: sorted keys, compact, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def pretty_json(value: Any) -> bytes:
    """JSON for files people read (SBOMs, provenance): sorted keys, indented, final newline."""
    return (json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def sha256_digest(data: bytes) -> Digest:
    return Digest("sha256:" + hashlib.sha256(data).hexdigest())


def sha256_file(path: Path) -> Digest:
    """``sha256_digest`` of a file's content, read in chunks (.debs and layers can be large)."""
    with path.open("rb") as f:
        return Digest("sha256:" + hashlib.file_digest(f, "sha256").hexdigest())


def gzip_member(data: bytes | memoryview, level: int = GZIP_LEVEL) -> bytes:
    """One gzip member of ``data``: mtime 0, no name, OS 255, by libdeflate.

    Byte-identical to ``deflate.gzip_compress``; libdeflate releases the GIL,
    so callers may compress in threads.
    """
    body = deflate.deflate_compress(data, level)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + bytes((_GZIP_XFL.get(level, 0), 0xFF))
    trailer = struct.pack("<II", deflate.crc32(data), len(data) & 0xFFFFFFFF)
    return header + bytes(body) + trailer


def gzip_bytes(data: bytes) -> bytes:
    """``data`` as polyarch compresses layers: one member, or ``GZIP_MEMBER_SIZE`` members if large."""
    if len(data) <= GZIP_SINGLE_MEMBER_MAX:
        return gzip_member(data)
    view = memoryview(data)
    step = GZIP_MEMBER_SIZE
    return b"".join(gzip_member(view[i : i + step]) for i in range(0, len(data), step))


class GzipWriter:
    """A write-only stream that gzips what it is given into ``out``, member by member.

    Holds at most ``GZIP_SINGLE_MEMBER_MAX`` bytes of input in memory. Counts and hashes both sides:
    ``diff_id`` (the uncompressed stream) and ``digest`` (what ``out`` got).
    Call ``close`` at the end; the output equals ``gzip_bytes`` of everything written.
    """

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._buffer = bytearray()
        self._plain = hashlib.sha256()
        self._packed = hashlib.sha256()
        self.uncompressed_size = 0
        self.size = 0
        self._closed = False
        self._cut = False
        """Past ``GZIP_SINGLE_MEMBER_MAX``: members of ``GZIP_MEMBER_SIZE`` from the start."""

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._buffer += data
        if len(self._buffer) > GZIP_SINGLE_MEMBER_MAX:
            self._cut = True
        while self._cut and len(self._buffer) >= GZIP_MEMBER_SIZE:
            self._emit(memoryview(self._buffer)[:GZIP_MEMBER_SIZE])
            del self._buffer[:GZIP_MEMBER_SIZE]
        return len(data)

    def tell(self) -> int:
        """Bytes written so far (``tarfile`` asks)."""
        return self.uncompressed_size + len(self._buffer)

    def _emit(self, chunk: memoryview) -> None:
        self._plain.update(chunk)
        self.uncompressed_size += len(chunk)
        member = gzip_member(chunk)
        chunk.release()
        self._packed.update(member)
        self.size += len(member)
        self._out.write(member)

    def close(self) -> None:
        if not self._closed:
            if self._buffer or self.size == 0:
                self._emit(memoryview(self._buffer))
            self._buffer = bytearray()
            self._closed = True

    @property
    def diff_id(self) -> Digest:
        return Digest("sha256:" + self._plain.hexdigest())

    @property
    def digest(self) -> Digest:
        return Digest("sha256:" + self._packed.hexdigest())


def normalise_tarinfo(info: tarfile.TarInfo, mtime: int) -> tarfile.TarInfo:
    """Owner root, no owner names, the one mtime; mode and type kept."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = mtime
    info.pax_headers = {}
    return info
