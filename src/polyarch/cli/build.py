"""polyarch build."""

from __future__ import annotations

import argparse
from pathlib import Path

from polyarch.cli._common import (
    Commands,
    add_out_options,
    add_system_options,
    containers_of,
    session_of,
    systems_of,
)
from polyarch.lock import lock_path, read_lock
from polyarch.ui import ConsoleProgress, human_size, print_table
from polyarch.workflows.build import BuildResult, build_container
from polyarch.workflows.resolve import Session


def register(commands: Commands) -> None:
    p = commands.add("build", run, "build a container's images and index")
    p.add_argument("name", metavar="NAME", nargs="?")
    p.add_argument("--all", action="store_true", help="build every container of containers.toml")
    add_system_options(p)
    add_out_options(p)
    add_lock_options(p)


def add_lock_options(p: argparse.ArgumentParser) -> None:
    """--locked and --offline, for every command that builds."""
    p.add_argument(
        "--locked",
        action="store_true",
        help="build exactly the packages of containers.lock; read no index",
    )
    p.add_argument(
        "--offline",
        action="store_true",
        help="no network: build from containers.lock and the cache (implies --locked)",
    )


def locked_session_of(args: argparse.Namespace, progress: ConsoleProgress) -> Session:
    """The session, with containers.lock loaded for --locked/--offline."""
    session = session_of(args, progress)
    if getattr(args, "locked", False) or getattr(args, "offline", False):
        session.lock = read_lock(lock_path(session.config))
        session.offline = bool(getattr(args, "offline", False))
    return session


def run(args: argparse.Namespace, progress: ConsoleProgress) -> int:
    session = locked_session_of(args, progress)
    for container in containers_of(args, session.config):
        result = build_container(
            session, container, systems_of(args, container), out_dir=Path(args.out), tag=args.tag
        )
        print_build(result)
    return 0


def print_build(result: BuildResult) -> None:
    """The table every building command ends with."""
    rows = [
        [
            "index",
            result.index_digest,
            "",
            human_size(sum(b.image.size for b in result.systems)),
            human_size(sum(b.image.uncompressed_size for b in result.systems)),
        ]
    ]
    for b in result.systems:
        rows.append(
            [
                b.system.name,
                b.image.manifest_digest,
                str(len(b.image.layers)),
                human_size(b.image.size),
                human_size(b.image.uncompressed_size),
            ]
        )
    print_table(
        f"{result.container.name} {result.systems[0].version} → {result.path}",
        ["system", "digest", "layers", "compressed", "uncompressed"],
        rows,
    )
