"""verify: an image's evidence against the image, from a build's outputs or a registry alone.

``verify_outputs(OUT/NAME)`` reads the images of ``OUT/NAME/oci`` and the
files of ``OUT/NAME/sbom``; ``verify_registry(REF)`` reads the index, each
platform's layers and the artifacts attached to each platform manifest
(referrers API, else the ``sha256-<hex>`` tags). Both hand every image to
``attest.verify.judge_image``; nothing read is trusted before it is checked
against its digest, and a blob that does not match is a problem to report,
not a crash.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from polyarch import media_types
from polyarch.attest.names import EVIDENCE_KINDS, EvidenceKind
from polyarch.attest.status import InstalledPackage, StatusError, installed_packages
from polyarch.attest.verify import Evidence, Found, ImageVerdict, judge_image
from polyarch.determinism import Digest
from polyarch.errors import EvidenceError, ImageError, IntegrityError, RegistryError, UsageError
from polyarch.image.layout_reader import OciLayout, read_oci_layout
from polyarch.image.oci import Descriptor, parse_descriptor
from polyarch.outputs import LAYOUT_DIR, SBOM_DIR, evidence_name
from polyarch.reference import DEFAULT_TAG, parse_reference
from polyarch.registry.client import ANONYMOUS, RegistryAccess
from polyarch.registry.pull import Puller
from polyarch.registry.referrers import find_referrers

if TYPE_CHECKING:  # cryptography is imported only where keys are read
    from polyarch.attest.keys import PublicKey

DOCUMENT_TYPES: dict[str, EvidenceKind] = {
    media_types.SPDX_JSON: "spdx",
    media_types.CYCLONEDX_JSON: "cdx",
    media_types.IN_TOTO_JSON: "provenance",
}
ARTIFACT_KINDS = (*EVIDENCE_KINDS, "dsse")
MAX_EVIDENCE_BLOB = 64 << 20


@dataclass(frozen=True, slots=True)
class VerifyReport:
    source: str
    """The outputs directory or registry reference verified."""
    images: tuple[ImageVerdict, ...]

    @property
    def ok(self) -> bool:
        return bool(self.images) and all(i.ok for i in self.images)

    def raise_for_problems(self) -> None:
        """EvidenceError naming the first problem (and how many more) unless all passed."""
        problems = [f"{i.label}: {p}" for i in self.images for p in i.problems]
        if problems:
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            raise EvidenceError(
                f"{self.source}: {problems[0]}{more}",
                hint="do not trust this image; polyarch verify lists every problem",
            )


# -- a build's outputs -------------------------------------------------------------------


def locate_outputs(path: Path) -> tuple[Path, Path]:
    """``OUT/NAME`` (or its ``oci`` layout) → (layout, evidence directory)."""
    if (path / LAYOUT_DIR / "index.json").is_file():
        return path / LAYOUT_DIR, path / SBOM_DIR
    if (path / "index.json").is_file():
        return path, path.parent / SBOM_DIR
    raise UsageError(
        f"{path} is neither a build's output directory (OUT/NAME) nor an OCI layout",
        hint="pass OUT/NAME as polyarch build wrote it, or a registry reference",
    )


def verify_outputs(path: Path, keys: Sequence[PublicKey]) -> VerifyReport:
    """Verify every image of a build's outputs against the evidence beside it."""
    layout_path, sbom = locate_outputs(path)
    if not sbom.is_dir():
        raise EvidenceError(f"{path} has no evidence ({sbom} is missing)", hint="build it again")
    layout = read_oci_layout(layout_path)
    tag = layout.tags[0] if layout.tags else DEFAULT_TAG
    verdicts = []
    for image in layout.images(tag):
        label = image.system.name if image.system else str(image.platform)
        evidence = Evidence()
        if image.system is not None:
            for kind in EVIDENCE_KINDS:
                plain = sbom / evidence_name(image.system, kind)
                signed = sbom / evidence_name(image.system, kind, signed=True)
                if plain.is_file():
                    evidence.documents.setdefault(kind, []).append(Found(str(plain), _read(plain)))
                if signed.is_file():
                    evidence.envelopes.append(Found(str(signed), _read(signed)))
        installed = installed_of(layout, image.layers, label)
        verdicts.append(judge_image(label, image.manifest.digest, installed, evidence, keys))
    return VerifyReport(str(path), tuple(verdicts))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise EvidenceError(f"cannot read {path}: {exc.strerror}") from exc


