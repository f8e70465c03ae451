"""Benchmark: fd for both systems from the real archive, through the cache and the lock.

    python bench/cache.py [--repetitions N] [--container fd] [--json FILE]

With a fresh cache directory and the host's Debian mirror:

- cold:            empty cache (download, parse indexes, build and compress layers);
- warm:            the same build again (InRelease checked, indexes resolved, layers hit);
- locked:          ``--locked``: closures from containers.lock, no Release or index read;
- locked+offline:  ``--offline`` with the mirror pointed at a closed 127.0.0.1 port;
- pulled+offline:  ``polyarch cache push`` to a docker-registry on 127.0.0.1, ``polyarch
                   cache pull`` into an empty cache (both as processes), then ``--offline``
                   from it.

Builds are library calls (``build_container``) with a ``StageClock`` as their
progress, so the cold and warm builds are also split into resolve, fetch,
layers and outputs from the tasks polyarch reports. Times are wall-clock
medians of ``--repetitions`` (cold and pulled+offline run once); aim: warm,
locked and locked+offline builds of both systems together < 0.5 s. The last
row is the size of what a build writes (OUT/NAME: the OCI layout + one
docker-archive per system), the floor a build cannot go under. Every build
must give the same index digest, or the benchmark fails.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
from pathlib import Path

from _common import (
    ROOT,
    SUITE,
    Aim,
    Row,
    StageClock,
    add_common_arguments,
    format_table,
    format_value,
    measure,
    measure_command,
    polyarch_argv,
    python_env,
    report,
    temp_dir,
    tree_bytes,
)

sys.path.insert(0, str(ROOT / "tests"))

from registry_server import run_registry

from polyarch.cache import Cache
from polyarch.config import Config, load_config
from polyarch.lock import lock_path, read_lock, write_lock
from polyarch.workflows.build import BuildResult, build_container
from polyarch.workflows.resolve import Session, lock_containers

CONFIG = """
[repository]
suite = "{suite}"
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


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/debian"


