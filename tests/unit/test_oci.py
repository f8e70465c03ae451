"""Image config, manifest and index: the right platform, entrypoint, env and digests, canonically encoded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import deflate
import pytest
from imagekit import make_layer

from polyarch.determinism import (
    COMPRESSOR,
    canonical_json,
    rfc3339,
    sha256_digest,
)
from polyarch.errors import ImageError
from polyarch.image.layers import Layer
from polyarch.image.oci import (
    DEFAULT_PATH,
    build_image,
    build_index,
    image_annotations,
    image_config,
    image_index,
    image_manifest,
    parse_descriptor,
)
from polyarch.media_types import OCI_CONFIG as MEDIA_TYPE_CONFIG
from polyarch.media_types import OCI_INDEX as MEDIA_TYPE_INDEX
from polyarch.media_types import OCI_LAYER_GZIP as MEDIA_TYPE_LAYER_GZIP
from polyarch.media_types import OCI_MANIFEST as MEDIA_TYPE_MANIFEST
from polyarch.platforms import parse_system

X86 = parse_system("x86_64-linux")
ARM64 = parse_system("aarch64-linux")
ARMHF = parse_system("armv7l-linux")
CREATED = rfc3339(1_700_000_000)


@pytest.fixture
def layers(tmp_path: Path) -> list[Layer]:
    return [
        make_layer(tmp_path, {"usr/bin/bash": b"bash"}, ("libc6", "bash")),
        make_layer(tmp_path, {"usr/bin/fdfind": b"fd"}, ("fd-find",)),
    ]


def config_of(system: Any, layers: list[Layer], **kwargs: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {"entrypoint": "/usr/bin/fdfind", "created": CREATED}
    settings.update(kwargs)
    return json.loads(image_config(system, layers, **settings))  # type: ignore[no-any-return]


def test_x86_64_config_is_linux_amd64_without_variant(layers: list[Layer]) -> None:
    config = config_of(X86, layers)
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    assert "variant" not in config


def test_aarch64_config_is_linux_arm64_variant_v8(layers: list[Layer]) -> None:
    config = config_of(ARM64, layers)
    assert (config["os"], config["architecture"], config["variant"]) == ("linux", "arm64", "v8")


def test_entrypoint_is_the_command_path_and_there_is_no_cmd(layers: list[Layer]) -> None:
    runtime = config_of(X86, layers)["config"]
    assert runtime["Entrypoint"] == ["/usr/bin/fdfind"]
    assert "Cmd" not in runtime


def test_relative_entrypoint_is_refused(layers: list[Layer]) -> None:
    with pytest.raises(ImageError, match="not an absolute path"):
        image_config(X86, layers, entrypoint="fdfind", created=CREATED)


def test_env_is_path_first_then_container_env_sorted_by_name(layers: list[Layer]) -> None:
    env = config_of(X86, layers, env=[("TERM", "dumb"), ("LANG", "C.UTF-8")])["config"]["Env"]
    assert env == [f"PATH={DEFAULT_PATH}", "LANG=C.UTF-8", "TERM=dumb"]
    assert DEFAULT_PATH == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def test_container_path_replaces_the_default_path(layers: list[Layer]) -> None:
    env = config_of(X86, layers, env=[("A", "1"), ("PATH", "/opt/bin:/usr/bin")])["config"]["Env"]
    assert env == ["PATH=/opt/bin:/usr/bin", "A=1"]


@pytest.mark.parametrize("env", [[("A", "1"), ("A", "2")], [("A=B", "1")], [("", "x")]])
def test_duplicate_or_malformed_env_is_refused(layers: list[Layer], env: list[Any]) -> None:
    with pytest.raises(ImageError, match="environment variable"):
        image_config(X86, layers, entrypoint="/bin/x", env=env, created=CREATED)


def test_workdir_user_and_labels_are_set_when_given(layers: list[Layer]) -> None:
    runtime = config_of(
        X86, layers, workdir="/work", user="65534:65534", labels=[("b", "2"), ("a", "1")]
    )["config"]
    assert runtime["WorkingDir"] == "/work"
    assert runtime["User"] == "65534:65534"
    assert runtime["Labels"] == {"a": "1", "b": "2"}


def test_workdir_user_and_labels_are_absent_when_not_given(layers: list[Layer]) -> None:
    runtime = config_of(X86, layers)["config"]
    assert not {"WorkingDir", "User", "Labels"} & runtime.keys()


def test_diff_ids_and_history_follow_the_layers_in_order(layers: list[Layer]) -> None:
    config = config_of(X86, layers)
    assert config["rootfs"] == {"type": "layers", "diff_ids": [la.diff_id for la in layers]}
    assert config["history"] == [
        {"created": CREATED, "created_by": "polyarch: libc6 bash"},
        {"created": CREATED, "created_by": "polyarch: fd-find"},
    ]
    assert config["created"] == CREATED


def test_diff_id_is_sha256_of_the_uncompressed_layer(layers: list[Layer]) -> None:
    import gzip

    for layer in layers:
        assert sha256_digest(gzip.decompress(layer.blob.read_bytes())) == layer.diff_id


def test_manifest_describes_config_and_gzip_layers(layers: list[Layer]) -> None:
    config = image_config(X86, layers, entrypoint="/usr/bin/fdfind", created=CREATED)
    manifest = json.loads(image_manifest(config, layers, {"org.example": "x"}))
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == MEDIA_TYPE_MANIFEST
    assert manifest["config"] == {
        "mediaType": MEDIA_TYPE_CONFIG,
        "digest": sha256_digest(config),
        "size": len(config),
    }
    assert manifest["layers"] == [
        {"mediaType": MEDIA_TYPE_LAYER_GZIP, "digest": la.digest, "size": la.size} for la in layers
    ]
    assert manifest["annotations"] == {"org.example": "x"}


def test_index_lists_systems_in_table_order_whatever_the_input_order(layers: list[Layer]) -> None:
    images = [
        build_image(s, layers, entrypoint="/usr/bin/fdfind", created=CREATED)
        for s in (ARMHF, ARM64, X86)
    ]
    index = build_index(images)
    assert index == build_index(list(reversed(images)))
    document = json.loads(index)
    assert document["schemaVersion"] == 2
    assert document["mediaType"] == MEDIA_TYPE_INDEX
    assert [m["platform"] for m in document["manifests"]] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"},
        {"architecture": "arm", "os": "linux", "variant": "v7"},
    ]
    by_platform = {parse_descriptor(m, "test").platform: m for m in document["manifests"]}
    for image in images:
        entry = next(m for p, m in by_platform.items() if p and p.system == image.system)
        assert entry["digest"] == image.manifest_digest
        assert entry["size"] == len(image.manifest)
        assert entry["mediaType"] == MEDIA_TYPE_MANIFEST


def test_index_carries_the_image_annotations(layers: list[Layer]) -> None:
    image = build_image(X86, layers, entrypoint="/usr/bin/fdfind", created=CREATED)
    annotations = image_annotations(
        title="fd", version="8.6.0-3", created=CREATED, description="find"
    )
    document = json.loads(build_index([image], annotations))
    assert document["annotations"] == {
        "org.opencontainers.image.title": "fd",
        "org.opencontainers.image.version": "8.6.0-3",
        "org.opencontainers.image.created": CREATED,
        "org.opencontainers.image.description": "find",
        "dev.polyarch.layer.compressor": COMPRESSOR,
    }
    assert COMPRESSOR.startswith(f"libdeflate (deflate {deflate.__version__}) level 6")


def test_a_system_twice_in_one_index_is_refused(layers: list[Layer]) -> None:
    image = build_image(X86, layers, entrypoint="/usr/bin/fdfind", created=CREATED)
    with pytest.raises(ImageError, match="appears twice"):
        image_index([(X86, image.manifest), (X86, image.manifest)])


def test_documents_are_canonical_json_and_identical_when_built_twice(
    layers: list[Layer],
) -> None:
    def build() -> tuple[bytes, bytes, bytes]:
        image = build_image(
            ARM64,
            layers,
            entrypoint="/usr/bin/fdfind",
            created=CREATED,
            env=[("Z", "1"), ("A", "2")],
            labels=[("z", "1"), ("a", "2")],
            annotations=image_annotations(title="fd", version="1", created=CREATED),
        )
        return image.config, image.manifest, build_index([image])

    first, second = build(), build()
    assert first == second
    for document in first:
        assert document == canonical_json(json.loads(document))


def test_image_digests_are_sha256_of_its_documents(layers: list[Layer]) -> None:
    image = build_image(X86, layers, entrypoint="/usr/bin/fdfind", created=CREATED)
    assert image.manifest_digest == sha256_digest(image.manifest)
    assert image.config_digest == sha256_digest(image.config)
    assert image.size == sum(la.size for la in layers) + len(image.config)
    assert image.uncompressed_size == sum(la.uncompressed_size for la in layers)


def test_malformed_descriptor_is_refused() -> None:
    with pytest.raises(ImageError, match="not sha256"):
        parse_descriptor({"mediaType": MEDIA_TYPE_MANIFEST, "digest": "md5:00", "size": 1}, "x")
