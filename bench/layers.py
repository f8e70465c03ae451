"""Layer policy (issue 18): one layer per package (before) against the shared policy, same run.

    python bench/layers.py [--json FILE] [--repetitions 1] [--tools bench/tools.txt]
                           [--scale-count 30] [--load fd-find:fdfind,ripgrep:rg,...]
                           [--update libssl3,libc6] [--add curl] [--cache DIR] [--work DIR]
                           [--no-scale] [--engine-storage ext4|host]

Both policies build the same containers from the same cache (``layering =
"per-package"`` with ``max_layers = 100``, the defaults before, against the
defaults now), and each figure is measured for both in this one run:

- load set (``--load``: fd, rg and three large tools, the native system):
  layer count, and the seconds of ``docker load`` and ``podman load`` of each
  image on this host's storage (vfs here: a dockerd and a podman store of
  the benchmark's own, so no layer is there before a load; the image is
  removed after each; their data on a new journaled ext4 of their own, see
  bench/_storage.py, or with ``--engine-storage host`` on the host's). The
  policies alternate tool by tool; ``shared-plain`` is what ``polyarch load``
  hands the engine (the shared image, layers uncompressed; writing that
  archive included), ``shared-merged`` ``polyarch load --merge-layers``
  (merging included);
- scale set (the first ``--scale-count`` lines of bench/tools.txt, every
  system): bytes a docker-registry on 127.0.0.1 stores for all of them, and
  the requests the push made;
- a security update of one package (``--update``), simulated: its .deb is
  rebuilt with dpkg-deb under a new version (so its status file, hence its
  layer, changes) and the scale set rebuilt with it: the bytes and layers a
  push of the update sends to the registry that holds the first push, and
  layers that changed without holding the package (must be 0);
- adding one container (``--add``) to a project of the scale set without it:
  layers of the other images that changed, with and without a package the
  new container uses.

The machine's load average is recorded before and after each part; read
ratios, not absolute seconds, on a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
from _common import (
    ROOT,
    Aim,
    Row,
    add_common_arguments,
    polyarch_argv,
    python_env,
    report,
    tree_bytes,
)
from _storage import STORAGES, engine_storage
from scale import SYSTEMS, Tool, read_tools, write_config

sys.path.insert(0, str(ROOT / "tests"))

from polyarch.cache import Cache, Kind
from polyarch.image.docker_archive import write_docker_archive
from polyarch.image.layout_reader import image_from_layout, read_oci_layout
from polyarch.image.loadable import write_loadable_archive
from polyarch.image.merged import merge_layers
from polyarch.image.oci import Image
from polyarch.platforms import System, native_system, parse_system

POLICIES = {"before": 'layering = "per-package"\nmax_layers = 100\n', "shared": ""}
LOADED = ("before", "shared", "shared-plain", "shared-merged")
"""Loads of the load set: "shared-plain" is what `polyarch load` hands the engine (the shared
image with its layers uncompressed), "shared-merged" what `load --merge-layers` does."""
LOAD_SET = "fd-find:fdfind,ripgrep:rg,r-cran-littler:r,emacs-gtk:emacs,guestfish:guestfish"
LARGE = ("r-cran-littler", "emacs-gtk", "guestfish")


def say(text: str) -> None:
    print(f"layers: {text}", flush=True)


def load_average() -> float:
    return os.getloadavg()[0]


def project(directory: Path, tools: Sequence[Tool], policy: str, systems: Sequence[str]) -> Path:
    """containers.toml for ``tools`` under ``policy`` (scale.py's, with the policy's keys)."""
    path = write_config(directory, tools)
    old = f"systems = [{', '.join(json.dumps(s) for s in SYSTEMS)}]\n"
    new = f"systems = [{', '.join(json.dumps(s) for s in systems)}]\n{POLICIES[policy]}"
    path.write_text(path.read_text().replace(old, new))
    return path


def build(config: Path, cache: Path, out: Path, log: Path) -> float:
    """``polyarch -q build --all --all-systems`` as a user runs it; seconds."""
    argv = polyarch_argv("-q", "-f", str(config), "build", "--all", "--all-systems")
    argv += ["--out", str(out)]
    started = time.perf_counter()
    with log.open("ab") as sink:
        done = subprocess.run(argv, stdout=sink, stderr=subprocess.STDOUT, env=python_env(
            POLYARCH_CACHE_DIR=str(cache)))  # fmt: skip
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise SystemExit(f"build of {config} failed:\n{tail}")
    return time.perf_counter() - started


def image(out: Path, name: str, system: System) -> Image:
    return image_from_layout(read_oci_layout(out / name / "oci"), "latest", system)


# --- loading -------------------------------------------------------------------------------


@contextmanager
def engines(work: Path) -> Iterator[dict[str, dict[str, str]]]:
    """docker and podman of the benchmark's own (vfs, like scripts/setup-host's): name → env."""
    from engines import podman_env, tcp_dockerd

    with tcp_dockerd(work / "dockerd") as url:
        yield {"docker": {"DOCKER_HOST": url}, "podman": podman_env(work / "podman")}


def load_seconds(engine: str, env: dict[str, str], archive: Path, reference: str) -> float:
    """Seconds of ``ENGINE load`` of ``archive``; the image is removed afterwards."""
    environ = {**os.environ, **env}
    started = time.perf_counter()
    subprocess.run([engine, "load", "--input", str(archive)], env=environ, check=True,
                   capture_output=True)  # fmt: skip
    seconds = time.perf_counter() - started
    subprocess.run([engine, "image", "rm", reference], env=environ, check=True, capture_output=True)
    return seconds


def loadable(
    out: Path, tool: Tool, policy: str, archive: Path, reference: str
) -> tuple[Image, float]:
    """Write the docker-archive a load of ``policy`` hands the engine: its image, and the
    seconds polyarch spends before the engine starts: for ``*-plain`` (what ``polyarch load``
    hands it) writing the archive with uncompressed layers from the build's; for ``*-merged``
    (``polyarch load --merge-layers``) merging; else 0, the archive is the build's."""
    system = native_system()
    found, seconds = image(out, tool.package, system), 0.0
    with tempfile.TemporaryDirectory(dir=archive.parent) as scratch:
        if policy.endswith("-merged"):
            started = time.perf_counter()
            found = merge_layers(found, Path(scratch))
            seconds = time.perf_counter() - started
        if not policy.endswith("-plain"):
            write_docker_archive(archive, found, repo_tags=[reference])
            return found, seconds
        built = Path(scratch) / "built.tar"
        write_docker_archive(built, found, repo_tags=[reference])
        started = time.perf_counter()
        found = write_loadable_archive(built, system, archive, Path(scratch))
        return found, time.perf_counter() - started


