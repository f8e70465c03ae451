"""Reading image files polyarch did not build, and pushing an index over them."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
from registry_server import SKOPEO, RunningRegistry, SampleLayout, make_layout, skopeo

from polyarch.determinism import canonical_json, sha256_digest
from polyarch.errors import ImageError
from polyarch.image.imports import ImportedImage, index_from_image_files, read_images
from polyarch.registry.push import push_layout


def read_image_file(path: Path, store: Path) -> ImportedImage:
    """The one image of a single-image file."""
    (image,) = read_images(path, store)
    return image


needs_skopeo = pytest.mark.skipif(SKOPEO is None, reason="needs skopeo")


def single(tmp_path: Path, arch: str, variant: str | None = None) -> SampleLayout:
    return make_layout(
        tmp_path / f"oci-{arch}", platforms=((arch, variant),), single=True, tag=arch, seed=b"s"
    )


def docker_archive(tmp_path: Path, layout: SampleLayout, arch: str, *, gz: bool = False) -> Path:
    out = tmp_path / f"{arch}.tar"
    result = skopeo("copy", f"oci:{layout.path}:{arch}", f"docker-archive:{out}:tools/x:{arch}")
    assert result.returncode == 0, result.stderr
    if gz:
        gz_path = out.with_suffix(".tar.gz")
        gz_path.write_bytes(gzip.compress(out.read_bytes()))
        out.unlink()
        return gz_path
    return out


def _tar(members: list[tuple[str, bytes | str]], *, gz: bool = False) -> bytes:
    """A tar; a str value makes a symlink to that target."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, value in members:
            info = tarfile.TarInfo(name)
            if isinstance(value, str):
                info.type, info.linkname = tarfile.SYMTYPE, value
                tar.addfile(info)
            else:
                info.size = len(value)
                tar.addfile(info, io.BytesIO(value))
    return gzip.compress(buf.getvalue()) if gz else buf.getvalue()


def nix_style_archive(path: Path, arch: str, *, gz: bool = True, corrupt: bool = False) -> bytes:
    """A docker-archive as Nix dockerTools and old `docker save` write it: uncompressed
    layer.tar files, a duplicate layer as a symlink, an entry trying to escape."""
    layer = _tar([("bin/tool", f"tool for {arch}".encode())])
    config = canonical_json(
        {
            "architecture": arch,
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer)] * 2},
        }
    )
    config_name = sha256_digest(config).split(":")[1] + ".json"
    manifest = json.dumps(
        [
            {
                "Config": config_name,
                "RepoTags": [f"x:{arch}"],
                "Layers": ["aaa/layer.tar", "bbb/layer.tar"],
            }
        ]
    ).encode()
    path.write_bytes(
        _tar(
            [
                ("../escape", b"nope"),
                ("aaa/layer.tar", layer + (b"x" if corrupt else b"")),
                ("bbb/layer.tar", "../aaa/layer.tar"),
                (config_name, config),
                ("manifest.json", manifest),
            ],
            gz=gz,
        )
    )
    return layer


def test_nix_style_gzip_docker_archive_is_read_with_symlinked_layers(tmp_path: Path) -> None:
    layer = nix_style_archive(tmp_path / "img.tar.gz", "arm64")
    image = read_image_file(tmp_path / "img.tar.gz", tmp_path / "store")

    assert str(image.platform) == "linux/arm64"
    assert [layer_.diff_id for layer_ in image.layers] == [sha256_digest(layer)] * 2
    blob = image.layers[0].path.read_bytes()
    assert gzip.decompress(blob) == layer
    assert image.layers[0].digest == sha256_digest(blob)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "store" / "escape").exists()


def test_uncompressed_layers_are_gzipped_the_same_way_every_time(tmp_path: Path) -> None:
    nix_style_archive(tmp_path / "img.tar", "amd64", gz=False)
    first = read_image_file(tmp_path / "img.tar", tmp_path / "a")
    second = read_image_file(tmp_path / "img.tar", tmp_path / "b")
    assert first.layers[0].digest == second.layers[0].digest
    assert first.manifest() == second.manifest()


def test_layer_not_matching_its_diff_id_is_refused(tmp_path: Path) -> None:
    nix_style_archive(tmp_path / "bad.tar.gz", "amd64", corrupt=True)
    with pytest.raises(ImageError, match="does not match its diff_id"):
        read_image_file(tmp_path / "bad.tar.gz", tmp_path / "store")


