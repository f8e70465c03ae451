"""OCI layout and docker-archive outputs, checked by skopeo, umoci, docker and podman; atomic
publication."""

from __future__ import annotations

import json
import os
import stat
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import Tool
from imagekit import make_layer

from polyarch import cmd, files
from polyarch.determinism import (
    rfc3339,
    sha256_digest,
)
from polyarch.engine import Engine
from polyarch.errors import ImageError
from polyarch.files import replace_directory
from polyarch.image.docker_archive import write_docker_archive
from polyarch.image.layout import BLOB_MODE, write_oci_layout
from polyarch.image.layout_reader import read_oci_layout
from polyarch.image.oci import (
    Image,
    build_image,
    build_index,
    image_annotations,
)
from polyarch.media_types import OCI_INDEX as MEDIA_TYPE_INDEX
from polyarch.outputs import Outputs, write_build_outputs
from polyarch.platforms import System, native_system, parse_system
from polyarch.reference import split_local_name

X86 = parse_system("x86_64-linux")
ARM64 = parse_system("aarch64-linux")
CREATED = rfc3339(1_700_000_000)


def make_images(cache: Path) -> tuple[list[Image], bytes]:
    """Two systems sharing one base layer, each with its own tool layer."""
    base = make_layer(
        cache, {"usr/bin/bash": b"bash\n", "etc/passwd": b"root:x:0:0::/root:/bin/sh\n"}, ("bash",)
    )
    annotations = image_annotations(title="tool", version="1.0-1", created=CREATED)
    images = []
    for system in (X86, ARM64):
        tool = make_layer(cache, {"usr/bin/tool": f"tool for {system.name}\n".encode()}, ("tool",))
        images.append(
            build_image(
                system,
                [base, tool],
                entrypoint="/usr/bin/tool",
                created=CREATED,
                env=[("LANG", "C.UTF-8")],
                annotations=annotations,
            )
        )
    return images, build_index(images, annotations)


@pytest.fixture
def built(tmp_path: Path) -> tuple[list[Image], bytes]:
    return make_images(tmp_path / "cache")


@pytest.fixture
def layout(tmp_path: Path, built: tuple[list[Image], bytes]) -> Path:
    images, index = built
    write_oci_layout(tmp_path / "oci", images, index, tag="latest")
    return tmp_path / "oci"


def check(argv: list[Any], **kwargs: Any) -> str:
    result = cmd.run(argv, **kwargs)
    assert result.returncode == 0, f"{cmd.quoted(argv)}: {result.stderr.decode()}"
    return result.stdout.decode()


