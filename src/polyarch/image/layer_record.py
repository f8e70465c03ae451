"""The ``layers`` cache entry: what one built layer is, checked whenever it is read back.

A record names its gzip blob (kind ``blobs``) by digest and says what the
layer holds. It is keyed by the hash of the layer's inputs, not of its own
bytes, so it carries its own checksum instead, and a schema: digests are
``sha256:`` + 64 hex (a digest becomes a file name: ``sha256:../../x`` must
never reach the file system), sizes are counts, commands are absolute paths,
and each package's facts are what its .deb said of itself.

File: canonical JSON ``{"check": SHA256 hex of the layer's canonical JSON,
"layer": {...} or null}``; null is a generated layer that had no entries.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

import msgspec

from polyarch.debian.identity import DebFacts
from polyarch.determinism import canonical_json

RECORD_FORMAT = 2
"""Part of every layer's cache key: records of another format are never read."""

_DigestText = Annotated[str, msgspec.Meta(pattern=r"^sha256:[0-9a-f]{64}$")]
_Count = Annotated[int, msgspec.Meta(ge=0)]
_AbsolutePath = Annotated[str, msgspec.Meta(pattern=r"^/[^\x00]*$", max_length=4095)]


class LayerRecord(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One layer as the cache remembers it."""

    digest: _DigestText
    """sha256 of the gzip blob; its hex is the blob's key."""
    diff_id: _DigestText
    """sha256 of the uncompressed tar."""
    size: _Count
    uncompressed_size: _Count
    packages: tuple[str, ...]
    """What is inside, for the image history: package names, ``(filesystem)``, ``(generated)``."""
    debs: tuple[DebFacts, ...]
    """Every package of the layer as its .deb describes itself."""
    commands: tuple[_AbsolutePath, ...]
    """Executables and links in the layer (see ``layers.command_paths``)."""

    @property
    def blob_key(self) -> str:
        """The blob's key in cache kind ``blobs``."""
        return self.digest.removeprefix("sha256:")


class _RecordFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    check: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
    layer: LayerRecord | None


def _check(layer: LayerRecord | None) -> str:
    return hashlib.sha256(canonical_json(msgspec.to_builtins(layer))).hexdigest()


def encode_layer_record(layer: LayerRecord | None) -> bytes:
    """The bytes of a ``layers`` entry for ``layer`` (None: an empty generated layer)."""
    return canonical_json(msgspec.to_builtins(_RecordFile(check=_check(layer), layer=layer)))


def decode_layer_record(data: bytes) -> LayerRecord | None:
    """The layer a ``layers`` entry describes; None for an empty generated layer.

    ValueError, saying why, for anything that is not a valid record whose
    checksum matches: the caller evicts it and builds the layer again.
    """
    try:
        parsed = msgspec.json.decode(data, type=_RecordFile)
    except msgspec.ValidationError as exc:
        raise ValueError(f"not a layer record ({exc})") from None
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a layer record (not JSON: {exc})") from None
    if _check(parsed.layer) != parsed.check:
        raise ValueError("layer record does not match its checksum")
    return parsed.layer
