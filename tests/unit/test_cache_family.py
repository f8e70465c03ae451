"""A cache many shards share through one registry: concurrent pushes lose nothing, a pull
merges every artifact, a shard pulls only what its builds need, a poisoned member is
refused whole, and compaction folds the family without dropping an entry."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from cacheproject import build, closed_port_url, make_project, point_mirror_at, polyarch
from conftest import RegistryStarter, RepoFactory
from registry_server import RunningRegistry

import polyarch.determinism as determinism
from polyarch.cache import Cache, Kind
from polyarch.config import load_config
from polyarch.determinism import canonical_json
from polyarch.errors import CacheError
from polyarch.image.layer_record import LayerRecord, encode_layer_record
from polyarch.lock import lock_path, read_lock
from polyarch.progress import NullProgress
from polyarch.reference import parse_reference
from polyarch.registry.client import ANONYMOUS
from polyarch.registry.pull import Puller
from polyarch.registry.push import push_plan
from polyarch.workflows.cache import verify_cache
from polyarch.workflows.cache_artifact import Entry, artifact_plan, member_tag, read_artifact
from polyarch.workflows.cache_needs import needs_of
from polyarch.workflows.cache_transfer import pull_cache, push_cache
from polyarch.workflows.resolve import Session

Cli = Callable[..., tuple[int, str, str]]


def entries(cache: Path) -> set[tuple[str, str]]:
    c = Cache(cache)
    return {(kind.value, key) for kind in Kind for key, _ in c.entries(kind)}


def tags(registry: RunningRegistry, repository: str) -> list[str]:
    ref = parse_reference(f"{registry.host}/{repository}")
    with ANONYMOUS.client(ref) as client, Puller(client, repository) as puller:
        return puller.tags() or []


@pytest.fixture
def project(tmp_path: Path, make_repo: RepoFactory, cli: Cli) -> Path:
    path = make_project(tmp_path, make_repo)[2]
    code, _out, err = cli("-f", path, "--cache-dir", tmp_path / "lock-cache", "lock")
    assert code == 0, err
    return path


def test_two_shards_pushing_cache_entries_at_the_same_moment_lose_none(
    project: Path, tmp_path: Path, registry: RunningRegistry
) -> None:
    # Two shards: one built fd, the other hello; both share the base layers and indexes.
    build(project, tmp_path / "shard-a", tmp_path / "out-a", name="fd")
    build(project, tmp_path / "shard-b", tmp_path / "out-b", name="hello")
    own_a = entries(tmp_path / "shard-a") - entries(tmp_path / "shard-b")
    own_b = entries(tmp_path / "shard-b") - entries(tmp_path / "shard-a")
    assert own_a and own_b
    ref = f"{registry.host}/team/cache:main"
    shards = [
        polyarch("--cache-dir", tmp_path / name, "cache", "push", ref, "--json")
        for name in ("shard-a", "shard-b")
    ]  # started together: each reads the (empty) family, then pushes
    results = [p.communicate(timeout=300) for p in shards]
    for process, (_out, err) in zip(shards, results, strict=True):
        assert process.returncode == 0, err.decode()
    pushed = [json.loads(out) for out, _err in results]
    assert all(p["pushed"] for p in pushed)

    fresh = tmp_path / "fresh"
    result = pull_cache(Cache(fresh), ref)
    assert entries(fresh) == entries(tmp_path / "shard-a") | entries(tmp_path / "shard-b")
    assert result.members >= 2
    # The bare tag is whichever push came last: read alone, it would have lost entries.
    with ANONYMOUS.client(parse_reference(ref)) as client, Puller(client, "team/cache") as p:
        _digest, last = read_artifact(p, "main", ref)
    assert not (own_a <= {(k.value, key) for k, key in last} >= own_b)
    assert sorted(tags(registry, "team/cache")) == sorted(["main", *(p["tag"] for p in pushed)])


def test_a_push_lists_only_what_the_family_lacks_and_an_unchanged_cache_pushes_nothing(
    project: Path, tmp_path: Path, registry: RunningRegistry
) -> None:
    build(project, tmp_path / "a", tmp_path / "out-a", name="fd")
    ref = f"{registry.host}/cache:ci"
    first = push_cache(Cache(tmp_path / "a"), ref)
    again = push_cache(Cache(tmp_path / "a"), ref)
    assert first.push is not None and again.push is None
    assert again.listed_before == sum(first.entries.values())
    build(project, tmp_path / "a", tmp_path / "out-a", name="hello")
    grown = push_cache(Cache(tmp_path / "a"), ref)
    assert grown.push is not None
    assert sum(grown.entries.values()) == len(entries(tmp_path / "a")) - again.listed_before
    assert grown.push.blobs_uploaded < sum(grown.entries.values())  # the config blob was there


def test_a_shard_pulls_only_what_its_builds_need_and_then_builds_offline(
    project: Path, tmp_path: Path, registry: RunningRegistry
) -> None:
    ci = tmp_path / "ci"
    for name in ("fd", "hello"):
        build(project, ci, tmp_path / "ci-out", name=name)
    ref = f"{registry.host}/cache:main"
    push_cache(Cache(ci), ref)

    shard = Cache(tmp_path / "shard")
    config = load_config(project)
    session = Session(config=config, cache=shard)
    session.lock = read_lock(lock_path(config))
    fd = config.container("fd")
    x86 = [s for s in fd.systems if s.name == "x86_64-linux"]
    result = pull_cache(shard, ref, want=needs_of(session, [fd], x86))
    pulled = entries(shard.root)
    assert 0 < len(pulled) < len(entries(ci))
    assert {kind for kind, _ in pulled} == {"layers", "blobs", "facts"}  # no .deb, no index

    point_mirror_at(project, closed_port_url())  # no mirror: everything from the pull
    out = tmp_path / "shard-out"
    built = Session(config=load_config(project), cache=shard, offline=True)
    built.lock = session.lock
    from polyarch.workflows.build import build_container

    made = build_container(built, fd, x86, out_dir=out)
    assert made.stats.misses == 0 and made.stats.debs_read == 0
    assert result.downloaded == len(pulled)


def test_a_pull_for_a_layer_the_cache_lacks_takes_its_debs(
    project: Path, tmp_path: Path, registry: RunningRegistry
) -> None:
    ci = tmp_path / "ci"
    build(project, ci, tmp_path / "ci-out", name="fd")
    cache = Cache(ci)
    missing = next(key for key, _ in cache.entries(Kind.LAYERS))
    cache.discard(Kind.LAYERS, missing)
    ref = f"{registry.host}/cache:main"
    push_cache(cache, ref)
    config = load_config(project)
    session = Session(config=config, cache=Cache(tmp_path / "shard"))
    session.lock = read_lock(lock_path(config))
    needs = needs_of(session, [config.container("fd")], None)
    pull_cache(session.cache, ref, want=needs)
    debs = {key for kind, key in entries(tmp_path / "shard") if kind == "debs"}
    assert debs == set(needs.layers[missing])


def test_a_poisoned_member_refuses_the_whole_pull(
    project: Path, tmp_path: Path, registry: RunningRegistry, cli: Cli
) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    build(project, good, tmp_path / "out-good", name="fd")
    build(project, bad, tmp_path / "out-bad", name="hello")
    ref = f"{registry.host}/team/cache:main"
    assert push_cache(Cache(good), ref).push is not None
    # The second shard's cache lies: a layer record, checksum made valid, names wrong sizes.
    record = next(
        path
        for key, path in Cache(bad).entries(Kind.LAYERS)
        if (Kind.LAYERS.value, key) not in entries(good) and b'"digest"' in path.read_bytes()
    )
    doc = json.loads(record.read_bytes())
    doc["layer"]["size"] += 1
    doc["check"] = hashlib.sha256(canonical_json(doc["layer"])).hexdigest()
    record.write_bytes(canonical_json(doc))
    assert push_cache(Cache(bad), ref).push is not None

    laptop = tmp_path / "laptop"
    code, _out, err = cli("--cache-dir", laptop, "cache", "pull", ref)
    assert code == CacheError.exit_code, err
    assert f"layers entry {record.name}" in err and len(err.strip().splitlines()) == 1
    assert entries(laptop) == set() and not list(laptop.glob(".pull-*"))


def test_members_that_disagree_about_an_entry_are_refused(
    project: Path, tmp_path: Path, registry: RunningRegistry
) -> None:
    ci = tmp_path / "ci"
    build(project, ci, tmp_path / "out", name="fd")
    ref = f"{registry.host}/cache:main"
    push_cache(Cache(ci), ref)
    key, path = next(iter(Cache(ci).entries(Kind.FACTS)))
    other = tmp_path / "other-facts"
    other.write_bytes(path.read_bytes() + b" ")
    digest = "sha256:" + hashlib.sha256(other.read_bytes()).hexdigest()
    config = tmp_path / "config"
    config.write_bytes(b"{}")
    plan = artifact_plan([Entry(Kind.FACTS, key, digest, other.stat().st_size, other)], config)  # type: ignore[arg-type]
    push_plan(plan, parse_reference(ref), [member_tag("main", plan.root.digest)])
    with pytest.raises(CacheError, match=f"different facts entries {key}"):
        pull_cache(Cache(tmp_path / "fresh"), ref)
    assert entries(tmp_path / "fresh") == set()


def test_compact_folds_the_family_into_one_artifact_and_loses_nothing(
    project: Path, tmp_path: Path, registry: RunningRegistry
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    build(project, a, tmp_path / "out-a", name="fd")
    build(project, b, tmp_path / "out-b", name="hello")
    ref = f"{registry.host}/cache:main"
    push_cache(Cache(a), ref)
    push_cache(Cache(b), ref)
    assert len(tags(registry, "cache")) == 3  # two members and the bare tag
    folded = push_cache(Cache(tmp_path / "empty"), ref, compact=True)
    assert folded.push is not None and folded.deleted == 2
    assert sorted(tags(registry, "cache")) == sorted(["main", folded.tag])
    fresh = tmp_path / "fresh"
    assert pull_cache(Cache(fresh), ref).members == 1
    assert entries(fresh) == entries(a) | entries(b)


def test_compact_on_a_registry_that_does_not_delete_keeps_every_member(
    project: Path, tmp_path: Path, start_registry: RegistryStarter
) -> None:
    registry = start_registry(delete=False)
    a, b = tmp_path / "a", tmp_path / "b"
    build(project, a, tmp_path / "out-a", name="fd")
    build(project, b, tmp_path / "out-b", name="hello")
    ref = f"{registry.host}/cache:main"
    push_cache(Cache(a), ref)
    push_cache(Cache(b), ref)
    progress = NullProgress()
    folded = push_cache(Cache(tmp_path / "empty"), ref, compact=True, progress=progress)
    assert folded.push is not None and folded.deleted == 0
    assert any("does not delete manifests" in w for w in progress.warnings)
    assert len(tags(registry, "cache")) == 4  # both members, the folded one, the bare tag
    fresh = tmp_path / "fresh"
    assert pull_cache(Cache(fresh), ref).members == 3
    assert entries(fresh) == entries(a) | entries(b)


def test_no_cache_yet_is_an_error_unless_missing_ok(
    cli: Cli, tmp_path: Path, registry: RunningRegistry
) -> None:
    ref = f"{registry.host}/nothing/here:main"
    code, _out, err = cli("--cache-dir", tmp_path / "c", "cache", "pull", ref)
    assert code == 30 and "no cache there" in err
    code, out, err = cli("--cache-dir", tmp_path / "c", "cache", "pull", ref, "--missing-ok")
    assert code == 0 and "nothing pulled" in out, err


def test_a_layer_of_many_gzip_members_verifies_and_pulls_and_a_cut_one_does_not(
    tmp_path: Path, registry: RunningRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Layers past 32 MiB are many gzip members (determinism.py); small ones here.
    monkeypatch.setattr(determinism, "GZIP_SINGLE_MEMBER_MAX", 4096)
    monkeypatch.setattr(determinism, "GZIP_MEMBER_SIZE", 4096)
    tar = hashlib.sha256(b"seed").digest() * 2000  # not a tar, but the checker only inflates
    blob = determinism.gzip_bytes(tar)
    assert blob.count(b"\x1f\x8b\x08") > 10
    cache = Cache(tmp_path / "ci")
    key = hashlib.sha256(blob).hexdigest()
    cache.put(Kind.BLOBS, key, blob)
    record = LayerRecord(
        digest=f"sha256:{key}",
        diff_id=f"sha256:{hashlib.sha256(tar).hexdigest()}",
        size=len(blob),
        uncompressed_size=len(tar),
        packages=("big",),
        debs=(),
        commands=(),
    )
    cache.put(Kind.LAYERS, "a" * 64, encode_layer_record(record))
    assert verify_cache(cache).ok
    ref = f"{registry.host}/cache:main"
    push_cache(cache, ref)
    assert pull_cache(Cache(tmp_path / "fresh"), ref).downloaded == 2

    cut = tmp_path / "cut"
    cut.mkdir()
    short = blob[: len(blob) - 7]
    short_key = hashlib.sha256(short).hexdigest()
    Cache(cut).put(Kind.BLOBS, short_key, short)
    damaged = LayerRecord(**{**msgspec.structs.asdict(record), "digest": f"sha256:{short_key}",
                             "size": len(short)})  # fmt: skip
    Cache(cut).put(Kind.LAYERS, "b" * 64, encode_layer_record(damaged))
    report = verify_cache(Cache(cut))
    assert [p.reason for p in report.problems] == [
        f"its blob sha256:{short_key} is not complete gzip (it ends inside a member)"
    ]
