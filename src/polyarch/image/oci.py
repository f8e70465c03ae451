"""OCI image config, manifest and index: the JSON that turns layers into images.

Every document is encoded with ``determinism.canonical_json``, so the same
layers and settings give the same bytes and therefore the same digests on any
machine. Field names follow the OCI image-spec v1 (config.md, manifest.md,
image-index.md, annotations.md).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from polyarch import media_types
from polyarch.determinism import (
    COMPRESSOR,
    DIGEST_PATTERN,
    Digest,
    canonical_json,
    sha256_digest,
)
from polyarch.errors import ImageError
from polyarch.platforms import SYSTEMS, System, system_for_platform

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""PATH of every image: Debian's root PATH, the one docker's own images use."""

ANNOTATION_TITLE = "org.opencontainers.image.title"
ANNOTATION_VERSION = "org.opencontainers.image.version"
ANNOTATION_CREATED = "org.opencontainers.image.created"
ANNOTATION_DESCRIPTION = "org.opencontainers.image.description"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_REVISION = "org.opencontainers.image.revision"
ANNOTATION_SOURCE = "org.opencontainers.image.source"
ANNOTATION_LICENSES = "org.opencontainers.image.licenses"
ANNOTATION_COMPRESSOR = "dev.polyarch.layer.compressor"
"""What compressed the layers (``determinism.COMPRESSOR``): their digests depend on it."""


class LayerLike(Protocol):
    """What an image needs of a layer (``polyarch.image.layers.Layer`` has it)."""

    @property
    def digest(self) -> Digest: ...
    @property
    def diff_id(self) -> Digest: ...
    @property
    def size(self) -> int: ...
    @property
    def uncompressed_size(self) -> int: ...
    @property
    def blob(self) -> Path: ...
    @property
    def packages(self) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class Platform:
    """An OCI platform: what a manifest in an index runs on."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def of_system(cls, system: System) -> Platform:
        return cls(system.oci_os, system.oci_architecture, system.oci_variant)

    @classmethod
    def of_config(cls, config: Mapping[str, Any]) -> Platform | None:
        """The platform an image config names, or None if it names no os/architecture."""
        os_, arch, variant = config.get("os"), config.get("architecture"), config.get("variant")
        if not isinstance(os_, str) or not isinstance(arch, str) or not os_ or not arch:
            return None
        return cls(os_, arch, variant if isinstance(variant, str) and variant else None)

    @property
    def system(self) -> System | None:
        """The polyarch system of this platform, or None if polyarch has none for it."""
        return system_for_platform(self.os, self.architecture, self.variant)

    def key(self) -> tuple[str, str, str | None]:
        """Equal for platforms that are the same (arm64 without variant is arm64/v8)."""
        variant = self.variant
        if self.architecture == "arm64" and variant in (None, "v8"):
            variant = None
        return (self.os, self.architecture, variant)

    def as_json(self) -> dict[str, str]:
        """The OCI ``platform`` object; ``variant`` only when there is one."""
        value = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            value["variant"] = self.variant
        return value

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base


def platform_of(system: System) -> dict[str, str]:
    """The OCI ``platform`` object of a system; ``variant`` only when it has one."""
    return Platform.of_system(system).as_json()


def history_created_by(packages: Sequence[str]) -> str:
    """The ``created_by`` of a layer's history entry: which packages it holds."""
    return "polyarch: " + (" ".join(packages) if packages else "image filesystem")


def _environment(env: Sequence[tuple[str, str]]) -> list[str]:
    """PATH first, then the container's variables sorted by name.

    A container that sets PATH itself replaces the default (still first).
    """
    seen: dict[str, str] = {}
    for key, value in env:
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise ImageError(
                f"environment variable name {key!r} is not valid",
                hint="use a non-empty name without '=' in containers.toml env",
            )
        if key in seen:
            raise ImageError(
                f"environment variable {key!r} is set twice", hint="keep one in containers.toml env"
            )
        seen[key] = value
    path = seen.pop("PATH", DEFAULT_PATH)
    return [f"PATH={path}", *(f"{k}={seen[k]}" for k in sorted(seen))]


