"""The names polyarch's evidence uses: URIs it mints, predicate types, annotation keys.

polyarch has no web home yet, so the URIs it mints live under the reserved
``.invalid`` domain (RFC 2606): they name things and never resolve. Each is
described in docs/SUPPLY-CHAIN.md; change ``URI_BASE`` when the project has a
home, and every document follows.
"""

from __future__ import annotations

from typing import Final, Literal

URI_BASE: Final = "https://polyarch.invalid"
SPDX_NAMESPACE_BASE: Final = f"{URI_BASE}/spdx"
BUILD_TYPE: Final = f"{URI_BASE}/buildtypes/debian-image/v1"
"""SLSA buildType: a reproducible image build from signed Debian packages."""
BUILDER_ID: Final = f"{URI_BASE}/builders/local/v1"
"""SLSA builder.id: polyarch run by whoever invoked it (SLSA Build L1)."""

STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
PREDICATE_SLSA: Final = "https://slsa.dev/provenance/v1"
PREDICATE_SPDX: Final = "https://spdx.dev/Document"
PREDICATE_CYCLONEDX: Final = "https://cyclonedx.org/bom"

EvidenceKind = Literal["spdx", "cdx", "provenance"]
EVIDENCE_KINDS: Final[tuple[EvidenceKind, ...]] = ("spdx", "cdx", "provenance")
"""What every image gets: two SBOMs and a provenance, each also as a signed statement."""
PREDICATE_OF: Final[dict[EvidenceKind, str]] = {
    "spdx": PREDICATE_SPDX,
    "cdx": PREDICATE_CYCLONEDX,
    "provenance": PREDICATE_SLSA,
}
KIND_OF_PREDICATE: Final[dict[str, EvidenceKind]] = {v: k for k, v in PREDICATE_OF.items()}

ANNOTATION_KIND: Final = "dev.polyarch.evidence.kind"
"""On attached artifacts and their layers: ``spdx``, ``cdx``, ``provenance`` or ``dsse``."""
ANNOTATION_PREDICATE_TYPE: Final = "in-toto.io/predicate-type"
"""On DSSE envelope layers, as cosign writes it."""
