"""OCI 1.1 referrers: artifacts that point at an image through ``subject``, pushed and found.

An artifact is an image manifest with an ``artifactType``, the empty config
and the payload as layers, and ``subject`` = the image manifest it is about.
A registry with the referrers API (``GET /v2/NAME/referrers/DIGEST``) lists
them by itself. Others (Debian's docker-registry 2.8 has no such API) get
both tag schemes:

- the OCI fallback (distribution-spec "referrers tag schema"): an image index
  tagged ``sha256-<hex>`` listing the artifacts, which oras, notation, crane
  and regclient read; polyarch reads it, replaces its own entries of the
  kinds it pushes and keeps everyone else's;
- one tag per kind, ``sha256-<hex>.<kind>``, naming the artifact itself, for
  direct lookup (kinds ``spdx``, ``cdx``, ``provenance``, ``dsse``: not
  cosign's ``sig``/``att``/``sbom``, whose layouts differ).

Reading tries the API, then the fallback index, then the per-kind tags.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyarch import media_types
from polyarch.determinism import Digest, canonical_json, sha256_digest
from polyarch.errors import IntegrityError, RegistryError
from polyarch.image.layout import put_blob, write_layout_index
from polyarch.reference import Reference
from polyarch.registry.client import ANONYMOUS, RegistryAccess, RegistryClient
from polyarch.registry.pull import MANIFEST_ACCEPT, Puller
from polyarch.registry.push import push_layout
from polyarch.registry.responses import registry_message

EMPTY_CONFIG = b"{}"
EMPTY_DESCRIPTOR = {
    "mediaType": media_types.OCI_EMPTY,
    "digest": sha256_digest(EMPTY_CONFIG),
    "size": len(EMPTY_CONFIG),
    "data": "e30=",
}
ANNOTATION_CREATED = "org.opencontainers.image.created"
KIND_ANNOTATION = "dev.polyarch.evidence.kind"
"""Names an artifact's kind, so a later push replaces exactly its own entries."""
MAX_REFERRERS = 1000


@dataclass(frozen=True, slots=True)
class Subject:
    """The manifest an artifact is about."""

    media_type: str
    digest: Digest
    size: int

    def as_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}

    @property
    def fallback_tag(self) -> str:
        """``sha256-<hex>``: the referrers tag schema's tag of this subject."""
        return self.digest.replace(":", "-")


@dataclass(frozen=True, slots=True)
class ArtifactLayer:
    media_type: str
    data: bytes
    annotations: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Artifact:
    """An artifact to attach: ``kind`` names its tag (``sha256-<hex>.<kind>``)."""

    kind: str
    artifact_type: str
    layers: tuple[ArtifactLayer, ...]
    annotations: tuple[tuple[str, str], ...] = ()

    def manifest(self, subject: Subject) -> bytes:
        layers = []
        for layer in self.layers:
            descriptor: dict[str, Any] = {
                "mediaType": layer.media_type,
                "digest": sha256_digest(layer.data),
                "size": len(layer.data),
            }
            if layer.annotations:
                descriptor["annotations"] = dict(layer.annotations)
            layers.append(descriptor)
        return canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": media_types.OCI_MANIFEST,
                "artifactType": self.artifact_type,
                "config": EMPTY_DESCRIPTOR,
                "layers": layers,
                "subject": subject.as_json(),
                "annotations": {**dict(self.annotations), KIND_ANNOTATION: self.kind},
            }
        )


@dataclass
class AttachResult:
    """What attaching did to one repository."""

    artifacts: list[Digest] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    referrers_api: bool = False
    """The registry lists referrers itself (no fallback index was written)."""


def attach(
    repository: Reference,
    subject: Subject,
    artifacts: Sequence[Artifact],
    *,
    access: RegistryAccess = ANONYMOUS,
    jobs: int = 4,
) -> AttachResult:
    """Push ``artifacts`` about ``subject`` to ``repository``, each under
    ``sha256-<hex>.<kind>``, and list them in the fallback index ``sha256-<hex>``
    unless the registry has the referrers API."""
    result = AttachResult()
    pushed: list[dict[str, Any]] = []
    for artifact in artifacts:
        manifest = artifact.manifest(subject)
        tag = f"{subject.fallback_tag}.{artifact.kind}"
        with tempfile.TemporaryDirectory(prefix="polyarch-attach-") as tmp:
            layout = Path(tmp)
            put_blob(layout, EMPTY_CONFIG)
            for layer in artifact.layers:
                put_blob(layout, layer.data)
            digest = put_blob(layout, manifest)
            write_layout_index(layout, media_types.OCI_MANIFEST, digest, len(manifest), tag)
            push_layout(layout, str(repository.with_tag(tag)), access=access, jobs=jobs)
        result.artifacts.append(digest)
        result.tags.append(tag)
        pushed.append(_index_entry(json.loads(manifest), digest, len(manifest)))
    with access.client(repository) as client:
        result.referrers_api = list_referrers(client, repository.repository, subject, pushed)
    if not result.referrers_api:
        result.tags.append(subject.fallback_tag)
    return result


def list_referrers(
    client: RegistryClient, repository: str, subject: Subject, entries: list[dict[str, Any]]
) -> bool:
    """Make artifacts already pushed to ``repository`` findable from ``subject``: True when
    the registry's referrers API lists them by itself, else they go in the fallback index."""
    if _referrers_api(client, repository, subject.digest) is not None:
        return True
    _update_fallback_index(client, repository, subject, entries)
    return False


