"""What ``polyarch load`` hands an engine (``image.loadable``): the build's archive with its layers
uncompressed. skopeo and umoci judge the archive; docker and podman load and run it and keep the
build's image ID and diff_ids."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RepoFactory, Tool, build_native_hello

from polyarch.config import load_config
from polyarch.determinism import gzip_member, sha256_digest
from polyarch.engine import Engine
from polyarch.errors import ImageError
from polyarch.image.docker_archive import (
    archive_config,
    archive_entries,
    image_id_of,
    write_docker_archive,
)
from polyarch.image.layers import Layer
from polyarch.image.loadable import write_loadable_archive
from polyarch.image.oci import build_image
from polyarch.platforms import native_system
from polyarch.workflows.load import load_image

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def built(cli: Cli, tmp_path: Path, make_repo: RepoFactory) -> tuple[Path, str, Path]:
    """A built tool container of several gzip layers: (containers.toml, its tag, its archive)."""
    project, tag, result = build_native_hello(
        cli,
        tmp_path,
        make_repo,
        message=b"hello, unpacked\n",
        library=b"lib" * 1000,
        tag_prefix="plain",
    )
    return project, tag, result / f"{native_system().name}.tar"


def layer_members(archive: Path) -> dict[str, bytes]:
    """Each layer member of a docker-archive (name → bytes), in the manifest's order."""
    (entry,) = archive_entries(archive)
    with tarfile.open(archive) as tar:
        return {name: tar.extractfile(name).read() for name in entry.layers}  # type: ignore[union-attr]


def diff_ids(archive: Path) -> list[str]:
    return list(json.loads(archive_config(archive))["rootfs"]["diff_ids"])


def test_the_layers_are_the_builds_uncompressed_and_the_image_id_is_kept(
    built: tuple[Path, str, Path], tmp_path: Path, run_skopeo: Tool, run_umoci: Tool
) -> None:
    _, _, archive = built
    dest = tmp_path / "plain.tar"
    work = tmp_path / "work"
    work.mkdir()
    write_loadable_archive(archive, native_system(), dest, work)

    assert image_id_of(dest) == image_id_of(archive)
    assert archive_config(dest) == archive_config(archive)
    assert archive_entries(dest)[0].repo_tags == archive_entries(archive)[0].repo_tags
    gz, plain = layer_members(archive), layer_members(dest)
    assert len(gz) == len(plain) > 3
    assert all(blob[:2] == b"\x1f\x8b" for blob in gz.values())
    for (name, blob), diff_id in zip(plain.items(), diff_ids(dest), strict=True):
        assert blob[:2] != b"\x1f\x8b" and tarfile.is_tarfile(dest)  # a plain tar
        assert sha256_digest(blob) == diff_id and name == diff_id[7:] + ".tar"
    # skopeo checks every layer against the config's diff_ids while it copies; umoci unpacks.
    for source, copy in ((archive, "from-gzip"), (dest, "from-plain")):
        run_skopeo("copy", f"docker-archive:{source}", f"oci:{tmp_path / copy}:latest")
        run_umoci("unpack", "--image", f"{tmp_path / copy}:latest", tmp_path / f"{copy}-bundle")
    trees = [
        sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        for root in (tmp_path / "from-gzip-bundle/rootfs", tmp_path / "from-plain-bundle/rootfs")
    ]
    assert trees[0] == trees[1] and "usr/bin/hello" in trees[0]


def handmade(tmp_path: Path, blob: bytes, diff_id: str) -> Path:
    """A docker-archive of one layer ``blob`` whose config names ``diff_id``."""
    path = tmp_path / "blob"
    path.write_bytes(blob)
    digest = sha256_digest(blob)
    layer = Layer(digest, diff_id, len(blob), 0, path, ())  # type: ignore[arg-type]
    image = build_image(native_system(), [layer], entrypoint="/x", created="1970-01-01T00:00:00Z")
    archive = tmp_path / "handmade.tar"
    write_docker_archive(archive, image, repo_tags=["handmade:latest"])
    return archive


def tar_of(*files: tuple[str, bytes]) -> bytes:
    import io

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_layer_of_several_gzip_members_is_unpacked_whole(tmp_path: Path) -> None:
    # polyarch cuts a large layer into gzip members; each must be read, not only the first.
    raw = tar_of(("a", bytes(range(256)) * 20_000), ("b", b"second member " * 50_000))
    cut = len(raw) // 3
    blob = b"".join(gzip_member(raw[i : i + cut]) for i in range(0, len(raw), cut))
    archive = handmade(tmp_path, blob, sha256_digest(raw))
    work = tmp_path / "work"
    work.mkdir()
    write_loadable_archive(archive, native_system(), tmp_path / "plain.tar", work)
    assert list(layer_members(tmp_path / "plain.tar").values()) == [raw]


