"""SLSA v1 provenance of one image: what was built, from which inputs, by what.

``buildType`` (``names.BUILD_TYPE``, described in docs/SUPPLY-CHAIN.md) is a
polyarch build: the container's entry of containers.toml and the system are
the external parameters; every .deb (URL + SHA256), the signed Release file
read (InRelease SHA256) and, for a ``--locked`` build, containers.lock are
the resolved dependencies. SLSA v1 dropped v0.2's ``metadata.reproducible``;
polyarch states it in ``internalParameters`` (``reproducible: true`` with the
SOURCE_DATE_EPOCH and layer format that make the bytes), and the build type's
documentation says what it promises: the same parameters and dependencies
give the same image digest. No timestamps and no invocation id: those would
make two identical builds disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from polyarch import __version__
from polyarch.attest.names import BUILD_TYPE, BUILDER_ID, PREDICATE_SLSA
from polyarch.attest.statement import statement
from polyarch.config import Container, RepositoryConfig
from polyarch.config_sources import SourceSpec
from polyarch.determinism import Digest
from polyarch.platforms import System


@dataclass(frozen=True, slots=True)
class ResolvedDependency:
    """One input of the build, as a SLSA ResourceDescriptor."""

    uri: str
    sha256: str
    name: str | None = None
    annotations: tuple[tuple[str, str], ...] = ()

    def as_json(self) -> dict[str, Any]:
        value: dict[str, Any] = {"uri": self.uri, "digest": {"sha256": self.sha256}}
        if self.name:
            value["name"] = self.name
        if self.annotations:
            value["annotations"] = dict(self.annotations)
        return value


def container_parameters(container: Container) -> dict[str, Any]:
    """The container's entry of containers.toml with defaults applied, as built.

    Registries, tags and tests are left out: they decide where an image goes
    and how it is checked, not what it is (and a registry may hold a password).
    """
    return {
        "name": container.name,
        "package": container.package,
        "command": container.command,
        "packages": list(container.packages),
        "systems": [s.name for s in container.systems],
        "base": list(container.base),
        "exclude": list(container.exclude),
        "prefer": list(container.prefer),
        "keep_docs": container.keep_docs,
        "max_layers": container.max_layers,
        # With "shared", which packages share a layer also follows the project's other
        # containers (workflows.sharing); the layer digests record the outcome.
        "layering": container.layering,
        "env": dict(container.env),
        "labels": dict(container.labels),
        "workdir": container.workdir,
        "user": container.user,
        "description": container.description,
        "sbom_in_image": container.sbom_in_image,
        "pins": dict(container.pins),
    }


def repository_parameters(repository: RepositoryConfig) -> dict[str, Any]:
    """What of ``[repository]`` chose the packages (the mirror URL is in the dependencies)."""
    return {
        "suite": repository.suite,
        "components": list(repository.components),
        "snapshot": repository.snapshot,
    }


def source_parameters(source: SourceSpec) -> dict[str, Any]:
    """What of a source chose the packages (its URL, where one was read, is in the dependencies)."""
    return {
        "name": source.name,
        "suite": source.suite,
        "components": list(source.components),
        "snapshot": source.snapshot,
        "priority": source.priority,
    }


def provenance_statement(
    *,
    subject_name: str,
    digest: Digest,
    container: Container,
    repository: RepositoryConfig,
    sources: Sequence[SourceSpec] = (),
    system: System,
    dependencies: Sequence[ResolvedDependency],
    epoch: int,
    locked: bool,
    layer_format: int,
) -> dict[str, Any]:
    """The in-toto statement carrying the SLSA v1 provenance of one system image."""
    predicate = {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "container": container_parameters(container),
                "repository": repository_parameters(repository),
                "sources": [source_parameters(s) for s in sources],
                "system": system.name,
                "locked": locked,
            },
            "internalParameters": {
                "reproducible": True,
                "sourceDateEpoch": epoch,
                "layerFormat": layer_format,
                "platform": system.oci_platform,
            },
            "resolvedDependencies": [d.as_json() for d in dependencies],
        },
        "runDetails": {"builder": {"id": BUILDER_ID, "version": {"polyarch": __version__}}},
    }
    return statement(subject_name, digest, PREDICATE_SLSA, predicate)
