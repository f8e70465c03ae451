"""Benchmark: push fd (every system) to a local docker-registry, against skopeo.

    python bench/push.py [--repetitions N] [--container fd] [--config containers.toml]
                         [--cache-dir DIR] [--json FILE]

Builds the container with the real archive (the host's Debian mirror, through
the polyarch cache), then, in the same run and from the same OCI layout:

- polyarch cold: ``push_layout`` into a fresh registry (no mount hints);
  baseline: ``skopeo copy --all oci:LAYOUT docker://...`` into another fresh
  registry; aim: faster than skopeo (ratio >= 1);
- polyarch warm: the same push again (every blob already there); baseline:
  skopeo's second copy; aim < 0.3 s;
- polyarch CLI warm: ``polyarch manifest NAME --no-build --push --to ...`` as a
  process, i.e. with interpreter start-up and the annotated layout rewritten.

Each repetition gets fresh docker-registries on 127.0.0.1. After every push the
index digest in the registry is read back with ``skopeo inspect --raw``: the
library pushes and skopeo's copies must all leave the built index digest, and
the CLI (whose index carries annotations) one digest of its own, or the
benchmark fails.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

from _common import (
    ROOT,
    Aim,
    Row,
    add_common_arguments,
    format_seconds,
    format_size,
    format_table,
    measure,
    polyarch_argv,
    python_env,
    report,
    run_command,
    temp_dir,
)

sys.path.insert(0, str(ROOT / "tests"))

from registry_server import run_registry

from polyarch.cache import Cache
from polyarch.config import find_config, load_config
from polyarch.determinism import sha256_digest
from polyarch.registry.push import push_layout
from polyarch.workflows.build import build_container
from polyarch.workflows.resolve import Session

SKOPEO = shutil.which("skopeo")


def skopeo_copy(layout: Path, ref: str) -> None:
    assert SKOPEO is not None
    run_command(
        [SKOPEO, "copy", "--quiet", "--all", "--dest-tls-verify=false",
         f"oci:{layout}:latest", f"docker://{ref}"],
    )  # fmt: skip


def remote_digest(ref: str) -> str:
    """The digest of the manifest (index) the registry serves for ``ref``."""
    assert SKOPEO is not None
    out = run_command([SKOPEO, "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"])
    return sha256_digest(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, repetitions=3)
    parser.add_argument("--container", default="fd")
    parser.add_argument("--config", default=str(ROOT / "containers.toml"))
    parser.add_argument("--cache-dir", help="polyarch cache (default: the user cache dir)")
    args = parser.parse_args()
    if SKOPEO is None or shutil.which("docker-registry") is None:
        print("needs skopeo and docker-registry", file=sys.stderr)
        return 2

    config = load_config(find_config(args.config))
    container = config.container(args.container)
    times: dict[str, list[float]] = {}
    digests: dict[str, set[str]] = {}

    def record(name: str, seconds: float, digest: str) -> None:
        times.setdefault(name, []).append(seconds)
        digests.setdefault(name, set()).add(digest)

    env = python_env()
    with temp_dir("push") as work:
        session = Session(config=config, cache=Cache(args.cache_dir))
        try:
            started = time.perf_counter()
            built = build_container(session, container, container.systems, out_dir=work / "result")
            build_seconds = time.perf_counter() - started
        finally:
            session.repository.close()
        layout = built.path / "oci"
        blobs = list((layout / "blobs" / "sha256").iterdir())
        size = sum(p.stat().st_size for p in blobs)
        print(
            f"{container.name}: {len(built.systems)} systems, {len(blobs)} blobs, "
            f"{format_size(size)}, index {built.index_digest} (build {build_seconds:.1f} s)"
        )

        for run in range(args.repetitions):
            with run_registry(work / f"reg-polyarch-{run}") as registry:
                ref = f"{registry.host}/{container.name}:latest"
                hints = work / f"hints-{run}"  # fresh: no mount hints from earlier pushes

                def push() -> None:
                    push_layout(layout, ref, jobs=8, record_dir=hints)  # noqa: B023

                record("polyarch push, cold", measure(push, 1)[0], remote_digest(ref))
                record("polyarch push, warm", measure(push, 1)[0], remote_digest(ref))
                cli = polyarch_argv(
                    "-q", "manifest", container.name,
                    "--no-build", "--push", "--to", f"{registry.host}/{container.name}",
                    "--out", str(work / "result"), "-f", str(config.path),
                )  # fmt: skip
                if args.cache_dir:
                    cli += ["--cache-dir", args.cache_dir]
                run_command(cli, env=env)  # the first pushes the annotated index
                record(
                    "polyarch manifest --push CLI, warm",
                    measure(lambda: run_command(cli, env=env), 1)[0],  # noqa: B023
                    remote_digest(ref),
                )
            with run_registry(work / f"reg-skopeo-{run}") as registry:
                ref = f"{registry.host}/{container.name}:latest"
                for name in ("skopeo copy --all, cold", "skopeo copy --all, warm"):
                    copy = measure(lambda: skopeo_copy(layout, ref), 1)[0]  # noqa: B023
                    record(name, copy, remote_digest(ref))

    print(
        format_table(
            ["", "median", "min", "max", "digest in registry"],
            [
                [
                    name,
                    *map(format_seconds, (statistics.median(v), min(v), max(v))),
                    ", ".join(sorted(d[:19] for d in digests[name])),
                ]
                for name, v in times.items()
            ],
        )
    )

    # A push row is meaningless if the registry ended up with another image.
    same = {"polyarch push, cold", "polyarch push, warm"}
    same |= {"skopeo copy --all, cold", "skopeo copy --all, warm"}
    wrong = {k: sorted(v) for k, v in digests.items() if k in same and v != {built.index_digest}}
    if wrong:
        raise SystemExit(
            f"pushed index digests differ from the built {built.index_digest}: {wrong}"
        )
    cli_digests = digests["polyarch manifest --push CLI, warm"]
    if len(cli_digests) != 1:
        raise SystemExit(f"polyarch manifest --push left different digests: {sorted(cli_digests)}")

    what = f"{container.name}, {len(built.systems)} systems"
    rows = [
        Row(
            "push-cold",
            f"push {what}, cold (library)",
            times["polyarch push, cold"],
            baseline=times["skopeo copy --all, cold"],
            baseline_what="skopeo copy --all, cold",
            aim=Aim.ratio_at_least(1),
            note=f"{len(blobs)} blobs, {format_size(size)}, into a fresh docker-registry "
            "on 127.0.0.1; skopeo is timed as a process (its start-up included)",
        ),
        Row(
            "push-warm",
            f"re-push {what}, warm (library)",
            times["polyarch push, warm"],
            baseline=times["skopeo copy --all, warm"],
            baseline_what="skopeo copy --all, warm",
            aim=Aim.below(0.3),
            note="every blob already in the registry",
        ),
        Row(
            "manifest-push-process",
            f"polyarch manifest --push {container.name}, warm (process)",
            times["polyarch manifest --push CLI, warm"],
            note="whole process: interpreter start-up, annotated index rewritten, push",
        ),
    ]
    report(
        "push",
        rows,
        json_path=args.json,
        command="python bench/push.py",
        extra={
            "index_digest": built.index_digest,
            "cli_index_digest": next(iter(cli_digests)),
            "blobs": len(blobs),
            "layout_bytes": size,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