@pytest.mark.parametrize("damage", ["wrong diff_id", "truncated gzip"])
def test_a_layer_that_is_not_its_diff_id_is_refused_and_nothing_is_written(
    tmp_path: Path, damage: str
) -> None:
    raw = tar_of(("a", b"content" * 10_000))
    blob, diff_id = gzip_member(raw), sha256_digest(raw)
    if damage == "wrong diff_id":
        diff_id = sha256_digest(b"something else")
    else:
        blob = blob[: len(blob) // 2]
    archive = handmade(tmp_path, blob, diff_id)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(ImageError, match="layer") as raised:
        write_loadable_archive(archive, native_system(), tmp_path / "plain.tar", work)
    assert "rebuild" in (raised.value.hint or "")
    assert not (tmp_path / "plain.tar").exists()


@pytest.mark.parametrize(
    ("name", "variable", "endpoint", "network"),
    [
        ("docker", "DOCKER_HOST", "unix:///run/docker.sock", False),
        ("docker", "DOCKER_HOST", "tcp://127.0.0.1:2375", False),
        ("docker", "DOCKER_HOST", "tcp://[::1]:2375", False),
        ("docker", "DOCKER_HOST", "tcp://build-host.example:2376", True),
        ("docker", "DOCKER_HOST", "ssh://me@192.0.2.7", True),
        ("podman", "CONTAINER_HOST", "unix:///run/podman/podman.sock", False),
        ("podman", "CONTAINER_HOST", "ssh://core@192.0.2.8:22/run/podman/podman.sock", True),
    ],
)
def test_an_engine_is_reached_over_a_network_only_at_another_machines_address(
    name: str, variable: str, endpoint: str, network: bool
) -> None:
    engine = Engine(name, name, {variable: endpoint})  # type: ignore[arg-type]
    assert engine.over_network() is network


def test_an_engine_loads_the_uncompressed_layers_under_the_builds_image_id(
    engine: Engine, built: tuple[Path, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    project, tag, archive = built
    handed: list[dict[str, bytes]] = []
    real_load = Engine.load

    def spy(self: Engine, path: Path, **kwargs: float) -> str:
        handed.append(layer_members(path))
        return real_load(self, path, **kwargs)

    monkeypatch.setattr(Engine, "load", spy)
    container = load_config(project).container("hello")
    out = archive.parent.parent
    reference = load_image(engine, container, native_system(), out_dir=out, tag=tag)
    try:
        (layers,) = handed
        assert [sha256_digest(blob) for blob in layers.values()] == diff_ids(archive)
        found = engine.image_id(reference)
        assert found is not None and found.removeprefix("sha256:") == image_id_of(archive)
        inspect = engine._run(  # the engine's own record of the layers it unpacked
            ["image", "inspect", "--format", "{{json .RootFS.Layers}}", reference], timeout=60
        )
        assert json.loads(inspect.stdout) == diff_ids(archive)
        result = engine.run(reference, [], timeout=60)
        assert (result.exit_code, result.output.strip()) == (0, "hello, unpacked")
        # Loaded again, it is recognised by its image ID: nothing is handed over.
        load_image(engine, container, native_system(), out_dir=out, tag=tag)
        assert len(handed) == 1
    finally:
        engine.remove_image(reference)


def test_over_a_network_the_engine_gets_the_builds_gzip_layers(
    docker_engine: Engine, built: tuple[Path, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    project, tag, archive = built
    handed: list[Path] = []
    real_load = Engine.load

    def spy(self: Engine, path: Path, **kwargs: float) -> str:
        handed.append(path)
        return real_load(self, path, **kwargs)

    monkeypatch.setattr(Engine, "load", spy)
    monkeypatch.setattr(Engine, "over_network", lambda self: True)
    container = load_config(project).container("hello")
    reference = load_image(
        docker_engine, container, native_system(), out_dir=archive.parent.parent, tag=tag
    )
    try:
        assert handed == [archive]
        found = docker_engine.image_id(reference)
        assert found is not None and found.removeprefix("sha256:") == image_id_of(archive)
    finally:
        docker_engine.remove_image(reference)
