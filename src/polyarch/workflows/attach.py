"""attach: a build's evidence pushed beside its images, as OCI 1.1 artifacts (``manifest --push``).

Per platform image: the SPDX document, the CycloneDX BOM and the provenance
statement, each an artifact of its own type whose ``subject`` is the image
manifest, and, when signed, one ``dsse`` artifact holding the three DSSE
envelopes (each layer annotated with its predicate type). How they are
tagged and found: ``registry.referrers``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from polyarch import media_types
from polyarch.attest.names import (
    ANNOTATION_KIND,
    ANNOTATION_PREDICATE_TYPE,
    EVIDENCE_KINDS,
    PREDICATE_OF,
)
from polyarch.determinism import rfc3339, source_date_epoch
from polyarch.errors import EvidenceError
from polyarch.image.layout_reader import read_oci_layout
from polyarch.outputs import evidence_name
from polyarch.platforms import System
from polyarch.reference import DEFAULT_TAG
from polyarch.registry.client import ANONYMOUS, RegistryAccess
from polyarch.registry.referrers import (
    ANNOTATION_CREATED,
    Artifact,
    ArtifactLayer,
    AttachResult,
    Subject,
    attach,
)
from polyarch.workflows.targets import Target

ARTIFACT_TYPES = {
    "spdx": media_types.SPDX_JSON,
    "cdx": media_types.CYCLONEDX_JSON,
    "provenance": media_types.IN_TOTO_JSON,
}


@dataclass(frozen=True, slots=True)
class Attached:
    system: System
    subject: Subject
    result: AttachResult


def evidence_artifacts(sbom: Path, system: System, created: str) -> list[Artifact]:
    """The artifacts of one system image from ``OUT/NAME/sbom``; the ``dsse`` one if signed."""
    annotations = ((ANNOTATION_CREATED, created),)
    artifacts = []
    envelopes = []
    for kind in EVIDENCE_KINDS:
        plain = sbom / evidence_name(system, kind)
        if not plain.is_file():
            raise EvidenceError(
                f"{plain} is missing",
                hint="build again to write the SBOMs, or push with --no-evidence",
            )
        layer_annotations = ((ANNOTATION_PREDICATE_TYPE, PREDICATE_OF[kind]),)
        layer = ArtifactLayer(ARTIFACT_TYPES[kind], plain.read_bytes(), layer_annotations)
        artifacts.append(Artifact(kind, ARTIFACT_TYPES[kind], (layer,), annotations))
        signed = sbom / evidence_name(system, kind, signed=True)
        if signed.is_file():
            envelopes.append(
                ArtifactLayer(
                    media_types.DSSE_ENVELOPE,
                    signed.read_bytes(),
                    ((ANNOTATION_KIND, kind), *layer_annotations),
                )
            )
    if envelopes:
        artifacts.append(Artifact("dsse", media_types.DSSE_ENVELOPE, tuple(envelopes), annotations))
    return artifacts


def attach_evidence(
    layout_path: Path,
    sbom: Path,
    target: Target,
    *,
    access: RegistryAccess = ANONYMOUS,
    jobs: int = 4,
) -> list[Attached]:
    """Attach the evidence in ``sbom`` to each platform image of the pushed ``layout_path``
    (``access`` gives the TLS choices; the credentials are the target's own)."""
    layout = read_oci_layout(layout_path)
    tag = layout.tags[0] if layout.tags else DEFAULT_TAG
    access = replace(access, credentials=target.credentials)
    created = rfc3339(source_date_epoch())
    attached = []
    for image in layout.images(tag):
        if image.system is None:
            continue
        subject = Subject(image.manifest.media_type, image.manifest.digest, image.manifest.size)
        artifacts = evidence_artifacts(sbom, image.system, created)
        attached.append(
            Attached(
                image.system,
                subject,
                attach(target.reference, subject, artifacts, access=access, jobs=jobs),
            )
        )
    return attached


def attached_kinds(attached: Sequence[Attached]) -> list[str]:
    """The kinds attached (for tables): ``spdx cdx provenance [dsse]``."""
    kinds: list[str] = []
    for a in attached:
        for tag in a.result.tags:
            kind = tag.rpartition(".")[2] if "." in tag else "index"
            if kind not in kinds:
                kinds.append(kind)
    return kinds
