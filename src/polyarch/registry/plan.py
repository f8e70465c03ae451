"""Read an OCI image layout into what a push sends, and convert it to Docker media types.

A push sends blobs (configs, layers) from their files, then manifests, children
before parents, then the root (an index, or a single manifest) by tag. In OCI
format the manifest bytes are the layout's own; in Docker format they are
re-encoded with Docker media types (new bytes, so new digests).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from polyarch import media_types
from polyarch.determinism import Digest, canonical_json, sha256_digest
from polyarch.errors import ImageError
from polyarch.image.layout_reader import read_oci_layout
from polyarch.image.oci import ANNOTATION_REF_NAME
from polyarch.platforms import System
from polyarch.reference import DEFAULT_TAG

Format = Literal["oci", "docker"]


@dataclass(frozen=True, slots=True)
class Blob:
    """A config or layer: sent from ``path``, which must hash to ``digest``."""

    digest: Digest
    size: int
    media_type: str
    path: Path


@dataclass(frozen=True, slots=True)
class Manifest:
    """A manifest or index: ``data`` is exactly the bytes digested and sent."""

    digest: Digest
    media_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class PushPlan:
    blobs: tuple[Blob, ...]
    manifests: tuple[Manifest, ...]
    """Children before parents; the root is last."""
    tag: str | None
    """The root's ``org.opencontainers.image.ref.name`` in index.json, if any."""

    @property
    def root(self) -> Manifest:
        return self.manifests[-1]


def read_layout(layout: Path, tag: str | None = None) -> PushPlan:
    """What pushing ``layout`` sends. ``tag`` picks an index.json entry by ref name.

    Manifests are read and their digests verified here; large blobs are checked
    for existence and size here and hashed while they are sent.
    """
    opened = read_oci_layout(layout)
    entries = list(opened.entries)
    if tag is not None:
        entries = [e for e in entries if e.annotation(ANNOTATION_REF_NAME) == tag] or entries
    if len(entries) != 1:
        names = sorted(str(e.annotation(ANNOTATION_REF_NAME)) for e in entries)
        raise ImageError(
            f"{layout}/index.json has {len(entries)} entries, expected one",
            hint=f"name the tag to push; entries: {', '.join(names) or 'none'}",
        )
    entry = entries[0]
    blobs: dict[Digest, Blob] = {}
    manifests: dict[Digest, Manifest] = {}
    for node in opened.walk(entry):
        if node.config is not None:
            for d in (node.config, *node.layers):
                if d.digest not in blobs:
                    blobs[d.digest] = Blob(d.digest, d.size, d.media_type, opened.checked_blob(d))
        manifests.setdefault(node.digest, Manifest(node.digest, node.media_type, node.data))
    return PushPlan(
        tuple(blobs.values()), tuple(manifests.values()), entry.annotation(ANNOTATION_REF_NAME)
    )


def read_image(layout: Path, system: System) -> PushPlan:
    """What pushing one system's image of ``layout`` sends: its config and layers, then
    its manifest (the root, no index). The manifest's bytes are the layout's own."""
    opened = read_oci_layout(layout)
    image = opened.image(opened.tags[0] if opened.tags else DEFAULT_TAG, system)
    blobs = tuple(
        Blob(d.digest, d.size, d.media_type, opened.checked_blob(d))
        for d in dict.fromkeys((image.config, *image.layers))
    )
    root = Manifest(image.manifest.digest, image.manifest.media_type, image.manifest_bytes)
    return PushPlan(blobs, (root,), None)


def convert_plan(plan: PushPlan, fmt: Format) -> PushPlan:
    """The plan with every media type in ``fmt``; unchanged (same bytes) if already so.

    Docker schema 2 has no annotations, so they are dropped when converting to it.
    """
    table = media_types.OCI_TO_DOCKER if fmt == "docker" else media_types.DOCKER_TO_OCI
    if not any(_needs_conversion(m, table) for m in plan.manifests):
        return plan
    renamed: dict[str, Manifest] = {}
    out: list[Manifest] = []
    for m in plan.manifests:
        doc = json.loads(m.data)
        doc["mediaType"] = _convert_type(doc.get("mediaType") or m.media_type, table, m.digest)
        if fmt == "docker":
            doc.pop("annotations", None)
            doc.pop("artifactType", None)
            doc.pop("subject", None)
        children = doc.get("manifests") if "manifests" in doc else None
        if children is not None:
            for child in children:
                new = renamed[child["digest"]]
                child.update(digest=new.digest, size=len(new.data), mediaType=new.media_type)
                if fmt == "docker":
                    child.pop("annotations", None)
        else:
            for d in [doc["config"], *doc.get("layers", [])]:
                d["mediaType"] = _convert_type(d.get("mediaType", ""), table, m.digest)
                if fmt == "docker":
                    d.pop("annotations", None)
        data = canonical_json(doc)
        new = Manifest(sha256_digest(data), doc["mediaType"], data)
        renamed[m.digest] = new
        out.append(new)
    return replace(plan, manifests=tuple(out))


def _needs_conversion(m: Manifest, table: Mapping[str, str]) -> bool:
    if m.media_type in table:
        return True
    doc = json.loads(m.data)
    descs = doc.get("manifests") or [doc.get("config"), *doc.get("layers", [])]
    return any(isinstance(d, dict) and d.get("mediaType") in table for d in descs)


def _convert_type(media_type: str, table: Mapping[str, str], where: str) -> str:
    if media_type in table:
        return table[media_type]
    if media_type in table.values():
        return media_type
    raise ImageError(
        f"{where} uses media type {media_type!r}, which has no equivalent in the other format",
        hint="push with --format oci",
    )
