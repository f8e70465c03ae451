"""Benchmark: fd for both systems from the real archive, through the cache and the lock.

    python bench/cache.py [--runs N] [--container fd]

In one process, with a fresh cache directory and the host's Debian mirror:

- cold:            empty cache (download, parse indexes, build and compress layers);
- warm:            the same build again (InRelease checked, indexes resolved, layers hit);
- locked:          ``--locked``: closures from containers.lock, no Release or index read;
- locked+offline:  ``--offline`` with the mirror pointed at a closed 127.0.0.1 port;
- pulled+offline:  ``cache push`` to a docker-registry on 127.0.0.1, ``cache pull``
                   into an empty cache, then ``--offline`` from it (pull and build timed apart).

Times are wall-clock medians of ``--runs`` (cold runs once); each row shows the
index digest, layer cache hits/misses, .debs read, and the size of what the
build wrote (OUT/NAME: the OCI layout + one docker-archive per system), which
is the floor a build cannot go under.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from registry_server import run_registry  # noqa: E402

from polyarch.cache import Cache  # noqa: E402
from polyarch.config import Config, load_config  # noqa: E402
from polyarch.lock import lock_path, read_lock, write_lock  # noqa: E402
from polyarch.workflows.build import BuildResult, build_container  # noqa: E402
from polyarch.workflows.cache import pull_cache, push_cache  # noqa: E402
from polyarch.workflows.resolve import Session, lock_containers  # noqa: E402

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
    def __init__(self, work: Path, name: str) -> None:
        self.work, self.name = work, name
        self.rows: list[list[str]] = []
        self.outs = 0

    def build(self, config: Config, cache: Path, *, locked: bool, offline: bool) -> BuildResult:
        session = Session(config=config, cache=Cache(cache), offline=offline)
        if locked or offline:
            session.lock = read_lock(lock_path(config))
        container = config.container(self.name)
        self.outs += 1
        return build_container(
            session, container, container.systems, out_dir=self.work / f"out{self.outs}"
        )

    def measure(
        self,
        label: str,
        runs: int,
        config: Config,
        cache: Path,
        *,
        locked: bool = False,
        offline: bool = False,
        before: Callable[[], object] | None = None,
    ) -> BuildResult:
        times: list[float] = []
        result: BuildResult | None = None
        for _ in range(runs):
            if before is not None:
                before()
            start = time.perf_counter()
            result = self.build(config, cache, locked=locked, offline=offline)
            times.append(time.perf_counter() - start)
        assert result is not None
        stats = result.stats
        self.rows.append(
            [
                label,
                f"{statistics.median(times):.3f} s",
                f"{stats.hits}/{stats.misses}",
                str(stats.debs_read),
                human(tree_size(result.path)),
                result.index_digest[:19],
            ]
        )
        return result

    def note(self, label: str, seconds: float, detail: str) -> None:
        self.rows.append([label, f"{seconds:.3f} s", "", "", detail, ""])

    def print(self) -> None:
        header = ["step", "time", "hits/misses", "debs read", "output", "index digest"]
        widths = [max(len(r[i]) for r in [header, *self.rows]) for i in range(len(header))]
        for row in [header, ["-" * w for w in widths], *self.rows]:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--container", default="fd")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="polyarch-bench-cache-") as tmp:
        work = Path(tmp)
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

        cold = bench.measure("cold", 1, online, cache)
        bench.measure("warm", args.runs, online, cache)

        start = time.perf_counter()
        lock, _ = lock_containers(Session(config=online, cache=Cache(cache)), online.containers)
        bench.note("lock (indexes cached)", time.perf_counter() - start, "containers.lock")
        write_lock(lock_path(online), lock)
        (offline_dir / "containers.lock").write_bytes(lock_path(online).read_bytes())

        bench.measure("locked", args.runs, online, cache, locked=True)
        bench.measure("locked+offline", args.runs, offline, cache, offline=True)

        with run_registry(work / "registry") as registry:
            ref = f"{registry.host}/polyarch-cache:bench"
            start = time.perf_counter()
            pushed = push_cache(Cache(cache), ref)
            bench.note("cache push", time.perf_counter() - start, human(pushed.push.bytes_uploaded))
            pulled_cache = work / "pulled"
            start = time.perf_counter()
            pulled = pull_cache(Cache(pulled_cache), ref)
            bench.note("cache pull (empty cache)", time.perf_counter() - start, human(pulled.bytes))
        after_pull = bench.measure("pulled+offline", 1, offline, pulled_cache, offline=True)

        bench.print()
        same = after_pull.index_digest == cold.index_digest
        print(f"\n{args.container} for {len(cold.systems)} systems; every digest the same: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
