"""The one retry policy of every network request: what is transient, and how long to wait.

Mirrors (``polyarch.http``) and registries (``polyarch.registry.client``) both
retry connection failures and the statuses below, with exponential backoff,
honouring a server's ``Retry-After`` up to ``max_retry_after`` seconds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""Answers that may be different a moment later (timeouts, rate limits, overload)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 4
    """Tries in all, the first one included."""
    backoff: float = 0.5
    """Seconds before the first retry; doubled each time."""
    max_retry_after: float = 30.0
    """A server's Retry-After is honoured up to this many seconds."""
    max_elapsed: float = 120.0
    """No retry starts after this many seconds of trying: one request, retries
    included, is bounded (each try is bounded by the client's timeout)."""

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed try number ``attempt`` (0 for the first)."""
        delay = self.backoff * 2.0**attempt
        if retry_after is not None and self.backoff > 0:
            delay = max(delay, min(retry_after, self.max_retry_after))
        return delay


def summarise(seen: list[str]) -> str:
    """``HTTP 429 ×3, HTTP 500``: what each try saw, counted, in the order first seen."""
    counts: dict[str, int] = {}
    for item in seen:
        counts[item] = counts.get(item, 0) + 1
    return ", ".join(f"{item} ×{n}" if n > 1 else item for item, n in counts.items())


def is_transient(status: int) -> bool:
    return status in RETRY_STATUSES


def retry_after(headers: Mapping[str, str]) -> float | None:
    """A ``Retry-After`` header in seconds; None when absent or an HTTP date."""
    value = headers.get("retry-after")
    with contextlib.suppress(TypeError, ValueError):
        return max(float(value), 0.0) if value is not None else None
    return None


MIRROR_POLICY = RetryPolicy(attempts=4)
REGISTRY_POLICY = RetryPolicy(attempts=5)