def measure_loads(
    tools: Sequence[Tool], outs: dict[str, Path], repetitions: int, work: Path, storage: str
) -> dict[str, Any]:
    """Layer counts and load seconds of each tool's native image, policy by policy in turn."""
    result: dict[str, Any] = {"system": native_system().name, "tools": {}}
    with engine_storage(work, storage) as (root, where), engines(root / "engines") as envs:
        result["storage"] = where
        say(f"the engines store on {where}")
        for tool in tools:
            entry: dict[str, Any] = {"layers": {}, "bytes": {}, "load": {}}
            for policy in LOADED:
                reference = f"polyarch-bench-{uuid.uuid4().hex[:8]}:{policy}"
                archive = work / f"{tool.package}-{policy}.tar"
                out = outs[policy.split("-")[0]]
                found, extra = loadable(out, tool, policy, archive, reference)
                entry["layers"][policy] = len(found.layers)
                entry["bytes"][policy] = found.size
                for engine, env in envs.items():
                    samples = entry["load"].setdefault(engine, {}).setdefault(policy, [])
                    for _ in range(repetitions):
                        before = load_average()
                        samples.append(extra + load_seconds(engine, env, archive, reference))
                        say(f"{engine} load {tool.package} ({policy}, {len(found.layers)} "
                            f"layers): {samples[-1]:.1f} s, load average {before:.1f}")  # fmt: skip
                archive.unlink()
            result["tools"][tool.package] = entry
    return result


# --- the registry ----------------------------------------------------------------------------


