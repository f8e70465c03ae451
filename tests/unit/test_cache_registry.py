"""Sharing the cache through a registry: cache push, cache pull into an empty cache, build offline."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cacheproject import build, closed_port_url, make_project, point_mirror_at
from conftest import RepoFactory
from registry_server import SKOPEO, RunningRegistry, make_layout

from polyarch.cache import Cache
from polyarch.errors import IntegrityError, RegistryError
from polyarch.media_types import POLYARCH_CACHE as ARTIFACT_TYPE
from polyarch.registry.push import push_layout
from polyarch.workflows.cache import cache_info, verify_cache
from polyarch.workflows.cache_transfer import (
    ANNOTATION_KEY,
    ANNOTATION_KIND,
    pull_cache,
    push_cache,
)

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def project(tmp_path: Path, make_repo: RepoFactory) -> Path:
    return make_project(tmp_path, make_repo)[2]


def test_push_then_pull_into_an_empty_cache_then_offline_build_downloads_and_compresses_nothing(
    cli: Cli, project: Path, tmp_path: Path, registry: RunningRegistry
) -> None:
    ci_cache = tmp_path / "ci-cache"
    code, _out, err = cli("-f", project, "--cache-dir", ci_cache, "lock")
    assert code == 0, err
    online = build(project, ci_cache, tmp_path / "ci")
    ref = f"{registry.host}/team/polyarch-cache:main"
    code, out, err = cli("--cache-dir", ci_cache, "cache", "push", ref)
    assert code == 0, err
    assert "pushed" in out

    # Another machine: an empty cache, and no mirror at all.
    laptop = tmp_path / "laptop-cache"
    code, out, err = cli("--cache-dir", laptop, "cache", "pull", ref)
    assert code == 0, err
    assert {k.kind: k.entries for k in cache_info(Cache(laptop)).kinds} == {
        k.kind: k.entries for k in cache_info(Cache(ci_cache)).kinds
    }
    assert verify_cache(Cache(laptop)).ok
    point_mirror_at(project, closed_port_url())
    result = build(project, laptop, tmp_path / "laptop", offline=True)
    assert result.index_digest == online.index_digest
    assert result.stats.misses == 0 and result.stats.debs_read == 0


def test_the_artifact_is_an_oci_index_listing_every_entry_by_kind_and_key(
    project: Path, tmp_path: Path, registry: RunningRegistry
) -> None:
    cache = Cache(tmp_path / "cache")
    build(project, cache.root, tmp_path / "out")
    ref = f"{registry.host}/cache:v1"
    pushed = push_cache(cache, ref)
    # One manifest of entries, then the index over it under its member tag and the bare tag.
    assert pushed.push is not None and pushed.push.manifests_pushed == 3
    assert pushed.tag == "v1." + pushed.push.digest.removeprefix("sha256:")[:16]
    if SKOPEO is None:
        pytest.skip("needs skopeo")
    raw = subprocess.run(
        [SKOPEO, "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
        capture_output=True,
        check=True,
    ).stdout
    index = json.loads(raw)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert index["artifactType"] == ARTIFACT_TYPE
    child = json.loads(
        subprocess.run(
            [
                SKOPEO, "inspect", "--raw", "--tls-verify=false",
                f"docker://{registry.host}/cache@{index['manifests'][0]['digest']}",
            ],
            capture_output=True,
            check=True,
        ).stdout
    )  # fmt: skip
    listed = {
        (d["annotations"][ANNOTATION_KIND], d["annotations"][ANNOTATION_KEY])
        for d in child["layers"]
    }
    present = {
        (kind, key)
        for kind in ("debs", "blobs", "layers", "indexes", "facts")
        for key, _ in cache.entries(kind)
    }
    assert listed == present
    debs = [d for d in child["layers"] if d["annotations"][ANNOTATION_KIND] == "debs"]
    assert all(d["digest"] == "sha256:" + d["annotations"][ANNOTATION_KEY] for d in debs)


def test_pushing_an_unchanged_cache_again_uploads_nothing_and_gives_the_same_digest(
    project: Path, tmp_path: Path, registry: RunningRegistry
) -> None:
    cache = Cache(tmp_path / "cache")
    build(project, cache.root, tmp_path / "out")
    first = push_cache(cache, f"{registry.host}/cache:a")
    again = push_cache(cache, f"{registry.host}/cache:b")
    assert first.push is not None and again.push is not None
    assert first.push.blobs_uploaded > 0
    assert again.push.blobs_uploaded == 0
    assert again.push.digest == first.push.digest


def test_pull_skips_what_the_cache_has_and_can_take_only_some_kinds(
    project: Path, tmp_path: Path, registry: RunningRegistry
) -> None:
    cache = Cache(tmp_path / "cache")
    build(project, cache.root, tmp_path / "out")
    ref = f"{registry.host}/cache:latest"
    push_cache(cache, ref)
    other = Cache(tmp_path / "other")
    only_debs = pull_cache(other, ref, kinds=("debs",))
    assert only_debs.entries == only_debs.downloaded == len(list(cache.entries("debs")))
    assert list(other.entries("blobs")) == []
    everything = pull_cache(other, ref)
    assert everything.present == only_debs.entries
    assert everything.downloaded == everything.entries - only_debs.entries


def test_pull_refuses_an_image_that_is_not_a_polyarch_cache(
    tmp_path: Path, registry: RunningRegistry
) -> None:
    sample = make_layout(tmp_path / "layout")
    push_layout(sample.path, f"{registry.host}/app:1", record_dir=tmp_path / "record")
    with pytest.raises(RegistryError, match="is not a polyarch cache"):
        pull_cache(Cache(tmp_path / "cache"), f"{registry.host}/app:1")
    assert list(Cache(tmp_path / "cache").entries("blobs")) == []


def test_pull_refuses_a_blob_that_is_not_what_its_descriptor_says(
    project: Path, tmp_path: Path, registry: RunningRegistry
) -> None:
    cache = Cache(tmp_path / "cache")
    build(project, cache.root, tmp_path / "out")
    ref = f"{registry.host}/cache:latest"
    push_cache(cache, ref)
    # Flip a byte of one stored .deb inside the registry's own storage.
    key, _path = next(iter(cache.entries("debs")))
    stored = registry.root / "docker/registry/v2/blobs/sha256" / key[:2] / key / "data"
    data = bytearray(stored.read_bytes())
    data[0] ^= 1
    stored.write_bytes(bytes(data))
    empty = Cache(tmp_path / "empty")
    with pytest.raises(IntegrityError, match="does not match its descriptor"):
        pull_cache(empty, ref, kinds=("debs",), jobs=1)
    assert empty.get("debs", key) is None
