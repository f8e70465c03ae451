"""polyarch add · list: the containers of containers.toml, one more in one command.

What the handlers need is imported inside them, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyarch.cli._common import Commands, add_out_option

if TYPE_CHECKING:
    from polyarch.engine import Engine
    from polyarch.platforms import System
    from polyarch.ui import ConsoleProgress
    from polyarch.workflows.add import Added
    from polyarch.workflows.listing import Listed

LIST_SCHEMA = "polyarch.list/v1"


def register(commands: Commands) -> None:
    p = commands.add("add", cmd_add, "add [containers.NAME] for a command or a package")
    p.add_argument("what", metavar="WHAT", help="a command (rg, fdfind) or a package (ripgrep)")
    p.add_argument("--name", metavar="NAME", help="the container's name (default: WHAT)")
    p.add_argument("--command", metavar="C", help="the binary to run, for a package with several")
    p.add_argument(
        "--dry-run", action="store_true", help="print the table; leave containers.toml as it is"
    )
    p.add_argument(
        "--engine",
        choices=("docker", "podman"),
        help="where to try --version/--help (default: as `polyarch test`; none: not tried)",
    )

    p = commands.add("list", cmd_list, "the containers: package, command, versions, last build")
    p.add_argument(
        "--json", action="store_true", help=f"machine-readable output (schema {LIST_SCHEMA})"
    )
    p.add_argument(
        "--locked", action="store_true", help="versions from containers.lock only; no network"
    )
    add_out_option(p)


def cmd_add(args: argparse.Namespace, progress: ConsoleProgress) -> int:
    from polyarch.cli._common import cache_of
    from polyarch.config import CONFIG_NAME, parse_config
    from polyarch.workflows.add import add_tool
    from polyarch.workflows.resolve import Session

    path = Path(args.file) if args.file else Path.cwd() / CONFIG_NAME
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if path.exists() and not path.is_file():
        from polyarch.config import find_config

        find_config(path)  # says what is wrong with it
    session = Session(config=parse_config(text, path), cache=cache_of(args), progress=progress)
    engine, native = _engine(args, progress)
    added = add_tool(
        session,
        args.what,
        name=args.name,
        command=args.command,
        engine=engine,
        native=native,
        dry_run=args.dry_run,
    )
    _print_added(added, engine)
    return 0


def _engine(
    args: argparse.Namespace, progress: ConsoleProgress
) -> tuple[Engine | None, System | None]:
    """The engine to try the image in, and its kernel's system; (None, None) without one."""
    from polyarch.engine import detect_engine
    from polyarch.errors import EngineError, ToolMissingError
    from polyarch.kernel import locate_kernel

    try:
        engine = detect_engine(args.engine)
        native = locate_kernel(engine).native
    except (EngineError, ToolMissingError) as exc:
        if args.engine:
            raise
        progress.warn(f"no container engine, so --version is written untried ({exc.message})")
        return None, None
    return engine, native


def _print_added(added: Added, engine: Engine | None) -> None:
    from polyarch.config_edit import render_table

    choice = added.choice
    where = f" ({choice.path})" if choice.path else ""
    print(f"{choice.command}{where} is in package {choice.package}")
    for system, version in added.versions.items():
        print(f"  {system.name}: {choice.package} {version}")
    for probe in added.probes:
        verdict = "exits 0" if probe.exit_code == 0 else f"exits {probe.exit_code}"
        probed = added.probed.name if added.probed else "?"
        print(f"  {choice.command} {' '.join(probe.args)} {verdict} in the {probed} image")
    if engine is not None and added.probed is None:
        print("  not tried in the engine: the container is not built for the engine's system")
    elif added.probes and not added.tested:
        print("  neither exits 0: set test in the table to arguments that do")
    action = "added to" if added.written else "would be added to (dry run)"
    print(f"[containers.{added.name}] {action} {added.config}:\n")
    print(render_table(added.name, added.table), end="")


def cmd_list(args: argparse.Namespace, progress: ConsoleProgress) -> int:
    from polyarch.cli._common import session_of
    from polyarch.ui import print_table
    from polyarch.workflows.listing import list_containers

    session = session_of(args, progress)
    listed = list_containers(session, out_dir=Path(args.out), locked_only=args.locked)
    if args.json:
        print(json.dumps(list_json(listed), indent=2, sort_keys=True))
        return 0
    rows = []
    for item in listed:
        c = item.container
        versions = ", ".join(f"{system}: {v or '?'}" for system, v in item.versions)
        build = item.build.index_digest[:19] if item.build else (item.build_problem or "")
        rows.append([c.name, c.package, c.command, versions, build])
    print_table(
        f"{session.config.path}: {len(rows)} containers",
        ["container", "package", "command", "versions", "last build"],
        rows,
    )
    return 0


def list_json(listed: list[Listed]) -> dict[str, Any]:
    """The stable ``--json`` object (schema ``polyarch.list/v1``, see docs/JSON.md)."""
    return {
        "schema": LIST_SCHEMA,
        "containers": [
            {
                "name": item.container.name,
                "package": item.container.package,
                "command": item.container.command,
                "systems": [s.name for s in item.container.systems],
                "versions": dict(item.versions),
                "version_source": item.version_source,
                "last_build": None
                if item.build is None
                else {
                    "path": str(item.build.path),
                    "index_digest": item.build.index_digest,
                    "manifests": dict(item.build.manifests),
                },
                "last_build_problem": item.build_problem,
            }
            for item in listed
        ],
    }
