"""Terminal rendering for the CLI: rich progress on a terminal, plain text in pipes.

rich is imported only when a terminal will show what it draws: a command
whose output goes to a pipe or a log (CI, scripts, ``-q`` builds) prints
plain lines and never pays for loading it (issue 13: a warm build starts in
well under 0.3 s).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

COLUMN_GAP = "  "
"""Between two columns of a plain table."""


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` shows rich output: rich's own rule (``TTY_COMPATIBLE``,
    ``FORCE_COLOR``, then ``isatty``), without importing rich."""
    forced = os.environ.get("TTY_COMPATIBLE", "")
    if forced in ("0", "1"):
        return forced == "1"
    force_color = os.environ.get("FORCE_COLOR")
    if force_color is not None:
        return force_color != ""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class ConsoleProgress:
    """Implements ``polyarch.progress.Progress`` for the CLI.

    On a terminal it shows live bars on stderr; otherwise it shows nothing but
    warnings, so pipes and CI logs stay clean.
    """

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.terminal = is_terminal(self.stream)
        self.live = self.terminal and not quiet
        self.quiet = quiet
        self._console: Console | None = None
        self._bars: Progress | None = None

    @property
    def console(self) -> Console:
        """The rich console on the stream (made, and rich imported, on first use)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self.stream, highlight=False)
        return self._console

    def __enter__(self) -> ConsoleProgress:
        if self.live:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

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
            from rich.progress import TaskID

            self._bars.advance(TaskID(task_id), amount)

    def done(self, task_id: int) -> None:
        if self._bars is not None:
            from rich.progress import TaskID

            self._bars.remove_task(TaskID(task_id))

    def warn(self, message: str) -> None:
        if self.terminal:
            from rich.markup import escape

            self.console.print(f"[yellow]warning:[/yellow] {escape(message)}", soft_wrap=True)
        else:
            print(f"warning: {message}", file=self.stream, flush=True)

    def info(self, message: str) -> None:
        if self.quiet:
            return
        if self.terminal:
            from rich.markup import escape

            self.console.print(escape(message), soft_wrap=True)
        else:
            print(message, file=self.stream, flush=True)


def printable(text: str) -> str:
    """``text`` as any stream can print it: a file name's undecodable bytes shown as ``\\xff``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table on stdout: rich's on a terminal, plain aligned text (never wrapped) elsewhere."""
    title = printable(title) if title is not None else None
    rows = [[printable(cell) for cell in row] for row in rows]
    if not is_terminal(sys.stdout):
        sys.stdout.write(plain_table(title, columns, rows))
        sys.stdout.flush()
        return
    from rich.console import Console
    from rich.table import Table

    class _Stdout(Console):
        """stdout whose closed pipe ends the command like any other (exit 141, in cli.main)."""

        def on_broken_pipe(self) -> None:
            raise BrokenPipeError

    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*r)
    _Stdout(highlight=False).print(table)


def plain_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The table as text: an optional title line, then one line per row, columns aligned.

    A cell of several lines continues on the next lines, the other columns left blank.
    """
    lines: list[list[str]] = [list(columns)]
    for row in rows:
        cells = [str(cell).split("\n") for cell in row]
        height = max((len(c) for c in cells), default=1)
        lines += [[c[i] if i < len(c) else "" for c in cells] for i in range(height)]
    widths = [
        max((len(line[i]) for line in lines if i < len(line)), default=0)
        for i in range(len(columns))
    ]
    text = [title] if title else []
    text += [
        COLUMN_GAP.join(
            cell.ljust(width) for cell, width in zip(line, widths, strict=False)
        ).rstrip()
        for line in lines
    ]
    return "\n".join(text) + "\n"


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"