def index_entry(manifest: bytes) -> dict[str, Any]:
    """How a referrers index lists the artifact whose manifest is ``manifest``."""
    return _index_entry(json.loads(manifest), sha256_digest(manifest), len(manifest))


def _index_entry(manifest: dict[str, Any], digest: Digest, size: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"mediaType": media_types.OCI_MANIFEST, "digest": digest, "size": size}
    for key in ("artifactType", "annotations"):
        if key in manifest:
            entry[key] = manifest[key]
    return entry


def _referrers_api(
    client: RegistryClient, repository: str, digest: Digest
) -> list[dict[str, Any]] | None:
    """The referrers the API lists; None when the registry has no referrers API."""
    response = client.request(
        "GET",
        f"/v2/{repository}/referrers/{digest}",
        scopes=(f"repository:{repository}:pull",),
        headers={"Accept": media_types.OCI_INDEX},
    )
    if response.status_code != 200:
        return None  # 404 (docker-registry 2.8 answers plain text), 400, 405: no API
    try:
        document = response.json()
    except ValueError:
        return None
    if not isinstance(document, dict) or document.get("mediaType", media_types.OCI_INDEX) != (
        media_types.OCI_INDEX
    ):
        return None
    return _entries(document)


def _entries(document: dict[str, Any]) -> list[dict[str, Any]]:
    manifests = document.get("manifests")
    if not isinstance(manifests, list):
        return []
    return [m for m in manifests[:MAX_REFERRERS] if isinstance(m, dict)]


def _fallback_index(client: RegistryClient, repository: str, tag: str) -> dict[str, Any] | None:
    response = client.request(
        "GET",
        f"/v2/{repository}/manifests/{tag}",
        scopes=(f"repository:{repository}:pull",),
        headers={"Accept": MANIFEST_ACCEPT},
    )
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise RegistryError(f"{client.registry}/{repository}:{tag}: {registry_message(response)}")
    try:
        document = response.json()
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _update_fallback_index(
    client: RegistryClient, repository: str, subject: Subject, pushed: list[dict[str, Any]]
) -> None:
    """Read the ``sha256-<hex>`` index, swap in ``pushed`` for entries of the same kinds, PUT it."""
    existing = _fallback_index(client, repository, subject.fallback_tag) or {}
    kinds = {e.get("annotations", {}).get(KIND_ANNOTATION) for e in pushed}
    digests = {e["digest"] for e in pushed}
    kept = [
        e
        for e in _entries(existing)
        if e.get("digest") not in digests
        and (e.get("annotations") or {}).get(KIND_ANNOTATION) not in kinds
    ]
    index = canonical_json(
        {"schemaVersion": 2, "mediaType": media_types.OCI_INDEX, "manifests": [*kept, *pushed]}
    )
    response = client.request(
        "PUT",
        f"/v2/{repository}/manifests/{subject.fallback_tag}",
        scopes=(f"repository:{repository}:pull,push",),
        headers={"Content-Type": media_types.OCI_INDEX},
        content=index,
    )
    if response.status_code not in (200, 201):
        raise RegistryError(
            f"{client.registry} refused the referrers index {repository}:{subject.fallback_tag}: "
            f"{registry_message(response)}"
        )


# -- reading -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Referrer:
    """An artifact about a subject, as found: its manifest (digest checked) and where."""

    digest: Digest
    manifest: dict[str, Any]
    found_by: str
    """``referrers API``, ``tag sha256-<hex>`` or ``tag sha256-<hex>.<kind>``."""


def find_referrers(
    puller: Puller, subject: Digest, kinds: Sequence[str]
) -> tuple[list[Referrer], list[str]]:
    """Every artifact naming ``subject`` (the API's, else the fallback index's, else by kind
    tag), and what could not be read (a listed artifact missing or not matching its digest).

    Artifacts whose ``subject`` is another manifest are left out (an index may be stale).
    """
    client, repository = puller.client, puller.repository
    tag = subject.replace(":", "-")
    entries = _referrers_api(client, repository, subject)
    found_by = "referrers API"
    if entries is None:
        index = _fallback_index(client, repository, tag)
        entries, found_by = (_entries(index), f"tag {tag}") if index else ([], "")
    references = [(str(e["digest"]), found_by) for e in entries if isinstance(e.get("digest"), str)]
    by_tag = not references
    if by_tag:
        references = [(f"{tag}.{kind}", f"tag {tag}.{kind}") for kind in kinds]
    found: list[Referrer] = []
    problems: list[str] = []
    seen: set[str] = set()
    for reference, how in references:
        try:
            digest, document, _data = puller.manifest(reference)
        except (RegistryError, IntegrityError) as exc:
            if not by_tag or isinstance(exc, IntegrityError):
                problems.append(f"artifact {reference} ({how}): {exc.message}")
            continue  # by tag: that kind was never pushed
        subject_of = document.get("subject")
        if (
            digest in seen
            or not isinstance(subject_of, dict)
            or subject_of.get("digest") != subject
        ):
            continue
        seen.add(digest)
        found.append(Referrer(digest, document, how))
    return found, problems