def files_of(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


# --------------------------------------------------------------------------- OCI layout


def test_index_json_names_the_image_index_by_tag(layout: Path, built: Any) -> None:
    _, index = built
    top = json.loads((layout / "index.json").read_bytes())
    assert json.loads((layout / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    assert top["manifests"] == [
        {
            "mediaType": MEDIA_TYPE_INDEX,
            "digest": sha256_digest(index),
            "size": len(index),
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }
    ]


def test_every_blob_is_named_by_its_sha256_and_shared_layers_are_stored_once(
    layout: Path, built: Any
) -> None:
    images, index = built
    blobs = layout / "blobs" / "sha256"
    for path in blobs.iterdir():
        assert sha256_digest(path.read_bytes()) == "sha256:" + path.name
        assert path.stat().st_mode & 0o777 == BLOB_MODE
    expected = {sha256_digest(index)}
    for image in images:
        expected |= {image.manifest_digest, image.config_digest}
        expected |= {layer.digest for layer in image.layers}
    assert {"sha256:" + p.name for p in blobs.iterdir()} == expected
    assert len(expected) == 1 + 2 * 2 + 3  # index, 2x(manifest, config), base + 2 tools


def test_layer_blobs_are_copies_that_share_no_inode_with_the_cache(
    layout: Path, built: Any
) -> None:
    # Before, blobs were hard links: editing result/ corrupted the cache, a flipped
    # byte in the cache corrupted results built earlier, and chmod reached the cache.
    layer = built[0][0].layers[0]
    placed = layout / "blobs" / "sha256" / layer.digest.removeprefix("sha256:")
    assert not os.path.samefile(placed, layer.blob)
    assert placed.read_bytes() == layer.blob.read_bytes()
    assert layer.blob.stat().st_nlink == 1
    assert stat.S_IMODE(placed.stat().st_mode) == 0o444
    assert stat.S_IMODE(layer.blob.stat().st_mode) != 0o444  # the chmod stayed in result/


def test_layout_is_identical_when_written_twice_from_separate_caches(tmp_path: Path) -> None:
    first, second = make_images(tmp_path / "c1"), make_images(tmp_path / "c2")
    write_oci_layout(tmp_path / "one", *first, tag="latest")
    write_oci_layout(tmp_path / "two", *second, tag="latest")
    assert files_of(tmp_path / "one") == files_of(tmp_path / "two")


def test_index_that_does_not_list_the_images_is_refused(tmp_path: Path, built: Any) -> None:
    images, _ = built
    only_x86 = build_index(images[:1])
    with pytest.raises(ImageError, match="does not list exactly"):
        write_oci_layout(tmp_path / "oci", images, only_x86, tag="latest")
    assert not (tmp_path / "oci").exists()


def test_existing_layout_destination_is_refused(layout: Path, built: Any) -> None:
    with pytest.raises(ImageError, match="already exists"):
        write_oci_layout(layout, *built, tag="latest")


def test_invalid_tag_is_refused(tmp_path: Path, built: Any) -> None:
    with pytest.raises(ImageError, match="not a valid image tag"):
        write_oci_layout(tmp_path / "oci", *built, tag="no/slash")


def test_reader_finds_each_platform_and_its_layers(layout: Path, built: Any) -> None:
    images, _ = built
    opened = read_oci_layout(layout)
    assert opened.tags == ("latest",)
    found = opened.images("latest")
    assert [i.system for i in found] == [X86, ARM64]
    for image in images:
        read = opened.image("latest", image.system)
        assert read.manifest.digest == image.manifest_digest
        assert read.manifest_bytes == image.manifest
        assert read.config_bytes == image.config
        assert [d.digest for d in read.layers] == [la.digest for la in image.layers]
        assert opened.blob_path(read.layers[0].digest).is_file()


def test_reader_refuses_a_tampered_blob(layout: Path, built: Any) -> None:
    config = layout / "blobs" / "sha256" / built[0][0].config_digest.removeprefix("sha256:")
    config.chmod(0o644)
    config.write_bytes(config.read_bytes().replace(b"amd64", b"arm64"))
    with pytest.raises(ImageError, match="does not match its digest"):
        read_oci_layout(layout).images("latest")


def test_reader_refuses_an_unknown_tag(layout: Path) -> None:
    with pytest.raises(ImageError, match="no image tagged 'v2'"):
        read_oci_layout(layout).images("v2")


def test_skopeo_inspects_the_layout_and_its_raw_index(
    layout: Path, built: Any, run_skopeo: Tool
) -> None:
    _, index = built
    inspected = json.loads(run_skopeo("inspect", f"oci:{layout}:latest"))
    # skopeo picks the host's platform out of the index
    assert inspected["Architecture"] == native_system().oci_architecture
    assert inspected["Digest"] == sha256_digest(index)
    assert run_skopeo("inspect", "--raw", f"oci:{layout}:latest").encode() == index


@pytest.mark.parametrize(
    ("system", "override"),
    [
        (X86, ["--override-arch", "amd64"]),
        (ARM64, ["--override-arch", "arm64", "--override-variant", "v8"]),
    ],
    ids=["x86_64-linux", "aarch64-linux"],
)
def test_skopeo_copies_each_platform_out_and_umoci_unpacks_it(
    tmp_path: Path,
    layout: Path,
    built: Any,
    system: System,
    override: list[str],
    run_skopeo: Tool,
    run_umoci: Tool,
) -> None:
    image = next(i for i in built[0] if i.system == system)
    single = tmp_path / "single"
    run_skopeo(*override, "copy", f"oci:{layout}:latest", f"oci:{single}:latest")
    # skopeo copies the chosen manifest byte for byte, so digests survive the copy.
    assert run_skopeo("inspect", "--raw", f"oci:{single}:latest").encode() == image.manifest
    config = json.loads(run_skopeo("inspect", "--config", f"oci:{single}:latest"))
    assert config["architecture"] == system.oci_architecture
    assert config.get("variant") == system.oci_variant

    bundle = tmp_path / "bundle"
    run_umoci("unpack", "--rootless", "--image", f"{single}:latest", bundle)
    rootfs = bundle / "rootfs"
    assert (rootfs / "usr/bin/tool").read_text() == f"tool for {system.name}\n"
    assert (rootfs / "usr/bin/bash").read_text() == "bash\n"
    process = json.loads((bundle / "config.json").read_bytes())["process"]
    assert process["args"] == ["/usr/bin/tool"]
    assert process["env"][0] == "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def test_reader_reads_a_single_image_layout_written_by_skopeo(
    tmp_path: Path, layout: Path, run_skopeo: Tool
) -> None:
    single = tmp_path / "single"
    run_skopeo("--override-arch", "arm64", "copy", f"oci:{layout}:latest", f"oci:{single}:latest")
    (found,) = read_oci_layout(single).images("latest")
    assert found.system == ARM64  # no index entry: the platform comes from the config


# --------------------------------------------------------------------------- docker-archive


def test_docker_archive_lists_config_tags_and_layers(tmp_path: Path, built: Any) -> None:
    image = built[0][1]
    dest = tmp_path / "arm.tar"
    write_docker_archive(dest, image, repo_tags=["tool:latest", "ghcr.io/me/tool"], mtime=42)
    with tarfile.open(dest) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        repositories = json.loads(tar.extractfile("repositories").read())  # type: ignore[union-attr]
        config_name = image.config_digest.removeprefix("sha256:") + ".json"
        assert tar.extractfile(config_name).read() == image.config  # type: ignore[union-attr]
        for layer in image.layers:
            stored = tar.extractfile(layer.digest.removeprefix("sha256:") + ".tar.gz")
            assert stored.read() == layer.blob.read_bytes()  # type: ignore[union-attr]
    assert names == sorted(names)
    assert all((m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", 42) for m in members)
    layer_names = [la.digest.removeprefix("sha256:") + ".tar.gz" for la in image.layers]
    assert manifest == [
        {
            "Config": config_name,
            "RepoTags": ["tool:latest", "ghcr.io/me/tool:latest"],
            "Layers": layer_names,
        }
    ]
    top = layer_names[-1].removesuffix(".tar.gz")
    assert repositories == {"tool": {"latest": top}, "ghcr.io/me/tool": {"latest": top}}


def test_docker_archive_is_identical_when_written_twice(tmp_path: Path) -> None:
    first, second = make_images(tmp_path / "c1")[0][0], make_images(tmp_path / "c2")[0][0]
    write_docker_archive(tmp_path / "1.tar", first, repo_tags=["tool:latest"], mtime=0)
    write_docker_archive(tmp_path / "2.tar", second, repo_tags=["tool:latest"], mtime=0)
    assert (tmp_path / "1.tar").read_bytes() == (tmp_path / "2.tar").read_bytes()


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("fd", ("fd", "latest")),
        ("fd:8.6", ("fd", "8.6")),
        ("localhost:5000/me/fd", ("localhost:5000/me/fd", "latest")),
        ("localhost:5000/me/fd:v1", ("localhost:5000/me/fd", "v1")),
    ],
)
def test_repo_tags_default_to_latest(reference: str, expected: tuple[str, str]) -> None:
    assert split_local_name(reference) == expected


@pytest.mark.parametrize("reference", ["FD:latest", "fd@sha256:" + "0" * 64, "fd:bad/tag", ""])
def test_invalid_repo_tags_are_refused(tmp_path: Path, built: Any, reference: str) -> None:
    with pytest.raises(ImageError):
        write_docker_archive(tmp_path / "x.tar", built[0][0], repo_tags=[reference])
    assert list(tmp_path.glob("*x.tar*")) == []


def test_skopeo_inspects_the_docker_archive(tmp_path: Path, built: Any, run_skopeo: Tool) -> None:
    image = built[0][1]
    dest = tmp_path / "arm.tar"
    write_docker_archive(dest, image, repo_tags=["tool:latest"])
    config = json.loads(run_skopeo("inspect", "--config", f"docker-archive:{dest}"))
    assert (config["architecture"], config["variant"]) == ("arm64", "v8")
    assert config["rootfs"]["diff_ids"] == [la.diff_id for la in image.layers]


@pytest.mark.parametrize("which", [0, 1], ids=["x86_64-linux", "aarch64-linux"])
def test_each_engine_loads_the_docker_archive(
    tmp_path: Path, built: Any, engine: Engine, which: int
) -> None:
    image = built[0][which]
    dest = tmp_path / f"{image.system.name}.tar"
    # A name of its own: the docker daemon is shared with whatever else runs on the host.
    name = f"polyarch-test-{uuid.uuid4().hex[:10]}:latest"
    write_docker_archive(dest, image, repo_tags=[name])
    ref = engine.load(dest)
    try:
        assert ref.endswith(name)  # podman qualifies short names: localhost/NAME:TAG
        inspect = [engine.program, "image", "inspect", ref]
        (inspected,) = json.loads(check(inspect, env={**os.environ, **engine.env}))
        # docker shows the ID as a digest, podman as bare hex
        assert inspected["Id"].removeprefix("sha256:") == image.config_digest.removeprefix(
            "sha256:"
        )
        assert inspected["Architecture"] == image.system.oci_architecture
        assert inspected["Config"]["Entrypoint"] == ["/usr/bin/tool"]
        assert inspected["RootFS"]["Layers"] == [la.diff_id for la in image.layers]
    finally:
        engine.remove_image(ref)


# --------------------------------------------------------------------------- atomic outputs


def test_build_outputs_are_an_oci_layout_and_one_tarball_per_system(
    tmp_path: Path, built: Any
) -> None:
    images, index = built
    result = write_build_outputs(
        Outputs(tmp_path / "result", "tool"), images, index, tag="latest", repo_tags=["tool:latest"]
    )
    assert result == tmp_path / "result" / "tool"
    assert sorted(p.name for p in result.iterdir()) == [
        "aarch64-linux.tar",
        "oci",
        "x86_64-linux.tar",
    ]
    assert [i.system for i in read_oci_layout(result / "oci").images("latest")] == [X86, ARM64]
    assert sorted(p.name for p in (tmp_path / "result").iterdir()) == ["tool"]


def test_a_build_of_one_system_replaces_the_whole_result(tmp_path: Path, built: Any) -> None:
    images, index = built
    out = tmp_path / "result"
    outputs = Outputs(out, "tool")
    write_build_outputs(outputs, images, index, tag="latest", repo_tags=["tool:latest"])
    write_build_outputs(
        outputs, images[1:], build_index(images[1:]), tag="latest", repo_tags=["tool:latest"]
    )
    assert sorted(p.name for p in (out / "tool").iterdir()) == ["aarch64-linux.tar", "oci"]
    assert [i.system for i in read_oci_layout(out / "tool" / "oci").images("latest")] == [ARM64]


def write_marker(text: str) -> Any:
    def build(staging: Path) -> None:
        (staging / "marker").write_text(text)

    return build


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_a_new_result_replaces_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    if not exchange:
        monkeypatch.setattr(files, "_exchange", lambda a, b: False)
    replace_directory(tmp_path / "tool", write_marker("old"))
    replace_directory(tmp_path / "tool", write_marker("new"))
    assert (tmp_path / "tool" / "marker").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tool"]


def test_a_failed_build_leaves_the_previous_result_and_no_temporary_dir(tmp_path: Path) -> None:
    replace_directory(tmp_path / "tool", write_marker("old"))

    def failing(staging: Path) -> None:
        (staging / "marker").write_text("half")
        raise ImageError("boom")

    with pytest.raises(ImageError, match="boom"):
        replace_directory(tmp_path / "tool", failing)
    assert (tmp_path / "tool" / "marker").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tool"]


def test_a_failed_first_build_writes_nothing(tmp_path: Path, built: Any) -> None:
    images, _ = built
    wrong_index = build_index(images[:1])
    out = tmp_path / "result"
    with pytest.raises(ImageError, match="does not list exactly"):
        write_build_outputs(
            Outputs(out, "tool"), images, wrong_index, tag="latest", repo_tags=["tool"]
        )
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("name", ["", ".hidden", "a/b"])
def test_output_names_that_are_not_a_plain_directory_name_are_refused(
    tmp_path: Path, name: str
) -> None:
    with pytest.raises(ImageError, match="cannot name an output directory"):
        write_build_outputs(Outputs(tmp_path, name), [], b"", tag="latest", repo_tags=["x"])