def push_all(tools: Sequence[Tool], out: Path, registry: Any, records: Path) -> dict[str, int]:
    from polyarch.registry.push import push_layout

    totals = {"bytes_uploaded": 0, "blobs_uploaded": 0, "requests": 0}
    for tool in tools:
        pushed = push_layout(
            out / tool.package / "oci",
            f"http://{registry.host}/{tool.package}:latest",
            record_dir=records,
        )
        totals["bytes_uploaded"] += pushed.bytes_uploaded
        totals["blobs_uploaded"] += pushed.blobs_uploaded
        totals["requests"] += pushed.requests
    return totals


Layers = dict[tuple[str, str], dict[str, tuple[str, int]]]


def layer_digests(tools: Sequence[Tool], out: Path) -> Layers:
    """(tool, system) → layer digest → (what it holds: its history line, its size)."""
    found: Layers = {}
    for tool in tools:
        for system in SYSTEMS:
            img = image(out, tool.package, parse_system(system))
            history = msgspec.json.decode(img.config)["history"]
            found[(tool.package, system)] = {
                la.digest: (h["created_by"], la.size)
                for la, h in zip(img.layers, history, strict=True)
            }
    return found


def changed_layers(before: Layers, after: Layers, touched: set[str]) -> dict[str, int]:
    """Layers of the images in both that are not there after: all of them, and those that held
    no package of ``touched`` (which a change should leave alone; the generated layer, a
    function of the whole closure, aside)."""
    gone: dict[str, tuple[str, int]] = {}
    for key, layers in before.items():
        if key in after:
            gone.update({d: v for d, v in layers.items() if d not in after[key]})
    unrelated = {
        d: size
        for d, (held, size) in gone.items()
        if not touched & set(held.split()) and "(generated)" not in held
    }
    return {
        "layers": len(gone),
        "bytes": sum(size for _, size in gone.values()),
        "unrelated_layers": len(unrelated),
        "unrelated_bytes": sum(unrelated.values()),
    }


# --- a security update of one package, and one more container --------------------------------


def updated_deb(original: Path, work: Path) -> Path:
    """``original`` rebuilt with ``+bench1`` appended to its version: a new .deb, same files."""
    tree = work / f"{original.name}.d"
    shutil.rmtree(tree, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-R", str(original), str(tree)], check=True)
    control = tree / "DEBIAN" / "control"
    lines = [
        line + "+bench1" if line.startswith("Version: ") else line
        for line in control.read_text().splitlines()
    ]
    control.write_text("\n".join(lines) + "\n")
    target = work / f"{original.name}.updated.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(target)], check=True,
                   capture_output=True)  # fmt: skip
    shutil.rmtree(tree)
    return target


def build_with_update(
    config: Path, cache_dir: Path, out: Path, package: str, work: Path, log: Path
) -> None:
    """Build ``config`` in this process with ``package`` replaced by an updated .deb (every arch).

    The resolver's answer is patched as it leaves the resolver: every later
    stage (fetch from the cache, layers, sharing) sees the updated package.
    """
    import hashlib

    import polyarch.debian.resolver as resolve_module
    import polyarch.workflows.build as build_module
    import polyarch.workflows.stamp as stamp_module
    from polyarch.cli import main

    cache = Cache(cache_dir)
    original = resolve_module.resolve
    # The update is invisible to the build's fingerprint: no stamp answers it, none is written.
    stamp_module.unchanged_build = lambda *args, **kwargs: None  # type: ignore[assignment]
    build_module.build_inputs = lambda *args, **kwargs: None  # type: ignore[assignment]
    updated: dict[str, Any] = {}

    def swap(record: Any) -> Any:
        if record.sha256 not in updated:
            source = cache.get(Kind.DEBS, record.sha256)
            assert source is not None, f"{record.name} is not in the cache"
            deb = updated_deb(source, work).read_bytes()
            sha = hashlib.sha256(deb).hexdigest()
            cache.put(Kind.DEBS, sha, deb)
            updated[record.sha256] = msgspec.structs.replace(
                record, version=record.version + "+bench1", sha256=sha, size=len(deb)
            )
        return updated[record.sha256]

    def patched(*args: Any, **kwargs: Any) -> Any:
        resolution = original(*args, **kwargs)
        packages = tuple(
            dataclasses.replace(p, record=swap(p.record)) if p.record.name == package else p
            for p in resolution.packages
        )
        return dataclasses.replace(resolution, packages=packages)

    resolve_module.resolve = patched  # type: ignore[assignment]
    try:
        argv = ["-q", "-f", str(config), "--cache-dir", str(cache_dir), "build", "--all"]
        with log.open("a") as sink, contextlib.redirect_stdout(sink):
            code = main([*argv, "--all-systems", "--out", str(out)])
    finally:
        resolve_module.resolve = original
    if code != 0:
        raise SystemExit(f"the build with {package} updated failed ({code})")