class Bench:
    """Builds one container again and again, keeping the rows, the stages and the digests."""

    def __init__(self, work: Path, name: str) -> None:
        self.work, self.name = work, name
        self.rows: list[Row] = []
        self.digests: dict[str, str] = {}
        self.stages: dict[str, dict[str, list[float]]] = {}
        self.outs = 0

    def build(
        self, config: Config, cache: Path, *, locked: bool, offline: bool, clock: StageClock
    ) -> BuildResult:
        session = Session(config=config, cache=Cache(cache), offline=offline, progress=clock)
        if locked or offline:
            session.lock = read_lock(lock_path(config))
        try:
            container = config.container(self.name)
            self.outs += 1
            out = self.work / f"out{self.outs}"
            return build_container(session, container, container.systems, out_dir=out)
        finally:
            clock.stop()
            session.repository.close()

    def measure(
        self,
        key: str,
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
        stages: dict[str, list[float]] = {s: [] for s in StageClock.STAGES}

        def build() -> None:
            clock = StageClock()
            results.append(self.build(config, cache, locked=locked, offline=offline, clock=clock))
            for stage, seconds in clock.seconds().items():
                stages[stage].append(seconds)

        samples = measure(build, repetitions)
        for result in results:
            self.check_digest(key, result.index_digest)
        self.stages[key] = stages
        stats = results[-1].stats
        detail = (
            f"layer cache hits/misses {stats.hits}/{stats.misses}, .debs read {stats.debs_read}"
        )
        self.rows.append(
            Row(
                key,
                f"cache: {key} build {self.name}, {len(results[-1].systems)} systems (library call)",
                samples,
                aim=aim,
                note=f"{note}; {detail}" if note else detail,
            )
        )
        return results[-1]

    def check_digest(self, key: str, digest: str) -> None:
        """Every build of the container must give the same index: else its row means nothing."""
        self.digests.setdefault(key, digest)
        if len(set(self.digests.values()) | {digest}) != 1:
            raise SystemExit(
                f"builds disagree on the index digest: {self.digests} vs {key}: {digest}"
            )

    def stage_rows(self, key: str) -> None:
        """``of which`` rows for the stages of the ``key`` builds."""
        for stage, samples in self.stages[key].items():
            self.rows.append(Row(f"{key}-{stage}", f"  of which {stage}", samples))

    def stage_table(self) -> str:
        header = ["build", *StageClock.STAGES]
        return format_table(
            header,
            [
                [key, *(format_value(statistics.median(v), "s") for v in stages.values())]
                for key, stages in self.stages.items()
            ],
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, repetitions=5)
    parser.add_argument("--container", default="fd")
    args = parser.parse_args()
    n = args.repetitions
    aim = Aim.below(0.5)

    with temp_dir("cache") as work:
        online_dir, offline_dir = work / "online", work / "offline"
        online_dir.mkdir()
        offline_dir.mkdir()
        (online_dir / "containers.toml").write_text(CONFIG.format(suite=SUITE, url=""))
        (offline_dir / "containers.toml").write_text(
            CONFIG.format(suite=SUITE, url=f'url = "{closed_port_url()}"\n')
        )
        online = load_config(online_dir / "containers.toml")
        offline = load_config(offline_dir / "containers.toml")
        cache = work / "cache"
        bench = Bench(work, args.container)

        cold = bench.measure(
            "cold", 1, online, cache, note="empty cache, run once: downloads, parsing, compression"
        )
        bench.stage_rows("cold")
        bench.measure("warm", n, online, cache, aim=aim, note="InRelease checked, indexes resolved")
        bench.stage_rows("warm")

        session = Session(config=online, cache=Cache(cache))
        locks = []
        try:
            lock_seconds = measure(
                lambda: locks.append(lock_containers(session, online.containers)[0]), 1
            )
        finally:
            session.repository.close()
        write_lock(lock_path(online), locks[0])
        bench.rows.append(
            Row(
                "lock",
                "cache: lock (indexes cached, library call)",
                lock_seconds,
                note=f"{len(online.containers)} containers resolved into containers.lock",
            )
        )
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
        pulled_cache = work / "pulled"
        with run_registry(work / "registry") as registry:
            ref = f"{registry.host}/polyarch-cache:bench"
            push = measure_command(
                polyarch_argv("-q", "cache", "push", ref, "--insecure"),
                1,
                env=python_env(POLYARCH_CACHE_DIR=str(cache)),
            )
            stored = tree_bytes(registry.root / "docker" / "registry" / "v2" / "blobs")
            pull = measure_command(
                polyarch_argv("-q", "cache", "pull", ref, "--insecure"),
                1,
                env=python_env(POLYARCH_CACHE_DIR=str(pulled_cache)),
            )
        bench.rows.append(
            Row(
                "cache-push",
                "cache: polyarch cache push (process)",
                push,
                note="into an empty docker-registry on 127.0.0.1",
            )
        )
        bench.rows.append(
            Row("cache-push-bytes", "cache: registry storage after cache push", [stored], unit="B")
        )
        bench.rows.append(
            Row("cache-pull", "cache: polyarch cache pull into an empty cache (process)", pull)
        )
        bench.rows.append(
            Row(
                "cache-pull-bytes",
                "cache: pulled cache on disk",
                [tree_bytes(pulled_cache)],
                unit="B",
            )
        )
        bench.measure(
            "pulled+offline",
            1,
            offline,
            pulled_cache,
            offline=True,
            note="--offline from the pulled cache alone, run once",
        )
        output = tree_bytes(cold.path)

    print(bench.stage_table())
    print(
        f"\n{args.container} for {len(cold.systems)} systems; every digest: {cold.index_digest}\n"
    )
    bench.rows.append(
        Row(
            "output-bytes",
            f"cache: build output {args.container}, {len(cold.systems)} systems",
            [output],
            unit="B",
            note="OUT/NAME as written by every build above: the OCI layout and one "
            "docker-archive per system, the floor a build cannot write less than",
        )
    )
    report(
        "cache",
        bench.rows,
        json_path=args.json,
        command="python bench/cache.py",
        extra={"index_digest": cold.index_digest, "stages": bench.stages},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
