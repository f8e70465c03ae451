"""Options and lookups every command shares.

Only what building the parser needs is imported at the top (see ``polyarch.cli``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyarch.cache import ENV_VAR as CACHE_ENV_VAR
from polyarch.errors import UsageError
from polyarch.outputs import DEFAULT_OUT
from polyarch.reference import DEFAULT_TAG

if TYPE_CHECKING:
    from polyarch.cache import Cache
    from polyarch.config import Config, Container
    from polyarch.platforms import System
    from polyarch.ui import ConsoleProgress
    from polyarch.workflows.resolve import Session

Handler = Callable[[argparse.Namespace, "ConsoleProgress"], int]


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


def add_system_options(p: argparse.ArgumentParser, *, several: bool = False) -> None:
    """--system S (with ``several``: repeat it, or separate systems with commas), --all-systems."""
    x = p.add_mutually_exclusive_group()
    if several:
        x.add_argument(
            "--system",
            metavar="S",
            action="append",
            help="x86_64-linux, aarch64-linux, ...; repeat or separate with commas "
            "(default: native)",
        )
    else:
        x.add_argument(
            "--system", metavar="S", help="x86_64-linux, aarch64-linux, ... (default: native)"
        )
    x.add_argument("--all-systems", action="store_true", help="every system of the container")


def add_out_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        metavar="DIR",
        default=DEFAULT_OUT,
        help=f"output directory (default: {DEFAULT_OUT})",
    )


def add_out_options(p: argparse.ArgumentParser) -> None:
    """--out and --tag."""
    add_out_option(p)
    p.add_argument("--tag", default=DEFAULT_TAG, help=f"image tag (default: {DEFAULT_TAG})")


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


def add_registry_options(p: argparse.ArgumentParser, *, jobs_help: str) -> None:
    """TLS, credentials and parallelism of commands that talk to a registry."""
    p.add_argument("--insecure", action="store_true", help="allow plain HTTP and unverified TLS")
    p.add_argument("--ca-bundle", metavar="FILE", help="CA certificates to trust for the registry")
    p.add_argument("--username", metavar="U", help="registry user (with --password-stdin)")
    p.add_argument(
        "--password-stdin", action="store_true", help="read the password or token from stdin"
    )
    p.add_argument("--jobs", type=int, default=8, help=f"{jobs_help} (default: 8)")


def ca_bundle_of(args: argparse.Namespace) -> Path | None:
    return Path(args.ca_bundle) if args.ca_bundle else None


def jobs_of(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    return int(args.jobs)


def password_of(args: argparse.Namespace) -> bytes | None:
    """The secret piped in with --password-stdin (read once, kept in memory only)."""
    return sys.stdin.buffer.read() if args.password_stdin else None


def load(args: argparse.Namespace) -> Config:
    from polyarch.config import find_config, load_config

    return load_config(find_config(args.file))


def cache_of(args: argparse.Namespace, progress: ConsoleProgress | None = None) -> Cache:
    """The cache of --cache-dir (else the default); its warnings go to ``progress``."""
    from polyarch.cache import Cache

    return Cache(args.cache_dir or None, progress=progress)


def session_of(args: argparse.Namespace, progress: ConsoleProgress) -> Session:
    """The session, with containers.lock loaded for --locked/--offline."""
    from polyarch.workflows.resolve import Session

    session = Session(config=load(args), cache=cache_of(args, progress), progress=progress)
    if getattr(args, "locked", False) or getattr(args, "offline", False):
        from polyarch.lock import lock_path, read_lock

        session.lock = read_lock(lock_path(session.config))
        session.offline = bool(getattr(args, "offline", False))
    return session


def systems_of(args: argparse.Namespace, container: Container) -> tuple[System, ...]:
    """--system S, --all-systems, else the native system."""
    from polyarch.platforms import native_system, parse_system

    if getattr(args, "all_systems", False):
        return container.systems
    given = getattr(args, "system", None)
    if given:
        texts = [given] if isinstance(given, str) else given
        wanted = [parse_system(n.strip()) for t in texts for n in t.split(",") if n.strip()]
        for system in wanted:
            if system not in container.systems:
                raise UsageError(
                    f"{container.name} is not configured for {system.name}",
                    hint=f"add it to containers.{container.name}.systems, or pick one of "
                    + ", ".join(s.name for s in container.systems),
                )
        if wanted:
            return tuple(dict.fromkeys(wanted))
    native = native_system()
    if native not in container.systems:
        raise UsageError(
            f"{container.name} is not configured for the native system {native.name}",
            hint="pass --system or add it to the container's systems",
        )
    return (native,)


def containers_of(args: argparse.Namespace, config: Config) -> list[Container]:
    """NAME (or NAME..., for commands that take several), or every container with --all."""
    names = [args.name] if isinstance(args.name, str) else list(args.name or ())
    if getattr(args, "all", False):
        if names:
            raise UsageError("give a container NAME or --all, not both")
        return list(config.containers)
    if not names:
        raise UsageError("which container?", hint="give NAME, or --all for every container")
    return [config.container(name) for name in dict.fromkeys(names)]
