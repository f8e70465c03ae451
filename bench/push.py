"""Benchmark: push fd (every system) to a local docker-registry, against skopeo.

    python bench/push.py [--runs N] [--container fd] [--config containers.toml]

Builds the container with the real archive (the host's Debian mirror, through
the polyarch cache), then, in the same run and from the same OCI layout:

- polyarch cold: ``push_layout`` into a fresh registry (no mount hints);
- polyarch warm: the same push again (every blob already there);
- polyarch CLI warm: ``polyarch manifest NAME --no-build --push --to ...`` as a
  process, i.e. with interpreter start-up and the annotated layout rewritten;
- skopeo cold / warm: ``skopeo copy --all oci:LAYOUT docker://...``.

Each cold run gets a fresh docker-registry on 127.0.0.1; the median of
``--runs`` is printed with the index digest each tool left in the registry.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from registry_server import run_registry  # noqa: E402

from polyarch.cache import Cache  # noqa: E402
from polyarch.config import find_config, load_config  # noqa: E402
from polyarch.determinism import sha256_digest  # noqa: E402
from polyarch.registry import push_layout  # noqa: E402
from polyarch.workflows.build import build_container  # noqa: E402
from polyarch.workflows.resolve import Session  # noqa: E402

SKOPEO = shutil.which("skopeo")


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def skopeo_copy(layout: Path, ref: str) -> None:
    assert SKOPEO is not None
    subprocess.run(
        [SKOPEO, "copy", "--quiet", "--all", "--dest-tls-verify=false",
         f"oci:{layout}:latest", f"docker://{ref}"],
        check=True, capture_output=True,
    )  # fmt: skip


def remote_digest(ref: str) -> str:
    assert SKOPEO is not None
    out = subprocess.run(
        [SKOPEO, "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
        check=True, capture_output=True,
    )  # fmt: skip
    return sha256_digest(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--container", default="fd")
    parser.add_argument("--config", default=str(ROOT / "containers.toml"))
    parser.add_argument("--cache-dir", help="polyarch cache (default: the user cache dir)")
    args = parser.parse_args()
    if SKOPEO is None or shutil.which("docker-registry") is None:
        print("needs skopeo and docker-registry", file=sys.stderr)
        return 2

    config = load_config(find_config(args.config))
    container = config.container(args.container)
    work = Path(tempfile.mkdtemp(prefix="polyarch-bench-push-"))
    try:
        session = Session(config=config, cache=Cache(args.cache_dir))
        started = time.perf_counter()
        built = build_container(session, container, container.systems, out_dir=work / "result")
        build_seconds = time.perf_counter() - started
        layout = built.path / "oci"
        blobs = list((layout / "blobs" / "sha256").iterdir())
        size = sum(p.stat().st_size for p in blobs)
        print(
            f"{container.name}: {len(built.systems)} systems, {len(blobs)} blobs, "
            f"{size / 1e6:.1f} MB, index {built.index_digest} (build {build_seconds:.1f} s)"
        )

        times: dict[str, list[float]] = {}
        digests: dict[str, set[str]] = {}

        def record(name: str, seconds: float, digest: str) -> None:
            times.setdefault(name, []).append(seconds)
            digests.setdefault(name, set()).add(digest)

        for run in range(args.runs):
            with run_registry(work / f"reg-polyarch-{run}") as registry:
                ref = f"{registry.host}/{container.name}:latest"
                hints = work / f"hints-{run}"  # fresh: no mount hints from earlier pushes

                def push() -> None:
                    push_layout(layout, ref, jobs=8, record_dir=hints)  # noqa: B023

                record("polyarch push, cold", timed(push), remote_digest(ref))
                record("polyarch push, warm", timed(push), remote_digest(ref))
                cli = [
                    sys.executable, "-m", "polyarch", "-q", "manifest", container.name,
                    "--no-build", "--push", "--to", f"{registry.host}/{container.name}",
                    "--out", str(work / "result"), "-f", str(config.path),
                ]  # fmt: skip
                if args.cache_dir:
                    cli += ["--cache-dir", args.cache_dir]
                subprocess.run(cli, check=True, capture_output=True)  # first: the annotated index
                seconds = timed(lambda: subprocess.run(cli, check=True, capture_output=True))  # noqa: B023
                record("polyarch manifest --push CLI, warm", seconds, remote_digest(ref))
            with run_registry(work / f"reg-skopeo-{run}") as registry:
                ref = f"{registry.host}/{container.name}:latest"
                record(
                    "skopeo copy --all, cold",
                    timed(lambda: skopeo_copy(layout, ref)),  # noqa: B023
                    remote_digest(ref),
                )
                record(
                    "skopeo copy --all, warm",
                    timed(lambda: skopeo_copy(layout, ref)),  # noqa: B023
                    remote_digest(ref),
                )

        width = max(len(k) for k in times)
        print(f"\n{'':{width}}  median    min       max       digest in registry")
        for name, values in times.items():
            digest = ", ".join(sorted(d[:19] for d in digests[name]))
            print(
                f"{name:{width}}  {statistics.median(values):6.3f} s  {min(values):6.3f} s  "
                f"{max(values):6.3f} s  {digest}"
            )
        summary = {k: round(statistics.median(v), 3) for k, v in times.items()}
        print("\n" + json.dumps(summary))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
