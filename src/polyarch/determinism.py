"""Everything that makes the same inputs give the same bytes, in one place.

- one timestamp for every file and every ``created`` field: SOURCE_DATE_EPOCH,
  else ``DEFAULT_EPOCH``;
- canonical JSON (sorted keys, no whitespace, UTF-8) for every JSON blob;
- gzip with mtime 0, no file name, a fixed level;
- tar headers normalised: uid/gid 0, empty user/group names, PAX format.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NewType

Digest = NewType("Digest", str)
"""An OCI digest: ``sha256:<64 hex>``."""
DIGEST_PATTERN = re.compile(r"\Asha256:[0-9a-f]{64}\Z")
"""The only digests polyarch accepts from anywhere (a file name is made of the hex)."""

DEFAULT_EPOCH = 0
"""Used when SOURCE_DATE_EPOCH is unset: 1970-01-01T00:00:00Z, as Nix and apko do."""

GZIP_LEVEL = 6
TAR_FORMAT = tarfile.PAX_FORMAT


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


def gzip_bytes(data: bytes, level: int = GZIP_LEVEL) -> bytes:
    """gzip member with mtime 0, no name, OS 'unknown' (255): identical on every machine.

    zlib releases the GIL, so callers may compress layers in threads.
    """
    compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, 9)
    body = compressor.compress(data) + compressor.flush()
    header = b"\x1f\x8b\x08\x00" + b"\x00\x00\x00\x00" + b"\x00\xff"
    trailer = (zlib.crc32(data) & 0xFFFFFFFF).to_bytes(4, "little") + (
        len(data) & 0xFFFFFFFF
    ).to_bytes(4, "little")
    return header + body + trailer


def normalise_tarinfo(info: tarfile.TarInfo, mtime: int) -> tarfile.TarInfo:
    """Owner root, no owner names, the one mtime; mode and type kept."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = mtime
    info.pax_headers = {}
    return info