def image_config(
    system: System,
    layers: Sequence[LayerLike],
    *,
    entrypoint: str | Sequence[str],
    env: Sequence[tuple[str, str]] = (),
    workdir: str | None = None,
    user: str | None = None,
    labels: Sequence[tuple[str, str]] = (),
    created: str,
    cmd: Sequence[str] | None = None,
) -> bytes:
    """The OCI image config (canonical JSON) of one system's image.

    ``entrypoint`` is the command's absolute path inside the image (or that
    path and fixed arguments), so the image runs without a shell or PATH
    lookup. Without ``cmd`` there is no ``Cmd``, so ``docker run IMAGE --help``
    passes ``--help`` to the tool; ``cmd`` holds default arguments that any
    given on the command line replace. ``created`` is an RFC 3339 time
    (``determinism.rfc3339`` of the build epoch).
    """
    program = [entrypoint] if isinstance(entrypoint, str) else list(entrypoint)
    if not program or not posixpath.isabs(program[0]):
        raise ImageError(
            f"entrypoint {program[:1]!r} is not an absolute path",
            hint="resolve the command to its path inside the image first",
        )
    if workdir is not None and not posixpath.isabs(workdir):
        raise ImageError(
            f"workdir {workdir!r} is not an absolute path", hint='use e.g. workdir = "/work"'
        )
    if not layers:
        raise ImageError("an image needs at least one layer", hint="check the package closure")
    label_map = dict(labels)
    if len(label_map) != len(labels):
        raise ImageError("a label is set twice", hint="keep one of each in containers.toml labels")
    runtime: dict[str, Any] = {"Entrypoint": program, "Env": _environment(env)}
    if cmd is not None:
        runtime["Cmd"] = list(cmd)
    if workdir is not None:
        runtime["WorkingDir"] = workdir
    if user is not None:
        runtime["User"] = user
    if label_map:
        runtime["Labels"] = label_map
    document: dict[str, Any] = {
        **platform_of(system),
        "config": runtime,
        "created": created,
        "history": [
            {"created": created, "created_by": history_created_by(layer.packages)}
            for layer in layers
        ],
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
    }
    return canonical_json(document)


def _descriptor(media_type: str, data_digest: Digest, size: int, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": data_digest, "size": size, **extra}


def image_manifest(
    config: bytes, layers: Sequence[LayerLike], annotations: Mapping[str, str] | None = None
) -> bytes:
    """The OCI image manifest (canonical JSON): config descriptor, gzip layer descriptors."""
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_types.OCI_MANIFEST,
        "config": _descriptor(media_types.OCI_CONFIG, sha256_digest(config), len(config)),
        "layers": [_descriptor(media_types.OCI_LAYER_GZIP, la.digest, la.size) for la in layers],
    }
    if annotations:
        document["annotations"] = dict(annotations)
    return canonical_json(document)


def image_index(
    entries: Sequence[tuple[System, bytes]], annotations: Mapping[str, str] | None = None
) -> bytes:
    """The OCI image index (canonical JSON) over one manifest per system.

    Entries are ordered by the system table (``platforms.SYSTEMS``: x86_64,
    aarch64, armv7l, ...), not by the caller's order, so the index digest does
    not depend on the order systems are listed in containers.toml.
    """
    if not entries:
        raise ImageError("an image index needs at least one system", hint="build a system first")
    order = {system.name: i for i, system in enumerate(SYSTEMS)}
    names = [system.name for system, _ in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ImageError(
            f"system {duplicates[0]} appears twice in one index", hint="build each system once"
        )
    manifests = [
        _descriptor(
            media_types.OCI_MANIFEST,
            sha256_digest(manifest),
            len(manifest),
            platform=platform_of(system),
        )
        for system, manifest in sorted(entries, key=lambda e: order[e[0].name])
    ]
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_types.OCI_INDEX,
        "manifests": manifests,
    }
    if annotations:
        document["annotations"] = dict(annotations)
    return canonical_json(document)


def image_annotations(
    *,
    title: str,
    version: str,
    created: str,
    description: str | None = None,
    extra: Sequence[tuple[str, str]] = (),
) -> dict[str, str]:
    """The ``org.opencontainers.image.*`` annotations of a tool image (manifest and index).

    ``version`` is the tool package's Debian version; ``created`` the same
    RFC 3339 time as the configs'. ``dev.polyarch.layer.compressor`` names
    what compressed the layers, since their digests depend on it. ``extra``
    (containers.toml ``annotations``) is laid over them: a key the user sets is
    the user's value.
    """
    annotations = {
        ANNOTATION_TITLE: title,
        ANNOTATION_VERSION: version,
        ANNOTATION_CREATED: created,
        ANNOTATION_COMPRESSOR: COMPRESSOR,
    }
    if description:
        annotations[ANNOTATION_DESCRIPTION] = description
    annotations.update(extra)
    return annotations


