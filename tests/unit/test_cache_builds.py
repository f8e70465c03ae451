"""Builds and the cache: warm rebuilds do no work, offline builds, concurrent and killed builds."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cacheproject import (
    assert_layout_intact,
    build,
    closed_port_url,
    index_digest,
    make_project,
    point_mirror_at,
    polyarch,
)
from conftest import RepoFactory

from polyarch.cache import Cache
from polyarch.errors import CacheError, LockError
from polyarch.lock import read_lock
from polyarch.workflows.cache import prune_cache, verify_cache

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def project(tmp_path: Path, make_repo: RepoFactory) -> Path:
    return make_project(tmp_path, make_repo)[2]


def lock(cli: Cli, project: Path, cache: Path) -> None:
    code, _out, err = cli("-f", project, "--cache-dir", cache, "lock")
    assert code == 0, err


def test_warm_rebuild_of_both_systems_compresses_and_reads_nothing_and_gives_the_same_digests(
    project: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    cold = build(project, cache, tmp_path / "cold")
    assert cold.stats.misses > 0 and cold.stats.debs_read > 0
    warm = build(project, cache, tmp_path / "warm")
    assert warm.stats.misses == 0
    assert warm.stats.debs_read == 0
    assert warm.stats.hits == cold.stats.hits + cold.stats.misses
    assert warm.index_digest == cold.index_digest
    assert [s.image.manifest_digest for s in warm.systems] == [
        s.image.manifest_digest for s in cold.systems
    ]
    assert (tmp_path / "warm" / "fd" / "x86_64-linux.tar").read_bytes() == (
        tmp_path / "cold" / "fd" / "x86_64-linux.tar"
    ).read_bytes()


def test_warm_build_needs_no_deb_in_the_cache(project: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cold = build(project, cache, tmp_path / "cold")
    for _key, path in list(Cache(cache).entries("debs")):
        path.unlink()
    warm = build(project, cache, tmp_path / "warm")
    assert warm.index_digest == cold.index_digest
    assert list(Cache(cache).entries("debs")) == []


def test_lock_then_offline_build_with_the_mirror_unreachable_gives_the_online_digest(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    lock(cli, project, cache)
    online = build(project, cache, tmp_path / "online")
    point_mirror_at(project, closed_port_url())
    offline = build(project, cache, tmp_path / "offline", offline=True)
    assert offline.index_digest == online.index_digest
    assert offline.stats.misses == 0
    code, _out, err = cli(
        "-f", project, "--cache-dir", cache, "build", "fd", "--all-systems", "--offline",
        "--out", tmp_path / "cli",
    )  # fmt: skip
    assert code == 0, err
    assert index_digest(tmp_path / "cli" / "fd") == online.index_digest
    # Without --offline the same lock and cache still build: nothing needs the mirror.
    assert (
        build(project, cache, tmp_path / "locked", locked=True).index_digest == online.index_digest
    )


def test_offline_build_lists_exactly_the_packages_the_cache_lacks(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    cache = Cache(tmp_path / "cache")
    lock(cli, project, cache.root)
    build(project, cache.root, tmp_path / "online")
    # Drop the fd-find layers and the amd64 fd-find .deb: only that one must be read again.
    for _key, path in list(cache.entries("layers")):
        if (json.loads(path.read_bytes())["layer"] or {}).get("packages") == ["fd-find"]:
            path.unlink()
    locked = read_lock(project.parent / "containers.lock").containers["fd"].systems
    fd_amd64 = next(p for p in locked["x86_64-linux"].packages if p.name == "fd-find")
    cache.discard("debs", fd_amd64.sha256)
    point_mirror_at(project, closed_port_url())
    with pytest.raises(CacheError) as caught:
        build(project, cache.root, tmp_path / "offline", offline=True)
    assert "1 package(s) are not in the cache" in caught.value.message
    assert caught.value.message.endswith(": fd-find 8.6.0-3 (amd64)")
    assert "cache pull" in str(caught.value.hint)
    assert not (tmp_path / "offline" / "fd").exists()


def test_offline_without_a_lock_is_a_lock_error(project: Path, tmp_path: Path) -> None:
    from polyarch.config import load_config
    from polyarch.workflows.build import build_container
    from polyarch.workflows.resolve import Session

    config = load_config(project)
    session = Session(config=config, cache=Cache(tmp_path / "cache"), offline=True)
    container = config.container("fd")
    with pytest.raises(LockError, match=r"offline build needs containers\.lock"):
        build_container(session, container, container.systems, out_dir=tmp_path / "out")


# --- several processes, and crashes -------------------------------------------------------

BIG = os.urandom(4 << 20)
"""Incompressible payload for fd-find, so that building its layer takes a while."""


@pytest.fixture
def big_project(tmp_path: Path, make_repo: RepoFactory) -> Path:
    return make_project(tmp_path, make_repo, extra=BIG)[2]


def build_process(project: Path, cache: Path, out: Path) -> object:
    return polyarch(
        "-f", project, "--cache-dir", cache, "-q", "build", "fd", "--all-systems", "--out", out
    )


def test_two_concurrent_builds_sharing_one_cache_both_succeed_with_identical_outputs(
    big_project: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    first = build_process(big_project, cache, tmp_path / "one")
    second = build_process(big_project, cache, tmp_path / "two")
    for p in (first, second):
        _out, err = p.communicate(timeout=300)  # type: ignore[attr-defined]
        assert p.returncode == 0, err.decode()  # type: ignore[attr-defined]
    one, two = tmp_path / "one" / "fd", tmp_path / "two" / "fd"
    assert index_digest(one) == index_digest(two)
    for result in (one, two):
        assert_layout_intact(result)
    assert (one / "aarch64-linux.tar").read_bytes() == (two / "aarch64-linux.tar").read_bytes()
    assert verify_cache(Cache(cache)).ok
    reference = build(big_project, tmp_path / "fresh-cache", tmp_path / "reference")
    assert index_digest(one) == reference.index_digest


def _first_entry(directory: Path) -> bool:
    return directory.is_dir() and any(
        p for p in directory.glob("*/*") if not p.name.startswith(".")
    )


@pytest.mark.parametrize("moment", ["downloading", "building layers"])
def test_a_build_killed_mid_way_leaves_a_cache_the_next_build_uses(
    big_project: Path, tmp_path: Path, moment: str
) -> None:
    cache = tmp_path / "cache"
    process = build_process(big_project, cache, tmp_path / "out")
    # Kill when the first .deb landed (others are still downloading), or when
    # the first layer blob is written (the big fd-find layer is still compressing).
    watched = cache / ("debs" if moment == "downloading" else "blobs")
    deadline = time.monotonic() + 120
    while not _first_entry(watched):
        assert process.poll() is None, "the build ended before it could be killed"  # type: ignore[attr-defined]
        assert time.monotonic() < deadline
        time.sleep(0.002)
    assert process.poll() is None, "the build ended before it could be killed"  # type: ignore[attr-defined]
    os.kill(process.pid, signal.SIGKILL)  # type: ignore[attr-defined]
    process.wait(timeout=30)  # type: ignore[attr-defined]
    assert not (tmp_path / "out" / "fd").exists()
    assert verify_cache(Cache(cache)).ok  # whatever is there is whole

    rebuilt = build(big_project, cache, tmp_path / "out")
    assert rebuilt.stats.hits > 0  # it used what the killed build left
    assert_layout_intact(tmp_path / "out" / "fd")
    reference = build(big_project, tmp_path / "fresh-cache", tmp_path / "reference")
    assert rebuilt.index_digest == reference.index_digest

    # Leftover temporary files go with the next prune once they are stale.
    for tmp in Cache(cache).temp_files():
        os.utime(tmp, (0, 0))
    prune_cache(Cache(cache))
    assert list(Cache(cache).temp_files()) == []
