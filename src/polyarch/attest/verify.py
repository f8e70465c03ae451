"""Judge an image's evidence: signatures, subjects, and the SBOMs against its dpkg database.

For each kind (SPDX, CycloneDX, provenance) one signed statement must pass
every check: a trusted key signed it, its subject is this image's digest, and
its content agrees with the image: each SBOM lists exactly the packages of
the image's ``status.d`` (name, version, architecture) and describes this
digest, and every .deb SHA256 it gives is one the provenance resolved.
Unsigned copies found beside it (files, artifacts) must equal the signed one.
Every problem is reported, each naming what does not match.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from polyarch.attest.dsse import SignatureCheck, check_signatures, parse_envelope
from polyarch.attest.inventory import parse_deb_purl
from polyarch.attest.names import EVIDENCE_KINDS, KIND_OF_PREDICATE, EvidenceKind
from polyarch.attest.statement import Statement, parse_statement
from polyarch.attest.status import InstalledPackage
from polyarch.determinism import Digest

if TYPE_CHECKING:  # cryptography is imported only where keys are read
    from polyarch.attest.keys import PublicKey

LABELS: dict[EvidenceKind, str] = {"spdx": "SPDX", "cdx": "CycloneDX", "provenance": "provenance"}
MAX_LISTED = 8
"""Package differences named in one message; the rest are counted."""


@dataclass(frozen=True, slots=True)
class Found:
    """One piece of evidence and where it was found (a file, a registry artifact)."""

    where: str
    data: bytes


@dataclass
class Evidence:
    """All evidence found for one image."""

    documents: dict[EvidenceKind, list[Found]] = field(default_factory=dict)
    """Unsigned SBOMs and provenance, by kind."""
    envelopes: list[Found] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """What could not be read (a blob that does not match its digest, ...)."""


@dataclass(frozen=True, slots=True)
class ImageVerdict:
    label: str
    """The image, for people: its system or platform."""
    digest: Digest
    problems: tuple[str, ...]
    signed_by: tuple[str, ...]
    """Key ids that signed the accepted statements."""
    packages: int
    """Packages in the image's status.d."""

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class _Candidate:
    where: str
    signature: SignatureCheck
    statement: Statement


def judge_image(
    label: str,
    digest: Digest,
    installed: Mapping[str, InstalledPackage],
    evidence: Evidence,
    keys: Sequence[PublicKey],
) -> ImageVerdict:
    """Every check of the module doc for one image; the verdict lists each failure."""
    problems = list(evidence.problems)
    candidates: dict[EvidenceKind, list[_Candidate]] = {k: [] for k in EVIDENCE_KINDS}
    for found in evidence.envelopes:
        try:
            envelope = parse_envelope(found.data)
            statement = parse_statement(envelope.payload)
        except ValueError as exc:
            problems.append(f"{found.where} {exc}")
            continue
        kind = KIND_OF_PREDICATE.get(statement.predicate_type)
        if kind is not None:
            candidates[kind].append(
                _Candidate(found.where, check_signatures(envelope, keys), statement)
            )
    accepted: dict[EvidenceKind, _Candidate] = {}
    for kind in EVIDENCE_KINDS:
        chosen, rejected = _choose(kind, digest, candidates[kind])
        problems += rejected
        if chosen is not None:
            accepted[kind] = chosen
    packages = set(installed.values())
    hashes: dict[EvidenceKind, dict[InstalledPackage, str]] = {}
    for kind in ("spdx", "cdx"):
        if kind in accepted:
            listed, own_digest = sbom_contents(kind, accepted[kind].statement.predicate)
            hashes[kind] = listed
            problems += _compare(LABELS[kind], digest, own_digest, packages, set(listed))
    if "provenance" in accepted:
        resolved = _resolved_hashes(accepted["provenance"].statement.predicate)
        for kind, listed in hashes.items():
            unknown = sorted(str(p) for p, sha in listed.items() if sha not in resolved)
            if unknown:
                problems.append(
                    f"the {LABELS[kind]} SBOM gives .deb SHA256s the provenance did not resolve: "
                    + _some(unknown)
                )
    problems += _unsigned_copies(evidence, accepted)
    signers = tuple(sorted({c.signature.keyid or "" for c in accepted.values()}))
    return ImageVerdict(label, digest, tuple(problems), signers, len(packages))


