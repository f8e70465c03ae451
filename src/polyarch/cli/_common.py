"""Options and lookups every command shares."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from polyarch.cache import ENV_VAR as CACHE_ENV_VAR
from polyarch.cache import Cache
from polyarch.config import Config, Container, find_config, load_config
from polyarch.errors import UsageError
from polyarch.platforms import System, native_system, parse_system
from polyarch.ui import ConsoleProgress
from polyarch.workflows.resolve import Session

Handler = Callable[[argparse.Namespace, ConsoleProgress], int]


def common_options(*, for_subcommand: bool = False) -> argparse.ArgumentParser:
    """Options accepted before and after the command name.

    The subcommands' copy uses SUPPRESS defaults, so ``polyarch -f X build``
    keeps X instead of the subparser resetting it to the default.
    """
    common = argparse.ArgumentParser(
        add_help=False, argument_default=argparse.SUPPRESS if for_subcommand else None
    )
    g = common.add_argument_group("common options")
    g.add_argument(
        "-f", "--file", metavar="PATH", help="containers.toml to use (default: ./containers.toml)"
    )
    g.add_argument(
        "--cache-dir",
        metavar="DIR",
        default=argparse.SUPPRESS if for_subcommand else os.environ.get(CACHE_ENV_VAR),
        help=f"cache directory (default: ${CACHE_ENV_VAR} or the user cache dir)",
    )
    flag_default = argparse.SUPPRESS if for_subcommand else False
    g.add_argument(
        "-q", "--quiet", action="store_true", default=flag_default, help="no progress output"
    )
    g.add_argument(
        "--debug", action="store_true", default=flag_default, help="show tracebacks on errors"
    )
    return common


@dataclass
class Commands:
    """What a command module gets to add its subcommands."""

    sub: Any  # argparse's _SubParsersAction, which typeshed keeps private
    common: argparse.ArgumentParser

    def add(self, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = self.sub.add_parser(
            name, help=help, description=help, parents=[self.common]
        )
        p.set_defaults(handler=handler)
        return p


def add_system_options(p: argparse.ArgumentParser) -> None:
    x = p.add_mutually_exclusive_group()
    x.add_argument(
        "--system", metavar="S", help="x86_64-linux, aarch64-linux, ... (default: native)"
    )
    x.add_argument("--all-systems", action="store_true", help="every system of the container")


def add_out_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out", metavar="DIR", default="result", help="output directory (default: result)"
    )
    p.add_argument("--tag", default="latest", help="image tag (default: latest)")


def load(args: argparse.Namespace) -> Config:
    return load_config(find_config(args.file))


def cache_of(args: argparse.Namespace) -> Cache:
    return Cache(args.cache_dir) if args.cache_dir else Cache()


def session_of(args: argparse.Namespace, progress: ConsoleProgress) -> Session:
    return Session(config=load(args), cache=cache_of(args), progress=progress)


def systems_of(args: argparse.Namespace, container: Container) -> tuple[System, ...]:
    """--system S, --all-systems, else the native system."""
    if getattr(args, "all_systems", False):
        return container.systems
    if getattr(args, "system", None):
        system = parse_system(args.system)
        if system not in container.systems:
            raise UsageError(
                f"{container.name} is not configured for {system.name}",
                hint=f"add it to containers.{container.name}.systems, or pick one of "
                + ", ".join(s.name for s in container.systems),
            )
        return (system,)
    native = native_system()
    if native not in container.systems:
        raise UsageError(
            f"{container.name} is not configured for the native system {native.name}",
            hint="pass --system or add it to the container's systems",
        )
    return (native,)


def containers_of(args: argparse.Namespace, config: Config) -> list[Container]:
    """NAME, or every container with --all."""
    if getattr(args, "all", False):
        if args.name:
            raise UsageError("give a container NAME or --all, not both")
        return list(config.containers)
    if not args.name:
        raise UsageError("which container?", hint="give NAME, or --all for every container")
    return [config.container(args.name)]
