"""The supply-chain evidence a build writes: per system image SPDX, CycloneDX and provenance.

``BuildEvidence`` gathers each closure package's cached facts once (reading
only the .debs the cache has no facts for), then gives the in-image SPDX
layer (``sbom_in_image``) before the images exist and the files of
``OUT/NAME/sbom/`` after. With a signing key each document is also written
as a signed in-toto statement (a DSSE envelope).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from polyarch.attest.facts import PackageFacts, gather_facts
from polyarch.attest.inventory import (
    ArchiveSource,
    ImageInventory,
    inventory_packages,
    operating_system,
)
from polyarch.attest.names import EVIDENCE_KINDS, PREDICATE_OF, EvidenceKind
from polyarch.attest.provenance import ResolvedDependency, provenance_statement
from polyarch.attest.spdx import spdx_document
from polyarch.attest.statement import statement
from polyarch.cache import Kind
from polyarch.config import Container
from polyarch.debian.deb import DebContents, DebEntry
from polyarch.debian.resolver import Resolution, ResolvedPackage
from polyarch.determinism import Digest, canonical_json, gzip_bytes, pretty_json, sha256_digest
from polyarch.image.layers import LAYER_FORMAT_VERSION, Layer, write_tar
from polyarch.outputs import evidence_name
from polyarch.platforms import System
from polyarch.workflows.resolve import Session

SBOM_IN_IMAGE_DIR = "/var/lib/db/sbom"
"""Where ``sbom_in_image`` puts the SPDX document (apko's place)."""
SBOM_LAYER_NAME = "(sbom)"

if TYPE_CHECKING:  # cryptography is imported only when something is signed
    from polyarch.attest.keys import SigningKey


@dataclass(frozen=True, slots=True)
class SystemImage:
    """What the evidence of one built image needs from the build."""

    system: System
    digest: Digest
    version: str
    resolution: Resolution


class BuildEvidence:
    """The evidence of one build of one container."""

    def __init__(
        self,
        session: Session,
        container: Container,
        resolutions: Mapping[System, Resolution],
        read: Callable[[str], DebContents],
        *,
        epoch: int,
    ) -> None:
        self.session, self.container, self.epoch = session, container, epoch
        packages = [
            (p.record.name, p.record.sha256) for r in resolutions.values() for p in r.packages
        ]
        self.facts: dict[str, PackageFacts] = gather_facts(session.cache, packages, read)

    # -- documents -----------------------------------------------------------------------

    def inventory(
        self, system: System, resolution: Resolution, digest: Digest | None, version: str
    ) -> ImageInventory:
        """The image's inventory; ``digest`` None: the copy inside the image (no sources)."""
        sources = () if digest is None else self.sources(resolution)
        codename = (
            resolution.sources[0].codename
            if resolution.sources
            else self.session.config.repository.suite
        )
        chosen = [self.facts[p.record.sha256] for p in resolution.packages]
        os = operating_system(chosen, codename)
        roots = {self.container.package, *self.container.packages}
        closure = [
            (
                p.record.sha256,
                deb_url(resolution, p) if digest is not None else None,
                p.record.name in roots,
            )
            for p in resolution.packages
        ]
        return ImageInventory(
            container=self.container.name,
            system=system,
            digest=digest,
            version=version,
            created=self.epoch,
            os=os,
            packages=inventory_packages(closure, self.facts, os.distro),
            sources=sources,
        )

    def sources(self, resolution: Resolution) -> tuple[ArchiveSource, ...]:
        """The archives the packages came from: main, updates, security, ... as read.

        A ``--locked`` build verified no InRelease, so it names none (the lock,
        which records each one's hash, is in the provenance).
        """
        locked = self.session.lock is not None
        return tuple(
            ArchiveSource(
                s.url,
                s.suite,
                s.codename,
                None if locked else s.release_file,
                None if locked else s.release_sha256,
            )
            for s in resolution.sources
        )

    def dependencies(self, image: SystemImage) -> list[ResolvedDependency]:
        """The provenance's resolved dependencies: Release files, indexes, .debs, the lock."""
        found: list[ResolvedDependency] = []
        for archive in self.sources(image.resolution):
            if archive.release_url and archive.release_sha256:
                annotations = (("suite", archive.suite), ("codename", archive.codename))
                found.append(
                    ResolvedDependency(
                        archive.release_url,
                        archive.release_sha256,
                        archive.release_file,
                        annotations,
                    )
                )
        for source in image.resolution.sources:
            for path, sha256 in source.indexes:
                url = f"{source.url}/dists/{source.suite}/{path}"
                found.append(ResolvedDependency(url, sha256))
        for p in sorted(image.resolution.packages, key=lambda p: (p.record.name, p.record.sha256)):
            found.append(
                ResolvedDependency(
                    deb_url(image.resolution, p),
                    p.record.sha256,
                    p.record.filename.rsplit("/", 1)[-1],
                )
            )
        if self.session.lock is not None:
            from polyarch.lock import lock_path

            lock = lock_path(self.session.config)
            lock_sha256 = sha256_digest(lock.read_bytes()).removeprefix("sha256:")
            found.append(ResolvedDependency(f"file:{lock.name}", lock_sha256, lock.name))
        return found

    def documents(self, image: SystemImage) -> dict[EvidenceKind, dict[str, Any]]:
        """The SPDX document, CycloneDX BOM and provenance statement of one image."""
        from polyarch.attest.cyclonedx import cyclonedx_bom

        inventory = self.inventory(image.system, image.resolution, image.digest, image.version)
        provenance = provenance_statement(
            subject_name=self.container.name,
            digest=image.digest,
            container=self.container,
            repository=self.session.config.repository,
            sources=self.session.config.sources,
            system=image.system,
            dependencies=self.dependencies(image),
            epoch=self.epoch,
            locked=self.session.lock is not None,
            layer_format=LAYER_FORMAT_VERSION,
        )
        return {
            "spdx": spdx_document(inventory),
            "cdx": cyclonedx_bom(inventory),
            "provenance": provenance,
        }

    def files(
        self, images: Sequence[SystemImage], sign_key: SigningKey | None = None
    ) -> dict[str, bytes]:
        """``OUT/NAME/sbom/``'s files: file name → bytes."""
        files: dict[str, bytes] = {}
        for image in images:
            documents = self.documents(image)
            for kind in EVIDENCE_KINDS:
                files[evidence_name(image.system, kind)] = pretty_json(documents[kind])
            if sign_key is not None:
                for kind, envelope in signed_statements(
                    self.container.name, image.digest, documents, sign_key
                ).items():
                    files[evidence_name(image.system, kind, signed=True)] = envelope
        return files

    # -- the SPDX document inside the image --------------------------------------------

    def sbom_layer(self, system: System, resolution: Resolution, version: str) -> Layer:
        """One more layer holding ``/var/lib/db/sbom/NAME.spdx.json`` (no digest, no sources)."""
        document = spdx_document(self.inventory(system, resolution, None, version))
        directories = ["/var", "/var/lib", "/var/lib/db", SBOM_IN_IMAGE_DIR]
        entries = [DebEntry(d, "dir", 0o755) for d in directories]
        path = f"{SBOM_IN_IMAGE_DIR}/{self.container.name}.spdx.json"
        entries.append(DebEntry(path, "file", 0o644, data=pretty_json(document)))
        buffer = io.BytesIO()  # one small file: in memory
        write_tar(entries, self.epoch, buffer)
        tar = buffer.getvalue()
        blob = gzip_bytes(tar)
        digest = sha256_digest(blob)
        stored = self.session.cache.put(Kind.BLOBS, digest.removeprefix("sha256:"), blob)
        return Layer(
            digest=digest,
            diff_id=sha256_digest(tar),
            size=len(blob),
            uncompressed_size=len(tar),
            blob=stored,
            packages=(SBOM_LAYER_NAME,),
        )


def signed_statements(
    subject_name: str,
    digest: Digest,
    documents: Mapping[EvidenceKind, dict[str, Any]],
    key: SigningKey,
) -> dict[EvidenceKind, bytes]:
    """Each document as an in-toto statement about ``digest`` in a DSSE envelope (file bytes).

    The provenance already is a statement; the SBOMs become the predicate of one.
    """
    from polyarch.attest.dsse import sign_envelope

    signed: dict[EvidenceKind, bytes] = {}
    for kind in EVIDENCE_KINDS:
        document = documents[kind]
        if kind != "provenance":
            document = statement(subject_name, digest, PREDICATE_OF[kind], document)
        signed[kind] = sign_envelope(canonical_json(document), key).to_json()
    return signed


def deb_url(resolution: Resolution, package: ResolvedPackage) -> str:
    """Where ``package``'s .deb is downloaded from: its own source's archive."""
    source = resolution.source(package.source)
    base = source.url if source is not None else ""
    return f"{base}/{package.record.filename.lstrip('/')}"
