"""polyarch resolve."""

from __future__ import annotations

import argparse
import json

from polyarch.cli._common import Commands, add_system_options, session_of, systems_of
from polyarch.ui import ConsoleProgress, human_size, print_table
from polyarch.workflows.resolve import download, resolution_json, resolve_container


def register(commands: Commands) -> None:
    p = commands.add("resolve", run, "print the verified package closure per system")
    p.add_argument("name", metavar="NAME")
    add_system_options(p)
    p.add_argument(
        "--json", action="store_true", help="machine-readable output (schema polyarch.resolve/v1)"
    )
    p.add_argument("--download", action="store_true", help="also download and verify every .deb")


def run(args: argparse.Namespace, progress: ConsoleProgress) -> int:
    session = session_of(args, progress)
    container = session.config.container(args.name)
    resolutions = resolve_container(session, container, systems_of(args, container))
    if args.download:
        download(session, resolutions)
    if args.json:
        print(json.dumps(resolution_json(container, resolutions), indent=2, sort_keys=True))
        return 0
    for system, resolution in resolutions.items():
        total = sum(p.record.size for p in resolution.packages)
        rows = [
            [
                p.record.name,
                p.record.version,
                p.record.architecture,
                human_size(p.record.size),
                p.record.sha256,
            ]
            for p in resolution.packages
        ]
        print_table(
            f"{container.name} · {system.name} ({system.debian_arch}) · "
            f"{len(rows)} packages, {human_size(total)}",
            ["package", "version", "arch", "size", "sha256"],
            rows,
        )
    return 0
