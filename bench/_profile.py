"""Where a build's time goes: cProfile over every thread, own time grouped by what it does.

    profile_build(config, cache, out, dump) -> {wall_seconds, categories, top_functions, ...}

Used by bench/scale.py. Every leaf function's own time is charged to one
category (hash, decompress, compress, write, read, network, parse, Python
work on .debs, other); a C function that does none of these (``str.split``,
a regex) is charged to its callers' categories. Times are thread-seconds.
"""

from __future__ import annotations

import cProfile
import pstats
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Leaf functions (cProfile's own time) → where the time goes; the first match wins.
# Matched against "FILENAME 'FUNCTION'"; C functions have FILENAME "~".
TOP_FUNCTIONS = 6
WAITING = "waiting (idle threads, joins)"
DECOMPRESS_INDEX = "decompress: Packages indexes (gzip, xz)"
DECOMPRESS_DEBS = "decompress: .deb contents (xz, zstd)"
CATEGORIES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("waiting", WAITING, ("'acquire' of '_thread.lock", "SimpleQueue", "threading.py 'wait'", "time.sleep")),
    ("network", "network (sockets, TLS, HTTP client)",
     ("_ssl.", "_socket.", "select.", "getaddrinfo", "httpcore/", "h11/", "httpx/")),
    ("hash", "hash (sha256)", ("_hashlib", "hashlib")),
    ("decompress-debs", DECOMPRESS_DEBS,
     ("'decompress'", "Decompressor", "zstd", "'flush' of 'zlib.Decompress", "/_compression.py",
      "/lzma.py")),
    ("compress", "compress (gzip: libdeflate)",
     ("'compress'", "'flush' of 'zlib.Compress", "zlib.crc32", "/gzip.py", "deflate_compress",
      "deflate.crc32", "'crc32'")),
    ("memory", "in-memory copies", ("_io.BytesIO",)),
    ("write", "write (files, links, renames)",
     ("'write' of '_io.", "'writelines'", "posix.write", "fsync", "posix.replace", "posix.rename",
      "posix.link", "posix.unlink", "posix.rmdir", "posix.mkdir", "posix.chmod", "posix.utime",
      "/shutil.py", "sendfile", "copy_file_range", "/tempfile.py", "'truncate'")),
    ("read", "read (files, stat)",
     ("'read' of '_io.", "'readinto' of '_io.", "posix.read", "posix.stat", "posix.lstat",
      "posix.scandir", "io.open", "'seek' of '_io.", "posix.open", "'close' of '_io.")),
    ("parse", "parse indexes and resolve",
     ("polyarch/debian/index.py", "polyarch/debian/resolver.py", "polyarch/debian/version.py",
      "polyarch/debian/repository.py", "polyarch/debian/packages.py",
      "polyarch/debian/universe.py", "msgspec")),
    ("python-debs", "read .debs and build layers (Python: ar, tar, paths)",
     ("/tarfile.py", "polyarch/image/", "polyarch/debian/deb.py")),
)  # fmt: skip
OTHER = "other Python (paths, JSON, imports, …)"
CATEGORY_KEYS = {
    **{label: key for key, label, _ in CATEGORIES},
    DECOMPRESS_INDEX: "decompress-index",
    OTHER: "other",
}
# Who called a decompressor tells an index (decompressed whole) from a .deb (streamed).
INDEX_CALLERS = ("lzma.py 'decompress'", "gzip.py 'decompress'", "polyarch/debian/index.py")


def _category(text: str) -> str | None:
    return next((c for _, c, keys in CATEGORIES if any(k in text for k in keys)), None)


def _text(key: tuple[str, int, str]) -> str:
    return f"{key[0]} '{key[2]}'"


def categorise(stats: pstats.Stats) -> dict[str, float]:
    """Own time per category, summed over every thread.

    A C function that matches no category (``str.split``, ``re.findall``...) is
    charged to its callers' categories, so parsing an index counts as parsing.
    """
    totals: dict[str, float] = {}

    def add(category: str, seconds: float) -> None:
        totals[category] = totals.get(category, 0.0) + seconds

    for key, (_, _, own, _, callers) in stats.stats.items():  # type: ignore[attr-defined]
        category = _category(_text(key))
        if category == DECOMPRESS_DEBS and key[0] == "~" and callers:
            for caller, (_, _, seconds, _) in callers.items():
                by_index = any(k in _text(caller) for k in INDEX_CALLERS)
                add(DECOMPRESS_INDEX if by_index else DECOMPRESS_DEBS, seconds)
        elif category is None and key[0] == "~" and callers:
            for caller, (_, _, seconds, _) in callers.items():
                add(_category(_text(caller)) or OTHER, seconds)
        else:
            add(category or OTHER, own)
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


@contextmanager
def every_thread_profiled() -> Iterator[list[cProfile.Profile]]:
    """cProfile the calling thread and every thread started inside the block."""
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        profile = cProfile.Profile()
        with lock:
            profiles.append(profile)
        profile.enable()
        try:
            original(self)
        finally:
            profile.disable()

    main = cProfile.Profile()
    profiles.append(main)
    threading.Thread.run = run  # type: ignore[method-assign]
    main.enable()
    try:
        yield profiles
    finally:
        main.disable()
        threading.Thread.run = original  # type: ignore[method-assign]


def profile_build(config: Path, cache: Path, out: Path, dump: Path) -> dict[str, Any]:
    """Build every container of ``config`` in this process under cProfile; where time went."""
    from polyarch.cache import Cache
    from polyarch.config import load_config
    from polyarch.workflows.build import build_container
    from polyarch.workflows.resolve import Session

    session = Session(config=load_config(config), cache=Cache(cache))
    started = time.perf_counter()
    try:
        with every_thread_profiled() as profiles:
            for container in session.config.containers:
                build_container(session, container, container.systems, out_dir=out)
    finally:
        session.repository.close()
    wall = time.perf_counter() - started
    stats = pstats.Stats(profiles[0])
    for profile in profiles[1:]:
        stats.add(profile)
    stats.dump_stats(str(dump))
    categories = categorise(stats)
    busy = {k: v for k, v in categories.items() if k != WAITING}
    busy_total = sum(busy.values())
    # The busiest functions by own time, idle waits left out (they are the WAITING category).
    by_own = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])  # type: ignore[attr-defined]
    top = [kv for kv in by_own if _category(_text(kv[0])) != WAITING][:TOP_FUNCTIONS]
    return {
        "containers": len(session.config.containers),
        "wall_seconds": wall,
        "threads": len(profiles),
        "busy_thread_seconds": busy_total,
        "categories": {
            k: {
                "key": CATEGORY_KEYS[k],
                "seconds": v,
                "share": v / busy_total if busy_total else 0.0,
            }
            for k, v in busy.items()
        },
        "waiting_thread_seconds": categories.get(WAITING, 0.0),
        "top_functions": [
            {"function": _label(key), "own_seconds": value[2], "calls": value[1]}
            for key, value in top
        ],
    }


def _label(key: tuple[str, int, str]) -> str:
    filename, line, function = key
    if filename == "~":
        return function
    if "/src/polyarch/" in filename:
        path = "polyarch/" + filename.split("/src/polyarch/", 1)[1]
    else:  # the standard library or a dependency: its file name says enough
        path = filename.split("site-packages/")[-1].rsplit("/", 1)[-1]
    return f"{path}:{line}({function})"
