"""polyarch version: this polyarch, its libraries and the host programs it found."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from polyarch.cli._common import Commands

if TYPE_CHECKING:
    from polyarch.about import About
    from polyarch.ui import ConsoleProgress

VERSION_SCHEMA = "polyarch.version/v1"


def register(commands: Commands) -> None:
    p = commands.add("version", cmd_version, "versions of polyarch, its libraries and host tools")
    p.add_argument(
        "--json", action="store_true", help=f"machine-readable output (schema {VERSION_SCHEMA})"
    )


def cmd_version(args: argparse.Namespace, progress: ConsoleProgress) -> int:
    from polyarch.about import about
    from polyarch.ui import print_table

    found = about()
    if args.json:
        print(json.dumps(version_json(found), indent=2, sort_keys=True))
        return 0
    print(f"polyarch {found.version} (Python {found.python}, {found.platform})")
    print_table(
        "libraries", ["name", "version"], [[n, v or "not installed"] for n, v in found.dependencies]
    )
    print_table(
        "host programs",
        ["program", "version", "path"],
        [[p.name, p.version or "", p.path or "not found"] for p in found.programs],
    )
    return 0


def version_json(found: About) -> dict[str, Any]:
    """The stable ``--json`` object (schema ``polyarch.version/v1``, see docs/JSON.md)."""
    return {
        "schema": VERSION_SCHEMA,
        "polyarch": found.version,
        "python": found.python,
        "platform": found.platform,
        "dependencies": dict(found.dependencies),
        "programs": {p.name: {"path": p.path, "version": p.version} for p in found.programs},
    }
