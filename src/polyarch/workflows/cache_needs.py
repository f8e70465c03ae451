"""What a shard's builds take from the cache: ``cache pull --for NAME... --system S``.

From containers.lock alone (no network): each layer a build of these
containers and systems would look up (its key, as ``image.layers`` computes
it), and the SBOM facts of every package of their closures. The blobs those
layer records name are known once the records are read (``cache_transfer``
takes them second). ``.deb``s are wanted only for layers the shared cache
lacks: a layer that is there needs no package read at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from polyarch.cache import Kind
from polyarch.config import Container
from polyarch.determinism import source_date_epoch
from polyarch.errors import LockError
from polyarch.image.layers import layer_key
from polyarch.platforms import System
from polyarch.workflows.build import layer_plans
from polyarch.workflows.resolve import Session, resolve_container


@dataclass(frozen=True, slots=True)
class Needs:
    """The entries some builds look up: layer keys (with the .debs each one is made of)
    and the packages whose facts their SBOMs need."""

    layers: Mapping[str, frozenset[str]]
    """Layer key → sha256s of the packages the layer is built from."""
    facts: frozenset[str]

    def wanted(self, listed: Mapping[tuple[Kind, str], object]) -> set[tuple[Kind, str]]:
        """Of ``listed`` (a cache family's entries), those to pull first; blobs come later,
        from the records."""
        found = {(Kind.LAYERS, k) for k in self.layers} | {(Kind.FACTS, k) for k in self.facts}
        for key, debs in self.layers.items():
            if (Kind.LAYERS, key) not in listed:
                found |= {(Kind.DEBS, sha256) for sha256 in debs}
        return {entry for entry in found if entry in listed}


def needs_of(
    session: Session, containers: Sequence[Container], systems: Sequence[System] | None
) -> Needs:
    """What building ``containers`` for ``systems`` (None: each one's own) looks up.

    Needs containers.lock in ``session`` (``--locked``): a shard builds what was
    planned, and only the lock says exactly what that is.
    """
    if session.lock is None:
        raise LockError(
            "cache pull --for reads the closures from containers.lock",
            hint="run `polyarch lock` (the plan job of a distributed build does), then pull",
        )
    epoch = source_date_epoch()
    layers: dict[str, frozenset[str]] = {}
    facts: set[str] = set()
    for container in containers:
        chosen = [s for s in container.systems if systems is None or s in systems]
        resolutions = resolve_container(session, container, chosen)
        for resolution in resolutions.values():
            facts |= {p.record.sha256 for p in resolution.packages}
        for plan in layer_plans(session, container, resolutions).values():
            closure = [p for layer in plan for p in layer.packages]
            for layer in plan:
                key = layer_key(layer, closure, epoch=epoch, keep_docs=container.keep_docs)
                packages = closure if layer.generated else layer.packages
                layers[key] = frozenset(sha256 for _name, sha256 in packages)
    return Needs(layers, frozenset(facts))
