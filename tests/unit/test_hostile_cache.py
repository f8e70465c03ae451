"""A cache that lies: poisoned records, swapped and damaged blobs, damaged parsed indexes.

Each test plays the attacker (or the flipped bit) against a real build of a
generated, signed repository, and checks what a user would see: the build
heals the cache (a warning, exit 0, correct outputs that skopeo accepts), and
nothing outside the cache and the outputs is touched (a canary file keeps
its mode, link count and bytes).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cacheproject import assert_layout_intact, index_digest, make_project
from conftest import RepoFactory

from polyarch.determinism import canonical_json
from polyarch.errors import CacheError

Cli = Callable[..., tuple[int, str, str]]
SKOPEO = shutil.which("skopeo")


@pytest.fixture
def project(tmp_path: Path, make_repo: RepoFactory) -> Path:
    return make_project(tmp_path, make_repo)[2]


def build(cli: Cli, project: Path, cache: Path, out: Path) -> tuple[int, str, str]:
    return cli("-f", project, "--cache-dir", cache, "build", "fd", "--all-systems", "--out", out)


def canary(path: Path, data: bytes) -> tuple[int, int, bytes]:
    """A host file that must survive: its mode, link count and bytes."""
    path.write_bytes(data)
    path.chmod(0o640)
    return snapshot(path)


def snapshot(path: Path) -> tuple[int, int, bytes]:
    st = path.lstat()
    return stat.S_IMODE(st.st_mode), st.st_nlink, path.read_bytes()


def layer_records(cache: Path) -> list[tuple[Path, dict[str, object]]]:
    """(path, the layer's fields) of every record that names a blob, in either record format."""
    found = []
    for path in sorted((cache / "layers").glob("*/*")):
        doc = json.loads(path.read_bytes())
        layer = doc.get("layer", doc) if isinstance(doc, dict) else None
        if isinstance(layer, dict) and "digest" in layer:
            found.append((path, layer))
    return found


def forge(path: Path, **changes: object) -> None:
    """Rewrite a layer record as an attacker would: valid JSON, checksum recomputed if it has one."""
    doc = json.loads(path.read_bytes())
    layer = doc.get("layer", doc)
    layer.update(changes)
    if "check" in doc:
        doc["check"] = hashlib.sha256(canonical_json(layer)).hexdigest()
    path.write_bytes(canonical_json(doc))


def assert_valid_image(result: Path) -> None:
    """Every blob matches its digest; skopeo (an independent reader) copies the index."""
    assert_layout_intact(result)
    if SKOPEO is not None:
        subprocess.run(
            [SKOPEO, "copy", "--all", f"oci:{result / 'oci'}:latest", f"dir:{result / 'copy'}"],
            check=True,
            capture_output=True,
        )
        shutil.rmtree(result / "copy")


def test_a_layer_record_naming_a_host_file_is_refused_and_the_file_is_untouched(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    code, _out, err = build(cli, project, cache, tmp_path / "first")
    assert code == 0, err
    host = tmp_path / "host-secret"
    before = canary(host, b"root:$6$hash:19000::::::\n")
    # cache/blobs/<key[:2]>/<key> with key "../host-secret" is cache/../host-secret.
    path, _layer = layer_records(cache)[0]
    forge(path, digest="sha256:../host-secret", size=len(before[2]))
    code, out, _err = cli("--cache-dir", cache, "cache", "verify")
    assert code == CacheError.exit_code and path.name[:16] in out  # not "all entries intact"

    code, _out, err = build(cli, project, cache, tmp_path / "out")

    assert snapshot(host) == before
    assert code == 0, err
    assert_valid_image(tmp_path / "out" / "fd")
    assert "removed layers entry" in err
    assert index_digest(tmp_path / "out" / "fd") == index_digest(tmp_path / "first" / "fd")
    for archive in (tmp_path / "out" / "fd").glob("*.tar"):
        names = subprocess.run(["tar", "-tf", archive], capture_output=True, text=True).stdout
        assert ".." not in names


def test_a_blob_swapped_for_a_symlink_to_a_host_file_is_never_followed(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    code, _out, err = build(cli, project, cache, tmp_path / "first")
    assert code == 0, err
    _path, layer = layer_records(cache)[0]
    key = str(layer["digest"]).removeprefix("sha256:")
    blob = cache / "blobs" / key[:2] / key
    host = tmp_path / "host-file"
    before = canary(host, blob.read_bytes())  # same bytes and size: only the link is wrong
    blob.unlink()
    blob.symlink_to(host)

    code, _out, err = build(cli, project, cache, tmp_path / "out")

    assert code == 0, err
    assert snapshot(host) == before
    assert not blob.is_symlink()
    assert_valid_image(tmp_path / "out" / "fd")


def test_a_shard_directory_linked_outside_the_cache_is_never_entered(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    code, _out, err = build(cli, project, cache, tmp_path / "first")
    assert code == 0, err
    _path, layer = max(layer_records(cache), key=lambda item: int(str(item[1]["size"])))
    key = str(layer["digest"]).removeprefix("sha256:")
    shard = cache / "blobs" / key[:2]
    # Elsewhere: a file of the blob's name and size, but other bytes.
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / key).write_bytes(bytes(len((shard / key).read_bytes())))
    before = snapshot(outside / key)
    shutil.rmtree(shard)
    shard.symlink_to(outside, target_is_directory=True)

    code, _out, err = build(cli, project, cache, tmp_path / "out")

    assert code == 0, err
    assert_valid_image(tmp_path / "out" / "fd")
    assert snapshot(outside / key) == before
    assert sorted(p.name for p in outside.iterdir()) == [key]  # nothing written there
    assert not shard.is_symlink() and (shard / key).is_file()


def test_a_flipped_byte_in_a_cached_blob_is_healed_and_earlier_results_stay_intact(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    code, _out, err = build(cli, project, cache, tmp_path / "before")
    assert code == 0, err
    _path, layer = max(layer_records(cache), key=lambda item: int(str(item[1]["size"])))
    key = str(layer["digest"]).removeprefix("sha256:")
    blob = cache / "blobs" / key[:2] / key
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    os.chmod(blob, 0o644)
    blob.write_bytes(bytes(data))

    code, _out, err = build(cli, project, cache, tmp_path / "after")

    assert code == 0, err
    assert_valid_image(tmp_path / "after" / "fd")
    assert_valid_image(tmp_path / "before" / "fd")  # not a hard link to the damaged file
    assert "removed blobs entry" in err
    assert index_digest(tmp_path / "after" / "fd") == index_digest(tmp_path / "before" / "fd")


def test_editing_a_result_does_not_reach_the_cache(cli: Cli, project: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    code, _out, err = build(cli, project, cache, tmp_path / "mine")
    assert code == 0, err
    for blob in (tmp_path / "mine" / "fd" / "oci" / "blobs" / "sha256").iterdir():
        os.chmod(blob, 0o644)
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0x01  # the same size: only the bytes changed
        blob.write_bytes(bytes(data))
    code, _out, err = build(cli, project, cache, tmp_path / "fresh")
    assert code == 0, err
    assert_valid_image(tmp_path / "fresh" / "fd")
    assert "removed" not in err  # the cache never saw the edit


def test_a_damaged_parsed_index_is_healed_instead_of_blaming_the_mirror(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    code, _out, err = build(cli, project, cache, tmp_path / "first")
    assert code == 0, err
    # Flip one hex digit of fd-find's SHA256 inside a cached parsed index.
    debs = {p.name for p in (cache / "debs").glob("*/*")}
    damaged = 0
    for index in (cache / "indexes").glob("*/*"):
        data = bytearray(index.read_bytes())
        for sha in debs:
            at = data.find(sha.encode())
            if at >= 0:
                data[at + 10] = ord("0") if data[at + 10] != ord("0") else ord("1")
                damaged += 1
                break
        index.write_bytes(bytes(data))
    assert damaged

    code, out, _err = cli("--cache-dir", cache, "cache", "verify")
    assert code == CacheError.exit_code
    assert "indexes" in out

    code, _out, err = build(cli, project, cache, tmp_path / "out")
    assert code == 0, err
    assert "removed indexes entry" in err
    assert "does not match its index" not in err and "mirror" not in err
    code, out, err = cli("--cache-dir", cache, "cache", "verify")
    assert code == 0, out + err


def test_entries_that_are_not_regular_files_are_misses_removed_without_following(
    tmp_path: Path,
) -> None:
    from polyarch.cache import Cache, Kind

    cache, key = Cache(tmp_path / "cache"), "a" * 64
    outside = tmp_path / "outside"
    before = canary(outside, b"not the cache's")
    entry = cache.path(Kind.DEBS, key)
    entry.parent.mkdir(parents=True)
    entry.symlink_to(outside)
    assert cache.get(Kind.DEBS, key) is None
    assert not entry.is_symlink() and snapshot(outside) == before
    entry.mkdir()
    (entry / "inside").write_bytes(b"x")
    assert cache.get(Kind.DEBS, key) is None and not entry.exists()
    assert len(cache.progress.warnings) == 2  # type: ignore[attr-defined]
    for bad in ("../outside", "sha256:" + key, key.upper(), ""):
        with pytest.raises(CacheError, match="is not a debs cache key"):
            cache.get(Kind.DEBS, bad)
