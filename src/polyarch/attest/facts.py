"""What an SBOM says of one .deb, read once from the package and cached by its SHA256.

A warm build reads no .deb (its layers come from the cache), yet its SBOM
needs each package's maintainer, source package, licence and dependencies.
Those are a pure function of the .deb's bytes, so they are cached per .deb
SHA256 in their own cache kind (``Kind.FACTS``), written whenever a build
reads the package anyway. A separate kind rather than a field of the layer
records: one entry per package serves every closure and layer grouping,
travels with ``cache push``/``pull`` like the rest, and leaves the layer
record's schema alone. Entries read back are validated (schema, format,
package name); anything else counts as a miss and the package is read again.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated

import msgspec

from polyarch.cache import Cache, Kind
from polyarch.debian.copyright import declared_license
from polyarch.debian.deb import DebContents, DebEntry
from polyarch.debian.identity import control_fields
from polyarch.image.filesystem import DOC_DIR, merged_usr_path

FACTS_FORMAT = 1
"""Bump when what is extracted changes: older entries are then read again."""
OS_RELEASE_PATHS = ("/usr/lib/os-release", "/etc/os-release")
OS_RELEASE_KEYS = ("ID", "NAME", "PRETTY_NAME", "VERSION_CODENAME", "VERSION_ID")
_Hex64 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]


class PackageFacts(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One package's facts, from its control stanza, copyright file and os-release."""

    format: int
    name: str
    version: str
    architecture: str
    maintainer: str
    source: str
    """The source package's name (the binary's own name when the stanza has no Source)."""
    source_version: str
    depends: str = ""
    pre_depends: str = ""
    provides: str = ""
    license: str | None = None
    """SPDX expression from a machine-readable copyright file; None: no assertion."""
    license_texts: tuple[tuple[str, str], ...] = ()
    """(``LicenseRef-...``, text) for each LicenseRef in ``license``."""
    doc_link: str | None = None
    """``/usr/share/doc/NAME`` is a link to this sibling (whose copyright file applies)."""
    os_release: dict[str, str] | None = None
    """The package ships ``/etc/os-release``: its identifying keys."""


def facts_of(contents: DebContents) -> PackageFacts:
    """Read the facts out of a parsed .deb."""
    fields = control_fields(contents.control)
    name = fields.get("package", contents.package)
    version = fields.get("version", "")
    source, _, rest = fields.get("source", "").partition(" ")
    source_version = rest.strip().strip("()").strip() or version
    entries = {merged_usr_path(e.path): e for e in contents.entries}
    copyright_entry = entries.get(f"{DOC_DIR}/{name}/copyright")
    declared = None
    if copyright_entry is not None and copyright_entry.kind in ("file", "hardlink"):
        text = copyright_entry.reader().read(1 << 20).decode("utf-8", "replace")
        declared = declared_license(text, name)
    return PackageFacts(
        format=FACTS_FORMAT,
        name=name,
        version=version,
        architecture=fields.get("architecture", ""),
        maintainer=" ".join(fields.get("maintainer", "").split()),
        source=source or name,
        source_version=source_version,
        depends=fields.get("depends", ""),
        pre_depends=fields.get("pre-depends", ""),
        provides=fields.get("provides", ""),
        license=declared.expression if declared else None,
        license_texts=declared.texts if declared else (),
        doc_link=_doc_link(entries.get(f"{DOC_DIR}/{name}")),
        os_release=_os_release(entries),
    )


def _doc_link(entry: DebEntry | None) -> str | None:
    if entry is None or entry.kind != "symlink":
        return None
    target = posixpath.normpath(entry.target)
    if target.startswith(DOC_DIR + "/"):
        target = target[len(DOC_DIR) + 1 :]
    return target if target and "/" not in target and target not in (".", "..") else None


def _os_release(entries: Mapping[str, DebEntry]) -> dict[str, str] | None:
    for path in OS_RELEASE_PATHS:
        entry = entries.get(path)
        if entry is not None and entry.kind in ("file", "hardlink"):
            return parse_os_release(entry.reader().read(1 << 20).decode("utf-8", "replace"))
    return None


def parse_os_release(text: str) -> dict[str, str]:
    """The identifying keys of an os-release file (shell-style ``KEY="value"`` lines)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep or key.strip() not in OS_RELEASE_KEYS:
            continue
        try:
            words = shlex.split(value, comments=True)
        except ValueError:
            continue
        found[key.strip()] = " ".join(words)
    return dict(sorted(found.items()))


# --- the cache ---------------------------------------------------------------------------


def cached_facts(cache: Cache, sha256: str, name: str) -> PackageFacts | None:
    """The cached facts of the .deb ``sha256`` (package ``name``), if present and valid."""
    path = cache.get(Kind.FACTS, sha256)
    if path is None:
        return None
    facts = read_facts(path)
    return facts if facts is not None and facts.name == name else None


def read_facts(path: Path) -> PackageFacts | None:
    """The facts in a cache entry; None if unreadable, of another format or not facts at all."""
    try:
        facts = msgspec.json.decode(path.read_bytes(), type=PackageFacts)
    except (OSError, msgspec.DecodeError):
        return None
    return facts if facts.format == FACTS_FORMAT else None


def remember_facts(cache: Cache, sha256: str, contents: DebContents) -> PackageFacts:
    """The facts of a .deb just read, written to the cache unless already there."""
    facts = cached_facts(cache, sha256, contents.package)
    if facts is None:
        facts = facts_of(contents)
        cache.put(Kind.FACTS, sha256, msgspec.json.encode(facts))
    return facts


def gather_facts(
    cache: Cache,
    packages: Iterable[tuple[str, str]],
    read: Callable[[str], DebContents],
) -> dict[str, PackageFacts]:
    """The facts of every (name, sha256); only the packages the cache lacks are read.

    ``read(sha256)`` returns a package's verified contents (fetching it if need be).
    """
    found: dict[str, PackageFacts] = {}
    for name, sha256 in packages:
        if sha256 in found:
            continue
        facts = cached_facts(cache, sha256, name)
        if facts is None:
            facts = remember_facts(cache, sha256, read(sha256))
        found[sha256] = facts
    return found
