"""Benchmark: fd for both systems from the real archive, through the cache and the lock.

    python bench/cache.py [--repetitions N] [--container fd] [--json FILE]

In one process, with a fresh cache directory and the host's Debian mirror:

- cold:            empty cache (download, parse indexes, build and compress layers);
- warm:            the same build again (InRelease checked, indexes resolved, layers hit);
- locked:          ``--locked``: closures from containers.lock, no Release or index read;
- locked+offline:  ``--offline`` with the mirror pointed at a closed 127.0.0.1 port;
- pulled+offline:  ``cache push`` to a docker-registry on 127.0.0.1, ``cache pull``
                   into an empty cache, then ``--offline`` from it (pull and build timed apart).

Times are wall-clock medians of ``--repetitions`` (cold and pulled+offline run
once); aim: warm, locked and locked+offline builds of both systems together
< 0.5 s. The printed table shows each build's index digest, layer cache
hits/misses, .debs read, and the size of what it wrote; the last row is that
size (OUT/NAME: the OCI layout + one docker-archive per system), the floor a
build cannot go under. Every build must give the same index digest, or the
benchmark fails. ``--runs`` is an old name for ``--repetitions``.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time
from pathlib import Path

from _common import ROOT, Aim, Row, add_common_arguments, measure, report, temp_dir

sys.path.insert(0, str(ROOT / "tests"))

from registry_server import run_registry

from polyarch.cache import Cache
from polyarch.config import Config, load_config
from polyarch.lock import lock_path, read_lock, write_lock
from polyarch.workflows.build import BuildResult, build_container
from polyarch.workflows.cache import pull_cache, push_cache
from polyarch.workflows.resolve import Session, lock_containers

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

[containers.rg]
package = "ripgrep"
command = "rg"
"""

