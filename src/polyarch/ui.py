"""Terminal rendering for the CLI: rich progress on a terminal, silence in pipes."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table


class ConsoleProgress:
    """Implements ``polyarch.progress.Progress`` for the CLI.

    On a terminal it shows live bars on stderr; otherwise it shows nothing but
    warnings, so pipes and CI logs stay clean.
    """

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False) -> None:
        self.console = Console(file=stream or sys.stderr, highlight=False)
        self.live = self.console.is_terminal and not quiet
        self.quiet = quiet
        self._bars: Progress | None = None

    def __enter__(self) -> ConsoleProgress:
        if self.live:
            self._bars = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None

    def task(self, description: str, total: float | None = None) -> int:
        if self._bars is None:
            return 0
        return int(self._bars.add_task(description, total=total))

    def advance(self, task_id: int, amount: float = 1) -> None:
        if self._bars is not None:
            self._bars.advance(TaskID(task_id), amount)

    def done(self, task_id: int) -> None:
        if self._bars is not None:
            self._bars.remove_task(TaskID(task_id))

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/yellow] {message}", soft_wrap=True)

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, soft_wrap=True)


class _Stdout(Console):
    """stdout whose closed pipe ends the command like any other (exit 141, in cli.main)."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table on stdout; plain aligned text when stdout is not a terminal."""
    console = _Stdout(highlight=False)
    if not console.is_terminal:
        # In a pipe, never wrap: one row per line, whatever the width.
        console = _Stdout(highlight=False, width=max(200, console.width), no_color=True)
    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*r)
    console.print(table)


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"
