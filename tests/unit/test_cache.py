"""The cache store itself: use marks, locks, info, verify (+repair), prune."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from polyarch.cache import Cache
from polyarch.debian.deb import DebContents
from polyarch.errors import CacheError, UsageError
from polyarch.image.layer_plan import LayerPlan
from polyarch.image.layers import build_layers
from polyarch.workflows.cache import (
    TEMP_GRACE,
    Problem,
    cache_info,
    parse_duration,
    prune_cache,
    verify_cache,
)

Cli = Callable[..., tuple[int, str, str]]
DAY = 86400.0


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _no_read(sha256: str) -> DebContents:
    raise AssertionError("the skeleton layer reads no package")


def filled(root: Path) -> tuple[Cache, dict[str, str]]:
    """A cache with a .deb and a real layer (record + blob); returns it and kind → key."""
    cache = Cache(root)
    deb = b"a .deb"
    cache.put("debs", sha(deb), deb)
    [layer] = build_layers([LayerPlan(skeleton=True)], _no_read, cache, epoch=0, keep_docs=False)
    [(layer_key, _path)] = list(cache.entries("layers"))
    return cache, {
        "debs": sha(deb),
        "blobs": layer.digest.removeprefix("sha256:"),
        "layers": layer_key,
    }


def flip(path: Path, at: int = 20) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 1
    path.write_bytes(bytes(data))


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_get_marks_an_entry_used_even_where_reads_do_not(tmp_path: Path) -> None:
    cache, keys = filled(tmp_path)
    path = cache.path("debs", keys["debs"])
    age(path, 10 * DAY)
    mtime = path.stat().st_mtime
    assert cache.get("debs", keys["debs"]) == path
    assert time.time() - path.stat().st_atime < 60
    assert path.stat().st_mtime == mtime  # content age is left alone


def test_lock_lets_one_producer_at_a_time_work_on_an_entry(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    inside: list[int] = []
    overlap = threading.Event()

    def produce(n: int) -> None:
        with cache.lock("layers", "a" * 64):
            inside.append(n)
            if len(inside) > 1:
                overlap.set()
            time.sleep(0.05)
            inside.remove(n)

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not overlap.is_set()


def test_info_counts_entries_and_bytes_per_kind(tmp_path: Path) -> None:
    cache, _keys = filled(tmp_path)
    (cache.root / "debs" / "ab").mkdir()
    (cache.root / "debs" / "ab" / ".abc.tmp").write_bytes(b"12345")
    info = cache_info(cache)
    by_kind = {k.kind: (k.entries, k.bytes) for k in info.kinds}
    assert by_kind["debs"] == (1, 6)
    assert by_kind["blobs"][0] == 1
    assert by_kind["layers"][0] == 1
    assert by_kind["indexes"] == (0, 0)
    assert (info.temp_files, info.temp_bytes) == (1, 5)


def test_verify_finds_flipped_bits_and_layers_naming_them_and_repair_removes_them(
    tmp_path: Path,
) -> None:
    cache, keys = filled(tmp_path)
    assert verify_cache(cache).ok
    flip(cache.path("blobs", keys["blobs"]))
    cache.path("debs", keys["debs"]).write_bytes(b"a .deB")
    report = verify_cache(cache)
    assert not report.ok and not report.repaired
    assert {(p.kind, p.key) for p in report.problems} == {
        ("debs", keys["debs"]),
        ("blobs", keys["blobs"]),
        ("layers", keys["layers"]),
    }
    assert "hashes to" in next(p.reason for p in report.problems if p.kind == "layers")
    repaired = verify_cache(cache, repair=True)
    assert repaired.repaired
    assert all(cache.get(kind, key) is None for kind, key in keys.items())
    assert verify_cache(cache).ok


def test_verify_reports_a_layer_whose_blob_is_missing_and_an_undecodable_index(
    tmp_path: Path,
) -> None:
    from polyarch.debian.index import cache_key

    cache, keys = filled(tmp_path)
    cache.discard("blobs", keys["blobs"])
    cache.put("indexes", cache_key("f" * 64), b"\xc1 not msgpack")
    reasons = {p.kind: p.reason for p in verify_cache(cache).problems}
    assert reasons["layers"].endswith("is missing")
    assert reasons["indexes"] == "its header does not match its checksum"


def test_cli_verify_fails_on_damage_and_succeeds_after_repair(cli: Cli, tmp_path: Path) -> None:
    cache, keys = filled(tmp_path / "c")
    code, out, _err = cli("--cache-dir", cache.root, "cache", "verify")
    assert code == 0 and "all entries intact" in out
    cache.path("debs", keys["debs"]).write_bytes(b"x")
    code, out, err = cli("--cache-dir", cache.root, "cache", "verify")
    assert code == CacheError.exit_code
    assert keys["debs"][:16] in out and "cache verify --repair" in err
    code, _out, _err = cli("cache", "verify", "--repair", "--cache-dir", cache.root)
    assert code == 0
    code, out, _err = cli("cache", "info", "--cache-dir", cache.root)
    assert code == 0 and "debs" in out


def test_prune_removes_a_crashed_writers_file_but_not_a_live_one(tmp_path: Path) -> None:
    cache, keys = filled(tmp_path)
    shard = cache.path("debs", keys["debs"]).parent
    crashed, live = shard / ".dead.tmp", shard / ".live.tmp"
    crashed.write_bytes(b"partial")
    live.write_bytes(b"being written")
    age(crashed, TEMP_GRACE + 60)
    report = prune_cache(cache)
    assert (report.temp_files, report.temp_bytes) == (1, 7)
    assert not crashed.exists() and live.exists()
    assert all(cache.get(kind, key) for kind, key in keys.items())


def test_prune_older_than_removes_only_entries_unused_that_long(tmp_path: Path) -> None:
    cache, keys = filled(tmp_path)
    for kind in ("debs", "blobs", "layers"):
        age(cache.path(kind, keys[kind]), 40 * DAY)
    cache.get("debs", keys["debs"])  # used now: it stays
    report = prune_cache(cache, older_than=30 * DAY)
    assert report.removed["debs"].entries == 0
    assert report.removed["blobs"].entries == 1
    assert report.removed["layers"].entries == 1
    assert cache.get("debs", keys["debs"]) is not None
    assert cache.get("blobs", keys["blobs"]) is None


def test_prune_drops_layer_records_whose_blob_is_gone_and_indexes_of_another_format(
    tmp_path: Path,
) -> None:
    cache, keys = filled(tmp_path)
    cache.discard("blobs", keys["blobs"])
    old_format = "e" * 64 + "-00000000"
    cache.put("indexes", old_format, b"an index as an older polyarch wrote it")
    assert verify_cache(cache).problems == (
        Problem("layers", keys["layers"], f"its blob sha256:{keys['blobs']} is missing"),
    )  # an old-format index is not damage: it is never read
    report = prune_cache(cache)
    assert report.removed["layers"].entries == 1
    assert report.removed["indexes"].entries == 1
    assert cache.get("layers", keys["layers"]) is None
    assert cache.get("indexes", old_format) is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("45m", 2700),
        ("12h", 43200),
        ("30d", 30 * DAY),
        ("2w", 14 * DAY),
        ("1d12h", 1.5 * DAY),
    ],
)
def test_durations_are_read_in_the_usual_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "d", "3 days", "-1d", "1y"])
def test_other_durations_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="not a duration"):
        parse_duration(text)


def test_cli_prune_older_than(cli: Cli, tmp_path: Path) -> None:
    cache, keys = filled(tmp_path / "c")
    age(cache.path("debs", keys["debs"]), 3 * DAY)
    code, _out, err = cli("--cache-dir", cache.root, "cache", "prune", "--older-than", "2d")
    assert code == 0, err
    assert cache.get("debs", keys["debs"]) is None
    assert cache.get("blobs", keys["blobs"]) is not None
    code, _out, err = cli("--cache-dir", cache.root, "cache", "prune", "--older-than", "soon")
    assert code == UsageError.exit_code and "not a duration" in err


def test_layer_records_are_what_the_verifier_understands(tmp_path: Path) -> None:
    # The verifier reads what layers.py writes: keep the two in step.
    cache, keys = filled(tmp_path)
    record = json.loads(cache.path("layers", keys["layers"]).read_bytes())
    assert record["layer"]["digest"] == f"sha256:{keys['blobs']}"
    assert verify_cache(cache).ok