MB = 1e6


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/debian"


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class Bench:
    """Builds one container again and again, keeping the printed table, the rows and the digests."""

    def __init__(self, work: Path, name: str) -> None:
        self.work, self.name = work, name
        self.table: list[list[str]] = []
        self.rows: list[Row] = []
        self.digests: dict[str, str] = {}
        self.outs = 0

    def build(self, config: Config, cache: Path, *, locked: bool, offline: bool) -> BuildResult:
        session = Session(config=config, cache=Cache(cache), offline=offline)
        try:
            if locked or offline:
                session.lock = read_lock(lock_path(config))
            container = config.container(self.name)
            self.outs += 1
            return build_container(
                session, container, container.systems, out_dir=self.work / f"out{self.outs}"
            )
        finally:
            session.repository.close()

    def measure(
        self,
        label: str,
        repetitions: int,
        config: Config,
        cache: Path,
        *,
        locked: bool = False,
        offline: bool = False,
        aim: Aim | None = None,
        note: str = "",
    ) -> BuildResult:
        results: list[BuildResult] = []

        def build() -> None:
            results.append(self.build(config, cache, locked=locked, offline=offline))

        samples = measure(build, repetitions)
        for result in results:
            self.check_digest(label, result.index_digest)
        result = results[-1]
        stats = result.stats
        self.table.append(
            [
                label,
                f"{statistics.median(samples):.3f} s",
                f"{stats.hits}/{stats.misses}",
                str(stats.debs_read),
                human(tree_size(result.path)),
                result.index_digest[:19],
            ]
        )
        detail = (
            f"layer cache hits/misses {stats.hits}/{stats.misses}, .debs read {stats.debs_read}"
        )
        self.rows.append(
            Row(
                f"cache: {label} build {self.name}, {len(result.systems)} systems (library call)",
                samples,
                aim=aim,
                note=f"{note}; {detail}" if note else detail,
            )
        )
        return result

    def check_digest(self, label: str, digest: str) -> None:
        """Every build of the container must give the same index: else its row means nothing."""
        self.digests.setdefault(label, digest)
        if len(set(self.digests.values()) | {digest}) != 1:
            raise SystemExit(
                f"builds disagree on the index digest: {self.digests} vs {label}: {digest}"
            )

    def step(self, label: str, seconds: float, detail: str, note: str = "") -> None:
        self.table.append([label, f"{seconds:.3f} s", "", "", detail, ""])
        self.rows.append(Row(f"cache: {label}", [seconds], note=note or detail))

    def print(self) -> None:
        header = ["step", "time", "hits/misses", "debs read", "output", "index digest"]
        widths = [max(len(r[i]) for r in [header, *self.table]) for i in range(len(header))]
        for row in [header, ["-" * w for w in widths], *self.table]:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, repetitions=5)
    parser.add_argument("--runs", dest="repetitions", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--container", default="fd")
    args = parser.parse_args()
    n = args.repetitions
    aim = Aim.below(0.5)

    with temp_dir("cache") as work:
        online_dir, offline_dir = work / "online", work / "offline"
        online_dir.mkdir()
        offline_dir.mkdir()
        (online_dir / "containers.toml").write_text(CONFIG.format(url=""))
        (offline_dir / "containers.toml").write_text(
            CONFIG.format(url=f'url = "{closed_port_url()}"\n')
        )
        online = load_config(online_dir / "containers.toml")
        offline = load_config(offline_dir / "containers.toml")
        cache = work / "cache"
        bench = Bench(work, args.container)

        cold = bench.measure(
            "cold", 1, online, cache, note="empty cache, run once: downloads, parsing, compression"
        )
        bench.measure("warm", n, online, cache, aim=aim, note="InRelease checked, indexes resolved")

        session = Session(config=online, cache=Cache(cache))
        try:
            start = time.perf_counter()
            lock, _ = lock_containers(session, online.containers)
            seconds = time.perf_counter() - start
        finally:
            session.repository.close()
        bench.step(
            "lock (indexes cached)",
            seconds,
            "containers.lock",
            f"{len(online.containers)} containers resolved into containers.lock",
        )
        write_lock(lock_path(online), lock)
        (offline_dir / "containers.lock").write_bytes(lock_path(online).read_bytes())

        bench.measure(
            "locked", n, online, cache, locked=True, aim=aim, note="closures from containers.lock"
        )
        bench.measure(
            "locked+offline",
            n,
            offline,
            cache,
            offline=True,
            aim=aim,
            note="--offline, mirror URL a closed 127.0.0.1 port",
        )

        with run_registry(work / "registry") as registry:
            ref = f"{registry.host}/polyarch-cache:bench"
            start = time.perf_counter()
            pushed = push_cache(Cache(cache), ref)
            seconds = time.perf_counter() - start
            sent = human(pushed.push.bytes_uploaded)
            bench.step(
                "cache push", seconds, sent, f"{sent} uploaded to a docker-registry on 127.0.0.1"
            )
            pulled_cache = work / "pulled"
            start = time.perf_counter()
            pulled = pull_cache(Cache(pulled_cache), ref)
            seconds = time.perf_counter() - start
            got = human(pulled.bytes)
            bench.step(
                "cache pull (empty cache)", seconds, got, f"{got} pulled into an empty cache"
            )
        bench.measure(
            "pulled+offline",
            1,
            offline,
            pulled_cache,
            offline=True,
            note="--offline from the pulled cache alone, run once",
        )
        output = tree_size(cold.path)

    bench.print()
    print(
        f"\n{args.container} for {len(cold.systems)} systems; every digest the same: "
        f"{cold.index_digest}\n"
    )
    bench.rows.append(
        Row(
            f"cache: build output {args.container}, {len(cold.systems)} systems",
            [output / MB],
            unit="MB",
            note="OUT/NAME as written by every build above: the OCI layout and one "
            "docker-archive per system, the floor a build cannot write less than",
        )
    )
    report(
        "cache",
        bench.rows,
        json_path=args.json,
        command="python bench/cache.py",
        extra={"index_digest": cold.index_digest, "output_bytes": output},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