def measure_scale(
    tools: Sequence[Tool], updates: Sequence[str], add: str, cache: Path, work: Path, log: Path
) -> dict[str, Any]:
    """Registry bytes, an update's re-push and a new container's changes, for each policy."""
    from registry_server import run_registry  # tests/registry_server.py: 127.0.0.1, dies with us

    result: dict[str, Any] = {}
    others = [t for t in tools if t.package != add]
    for policy in POLICIES:
        base = work / f"scale-{policy}"
        config = project(base / "project", tools, policy, SYSTEMS)
        seconds = build(config, cache, base / "out", log)
        first = layer_digests(tools, base / "out")
        entry: dict[str, Any] = {"build_seconds": seconds, "updates": {}}
        with run_registry(base / "registry") as registry:
            pushed = push_all(tools, base / "out", registry, base / "records")
            blobs = registry.root / "docker" / "registry" / "v2" / "blobs"
            entry["registry"] = {**pushed, "stored_blob_bytes": tree_bytes(blobs)}
            say(f"{policy}: registry stores {entry['registry']['stored_blob_bytes'] / 1e6:.1f} MB")
            for package in updates:
                out = base / f"out-{package}"
                build_with_update(config, cache, out, package, work, log)
                again = push_all(tools, out, registry, base / "records")
                changed = changed_layers(first, layer_digests(tools, out), {package})
                entry["updates"][package] = {"push": again, "changed": changed}
                say(f"{policy}: {package} updated, re-push {again['bytes_uploaded'] / 1e6:.1f} MB")
        smaller = project(base / "without", others, policy, SYSTEMS)
        build(smaller, cache, base / "out-without", log)
        uses = {word for (t, _), ls in first.items() if t == add for h, _ in ls.values()
                for word in h.split()}  # fmt: skip
        entry["add"] = changed_layers(layer_digests(others, base / "out-without"), first, uses)
        entry["add"]["container"] = add
        result[policy] = entry
    return result


# --- rows ------------------------------------------------------------------------------------


