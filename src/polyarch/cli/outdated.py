"""polyarch outdated."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyarch.cli._common import Commands, add_out_option, session_of
from polyarch.errors import REBUILD_NEEDED

if TYPE_CHECKING:
    from polyarch.ui import ConsoleProgress
    from polyarch.workflows.outdated import Outdated


OUTDATED_SCHEMA = "polyarch.outdated/v1"


def register(commands: Commands) -> None:
    p = commands.add(
        "outdated",
        cmd_outdated,
        f"would a rebuild change packages? (exit {REBUILD_NEEDED} if so)",
    )
    p.add_argument("name", metavar="NAME", nargs="?", help="one container (default: every one)")
    p.add_argument(
        "--json", action="store_true", help=f"machine-readable output (schema {OUTDATED_SCHEMA})"
    )
    add_out_option(p)


def cmd_outdated(args: argparse.Namespace, progress: ConsoleProgress) -> int:
    from polyarch.workflows.outdated import outdated_containers

    session = session_of(args, progress)
    config = session.config
    containers = [config.container(args.name)] if args.name else list(config.containers)
    try:
        results = outdated_containers(session, containers, out_dir=Path(args.out))
    finally:
        session.close()
    if args.json:
        print(json.dumps(outdated_json(results), indent=2, sort_keys=True))
    else:
        for result in results:
            print_outdated(result)
    return REBUILD_NEEDED if any(r.rebuild_needed for r in results) else 0


def print_outdated(result: Outdated) -> None:
    from polyarch.ui import print_table

    if not result.rebuild_needed:
        print(f"{result.container}: current (compared with {result.path})")
        return
    state = f"{len(result.changes)} change(s), {result.security_fixes} from a security suite"
    if result.lock_matches_config is False:
        state += "; containers.toml changed since the lock"
    rows = [
        [
            c.package.system,
            c.package.name,
            c.package.before.version if c.package.before else "—",
            c.package.after.version if c.package.after else "—",
            (c.package.after.source or "") if c.package.after else "",
            "yes" if c.security else "",
        ]
        for c in result.changes
    ]
    print_table(
        f"{result.container}: rebuild needed ({state}) · compared with {result.path}",
        ["system", "package", "then", "now", "source", "security"],
        rows,
    )


def outdated_json(results: list[Outdated]) -> dict[str, Any]:
    """The stable ``--json`` object (schema ``polyarch.outdated/v1``, see docs/JSON.md)."""
    return {
        "schema": OUTDATED_SCHEMA,
        "rebuild_needed": any(r.rebuild_needed for r in results),
        "containers": {
            r.container: {
                "rebuild_needed": r.rebuild_needed,
                "compared_with": r.baseline,
                "path": str(r.path),
                "lock_matches_config": r.lock_matches_config,
                "changes": [
                    {
                        "system": c.package.system,
                        "name": c.package.name,
                        "change": c.package.kind,
                        "from": c.package.before.version if c.package.before else None,
                        "to": c.package.after.version if c.package.after else None,
                        "source": c.package.after.source if c.package.after else None,
                        "security": c.security,
                    }
                    for c in r.changes
                ],
            }
            for r in results
        },
    }