def _choose(
    kind: EvidenceKind, digest: Digest, candidates: list[_Candidate]
) -> tuple[_Candidate | None, list[str]]:
    label = LABELS[kind]
    for candidate in candidates:
        if candidate.signature.ok and digest in candidate.statement.digests:
            return candidate, []
    if not candidates:
        return None, [f"no signed {label} statement found (sign with polyarch sign or --sign-key)"]
    reasons = []
    for c in candidates:
        if not c.signature.ok:
            reasons.append(f"{label} statement {c.where}: {c.signature.reason}")
        else:
            named = ", ".join(c.statement.digests)
            reasons.append(
                f"{label} statement {c.where} is about {named}, not this image ({digest})"
            )
    return None, reasons


def sbom_contents(
    kind: EvidenceKind, document: dict[str, Any]
) -> tuple[dict[InstalledPackage, str], str | None]:
    """The .deb packages an SBOM lists (with each SHA256) and the image digest it describes."""
    listed: dict[InstalledPackage, str] = {}
    described: str | None = None
    if kind == "spdx":
        for package in _dicts(document.get("packages")):
            purls = [
                r.get("referenceLocator")
                for r in _dicts(package.get("externalRefs"))
                if r.get("referenceType") == "purl"
            ]
            sha = _sha256_of(package.get("checksums"), "algorithm", "SHA256", "checksumValue")
            if package.get("primaryPackagePurpose") == "CONTAINER" and sha:
                described = f"sha256:{sha}"
            for purl in purls:
                parsed = parse_deb_purl(str(purl))
                if parsed is not None:
                    listed[InstalledPackage(*parsed)] = sha or ""
    else:
        component = document.get("metadata", {}).get("component", {})
        sha = _sha256_of(component.get("hashes"), "alg", "SHA-256", "content")
        described = f"sha256:{sha}" if sha else None
        for component in _dicts(document.get("components")):
            parsed = parse_deb_purl(str(component.get("purl", "")))
            if parsed is not None:
                listed[InstalledPackage(*parsed)] = (
                    _sha256_of(component.get("hashes"), "alg", "SHA-256", "content") or ""
                )
    return listed, described


def _dicts(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _sha256_of(items: object, key: str, name: str, value: str) -> str | None:
    for item in _dicts(items):
        if item.get(key) == name and isinstance(item.get(value), str):
            return str(item[value])
    return None


def _compare(
    label: str,
    digest: Digest,
    described: str | None,
    installed: set[InstalledPackage],
    listed: set[InstalledPackage],
) -> list[str]:

    problems = []
    if described != digest:
        problems.append(f"the {label} SBOM describes image {described or '(none)'}, not {digest}")
    missing = sorted(str(p) for p in installed - listed)
    extra = sorted(str(p) for p in listed - installed)
    if missing:
        problems.append(
            f"the {label} SBOM lacks packages the image's status.d has: {_some(missing)}"
        )
    if extra:
        problems.append(
            f"the {label} SBOM lists packages not in the image's status.d: {_some(extra)}"
        )
    return problems


def _some(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def _resolved_hashes(provenance: dict[str, Any]) -> set[str]:
    definition = provenance.get("buildDefinition")
    dependencies = definition.get("resolvedDependencies") if isinstance(definition, dict) else None
    found = set()
    for dependency in _dicts(dependencies):
        digest = dependency.get("digest")
        if isinstance(digest, dict) and isinstance(digest.get("sha256"), str):
            found.add(str(digest["sha256"]))
    return found


def _unsigned_copies(evidence: Evidence, accepted: Mapping[EvidenceKind, _Candidate]) -> list[str]:
    """Unsigned documents must say exactly what the signed statement says."""
    problems = []
    for kind, copies in evidence.documents.items():
        if kind not in accepted:
            continue
        signed = accepted[kind].statement
        for copy in copies:
            try:
                document = json.loads(copy.data)
            except (ValueError, UnicodeDecodeError):
                problems.append(f"{copy.where} is not JSON")
                continue
            expected = signed.predicate if kind != "provenance" else signed.raw
            if document != expected:
                problems.append(
                    f"{copy.where} differs from the signed {LABELS[kind]} statement "
                    "(changed after signing?)"
                )
    return problems
