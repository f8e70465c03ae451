"""fd from the real archive: a warm rebuild does no work; a locked offline build needs no mirror."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from polyarch.cache import Cache
from polyarch.config import load_config
from polyarch.lock import lock_path, read_lock, write_lock
from polyarch.workflows.build import BuildResult, build_container
from polyarch.workflows.resolve import Session, lock_containers

pytestmark = pytest.mark.integration

CONFIG = """
[repository]
suite = "bookworm"
components = ["main"]
{url}
[defaults]
systems = ["aarch64-linux", "x86_64-linux"]
base = ["bash", "coreutils"]

[containers.fd]
package = "fd-find"
command = "fdfind"
"""


def write_config(directory: Path, url: str | None = None) -> Path:
    path = directory / "containers.toml"
    path.write_text(CONFIG.format(url=f'url = "{url}"\n' if url else ""))
    return path


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/debian"


def build_fd(
    config_path: Path, cache: Path, out: Path, *, locked: bool = False, offline: bool = False
) -> BuildResult:
    config = load_config(config_path)
    session = Session(config=config, cache=Cache(cache), offline=offline)
    if locked or offline:
        session.lock = read_lock(lock_path(config))
    fd = config.container("fd")
    return build_container(session, fd, fd.systems, out_dir=out)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, BuildResult]:
    """(containers.toml, cache, cold build result) with containers.lock written."""
    root = tmp_path_factory.mktemp("fd-offline")
    config_path = write_config(root)
    cache = root / "cache"
    config = load_config(config_path)
    session = Session(config=config, cache=Cache(cache))
    lock, _updates = lock_containers(session, config.containers)
    write_lock(lock_path(config), lock)
    cold = build_fd(config_path, cache, root / "cold")
    return config_path, cache, cold


def test_warm_rebuild_of_fd_compresses_nothing_and_gives_the_cold_digests(
    project: tuple[Path, Path, BuildResult], tmp_path: Path
) -> None:
    config_path, cache, cold = project
    warm = build_fd(config_path, cache, tmp_path / "warm")
    assert warm.stats.misses == 0
    assert warm.stats.debs_read == 0
    assert warm.stats.hits == cold.stats.hits + cold.stats.misses
    assert warm.index_digest == cold.index_digest
    assert [s.image.manifest_digest for s in warm.systems] == [
        s.image.manifest_digest for s in cold.systems
    ]


def test_locked_offline_build_with_the_mirror_unreachable_gives_the_online_digest(
    project: tuple[Path, Path, BuildResult], tmp_path: Path
) -> None:
    config_path, cache, cold = project
    offline_config = write_config(tmp_path, closed_port_url())
    (tmp_path / "containers.lock").write_bytes(
        (config_path.parent / "containers.lock").read_bytes()
    )
    result = build_fd(offline_config, cache, tmp_path / "out", offline=True)
    assert result.index_digest == cold.index_digest
    assert result.stats.misses == 0
