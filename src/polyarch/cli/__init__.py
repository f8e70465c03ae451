"""The command line: parse, call the library, render. Nothing else lives here.

One module per group of commands, each with ``register(commands)``; this
module assembles the parser and turns ``PolyarchError`` into one line on
stderr and its exit code.

Start-up is part of the interface (``polyarch --help`` answers in well under
0.15 s): the command modules import what their handlers need inside the
handlers, so building the parser loads argparse and little else.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from collections.abc import Sequence

from polyarch import __version__
from polyarch.cli import (
    attest,
    build,
    cache,
    doctor,
    engine,
    outdated,
    project,
    publish,
    resolve,
    scale,
    version,
)
from polyarch.cli._common import Commands, Handler, common_options
from polyarch.errors import HostError, PolyarchError

COMMAND_MODULES = (
    project,
    resolve,
    outdated,
    build,
    engine,
    doctor,
    publish,
    cache,
    attest,
    scale,
    version,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``polyarch`` console script; returns the exit code."""
    # httpx imports its own command line (click, pygments, rich) whenever click is
    # installed, which costs a warm build a fifth of its time; this process never
    # runs it, and without the module httpx falls back as when click is missing.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    parser = make_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    from polyarch.ui import ConsoleProgress  # rich: only once there is work to show

    progress = ConsoleProgress(quiet=args.quiet)
    try:
        with progress:
            handler: Handler = args.handler
            try:
                return handler(args, progress)
            except BrokenPipeError:
                raise
            except OSError as exc:
                # The host refused (disk full, read-only, permissions): one line, its own code.
                raise HostError.of(exc) from exc
            except MemoryError as exc:
                raise HostError(
                    "out of memory", hint="close other programs, or build fewer systems at once"
                ) from exc
    except PolyarchError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"polyarch: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("polyarch: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`polyarch resolve --json | head`): stop quietly, as
        # a program killed by SIGPIPE would, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def make_parser() -> argparse.ArgumentParser:
    common = common_options()
    parser = argparse.ArgumentParser(
        prog="polyarch",
        description="Minimal, reproducible, multi-arch tool containers from Debian packages.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"polyarch {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    commands = Commands(sub, common_options(for_subcommand=True))
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser
