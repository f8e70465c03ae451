"""The command line: parse, call the library, render. Nothing else lives here."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from polyarch.cache import ENV_VAR as CACHE_ENV_VAR
from polyarch.cache import Cache
from polyarch.config import Config, Container, find_config, load_config
from polyarch.errors import PolyarchError, UsageError
from polyarch.platforms import System, native_system, parse_system
from polyarch.ui import ConsoleProgress, human_size, print_table

if TYPE_CHECKING:
    from polyarch.workflows.build import BuildResult

Handler = Callable[[argparse.Namespace, ConsoleProgress], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``polyarch`` console script; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    with ConsoleProgress(quiet=args.quiet) as progress:
        try:
            handler: Handler = args.handler
            return handler(args, progress)
        except PolyarchError as exc:
            progress.__exit__(None, None, None)
            if args.debug:
                traceback.print_exc()
            print(f"polyarch: error: {exc}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            print("polyarch: interrupted", file=sys.stderr)
            return 130


# --- shared option handling --------------------------------------------------


def _config(args: argparse.Namespace) -> Config:
    return load_config(find_config(args.file))


def _cache(args: argparse.Namespace) -> Cache:
    return Cache(args.cache_dir) if args.cache_dir else Cache()


def _systems(
    args: argparse.Namespace, container: Container, *, default_all: bool = False
) -> tuple[System, ...]:
    """--system S, --all-systems, else the native system (or all, for index-making commands)."""
    if getattr(args, "all_systems", False) or default_all:
        return container.systems
    if getattr(args, "system", None):
        return (parse_system(args.system),)
    native = native_system()
    if native not in container.systems:
        raise UsageError(
            f"{container.name} is not configured for the native system {native.name}",
            hint="pass --system or add it to the container's systems",
        )
    return (native,)


def _session(args: argparse.Namespace, progress: ConsoleProgress):  # type: ignore[no-untyped-def]
    from polyarch.workflows.resolve import Session

    return Session(config=_config(args), cache=_cache(args), progress=progress)


# --- commands -----------------------------------------------------------------


def _cmd_resolve(args: argparse.Namespace, progress: ConsoleProgress) -> int:
    from polyarch.workflows.resolve import download, resolution_json, resolve_container

    session = _session(args, progress)
    container = session.config.container(args.name)
    systems = _systems(args, container)
    resolutions = resolve_container(session, container, systems)
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


def _containers(args: argparse.Namespace, config: Config) -> list[Container]:
    if getattr(args, "all", False):
        if args.name:
            raise UsageError("give a container NAME or --all, not both")
        return list(config.containers)
    if not args.name:
        raise UsageError("which container?", hint="give NAME, or --all for every container")
    return [config.container(args.name)]


def _cmd_build(args: argparse.Namespace, progress: ConsoleProgress) -> int:
    from polyarch.workflows.build import build_container

    session = _session(args, progress)
    for container in _containers(args, session.config):
        result = build_container(
            session, container, _systems(args, container), out_dir=Path(args.out), tag=args.tag
        )
        _print_build(result)
    return 0


def _print_build(result: BuildResult) -> None:
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


# --- parser -------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("common options")
    g.add_argument(
        "-f", "--file", metavar="PATH", help="containers.toml to use (default: ./containers.toml)"
    )
    g.add_argument(
        "--cache-dir",
        metavar="DIR",
        default=os.environ.get(CACHE_ENV_VAR),
        help=f"cache directory (default: ${CACHE_ENV_VAR} or the user cache dir)",
    )
    g.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    g.add_argument("--debug", action="store_true", help="show tracebacks on errors")

    parser = argparse.ArgumentParser(
        prog="polyarch",
        description="Minimal, reproducible, multi-arch tool containers from Debian packages.",
        parents=[common],
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, parents=[common])
        p.set_defaults(handler=handler)
        return p

    def systems_options(p: argparse.ArgumentParser) -> None:
        x = p.add_mutually_exclusive_group()
        x.add_argument(
            "--system", metavar="S", help="x86_64-linux, aarch64-linux, ... (default: native)"
        )
        x.add_argument("--all-systems", action="store_true", help="every system of the container")

    p = command("resolve", _cmd_resolve, "print the verified package closure per system")
    p.add_argument("name", metavar="NAME")
    systems_options(p)
    p.add_argument(
        "--json", action="store_true", help="machine-readable output (schema polyarch.resolve/v1)"
    )
    p.add_argument("--download", action="store_true", help="also download and verify every .deb")

    p = command("build", _cmd_build, "build a container's images and index")
    p.add_argument("name", metavar="NAME", nargs="?")
    p.add_argument("--all", action="store_true", help="build every container of containers.toml")
    systems_options(p)
    out_options(p)

    return parser


def out_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out", metavar="DIR", default="result", help="output directory (default: result)"
    )
    p.add_argument("--tag", default="latest", help="image tag (default: latest)")


if __name__ == "__main__":
    raise SystemExit(main())
