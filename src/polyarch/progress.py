"""How library code reports long work without printing.

Library functions take a ``Progress`` (default: ``NULL_PROGRESS``); the CLI
passes one that renders with rich on a terminal and stays silent in pipes.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def task(self, description: str, total: float | None = None) -> int:
        """Start a unit of work; returns an id for ``advance``/``done``."""
        ...

    def advance(self, task_id: int, amount: float = 1) -> None: ...

    def done(self, task_id: int) -> None: ...

    def warn(self, message: str) -> None:
        """Something the user should read, that does not stop the work."""
        ...

    def info(self, message: str) -> None: ...


class NullProgress:
    """Reports nothing; warnings are kept so callers and tests can read them."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.messages: list[str] = []
        self._next = 0

    def task(self, description: str, total: float | None = None) -> int:
        self._next += 1
        return self._next

    def advance(self, task_id: int, amount: float = 1) -> None:
        pass

    def done(self, task_id: int) -> None:
        pass

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def info(self, message: str) -> None:
        self.messages.append(message)


NULL_PROGRESS: Progress = NullProgress()
