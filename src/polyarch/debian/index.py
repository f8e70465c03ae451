"""Packages indexes: a fast stanza parser and a cache of the parsed form.

A Packages index of Debian's main component for amd64 holds ~63,000 stanzas
(~50 MB uncompressed). python-debian's ``deb822`` takes many seconds on that,
so this module parses it by hand: one regular expression pulls only the fields
polyarch needs out of each stanza, and the C regex engine skips the rest
(descriptions, tags, md5sums) without a Python loop over every line.

The parsed list is cached as msgpack under the SHA256 of the compressed index
(the hash the signed Release names), so a warm run neither downloads,
decompresses nor parses an index: it only decodes msgpack.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import re
import zlib
from collections.abc import Callable

import msgspec

from polyarch.cache import Cache
from polyarch.debian.packages import PackageRecord
from polyarch.errors import IntegrityError

CACHE_KIND = "indexes"

# Field name (group 1) and value with its continuation lines (group 2). Fields
# are matched case-insensitively, as deb822 requires; archives use this spelling.
# The pattern starts with a literal newline rather than ``^`` with MULTILINE:
# the regex engine then only tries line starts, which makes it ~3x faster.
_WANTED = (
    "Package",
    "Version",
    "Architecture",
    "Filename",
    "Size",
    "SHA256",
    "Depends",
    "Pre-Depends",
    "Provides",
    "Conflicts",
    "Breaks",
    "Multi-Arch",
    "Essential",
    "Source",
)
_FIELD_RE = re.compile(
    r"\n(" + "|".join(re.escape(f) for f in _WANTED) + r"):[ \t]*(.*(?:\n[ \t].*)*)",
    re.IGNORECASE,
)
_CANONICAL = {f.lower(): f for f in _WANTED}
_BLANK_WITH_SPACE_RE = re.compile(r"\n[ \t]+\n")
_CONTINUATION_RE = re.compile(r"\s*\n[ \t]+")
_REQUIRED = ("Package", "Version", "Architecture", "Filename", "Size", "SHA256")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")

# The cache key carries the record layout: msgpack of an array_like struct
# would decode into the wrong fields if PackageRecord ever changed shape.
_LAYOUT = hashlib.sha256(",".join(PackageRecord.__struct_fields__).encode()).hexdigest()[:8]
_DECODER = msgspec.msgpack.Decoder(list[PackageRecord])
_ENCODER = msgspec.msgpack.Encoder()


def parse_packages(data: bytes, component: str) -> list[PackageRecord]:
    """Parse an uncompressed Packages index into records, in index order.

    Raises ``IntegrityError`` for a stanza without a name, version,
    architecture, filename, size or SHA256: such an index cannot be trusted.
    """
    text = data.decode("utf-8", errors="replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    # deb822 lets a separator line hold only whitespace; archives never do it.
    if _BLANK_WITH_SPACE_RE.search(text):
        text = _BLANK_WITH_SPACE_RE.sub("\n\n", text)
    records: list[PackageRecord] = []
    find_fields = _FIELD_RE.findall
    for stanza in text.split("\n\n"):
        found = find_fields("\n" + stanza)
        if found:
            records.append(_record(dict(found), found, component))
    return records


def _value(raw: str) -> str:
    # Join continuation lines with one space; strip what deb822 says to strip.
    if "\n" in raw:
        raw = _CONTINUATION_RE.sub(" ", raw)
    return raw.strip()


def _record(fields: dict[str, str], found: list[tuple[str, str]], component: str) -> PackageRecord:
    if not all(f in fields for f in _REQUIRED):
        # Field names are case-insensitive; only an unusual archive gets here.
        fields = {_CANONICAL[k.lower()]: v for k, v in found}
    value = _value
    for required in _REQUIRED:
        if not value(fields.get(required, "")):
            name = value(fields.get("Package", "?"))
            raise IntegrityError(
                f"Packages index of {component or 'a component'}: package {name} has no {required} field",
                hint="the mirror serves a broken index; try again later or use another mirror",
            )
    name = value(fields["Package"])
    sha256 = value(fields["SHA256"]).lower()
    size = value(fields["Size"])
    if not size.isdigit() or not _HEX64_RE.fullmatch(sha256):
        raise IntegrityError(
            f"Packages index of {component}: package {name} has a malformed Size or SHA256 field",
            hint="the mirror serves a broken index; try again later or use another mirror",
        )
    get = fields.get
    return PackageRecord(
        name=name,
        version=value(fields["Version"]),
        architecture=value(fields["Architecture"]),
        filename=value(fields["Filename"]),
        size=int(size),
        sha256=sha256,
        depends=value(get("Depends", "")),
        pre_depends=value(get("Pre-Depends", "")),
        provides=value(get("Provides", "")),
        conflicts=value(get("Conflicts", "")),
        breaks=value(get("Breaks", "")),
        multi_arch=value(get("Multi-Arch", "")),
        essential=value(get("Essential", "")).lower() == "yes",
        source=value(get("Source", "")),
        component=component,
    )


def decompress(data: bytes, path: str) -> bytes:
    """The plain bytes of an index file, by its name's extension (.xz, .gz or none)."""
    try:
        if path.endswith(".xz"):
            return lzma.decompress(data)
        if path.endswith(".gz"):
            return gzip.decompress(data)
    except (lzma.LZMAError, OSError, EOFError, zlib.error) as exc:
        raise IntegrityError(
            f"{path} cannot be decompressed: {exc}",
            hint="the mirror serves a broken file; try again later or use another mirror",
        ) from exc
    return data


def cache_key(sha256_hex: str) -> str:
    """The cache key of a parsed index: its compressed file's SHA256 and the record layout."""
    return f"{sha256_hex}-{_LAYOUT}"


def load_index(
    cache: Cache,
    sha256_hex: str,
    raw_loader: Callable[[], bytes],
    *,
    component: str,
) -> list[PackageRecord]:
    """The records of the index whose compressed file has ``sha256_hex``.

    From the cache when it holds the parsed form; otherwise ``raw_loader()``
    is called for the uncompressed, already verified index bytes, which are
    parsed and cached. An unreadable cache entry is discarded and rebuilt.
    """
    key = cache_key(sha256_hex)
    cached = cache.get(CACHE_KIND, key)
    if cached is not None:
        try:
            return _DECODER.decode(cached.read_bytes())
        except (msgspec.DecodeError, OSError):
            cache.discard(CACHE_KIND, key)
    records = parse_packages(raw_loader(), component)
    cache.put(CACHE_KIND, key, _ENCODER.encode(records))
    return records