def index_annotations(manifests: Sequence[tuple[System, bytes]]) -> dict[str, str]:
    """The annotations of a container's index: those of its first system's manifest.

    First in the system table's order, as the index lists them. One rule for a
    local build and for ``manifest --assemble``, which has only the manifests
    the shards pushed: that is what makes both give the same index digest.
    """
    if not manifests:
        raise ImageError("an image index needs at least one system", hint="build a system first")
    order = {system.name: i for i, system in enumerate(SYSTEMS)}
    _system, first = min(manifests, key=lambda m: order[m[0].name])
    annotations = parse_json_object(first, "image manifest").get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise ImageError("image manifest annotations are not strings", hint="rebuild the image")
    return dict(annotations)


@dataclass(frozen=True, slots=True)
class Image:
    """One system's image: its config and manifest bytes, and the layers they name."""

    system: System
    config: bytes
    manifest: bytes
    layers: tuple[LayerLike, ...]

    @property
    def manifest_digest(self) -> Digest:
        return sha256_digest(self.manifest)

    @property
    def config_digest(self) -> Digest:
        return sha256_digest(self.config)

    @property
    def size(self) -> int:
        """Compressed size: layers plus config (what a registry stores for it)."""
        return sum(layer.size for layer in self.layers) + len(self.config)

    @property
    def uncompressed_size(self) -> int:
        return sum(layer.uncompressed_size for layer in self.layers)


def build_image(
    system: System,
    layers: Sequence[LayerLike],
    *,
    entrypoint: str | Sequence[str],
    created: str,
    env: Sequence[tuple[str, str]] = (),
    workdir: str | None = None,
    user: str | None = None,
    labels: Sequence[tuple[str, str]] = (),
    annotations: Mapping[str, str] | None = None,
    cmd: Sequence[str] | None = None,
) -> Image:
    """Config and manifest of ``layers`` for ``system``, as one ``Image`` value."""
    config = image_config(
        system,
        layers,
        entrypoint=entrypoint,
        env=env,
        workdir=workdir,
        user=user,
        labels=labels,
        created=created,
        cmd=cmd,
    )
    manifest = image_manifest(config, layers, annotations)
    return Image(system=system, config=config, manifest=manifest, layers=tuple(layers))


def build_index(images: Sequence[Image], annotations: Mapping[str, str] | None = None) -> bytes:
    """The image index over ``images`` (see ``image_index`` for the order)."""
    return image_index([(image.system, image.manifest) for image in images], annotations)


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor read back from an index or manifest."""

    media_type: str
    digest: Digest
    size: int
    platform: Platform | None = None
    annotations: tuple[tuple[str, str], ...] = ()

    def annotation(self, key: str) -> str | None:
        return dict(self.annotations).get(key)


def parse_descriptor(value: object, where: str) -> Descriptor:
    """A descriptor from decoded JSON, or ImageError naming ``where``."""
    if not isinstance(value, dict):
        raise ImageError(f"{where}: descriptor is not an object", hint="rebuild the image")
    media_type, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
    if not isinstance(media_type, str):
        raise ImageError(f"{where}: descriptor has no mediaType", hint="rebuild the image")
    if not isinstance(digest, str) or not DIGEST_PATTERN.fullmatch(digest):
        raise ImageError(
            f"{where}: digest {digest!r} is not sha256:<hex>", hint="rebuild the image"
        )
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ImageError(f"{where}: size {size!r} is not a byte count", hint="rebuild the image")
    platform = None
    raw_platform = value.get("platform")
    if isinstance(raw_platform, dict):
        os_, arch, variant = (raw_platform.get(k) for k in ("os", "architecture", "variant"))
        if not isinstance(os_, str) or not isinstance(arch, str):
            raise ImageError(f"{where}: platform lacks os/architecture", hint="rebuild the image")
        platform = Platform(os_, arch, variant if isinstance(variant, str) else None)
    raw_annotations = value.get("annotations") or {}
    if not isinstance(raw_annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw_annotations.items()
    ):
        raise ImageError(f"{where}: annotations are not strings", hint="rebuild the image")
    return Descriptor(
        media_type, Digest(digest), size, platform, tuple(sorted(raw_annotations.items()))
    )


def parse_json_object(data: bytes, what: str) -> dict[str, Any]:
    """Decode a JSON object read back from disk, or ImageError naming ``what``."""
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImageError(f"{what} is not valid JSON: {exc}", hint="rebuild the image") from None
    if not isinstance(value, dict):
        raise ImageError(f"{what} is not a JSON object", hint="rebuild the image")
    return value
