"""Benchmark: the layer compressor against zlib on the same bytes, and which stages release the GIL.

    python bench/compress.py [--repetitions N] [--json FILE] [--megabytes M]

The bytes: the layer tars of fd for both systems (the .debs of fd's closure,
decoded as polyarch does: ``read_deb`` + the layer rules + the tar writer),
concatenated and cut to ``--megabytes``. Built once in a temporary cache from
the real archive. Rows:

- compress, time: ``determinism.gzip_bytes`` (libdeflate level 6 in 4 MiB gzip
  members, what layers use); baseline: ``zlib.compressobj(6, DEFLATED, 31)``
  (the host's zlib, what layers used before); aim: at least 2x faster.
- compress, size: the same two outputs' sizes; aim: no larger than zlib's.
- compress, two threads: two threads each compressing half the bytes, against
  one thread compressing all of them (baseline); above 1 means the compressor
  lets both cores work.
- GIL, per stage: the share of the stage's run time (repeated for half a
  second in a worker thread) during which the GIL is free for other threads
  (``gil_free_share``): ~100 % releases it, ~0 % holds it. Two references
  are measured the same way: time.sleep and a pure Python loop. Stages: xz and zstd decoding
  (lzma, backports.zstd), libdeflate compression, zlib compression, sha256,
  tarfile parsing of a .deb's data (pure Python), and parsing a Packages index
  (polyarch's own parser, debian/packages.py, and msgspec).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import lzma
import sys
import tarfile
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import ROOT, Aim, Row, add_common_arguments, measure, report, temp_dir

from polyarch.cache import Cache
from polyarch.config import find_config, load_config
from polyarch.debian.deb import read_deb
from polyarch.debian.packages import parse_packages
from polyarch.determinism import COMPRESSOR, gzip_bytes
from polyarch.image.filesystem import layer_tree, package_entries
from polyarch.image.layers import write_tar
from polyarch.workflows.resolve import Session, download, resolve_container

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd


def layer_bytes(config_path: Path, cache: Path, limit: int) -> tuple[bytes, dict[str, Path]]:
    """fd's layer tars for every system, concatenated (first ``limit`` bytes); and its .debs."""
    config = load_config(find_config(config_path))
    container = config.container("fd")
    session = Session(config=config, cache=Cache(cache))
    resolutions = resolve_container(session, container, container.systems)
    debs = download(session, resolutions)
    names = {p.record.sha256: p.record.name for r in resolutions.values() for p in r.packages}
    out = io.BytesIO()
    for sha256, path in sorted(debs.items()):
        entries = layer_tree([package_entries(read_deb(path, names[sha256]), keep_docs=False)])
        write_tar(entries, 0, out)
    return out.getvalue()[:limit], {names[k]: v for k, v in debs.items()}


def zlib_gzip(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


def compressor_rows(data: bytes, n: int) -> list[Row]:
    ours, theirs = gzip_bytes(data), zlib_gzip(data)
    half = len(data) // 2

    def two_threads() -> None:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(gzip_bytes, [data[:half], data[half:]]))

    size = f"{len(data) / 1e6:.0f} MB of fd's layer tars"
    return [
        Row(
            "compress-time",
            f"compress {size}: {COMPRESSOR}",
            measure(lambda: gzip_bytes(data), n),
            baseline=measure(lambda: zlib_gzip(data), n),
            baseline_what=f"zlib {zlib.ZLIB_RUNTIME_VERSION} -6 (the host's)",
            aim=Aim.ratio_at_least(2),
        ),
        Row(
            "compress-size",
            f"compressed size of the same {len(data) / 1e6:.0f} MB",
            [float(len(ours))],
            baseline=[float(len(theirs))],
            baseline_what="zlib -6",
            unit="B",
            aim=Aim.ratio_at_least(1),
        ),
        Row(
            "compress-two-threads",
            "compress the same bytes in two threads (halves)",
            measure(two_threads, n),
            baseline=measure(lambda: gzip_bytes(data), n),
            baseline_what="one thread",
            note="ratio above 1: libdeflate releases the GIL, so both cores work",
        ),
    ]


STAGE_SECONDS = 0.5
_TICK = 0.001


def _python_work() -> None:
    sum(i * i for i in range(100_000))