def installed_of(
    layout: OciLayout, layers: Sequence[Descriptor], label: str
) -> dict[str, InstalledPackage]:
    """The packages in the status.d of an image of ``layout``."""
    return _installed([_opener(layout, layer) for layer in layers], label)


def _opener(layout: OciLayout, layer: Descriptor) -> Callable[[], IO[bytes]]:
    def open_layer() -> IO[bytes]:
        return io.BytesIO(layout.read_blob(layer))  # checked against its digest

    return open_layer


def _installed(
    openers: Sequence[Callable[[], IO[bytes]]], label: str
) -> dict[str, InstalledPackage]:
    try:
        return installed_packages(openers)
    except StatusError as exc:
        raise EvidenceError(f"{label}: a layer of the image cannot be read: {exc}") from None
    except (ImageError, IntegrityError, RegistryError) as exc:
        raise EvidenceError(f"{label}: {exc.message}", hint=exc.hint) from None


# -- a registry ------------------------------------------------------------------------------


def verify_registry(
    ref: str,
    keys: Sequence[PublicKey],
    *,
    access: RegistryAccess = ANONYMOUS,
) -> VerifyReport:
    """Verify every platform image of ``ref`` against the artifacts attached to it."""
    reference = parse_reference(ref)
    with access.client(reference) as client, Puller(client, reference.repository) as puller:
        root = reference.digest or reference.tag or DEFAULT_TAG
        digest, document, _data = puller.manifest(root)
        images: list[tuple[str, Descriptor]] = []
        if "manifests" in document:
            for item in document.get("manifests") or []:
                entry = parse_descriptor(item, f"{ref} index")
                if entry.platform is not None and entry.platform.os != "unknown":
                    images.append((str(entry.platform), entry))
        else:
            images.append((root, Descriptor(media_types.OCI_MANIFEST, digest, len(_data))))
        verdicts = [
            _verify_remote_image(puller, label, entry.digest, keys) for label, entry in images
        ]
    return VerifyReport(str(reference), tuple(verdicts))


def _verify_remote_image(
    puller: Puller, label: str, digest: Digest, keys: Sequence[PublicKey]
) -> ImageVerdict:

    _d, manifest, _b = puller.manifest(digest)
    layers = [parse_descriptor(item, f"{label} manifest") for item in manifest.get("layers") or []]

    def opener(layer: Descriptor) -> Callable[[], IO[bytes]]:
        return lambda: io.BytesIO(puller.blob(layer.digest, layer.size))

    evidence = Evidence()
    referrers, problems = find_referrers(puller, digest, ARTIFACT_KINDS)
    evidence.problems += problems
    for referrer in referrers:
        where = f"{puller.repository}@{referrer.digest} ({referrer.found_by})"
        for item in referrer.manifest.get("layers") or []:
            try:
                layer = parse_descriptor(item, where)
                if layer.size > MAX_EVIDENCE_BLOB:
                    raise EvidenceError(f"{layer.digest} is larger than evidence can be")
                data = puller.blob(layer.digest, layer.size)
            except (ImageError, IntegrityError, RegistryError, EvidenceError) as exc:
                evidence.problems.append(f"{where}: {exc.message}")
                continue
            found = Found(f"{where} layer {layer.digest}", data)
            if layer.media_type == media_types.DSSE_ENVELOPE:
                evidence.envelopes.append(found)
            elif layer.media_type in DOCUMENT_TYPES:
                evidence.documents.setdefault(DOCUMENT_TYPES[layer.media_type], []).append(found)
    installed = _installed([opener(layer) for layer in layers], label)
    return judge_image(label, digest, installed, evidence, keys)