def test_not_an_image_is_an_image_error(tmp_path: Path) -> None:
    (tmp_path / "junk.tar").write_bytes(b"this is not a tar" * 100)
    with pytest.raises(ImageError, match="not a readable tar"):
        read_image_file(tmp_path / "junk.tar", tmp_path / "store")
    (tmp_path / "empty.tar").write_bytes(_tar([("hello", b"x")]))
    with pytest.raises(ImageError, match="neither a docker-archive nor an OCI"):
        read_image_file(tmp_path / "empty.tar", tmp_path / "store")


def test_oci_layout_and_oci_archive_are_read(tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "multi")
    images = read_images(layout.path, tmp_path / "store")
    assert sorted(str(i.platform) for i in images) == ["linux/amd64", "linux/arm64/v8"]
    assert {i.config_digest for i in images} | {x.digest for i in images for x in i.layers} == set(
        layout.blobs
    )

    archive = tmp_path / "multi.oci.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(layout.path, arcname=".")
    from_archive = read_images(archive, tmp_path / "store2")
    assert [i.config for i in from_archive] == [i.config for i in images]
    assert [i.layers[1].digest for i in from_archive] == [i.layers[1].digest for i in images]


def test_two_images_of_one_platform_name_both_files(tmp_path: Path) -> None:
    nix_style_archive(tmp_path / "a.tar.gz", "amd64")
    nix_style_archive(tmp_path / "b.tar", "amd64", gz=False)
    dest = tmp_path / "out"
    with pytest.raises(ImageError, match=r"a\.tar\.gz and .*b\.tar are both linux/amd64 images"):
        index_from_image_files([tmp_path / "a.tar.gz", tmp_path / "b.tar"], dest, "v1")
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_index_layout_covers_every_platform_and_replaces_the_old_one(tmp_path: Path) -> None:
    nix_style_archive(tmp_path / "a.tar.gz", "amd64")
    nix_style_archive(tmp_path / "b.tar.gz", "arm64")
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "stale").write_text("old")
    digest = index_from_image_files([tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"], dest, "v1")

    assert not (dest / "stale").exists()
    top = json.loads((dest / "index.json").read_bytes())
    assert top["manifests"][0]["digest"] == digest
    assert top["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "v1"
    index = json.loads((dest / "blobs/sha256" / digest.split(":")[1]).read_bytes())
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["amd64", "arm64"]
    for blob in (dest / "blobs/sha256").iterdir():
        assert "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest() == f"sha256:{blob.name}"
    assert (
        index_from_image_files(
            [tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"], tmp_path / "again", "v1"
        )
        == digest
    )


@needs_skopeo
def test_index_from_skopeo_docker_archives_pushes_and_pulls_back(
    tmp_path: Path, registry: RunningRegistry
) -> None:
    amd64, arm64 = single(tmp_path, "amd64"), single(tmp_path, "arm64", "v8")
    files = [
        docker_archive(tmp_path, amd64, "amd64"),
        docker_archive(tmp_path, arm64, "arm64", gz=True),
    ]
    dest = tmp_path / "index"
    digest = index_from_image_files(files, dest, "v1")

    images = {str(i.platform): i for f in files for i in read_images(f, tmp_path / "scratch")}
    # skopeo stores layers uncompressed; gzipping them again the deterministic way gives the original blobs.
    original_layers = {
        p.name for lay in (amd64, arm64) for p in (lay.path / "blobs/sha256").iterdir()
    }
    assert {
        layer.digest.split(":")[1] for i in images.values() for layer in i.layers
    } <= original_layers

    result = push_layout(dest, f"{registry.host}/tools/imported", record_dir=tmp_path / "rec")
    assert result.digest == digest and result.tags == ("v1",)
    raw = skopeo(
        "inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/tools/imported:v1"
    )
    assert raw.returncode == 0, raw.stderr
    index = json.loads(raw.stdout)
    assert sorted(
        (m["platform"]["architecture"], m["platform"].get("variant")) for m in index["manifests"]
    ) == [("amd64", None), ("arm64", "v8")]
    for entry in index["manifests"]:
        out = tmp_path / f"pulled-{entry['platform']['architecture']}"
        copied = skopeo(
            "copy",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--override-arch",
            entry["platform"]["architecture"],
            f"docker://{registry.host}/tools/imported:v1",
            f"dir:{out}",
        )
        assert copied.returncode == 0, copied.stderr
        assert sha256_digest((out / "manifest.json").read_bytes()) == entry["digest"]
    shutil.rmtree(tmp_path / "scratch")
