"""An index over manifests a registry already holds: manifests move, blobs never do.

``manifest --assemble`` (docs/SCALE.md) reads each system's image manifest by
digest (GET, checked against the digest). When the manifest lives in another
repository of the same registry than the index, it is made present there
first: HEAD each blob it names, mount the missing ones from the other
repository (a POST that moves no bytes), PUT the manifest by digest, and copy
the evidence artifacts that name it the same way. Then the index is PUT under
each tag. No blob is ever read or sent: a registry that answers a mount with
an upload session gets that session cancelled and an error, never bytes.
``AssemblyCounts`` says what crossed the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from polyarch.determinism import DIGEST_PATTERN, Digest, sha256_digest
from polyarch.errors import RegistryError
from polyarch.registry.client import RegistryClient
from polyarch.registry.pull import Puller
from polyarch.registry.referrers import (
    KIND_ANNOTATION,
    Subject,
    find_referrers,
    index_entry,
    list_referrers,
)
from polyarch.registry.responses import registry_message

EVIDENCE_TAG_KINDS = ("spdx", "cdx", "provenance", "dsse")
"""The kinds ``workflows.attach`` tags its artifacts with (``sha256-<hex>.<kind>``)."""


@dataclass
class AssemblyCounts:
    """What one assembly asked of the registry, and the bytes that crossed the network."""

    manifests_read: int = 0
    manifests_written: int = 0
    manifests_present: int = 0
    """Already in the index's repository (HEAD answered 200): not copied."""
    blobs_present: int = 0
    blobs_mounted: int = 0
    referrers_copied: int = 0
    bytes_received: int = 0
    """Bodies received: manifests only."""
    bytes_sent: int = 0
    """Bodies sent: manifests and the index only."""


class Assembler:
    """Writes into one repository (``repository``) of ``client``'s registry."""

    def __init__(self, client: RegistryClient, repository: str) -> None:
        self.client = client
        self.repository = repository
        self.scope = f"repository:{repository}:pull,push"
        self.counts = AssemblyCounts()

    def read(self, repository: str, digest: Digest) -> tuple[bytes, dict[str, Any]]:
        """The manifest ``digest`` of ``repository`` (its bytes checked against the digest)."""
        _digest, document, data = Puller(self.client, repository).manifest(
            digest, not_found_hint="was the shard's push lost, or pushed elsewhere?"
        )
        self.counts.manifests_read += 1
        self.counts.bytes_received += len(data)
        return data, document

    def present(self, digest: Digest, media_type: str) -> bool:
        response = self.client.request(
            "HEAD",
            f"/v2/{self.repository}/manifests/{digest}",
            scopes=(self.scope,),
            headers={"Accept": media_type},
        )
        return response.status_code == 200

    def copy_image(self, source: str, data: bytes, document: dict[str, Any]) -> None:
        """Make manifest ``data`` of repository ``source`` present in this repository."""
        digest = sha256_digest(data)
        media_type = str(document.get("mediaType"))
        if self.present(digest, media_type):
            self.counts.manifests_present += 1
            return
        for blob in _blobs(document):
            self._mount(blob, source)
        self.put(data, media_type, digest)

    def copy_referrers(self, source: str, subject: Subject) -> int:
        """Copy the artifacts naming ``subject`` in ``source`` (found as ``polyarch verify``
        finds them) and list them here; how many were copied."""
        found, _problems = find_referrers(
            Puller(self.client, source), subject.digest, EVIDENCE_TAG_KINDS
        )
        entries = []
        for referrer in found:
            data, document = self.read(source, referrer.digest)
            for blob in _blobs(document):
                self._mount(blob, source)
            kind = (document.get("annotations") or {}).get(KIND_ANNOTATION)
            tag = f"{subject.fallback_tag}.{kind}" if kind in EVIDENCE_TAG_KINDS else None
            self.put(data, str(document.get("mediaType")), tag or referrer.digest)
            entries.append(index_entry(data))
        if entries:
            list_referrers(self.client, self.repository, subject, entries)
            self.counts.referrers_copied += len(entries)
        return len(entries)

    def put(self, data: bytes, media_type: str, reference: str) -> None:
        """PUT a manifest or index under ``reference`` (a tag or its digest)."""
        response = self.client.request(
            "PUT",
            f"/v2/{self.repository}/manifests/{reference}",
            scopes=(self.scope,),
            headers={"Content-Type": media_type},
            content=data,
        )
        self.counts.bytes_sent += len(data)
        if response.status_code not in (200, 201):
            raise RegistryError(
                f"{self.client.registry} refused {sha256_digest(data)} as "
                f"{self.repository}:{reference}: {registry_message(response)}",
                hint="every image the index names must be in its repository",
            )
        stored = response.headers.get("docker-content-digest")
        if stored and stored != sha256_digest(data):
            raise RegistryError(
                f"{self.client.registry} stored {sha256_digest(data)} as {stored}",
                hint="the registry changed the bytes; do not trust this push",
            )
        self.counts.manifests_written += 1

    def _mount(self, blob: Digest, source: str) -> None:
        head = self.client.request(
            "HEAD", f"/v2/{self.repository}/blobs/{blob}", scopes=(self.scope,)
        )
        if head.status_code == 200:
            self.counts.blobs_present += 1
            return
        response = self.client.request(
            "POST",
            httpx.URL(
                f"/v2/{self.repository}/blobs/uploads/", params={"mount": blob, "from": source}
            ),
            scopes=(self.scope, f"repository:{source}:pull"),
        )
        if response.status_code == 201:
            self.counts.blobs_mounted += 1
            return
        location = response.headers.get("location")
        if response.status_code == 202 and location:
            # An upload session instead of a mount: close it, send nothing.
            self.client.request("DELETE", location, scopes=(self.scope,), retry=False)
        raise RegistryError(
            f"{self.client.registry} cannot mount {blob} from {source} into {self.repository} "
            f"({registry_message(response)})",
            hint="push the shards' images to the repository of the index (build --push REF)",
        )


def _blobs(document: dict[str, Any]) -> Sequence[Digest]:
    """The config and layer digests an image or artifact manifest names."""
    descriptors = [document.get("config"), *(document.get("layers") or [])]
    found = []
    for d in descriptors:
        digest = d.get("digest") if isinstance(d, dict) else None
        if not isinstance(digest, str) or not DIGEST_PATTERN.fullmatch(digest):
            raise RegistryError("a manifest to copy names a blob without a sha256 digest")
        found.append(Digest(digest))
    return list(dict.fromkeys(found))
