"""polyarch doctor · emulation: what can run here, and registering qemu-user handlers."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from polyarch.cli._common import Commands, cache_of
from polyarch.cli.engine import add_engine_option

if TYPE_CHECKING:
    from polyarch.ui import ConsoleProgress


def register(commands: Commands) -> None:
    p = commands.add("doctor", cmd_doctor, "what can run here: engine, emulation, keyring, mirror")
    add_engine_option(p)

    p = commands.add("emulation", cmd_emulation, "manage qemu-user binfmt_misc handlers")
    p.add_argument("action", choices=["install", "status"])


def cmd_doctor(args: argparse.Namespace, progress: ConsoleProgress) -> int:
    from polyarch.platforms import SYSTEMS
    from polyarch.ui import print_table
    from polyarch.workflows.doctor import archive_checks, diagnose_with_kernel

    kernel, diagnosed = diagnose_with_kernel(SYSTEMS, preferred_engine=args.engine)
    print_table(
        "which kernel runs the containers",
        ["asked", "why"],
        [[kernel.kernel, kernel.reason]],
    )
    if kernel.storage:
        print_table(
            "how the engine stores layers",
            ["driver", "cost"],
            [[kernel.storage, kernel.storage_cost or "no copy per layer"]],
        )
    rows = [
        [
            row.system.name,
            {True: "yes", False: "no", None: "probe"}[row.can_run],
            row.engine or "none",
            row.handler,
            "" if row.fix_binary is None else ("F" if row.fix_binary else "no F flag"),
            row.advice or "",
        ]
        for row in diagnosed
    ]
    print_table("can run here", ["system", "runs", "engine", "handler", "flags", "advice"], rows)
    checks = archive_checks(args.file, cache_of(args))
    print_table("archive", ["check", "result"], [list(row) for row in checks])
    return 0


def cmd_emulation(args: argparse.Namespace, progress: ConsoleProgress) -> int:
    from polyarch.emulation import emulation_problem, handler_status, install_handlers
    from polyarch.platforms import SYSTEMS, native_system

    native = native_system()
    foreign = [s for s in SYSTEMS if s != native]
    if args.action == "install":
        for line in install_handlers(foreign):
            print(line)
        return 0
    for system in foreign:
        problem = emulation_problem(handler_status(system))
        print(f"{system.name}: {problem or 'ok'}")
    return 0
