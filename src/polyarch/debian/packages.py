"""Packages indexes as text: one binary package's record, and the fast stanza parser.

A Packages index of Debian's main component for amd64 holds ~63,000 stanzas
(~50 MB uncompressed). python-debian's ``deb822`` takes many seconds on that,
so this module parses it by hand: one regular expression pulls only the fields
polyarch needs out of each stanza, and the C regex engine skips the rest
(descriptions, tags, md5sums) without a Python loop over every line.
"""

from __future__ import annotations

import gzip
import lzma
import re
import zlib

import msgspec

from polyarch.errors import IntegrityError


class PackageRecord(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """The fields of a Packages stanza that resolution, fetching and layering need.

    Relationship fields are kept as the raw strings of the index; the resolver
    parses the ones it visits. ``array_like`` keeps the cached parsed index small.
    """

    name: str
    version: str
    architecture: str
    """The package's own arch: the system's Debian arch or ``all``."""
    filename: str
    """Pool path relative to the mirror root."""
    size: int
    sha256: str
    """Lowercase hex, without a ``sha256:`` prefix."""
    depends: str = ""
    pre_depends: str = ""
    provides: str = ""
    conflicts: str = ""
    breaks: str = ""
    multi_arch: str = ""
    essential: bool = False
    source: str = ""
    component: str = ""


# Field name (group 1) and value with its continuation lines (group 2). Field
# names are matched case-insensitively, as deb822 requires, and as ASCII (they
# are ASCII; Unicode case folding would take "Provideſ" for "Provides").
# Archives use this spelling. The pattern starts with a literal newline rather
# than ``^`` with MULTILINE: the regex engine then only tries line starts,
# which makes it ~3x faster.
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
    re.IGNORECASE | re.ASCII,
)
_CANONICAL = {f.lower(): f for f in _WANTED}
_BLANK_WITH_SPACE_RE = re.compile(rb"\n[ \t]+\n")
_CONTINUATION_RE = re.compile(r"\s*\n[ \t]+")
_REQUIRED = ("Package", "Version", "Architecture", "Filename", "Size", "SHA256")
_REQUIRED_KEYS = frozenset(_REQUIRED)
_HEX64_RE = re.compile(r"[0-9a-f]{64}")


def normalized(data: bytes) -> bytes:
    """An uncompressed index with LF line ends and empty separator lines."""
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    # deb822 lets a separator line hold only whitespace; archives never do it.
    if _BLANK_WITH_SPACE_RE.search(data):
        data = _BLANK_WITH_SPACE_RE.sub(b"\n\n", data)
    return data


def split_stanzas(data: bytes) -> list[bytes]:
    """The stanzas of an uncompressed Packages index (and any empty pieces between them).

    Split as bytes: UTF-8 never has a newline byte inside a character, so a
    stanza decoded on its own is that stanza of the decoded index.
    """
    return normalized(data).split(b"\n\n")


def stanza_fields(stanza: bytes) -> dict[str, str] | None:
    """The wanted fields of one stanza, values as written; None if it has none (not a record).

    The one reading of fields that records and the cached index's tables share.
    """
    found = _FIELD_RE.findall("\n" + stanza.decode("utf-8", errors="replace"))
    if not found:
        return None
    fields = dict(found)
    if not fields.keys() >= _REQUIRED_KEYS:
        # Field names are case-insensitive; only an unusual archive gets here.
        fields = {_CANONICAL[k.lower()]: v for k, v in found}
    return fields


def field_value(raw: str) -> str:
    """A field's value: continuation lines joined with one space, stripped as deb822 says."""
    return _CONTINUATION_RE.sub(" ", raw).strip() if "\n" in raw else raw.strip()


def parse_stanza(stanza: bytes, component: str) -> PackageRecord | None:
    """The record of one stanza of ``split_stanzas``, or None if it has no wanted field.

    Empty lines or pieces without a wanted field around the stanza change nothing.

    Raises ``IntegrityError`` for a stanza without a name, version,
    architecture, filename, size or SHA256, or with a malformed size or SHA256.
    """
    fields = stanza_fields(stanza)
    return None if fields is None else _record(fields, component)


def parse_packages(data: bytes, component: str) -> list[PackageRecord]:
    """Parse an uncompressed Packages index into records, in index order.

    Raises ``IntegrityError`` for a stanza ``parse_stanza`` refuses: such an
    index cannot be trusted.
    """
    parsed = (parse_stanza(stanza, component) for stanza in split_stanzas(data))
    return [record for record in parsed if record is not None]


def _record(raw: dict[str, str], component: str) -> PackageRecord:
    fields = {k: field_value(v) for k, v in raw.items()}
    get = fields.get
    name = get("Package", "")
    sha256 = get("SHA256", "").lower()
    size = get("Size", "")
    if not (
        name and get("Version") and get("Architecture") and get("Filename") and size and sha256
    ):
        missing = next(f for f in _REQUIRED if not get(f))
        raise IntegrityError(
            f"Packages index of {component or 'a component'}: package {name or '?'} has no {missing} field",
            hint="the mirror serves a broken index; try again later or use another mirror",
        )
    if not size.isdigit() or not _HEX64_RE.fullmatch(sha256):
        raise IntegrityError(
            f"Packages index of {component}: package {name} has a malformed Size or SHA256 field",
            hint="the mirror serves a broken index; try again later or use another mirror",
        )
    return PackageRecord(
        name=name,
        version=fields["Version"],
        architecture=fields["Architecture"],
        filename=fields["Filename"],
        size=int(size),
        sha256=sha256,
        depends=get("Depends", ""),
        pre_depends=get("Pre-Depends", ""),
        provides=get("Provides", ""),
        conflicts=get("Conflicts", ""),
        breaks=get("Breaks", ""),
        multi_arch=get("Multi-Arch", ""),
        essential=get("Essential", "").lower() == "yes",
        source=get("Source", ""),
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


_PROVIDE_RE = re.compile(r"^\s*([^\s(:]+)(?::\S+)?\s*(?:\(\s*=\s*([^)\s]+)\s*\))?\s*$")


def parse_provides(text: str) -> list[tuple[str, str | None]]:
    """``(virtual name, provided version or None)`` of each item of a Provides field.

    A small regex instead of PkgRelation: Provides is read for every record of
    the index (tens of thousands) and only ever has the form ``name (= version)``.
    """
    if "(" not in text and ":" not in text:
        return [(item.strip(), None) for item in text.split(",") if item.strip()]
    provided: list[tuple[str, str | None]] = []
    for item in text.split(","):
        match = _PROVIDE_RE.match(item)
        if match:
            provided.append((match.group(1), match.group(2)))
    return provided
