"""polyarch build."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from polyarch.cli._common import (
    Commands,
    add_lock_options,
    add_out_options,
    add_system_options,
    containers_of,
    session_of,
    systems_of,
)
from polyarch.cli.attest import add_sign_key_option, sign_key_of

if TYPE_CHECKING:
    from polyarch.ui import ConsoleProgress
    from polyarch.workflows.build import BuildResult


def register(commands: Commands) -> None:
    p = commands.add("build", cmd_build, "build a container's images and index")
    p.add_argument("name", metavar="NAME", nargs="?")
    p.add_argument("--all", action="store_true", help="build every container of containers.toml")
    add_system_options(p)
    add_out_options(p)
    add_lock_options(p)
    add_sign_key_option(p)


def cmd_build(args: argparse.Namespace, progress: ConsoleProgress) -> int:
    from polyarch.workflows.build import build_container

    sign_key = sign_key_of(args)

    session = session_of(args, progress)
    for container in containers_of(args, session.config):
        result = build_container(
            session,
            container,
            systems_of(args, container),
            out_dir=Path(args.out),
            tag=args.tag,
            sign_key=sign_key,
        )
        print_build(result)
    return 0


def print_build(result: BuildResult) -> None:
    """The table every building command ends with."""
    from polyarch.ui import human_size, print_table

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
