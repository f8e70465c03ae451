"""Layers merged into one for loading (``load --merge-layers``): umoci judges the filesystem,
docker and podman load and run the result."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RepoFactory, Tool, build_native_hello

from polyarch.config import load_config
from polyarch.determinism import TAR_FORMAT, gzip_bytes, normalise_tarinfo, sha256_digest
from polyarch.engine import Engine
from polyarch.image.docker_archive import write_docker_archive
from polyarch.image.layers import Layer
from polyarch.image.layout import write_oci_layout
from polyarch.image.merged import merge_layers
from polyarch.image.oci import Image, build_image, build_index
from polyarch.platforms import native_system
from polyarch.workflows.load import load_image

Cli = Callable[..., tuple[int, str, str]]
Entry = tuple[str, str, int, bytes | str]  # (kind, path, mode, content or link target)


def layer(directory: Path, entries: list[Entry]) -> Layer:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=TAR_FORMAT) as tar:
        for kind, path, mode, content in entries:
            info = tarfile.TarInfo(path)
            info.mode = mode
            data = None
            if kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, str(content)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, str(content)
            else:
                assert isinstance(content, bytes)
                info.size, data = len(content), io.BytesIO(content)
            tar.addfile(normalise_tarinfo(info, 0), data)
    raw = buffer.getvalue()
    blob = gzip_bytes(raw)
    digest = sha256_digest(blob)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / digest[7:]).write_bytes(blob)
    return Layer(digest, sha256_digest(raw), len(blob), len(raw), directory / digest[7:], ())


LAYERS: list[list[Entry]] = [
    [
        ("dir", "etc", 0o755, b""),
        ("file", "etc/keep", 0o644, b"kept"),
        ("file", "etc/old", 0o644, b"overwritten"),
        ("dir", "opt", 0o755, b""),
        ("dir", "opt/tree", 0o755, b""),
        ("file", "opt/tree/leaf", 0o644, b"gone with its tree"),
        ("dir", "srv", 0o755, b""),
        ("file", "srv/a", 0o644, b"a"),
        ("file", "srv/b", 0o644, b"b"),
        ("dir", "usr", 0o755, b""),
        ("dir", "usr/bin", 0o755, b""),
        ("file", "usr/bin/gone", 0o755, b"deleted, its link keeps it"),
        ("hardlink", "usr/bin/gone-link", 0o755, "usr/bin/gone"),
        ("file", "usr/bin/keep", 0o755, b"linked and kept"),
        ("hardlink", "usr/bin/keep-link", 0o755, "usr/bin/keep"),
        ("file", "usr/bin/perl5", 0o755, b"perl, old"),
        ("hardlink", "usr/bin/perl", 0o755, "usr/bin/perl5"),
        ("hardlink", "usr/bin/perl-again", 0o755, "usr/bin/perl5"),
        ("dir", "var", 0o755, b""),
        ("file", "var/deleted", 0o644, b"whited out"),
    ],
    [
        ("dir", "etc", 0o700, b""),  # the same directory, new metadata
        ("file", "etc/new", 0o600, b"added"),
        ("file", "etc/old", 0o755, b"newer"),
        ("file", "opt/tree", 0o644, b"a file where a tree was"),
        ("dir", "srv", 0o755, b""),
        ("file", "srv/.wh..wh..opq", 0o644, b""),
        ("file", "srv/c", 0o644, b"only c is left"),
        ("dir", "usr", 0o755, b""),
        ("dir", "usr/bin", 0o755, b""),
        ("file", "usr/bin/.wh.gone", 0o644, b""),
        ("file", "usr/bin/perl5", 0o755, b"perl, new: the links keep the old one"),
        ("dir", "var", 0o755, b""),
        ("file", "var/.wh.deleted", 0o644, b""),
        ("symlink", "var/link", 0o777, "../etc/keep"),
    ],
]


def tree(root: Path) -> dict[str, tuple[str, int, bytes | str]]:
    found: dict[str, tuple[str, int, bytes | str]] = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory, name)
            st = path.lstat()
            rel = str(path.relative_to(root))
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("symlink", 0, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", mode, b"")
            else:
                found[rel] = ("file", mode, hashlib.sha256(path.read_bytes()).digest())
    return found


def link_groups(root: Path) -> set[frozenset[str]]:
    """The sets of paths that are one file (hard links to each other)."""
    inodes: dict[int, set[str]] = {}
    for directory, _, files in os.walk(root):
        for name in files:
            path = Path(directory, name)
            if not path.is_symlink():
                inodes.setdefault(path.lstat().st_ino, set()).add(str(path.relative_to(root)))
    return {frozenset(paths) for paths in inodes.values()}


@pytest.fixture
def layered(tmp_path: Path, run_umoci: Tool) -> tuple[Image, Path]:
    """An image of LAYERS, and the root file system umoci unpacks from its layers."""
    system = native_system()
    layers = [layer(tmp_path / "blobs", entries) for entries in LAYERS]
    image = build_image(system, layers, entrypoint="/bin/true", created="1970-01-01T00:00:00Z")
    write_oci_layout(tmp_path / "oci", [image], build_index([image]), tag="latest")
    run_umoci("unpack", "--image", f"{tmp_path / 'oci'}:latest", tmp_path / "bundle")
    return image, tmp_path / "bundle" / "rootfs"


def test_the_merged_layer_is_the_filesystem_umoci_unpacks_from_the_layers(
    tmp_path: Path, layered: tuple[Image, Path]
) -> None:
    image, rootfs = layered
    expected = tree(rootfs)
    merged = merge_layers(image, tmp_path)
    (only,) = merged.layers
    assert only.digest == only.diff_id == sha256_digest(only.blob.read_bytes())
    with tarfile.open(only.blob) as tar:
        tar.extractall(tmp_path / "merged", filter="tar")
        names = tar.getnames()
    assert tree(tmp_path / "merged") == expected
    assert link_groups(tmp_path / "merged") == link_groups(rootfs)
    assert {"usr/bin/perl", "usr/bin/perl-again"} in link_groups(tmp_path / "merged")
    assert "usr/bin/gone-link" in expected and "usr/bin/gone" not in expected
    assert len(names) == len(set(names)), "each path once"
    assert names.index("etc") < names.index("etc/keep"), "parents before children"
    assert "opt/tree/leaf" not in expected and "srv/a" not in expected
    assert expected["etc"][1] == 0o700


def test_skopeo_reads_the_merged_docker_archive_and_umoci_unpacks_the_same_tree(
    tmp_path: Path, layered: tuple[Image, Path], run_skopeo: Tool, run_umoci: Tool
) -> None:
    image, rootfs = layered
    work = tmp_path / "work"
    work.mkdir()
    archive = tmp_path / "merged.tar"
    write_docker_archive(archive, merge_layers(image, work), repo_tags=["merged:latest"])
    # skopeo checks each layer against the config's diff_ids while it copies.
    run_skopeo("copy", f"docker-archive:{archive}", f"oci:{tmp_path / 'copy'}:latest")
    run_umoci("unpack", "--image", f"{tmp_path / 'copy'}:latest", tmp_path / "again")
    config = json.loads(run_skopeo("inspect", "--config", f"oci:{tmp_path / 'copy'}:latest"))
    assert len(config["rootfs"]["diff_ids"]) == 1 and len(config["history"]) == 1
    assert tree(tmp_path / "again" / "rootfs") == tree(rootfs)
    assert link_groups(tmp_path / "again" / "rootfs") == link_groups(rootfs)


@pytest.fixture
def built(cli: Cli, tmp_path: Path, make_repo: RepoFactory) -> tuple[Path, str]:
    project, tag, _ = build_native_hello(
        cli,
        tmp_path,
        make_repo,
        message=b"hello from polyarch\n",
        library=b"lib",
        tag_prefix="merge",
    )
    return project, tag


def test_an_engine_loads_and_runs_the_merged_image_and_the_outputs_keep_their_layers(
    engine: Engine, built: tuple[Path, str], tmp_path: Path
) -> None:
    project, tag = built
    container = load_config(project).container("hello")
    out = tmp_path / "result"
    archive = out / "hello" / f"{native_system().name}.tar"
    before = archive.read_bytes()
    reference = load_image(
        engine, container, native_system(), out_dir=out, tag=tag, merge_layers=True
    )
    try:
        result = engine.run(reference, [], timeout=60)
        assert (result.exit_code, result.output.strip()) == (0, "hello from polyarch")
        inspect = engine._run(  # the engine's own count of the image's layers
            ["image", "inspect", "--format", "{{len .RootFS.Layers}}", reference], timeout=60
        )
        assert inspect.stdout.decode().strip() == "1"
        assert archive.read_bytes() == before
    finally:
        engine.remove_image(reference)
    with tarfile.open(archive) as tar:
        assert sum(n.endswith(".tar.gz") for n in tar.getnames()) > 3
