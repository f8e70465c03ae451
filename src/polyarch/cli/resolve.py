"""polyarch resolve."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from polyarch.cli._common import Commands, add_system_options, session_of, systems_of

if TYPE_CHECKING:
    from polyarch.config import Container
    from polyarch.debian.resolver import Resolution
    from polyarch.platforms import System
    from polyarch.ui import ConsoleProgress

RESOLVE_SCHEMA = "polyarch.resolve/v1"


def register(commands: Commands) -> None:
    p = commands.add("resolve", cmd_resolve, "print the verified package closure per system")
    p.add_argument("name", metavar="NAME")
    add_system_options(p)
    p.add_argument(
        "--json", action="store_true", help=f"machine-readable output (schema {RESOLVE_SCHEMA})"
    )
    p.add_argument("--download", action="store_true", help="also download and verify every .deb")


def cmd_resolve(args: argparse.Namespace, progress: ConsoleProgress) -> int:
    from polyarch.ui import human_size, print_table
    from polyarch.workflows.resolve import download, resolve_container

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
                p.source,
                human_size(p.record.size),
                p.record.sha256,
            ]
            for p in resolution.packages
        ]
        sources = ", ".join(f"{s.name} = {s.suite}" for s in resolution.sources)
        print_table(
            f"{container.name} · {system.name} ({system.debian_arch}) · "
            f"{len(rows)} packages, {human_size(total)}" + (f" · {sources}" if sources else ""),
            ["package", "version", "arch", "source", "size", "sha256"],
            rows,
        )
    return 0


def resolution_json(container: Container, resolutions: dict[System, Resolution]) -> dict[str, Any]:
    """The stable ``--json`` object (schema ``polyarch.resolve/v1``, see docs/JSON.md)."""
    return {
        "schema": RESOLVE_SCHEMA,
        "container": container.name,
        "package": container.package,
        "systems": {
            system.name: {
                "debian_arch": system.debian_arch,
                "platform": system.oci_platform,
                "excluded": list(r.excluded),
                "sources": [
                    {
                        "name": s.name,
                        "url": s.url,
                        "suite": s.suite,
                        "codename": s.codename,
                        "priority": s.priority,
                        "security": s.security,
                        "release_date": s.release_date,
                        "release_file": s.release_file,
                        "release_sha256": s.release_sha256,
                    }
                    for s in r.sources
                ],
                "packages": [
                    {
                        "name": p.record.name,
                        "version": p.record.version,
                        "architecture": p.record.architecture,
                        "size": p.record.size,
                        "sha256": p.record.sha256,
                        "filename": p.record.filename,
                        "base": p.base,
                        "required_by": list(p.required_by),
                        "source": p.source,
                    }
                    for p in r.packages
                ],
            }
            for system, r in resolutions.items()
        },
    }
