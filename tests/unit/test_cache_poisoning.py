"""A poisoned cache artifact in a real registry: a fresh cache pulling it refuses it whole.

The attacker controls what a CI cache pushed to docker-registry on 127.0.0.1:
layer records naming host files or describing other bytes, parsed indexes with
damaged records. `polyarch cache pull` into an empty cache must exit 40 naming
the entry, add nothing to the cache, and leave a canary file outside the cache
exactly as it was (mode, link count, bytes) — also when the poisoned cache is
then built from.
"""

from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cacheproject import build, make_project
from conftest import RepoFactory
from registry_server import REGISTRY, RunningRegistry, run_registry

from polyarch.cache import Cache
from polyarch.determinism import canonical_json
from polyarch.errors import CacheError
from polyarch.workflows.cache import cache_info

pytestmark = [
    pytest.mark.registry,
    pytest.mark.skipif(REGISTRY is None, reason="needs docker-registry"),
]

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RunningRegistry]:
    with run_registry(tmp_path / "registry") as running:
        yield running


@pytest.fixture
def ci_cache(tmp_path: Path, make_repo: RepoFactory) -> Path:
    """A cache a CI build filled: every kind of entry."""
    project = make_project(tmp_path, make_repo)[2]
    build(project, tmp_path / "ci-cache", tmp_path / "ci-out")
    return tmp_path / "ci-cache"


def project_of(tmp_path: Path) -> Path:
    return tmp_path / "project" / "containers.toml"


def snapshot(path: Path) -> tuple[int, int, bytes]:
    st = path.lstat()
    return stat.S_IMODE(st.st_mode), st.st_nlink, path.read_bytes()


def records(cache: Path) -> list[Path]:
    """Layer records that name a blob (in this version's format, or the plain JSON before it)."""
    found = []
    for path in sorted((cache / "layers").glob("*/*")):
        doc = json.loads(path.read_bytes())
        if isinstance(doc.get("layer", doc), dict) and "digest" in doc.get("layer", doc):
            found.append(path)
    return found


def forge(path: Path, **changes: object) -> None:
    """Rewrite a layer record with a valid checksum, as the pusher of a poisoned artifact can."""
    doc = json.loads(path.read_bytes())
    layer = doc.get("layer", doc)
    layer.update(changes)
    if "check" in doc:
        doc["check"] = hashlib.sha256(canonical_json(layer)).hexdigest()
    path.write_bytes(canonical_json(doc))


def poison_host_path(cache: Path, canary: Path) -> str:
    # A fresh cache at CACHE: blobs/<key[:2]>/<key> with key "../canary" is CACHE/../canary.
    path = records(cache)[0]
    forge(path, digest="sha256:../canary", size=canary.stat().st_size)
    return path.name


def poison_diff_id(cache: Path, canary: Path) -> str:
    path = records(cache)[0]
    forge(path, diff_id="sha256:" + "0" * 64)  # a real blob, described as other bytes
    return path.name


def poison_index(cache: Path, canary: Path) -> str:
    index = next((cache / "indexes").glob("*/*"))
    data = bytearray(index.read_bytes())
    data[-5] ^= 0x01  # inside the last record
    index.write_bytes(bytes(data))
    return index.name


@pytest.mark.parametrize(
    ("poison", "reason"),
    [
        (poison_host_path, "not a layer record"),
        (poison_diff_id, "does not unpack to"),
        (poison_index, "checksum"),
    ],
    ids=["record-names-a-host-file", "record-lies-about-its-blob", "damaged-parsed-index"],
)
def test_a_poisoned_artifact_is_refused_whole_and_the_canary_is_untouched(
    cli: Cli,
    ci_cache: Path,
    tmp_path: Path,
    registry: RunningRegistry,
    poison: Callable[[Path, Path], str],
    reason: str,
) -> None:
    canary = tmp_path / "canary"
    canary.write_bytes(b"a file outside every cache\n")
    canary.chmod(0o640)
    before = snapshot(canary)
    entry = poison(ci_cache, canary)
    ref = f"{registry.host}/team/cache:poisoned"
    code, _out, err = cli("--cache-dir", ci_cache, "cache", "push", ref)
    assert code == 0, err

    laptop = tmp_path / "laptop-cache"
    code, _out, err = cli("--cache-dir", laptop, "cache", "pull", ref)
    if code == 0:
        # Taken: then building from it must not reach the canary either.
        build(project_of(tmp_path), laptop, tmp_path / "laptop-out")

    assert snapshot(canary) == before
    assert code == CacheError.exit_code, err
    assert f"entry {entry}" in err and reason in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert sum(k.entries for k in cache_info(Cache(laptop)).kinds) == 0
    assert not list(laptop.glob(".pull-*"))  # the staging directory is gone too


def test_a_good_artifact_still_pulls_and_verifies(
    cli: Cli, ci_cache: Path, tmp_path: Path, registry: RunningRegistry
) -> None:
    ref = f"{registry.host}/team/cache:good"
    code, _out, err = cli("--cache-dir", ci_cache, "cache", "push", ref)
    assert code == 0, err
    laptop = tmp_path / "laptop-cache"
    code, _out, err = cli("--cache-dir", laptop, "cache", "pull", ref)
    assert code == 0, err
    code, out, err = cli("--cache-dir", laptop, "cache", "verify")
    assert code == 0 and "all entries intact" in out, out + err