def rows_of(result: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    loads = result.get("loads")
    if loads:
        for name, entry in loads["tools"].items():
            large = name in LARGE
            rows.append(Row(f"layers-{name}", f"layers: {name}, layer count ({loads['system']})",
                            [entry["layers"]["shared"]], [entry["layers"]["before"]],
                            "one per package", unit="layers"))  # fmt: skip
            for engine, samples in entry["load"].items():
                rows.append(Row(
                    f"{engine}-load-{name}", f"layers: `{engine} load` {name} (vfs)",
                    samples["shared"], samples["before"], "one layer per package",
                    aim=Aim.ratio_at_least(3) if large else None,
                ))  # fmt: skip
                rows.append(Row(
                    f"{engine}-load-plain-{name}",
                    f"layers: `{engine} load` {name} (vfs), as `polyarch load` hands it",
                    samples["shared-plain"], samples["before"], "one layer per package",
                    aim=Aim.ratio_at_least(3) if large else None,
                ))  # fmt: skip
                rows.append(Row(f"{engine}-load-merged-{name}",
                                f"layers: `{engine} load` {name} (vfs), --merge-layers",
                                samples["shared-merged"], samples["before"], "one layer per package"))  # fmt: skip
    scale = result.get("scale")
    if scale:
        new, old = scale["shared"], scale["before"]
        n = result["scale_count"]
        rows.append(Row("registry-bytes", f"layers: registry stores {n} tools × {len(SYSTEMS)} systems",
                        [new["registry"]["stored_blob_bytes"]], [old["registry"]["stored_blob_bytes"]],
                        "one layer per package", unit="B", aim=Aim.ratio_at_least(1 / 1.1)))  # fmt: skip
        rows.append(Row("push-requests", f"layers: registry requests to push the {n} tools",
                        [new["registry"]["requests"]], [old["registry"]["requests"]],
                        "one layer per package", unit="requests"))  # fmt: skip
        for package, entry in new["updates"].items():
            before = old["updates"][package]
            rows += [
                Row(f"repush-bytes-{package}", f"layers: bytes re-pushed after {package} changes",
                    [entry["push"]["bytes_uploaded"]], [before["push"]["bytes_uploaded"]],
                    "one layer per package", unit="B"),
                Row(f"repush-layers-{package}", f"layers: layers re-pushed after {package} changes",
                    [entry["push"]["blobs_uploaded"]], [before["push"]["blobs_uploaded"]],
                    "one layer per package", unit="blobs"),
                Row(f"update-unrelated-{package}",
                    f"layers: layers without {package} that changed with it",
                    [entry["changed"]["unrelated_layers"]], [before["changed"]["unrelated_layers"]],
                    "one layer per package", unit="layers", aim=Aim.below(0.5, "layers")),
            ]  # fmt: skip
        add = new["add"]["container"]
        rows += [
            Row("add-changed-bytes", f"layers: bytes of other images' layers that change when {add} is added",
                [new["add"]["bytes"]], [old["add"]["bytes"]], "one layer per package", unit="B"),
            Row("add-unrelated-layers", f"layers: layers without a package of {add} that change when it is added",
                [new["add"]["unrelated_layers"]], [old["add"]["unrelated_layers"]],
                "one layer per package", unit="layers"),
        ]  # fmt: skip
    return rows


def parse_tools(text: str) -> list[Tool]:
    return [Tool(*item.split(":", 1)) for item in text.split(",") if item]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, repetitions=1)
    parser.add_argument("--tools", default=str(ROOT / "bench" / "tools.txt"))
    parser.add_argument("--scale-count", type=int, default=30)
    parser.add_argument("--load", default=LOAD_SET, help="PACKAGE:COMMAND,... to load (native)")
    parser.add_argument("--update", default="libssl3,libc6", help="packages to update, one by one")
    parser.add_argument("--add", default="curl", help="the container added to the scale set")
    parser.add_argument("--cache", help="a polyarch cache to reuse (.debs; default: a new one)")
    parser.add_argument("--work", help="keep the work here (default: a temp dir, removed)")
    parser.add_argument("--no-scale", action="store_true", help="measure loads only")
    parser.add_argument("--engine-storage", choices=STORAGES, default="ext4",
                        help="where the engines keep layers: a new ext4 of their own (default; "
                        "see bench/_storage.py) or the host's file system")  # fmt: skip
    args = parser.parse_args(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="polyarch-bench-layers-"))
    work.mkdir(parents=True, exist_ok=True)
    cache = Path(args.cache) if args.cache else work / "cache"
    log = work / "layers.log"
    tools = read_tools(Path(args.tools))[: args.scale_count]
    result: dict[str, Any] = {"scale_count": len(tools), "load_average": [load_average()]}
    try:
        loaded = parse_tools(args.load)
        outs = {}
        for policy in POLICIES:
            config = project(work / f"load-{policy}", loaded, policy, [native_system().name])
            build(config, cache, work / f"load-{policy}" / "out", log)
            outs[policy] = work / f"load-{policy}" / "out"
        result["load_average"].append(load_average())
        result["loads"] = measure_loads(loaded, outs, args.repetitions, work, args.engine_storage)
        result["load_average"].append(load_average())
        if not args.no_scale:
            updates = [u for u in args.update.split(",") if u]
            result["scale"] = measure_scale(tools, updates, args.add, cache, work, log)
            result["load_average"].append(load_average())
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    report("layers", rows_of(result), json_path=args.json, command="python bench/layers.py",
           extra=result)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
