"""Every media type polyarch writes or reads, in one table (as go-containerregistry's types.go).

OCI names are what polyarch writes; the Docker schema 2 twins are read from
other tools' files and written by ``--format docker``. The ``vnd.polyarch``
types name the entries of a cache artifact (``polyarch cache push``). The
supply-chain types (SBOMs, in-toto statements, DSSE envelopes) are the
``artifactType`` and layer types of the OCI 1.1 artifacts ``polyarch manifest
--push`` attaches to each image (docs/SUPPLY-CHAIN.md).
"""

from __future__ import annotations

from typing import Final

OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
OCI_LAYER: Final = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_FOREIGN_GZIP: Final = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_EMPTY: Final = "application/vnd.oci.empty.v1+json"
"""The config of an artifact that needs none (image-spec 1.1)."""

DOCKER_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER: Final = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP: Final = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_GZIP: Final = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

INDEX_TYPES: Final = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES: Final = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})

OCI_TO_DOCKER: Final = {
    OCI_INDEX: DOCKER_LIST,
    OCI_MANIFEST: DOCKER_MANIFEST,
    OCI_CONFIG: DOCKER_CONFIG,
    OCI_LAYER: DOCKER_LAYER,
    OCI_LAYER_GZIP: DOCKER_LAYER_GZIP,
    OCI_FOREIGN_GZIP: DOCKER_FOREIGN_GZIP,
}
DOCKER_TO_OCI: Final = {docker: oci for oci, docker in OCI_TO_DOCKER.items()}

DEBIAN_PACKAGE: Final = "application/vnd.debian.binary-package"
POLYARCH_CACHE: Final = "application/vnd.polyarch.cache.v1"
"""``artifactType`` of a cache artifact."""
POLYARCH_LAYER_RECORD: Final = "application/vnd.polyarch.layer.v1+json"
POLYARCH_PACKAGES_INDEX: Final = "application/vnd.polyarch.packages.v1+msgpack"
POLYARCH_CONTENTS_INDEX: Final = "application/vnd.polyarch.contents.v1+msgpack"
POLYARCH_PACKAGE_FACTS: Final = "application/vnd.polyarch.package-facts.v1+json"

SPDX_JSON: Final = "application/spdx+json"
CYCLONEDX_JSON: Final = "application/vnd.cyclonedx+json"
IN_TOTO_JSON: Final = "application/vnd.in-toto+json"
"""An in-toto statement; also the ``payloadType`` of a DSSE envelope that carries one."""
DSSE_ENVELOPE: Final = "application/vnd.dsse.envelope.v1+json"
