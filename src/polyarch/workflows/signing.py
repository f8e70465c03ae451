"""sign: sign the evidence of an existing build (``polyarch sign``).

Each of ``OUT/NAME/sbom/SYSTEM.{spdx,cdx,provenance}.json`` becomes an in-toto
statement about its image's digest in a DSSE envelope beside it
(``SYSTEM.KIND.dsse.json``). Nothing is signed unless the whole build checks
out first: the envelopes are made in memory and judged exactly as
``polyarch verify`` would (SBOMs against the images' status.d), so a key
never vouches for evidence that does not match its image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyarch.attest.names import EVIDENCE_KINDS, EvidenceKind
from polyarch.attest.verify import Evidence, Found, judge_image
from polyarch.errors import EvidenceError
from polyarch.files import atomic_write
from polyarch.image.layout_reader import read_oci_layout
from polyarch.outputs import evidence_name
from polyarch.reference import DEFAULT_TAG
from polyarch.workflows.evidence import signed_statements
from polyarch.workflows.verify import VerifyReport, installed_of, locate_outputs

if TYPE_CHECKING:  # cryptography is imported only where keys are read
    from polyarch.attest.keys import SigningKey


@dataclass(frozen=True, slots=True)
class SignResult:
    written: tuple[Path, ...]
    keyid: str


def sign_outputs(path: Path, key: SigningKey, *, subject_name: str | None = None) -> SignResult:
    """Sign the evidence of every image in ``path`` (``OUT/NAME``); EvidenceError if it
    does not match its image or is missing."""
    layout_path, sbom = locate_outputs(path)
    layout = read_oci_layout(layout_path)
    tag = layout.tags[0] if layout.tags else DEFAULT_TAG
    name = subject_name or layout_path.parent.name
    pending: dict[Path, bytes] = {}
    verdicts = []
    for image in layout.images(tag):
        if image.system is None:
            raise EvidenceError(f"{layout_path}: an image has no known platform")
        label = image.system.name
        documents: dict[EvidenceKind, dict[str, Any]] = {}
        evidence = Evidence()
        for kind in EVIDENCE_KINDS:
            source = sbom / evidence_name(image.system, kind)
            try:
                documents[kind] = json.loads(source.read_bytes())
            except (OSError, ValueError) as exc:
                raise EvidenceError(
                    f"{source}: cannot read it ({exc})",
                    hint="build again to write the SBOMs and provenance",
                ) from None
        signed = signed_statements(name, image.manifest.digest, documents, key)
        for kind, data in signed.items():
            target = sbom / evidence_name(image.system, kind, signed=True)
            evidence.envelopes.append(Found(str(target), data))
            pending[target] = data
        installed = installed_of(layout, image.layers, label)
        verdicts.append(
            judge_image(label, image.manifest.digest, installed, evidence, [key.public])
        )
    VerifyReport(str(path), tuple(verdicts)).raise_for_problems()
    for target, data in sorted(pending.items()):
        atomic_write(target, data)
    return SignResult(tuple(sorted(pending)), key.keyid)