def gil_free_share(stage: Callable[[], object]) -> float:
    """How much of the time ``stage`` runs in a worker the GIL is free for other threads (%).

    With a switch interval of seconds, a thread that holds the GIL keeps it:
    the main thread, waking every millisecond, gets it only while the worker
    is inside C code that released it. Ticks × 1 ms / wall time is then the
    share of the stage spent without the GIL (0 % for pure Python); a busy
    machine delays the ticks, so it understates a release, never invents one.
    """
    old = sys.getswitchinterval()
    started, done = threading.Event(), threading.Event()

    def worker() -> None:
        started.set()
        try:
            end = time.perf_counter() + STAGE_SECONDS  # long enough to measure, however quick
            while time.perf_counter() < end:
                stage()
        finally:
            done.set()

    sys.setswitchinterval(5.0)
    try:
        thread = threading.Thread(target=worker)
        thread.start()
        started.wait()
        ticks, began = 0, time.perf_counter()
        while not done.is_set():
            time.sleep(_TICK)  # lets the worker have the GIL; we want it back on waking
            ticks += 1
        wall = time.perf_counter() - began
        thread.join()
    finally:
        sys.setswitchinterval(old)
    return round(min(100.0, 100.0 * ticks * _TICK / wall), 1)


def gil_rows(data: bytes, debs: dict[str, Path], n: int) -> list[Row]:
    chunk = data[: 32 << 20]
    xz = lzma.compress(chunk, preset=1)
    zst = zstd.compress(chunk, level=3)
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as t:
        for i in range(20_000):
            info = tarfile.TarInfo(f"usr/share/f{i}")
            info.size = 64
            t.addfile(info, io.BytesIO(bytes(64)))
    tar_data = tar.getvalue()

    def parse_tar() -> None:
        with tarfile.open(fileobj=io.BytesIO(tar_data), mode="r|") as t:
            for _ in t:
                pass

    biggest_name = max(debs, key=lambda name: debs[name].stat().st_size)
    biggest = debs[biggest_name]
    packages = "".join(
        f"Package: pkg{i}\nVersion: 1.{i}-1\nArchitecture: amd64\nDepends: libc6 (>= 2.36)\n"
        f"Filename: pool/main/p/pkg{i}/pkg{i}_1.{i}-1_amd64.deb\nSize: {i + 1}\n"
        f"SHA256: {hashlib.sha256(str(i).encode()).hexdigest()}\nDescription: package {i}\n\n"
        for i in range(20_000)
    ).encode()

    def decode_deb() -> None:
        read_deb(biggest, "x")

    stages: dict[str, tuple[str, Callable[[], object]]] = {
        "ref-sleep": ("reference: time.sleep (releases it)", lambda: time.sleep(0.05)),
        "ref-python": ("reference: a Python loop (holds it)", _python_work),
        "xz": ("xz decoding (lzma)", lambda: lzma.decompress(xz)),
        "zstd": ("zstd decoding (backports.zstd)", lambda: zstd.decompress(zst)),
        "libdeflate": ("libdeflate compression (deflate)", lambda: gzip_bytes(chunk)),
        "zlib": ("zlib compression", lambda: zlib_gzip(chunk)),
        "sha256": ("sha256 (hashlib)", lambda: hashlib.sha256(chunk).digest()),
        "tarfile": ("tarfile parsing (pure Python)", parse_tar),
        "read-deb": (f"read_deb of {biggest_name} (xz + tarfile + rules)", decode_deb),
        "index": (
            "parsing a Packages index (20,000 stanzas)",
            lambda: parse_packages(packages, "main"),
        ),
    }
    rows = []
    for key, (what, stage) in stages.items():
        rows.append(
            Row(
                f"gil-{key}",
                f"GIL: {what}",
                [gil_free_share(stage) for _ in range(n)],
                unit="%",
                note="share of its run time with the GIL free for other threads",
            )
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, repetitions=3)
    parser.add_argument("--megabytes", type=int, default=64)
    parser.add_argument("--config", type=Path, default=ROOT / "containers.toml")
    args = parser.parse_args()
    with temp_dir("compress") as work:
        data, debs = layer_bytes(args.config, work / "cache", args.megabytes << 20)
        rows = compressor_rows(data, args.repetitions)
        rows += gil_rows(data, debs, args.repetitions)
    report(
        "compress",
        rows,
        json_path=args.json,
        command="python bench/compress.py",
        extra={"compressor": COMPRESSOR, "megabytes": round(len(data) / 1e6)},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
