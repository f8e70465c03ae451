"""polyarch load · test · all · manifest-test: the commands that run images in an engine."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from polyarch.cli._common import (
    Commands,
    add_out_options,
    add_system_options,
    containers_of,
    load,
    session_of,
    systems_of,
)
from polyarch.cli.build import print_build
from polyarch.engine import ENGINE_NAMES

if TYPE_CHECKING:
    from polyarch.config import Container
    from polyarch.engine import Engine
    from polyarch.kernel import Kernel
    from polyarch.ui import ConsoleProgress
    from polyarch.workflows.smoke_test import (
        TestReport,
    )
    from polyarch.workflows.stamp import BuildSummary


def register(commands: Commands) -> None:
    p = commands.add("load", cmd_load, "load a built image into docker or podman as NAME:TAG")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--system", metavar="S", help="which system's image (default: native)")
    p.add_argument(
        "--merge-layers",
        action="store_true",
        help="load the image as one layer: much faster where the engine stores layers with vfs "
        "(polyarch doctor says); the built and pushed image keep their layers",
    )
    add_out_options(p)
    add_engine_option(p)

    p = commands.add("test", cmd_test, "run a built container's smoke test in the engine")
    p.add_argument("name", metavar="NAME")
    add_system_options(p)
    add_out_options(p)
    add_engine_option(p)

    p = commands.add("all", cmd_all, "build, load the native image, and test")
    p.add_argument("name", metavar="NAME", nargs="?")
    p.add_argument("--all", action="store_true", help="every container of containers.toml")
    x = p.add_mutually_exclusive_group()
    x.add_argument("--system", metavar="S", help="build, load and test S instead of native")
    x.add_argument(
        "--multiarch",
        action="store_true",
        help="build every system, load native, test every system",
    )
    add_out_options(p)
    add_engine_option(p)

    p = commands.add(
        "manifest-test", cmd_manifest_test, "build the index, load native out of it, test"
    )
    p.add_argument("name", metavar="NAME")
    add_out_options(p)
    add_engine_option(p)


def add_engine_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--engine",
        choices=ENGINE_NAMES,
        help="docker or podman (default: $POLYARCH_ENGINE, else docker if it answers, else podman)",
    )


def _engine(args: argparse.Namespace, progress: ConsoleProgress) -> Engine:

    from polyarch.engine import detect_engine

    engine = detect_engine(args.engine)
    progress.info(f"engine: {engine.describe()}")
    return engine


def _kernel(engine: Engine, progress: ConsoleProgress) -> Kernel:
    """Where the containers run, said once: it decides how foreign systems are checked."""
    from polyarch.kernel import locate_kernel

    kernel = locate_kernel(engine)
    progress.info(f"emulation: asking {kernel.describe()}, because {kernel.reason}")
    return kernel


def cmd_load(args: argparse.Namespace, progress: ConsoleProgress) -> int:

    from polyarch.reference import check_tag
    from polyarch.workflows.load import load_image

    check_tag(args.tag)  # before the engine is asked anything
    container = load(args).container(args.name)
    (system,) = systems_of(args, container)
    engine = _engine(args, progress)
    reference = load_image(
        engine,
        container,
        system,
        out_dir=Path(args.out),
        tag=args.tag,
        merge_layers=args.merge_layers,
    )
    merged = " (layers merged into one)" if args.merge_layers else ""
    print(
        f"loaded {system.name} image of {container.name} into {engine.name} as {reference}{merged}"
    )
    return 0


def cmd_test(args: argparse.Namespace, progress: ConsoleProgress) -> int:

    from polyarch.reference import check_tag
    from polyarch.workflows.smoke_test import raise_for_failures, run_smoke_tests

    check_tag(args.tag)  # before the engine is asked anything
    container = load(args).container(args.name)
    systems = systems_of(args, container)
    engine = _engine(args, progress)
    kernel = _kernel(engine, progress)
    reports = run_smoke_tests(
        engine, container, systems, out_dir=Path(args.out), tag=args.tag, kernel=kernel
    )
    _print_reports(container, reports, None)
    raise_for_failures(reports)
    return 0


def cmd_all(args: argparse.Namespace, progress: ConsoleProgress) -> int:
    from polyarch.cli.build import build_one
    from polyarch.reference import check_tag
    from polyarch.workflows.load import load_image
    from polyarch.workflows.smoke_test import (
        ensure_runnable,
        image_entrypoint,
        probe_runnable,
        raise_for_failures,
        run_smoke_test,
        run_smoke_tests,
    )

    check_tag(args.tag)  # before the engine is asked anything
    session = session_of(args, progress)
    # Every container's systems before any work: a --system one of them lacks is refused now.
    plan = [
        (container, container.systems if args.multiarch else systems_of(args, container))
        for container in containers_of(args, session.config)
    ]
    engine = _engine(args, progress)
    kernel = _kernel(engine, progress)
    out = Path(args.out)
    for container, systems in plan:
        started = time.monotonic()
        result, _ = build_one(args, session, container, systems, None, None)
        build_seconds = time.monotonic() - started
        print_build(result)
        if len(systems) == 1 and not args.multiarch:
            # container-all: the one system asked for becomes NAME:TAG, native or not.
            ensure_runnable(kernel, systems[0])
            reference = load_image(engine, container, systems[0], out_dir=out, tag=args.tag)
            probe_runnable(kernel, systems[0], reference)
            entrypoint = image_entrypoint(out, container, systems[0])
            reports = [
                run_smoke_test(
                    engine,
                    container,
                    systems[0],
                    reference,
                    native=kernel.native,
                    entrypoint=entrypoint,
                )
            ]
        else:
            reports = run_smoke_tests(
                engine, container, systems, out_dir=out, tag=args.tag, kernel=kernel
            )
        _print_reports(container, reports, result, build_seconds)
        raise_for_failures(reports)
    return 0


def cmd_manifest_test(args: argparse.Namespace, progress: ConsoleProgress) -> int:
    from polyarch.reference import check_tag
    from polyarch.workflows.build import build_container
    from polyarch.workflows.load import load_from_layout
    from polyarch.workflows.smoke_test import (
        image_entrypoint,
        raise_for_failures,
        run_smoke_test,
    )

    check_tag(args.tag)  # before the engine is asked anything
    session = session_of(args, progress)
    container = session.config.container(args.name)
    engine = _engine(args, progress)
    out = Path(args.out)
    started = time.monotonic()
    result = build_container(
        session, container, container.systems, out_dir=out, tag=args.tag
    ).summary()
    build_seconds = time.monotonic() - started
    print_build(result)
    native = _kernel(engine, progress).native
    reference = load_from_layout(engine, container, native, out_dir=out, tag=args.tag)
    entrypoint = image_entrypoint(out, container, native)
    reports = [
        run_smoke_test(engine, container, native, reference, native=native, entrypoint=entrypoint)
    ]
    _print_reports(container, reports, result, build_seconds)
    raise_for_failures(reports)
    return 0


def _print_reports(
    container: Container,
    reports: Sequence[TestReport],
    result: BuildSummary | None,
    build_seconds: float | None = None,
) -> None:

    from polyarch.ui import print_table

    digests = {i.system: i.digest for i in result.images} if result else {}
    rows = [
        [
            r.system.name,
            digests.get(r.system.name, ""),
            r.reference,
            "passed" if r.passed else "FAILED",
            f"{r.seconds:.1f}s",
        ]
        for r in reports
    ]
    title = f"{container.name}: tests"
    if build_seconds is not None:
        title += f" (build {build_seconds:.1f}s)"
    print_table(title, ["system", "digest", "image", "test", "time"], rows)
