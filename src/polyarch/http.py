"""HTTP for talking to a Debian mirror: one client setup, retries with backoff.

Transient failures (connection errors, timeouts, 408, 429, 5xx) are retried
with exponential backoff; every other answer (200, 404, 403, ...) is returned
to the caller, who knows what a missing file means. A mirror that cannot be
reached at all becomes a ``MirrorError`` naming the URL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version

import httpx

from polyarch.errors import MirrorError

DEFAULT_TIMEOUT = 30.0
DEFAULT_ATTEMPTS = 4
BASE_DELAY = 0.5
"""Seconds before the first retry; doubled each time. Tests set it near zero."""
MAX_RETRY_AFTER = 60.0
"""A server's Retry-After is honoured up to this many seconds."""
RETRY_STATUSES = frozenset({408, 429, *range(500, 600)})
UNREACHABLE_HINT = "check [repository] url in containers.toml, or the network"


def _user_agent() -> str:
    try:
        return f"polyarch/{_dist_version('polyarch')}"
    except PackageNotFoundError:
        return "polyarch"


def new_client(timeout: float = DEFAULT_TIMEOUT) -> httpx.Client:
    """An ``httpx.Client`` that follows redirects and names itself polyarch.

    It is safe to share between threads (``fetch_debs`` does).
    """
    return httpx.Client(
        follow_redirects=True,
        timeout=httpx.Timeout(timeout),
        headers={"User-Agent": _user_agent()},
    )


def _delay(attempt: int, base_delay: float | None, response: httpx.Response | None) -> float:
    base = BASE_DELAY if base_delay is None else base_delay
    delay: float = base * 2.0**attempt
    if response is not None and base > 0:
        retry_after = response.headers.get("Retry-After", "")
        if retry_after.isdigit():
            delay = max(delay, min(float(retry_after), MAX_RETRY_AFTER))
    return delay


def unreachable(url: str, exc: httpx.TransportError) -> MirrorError:
    """The error for a mirror that did not answer, in words a user can act on."""
    if isinstance(exc, httpx.TimeoutException):
        what = f"{url} did not answer in time"
    elif isinstance(exc, httpx.ConnectError):
        what = f"cannot reach {url}: {exc}"
    else:
        what = f"connection to {url} failed: {exc}"
    return MirrorError(what, hint=UNREACHABLE_HINT)


def get_with_retries(
    client: httpx.Client,
    url: str,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    base_delay: float | None = None,
) -> httpx.Response:
    """GET ``url`` with its body read, retrying transient failures.

    Returns the last response whatever its status (a 503 after ``attempts``
    tries, a 404 at once); raises ``MirrorError`` if no answer ever came.
    ``base_delay`` defaults to the module's ``BASE_DELAY`` at call time.
    """
    for attempt in range(attempts):
        last = attempt + 1 == attempts
        try:
            response = client.get(url)
        except httpx.TransportError as exc:
            if last:
                raise unreachable(url, exc) from exc
            time.sleep(_delay(attempt, base_delay, None))
            continue
        if response.status_code not in RETRY_STATUSES or last:
            return response
        time.sleep(_delay(attempt, base_delay, response))
    raise ValueError(f"attempts must be at least 1, not {attempts}")


@contextmanager
def stream_with_retries(
    client: httpx.Client,
    url: str,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    base_delay: float | None = None,
) -> Iterator[httpx.Response]:
    """Like ``get_with_retries`` but yields a response whose body is not read yet.

    Retries cover getting the response headers; a failure while reading the
    body is the caller's to retry (it alone knows what it already wrote).
    """
    for attempt in range(attempts):
        last = attempt + 1 == attempts
        with ExitStack() as stack:
            try:
                response = stack.enter_context(client.stream("GET", url))
            except httpx.TransportError as exc:
                if last:
                    raise unreachable(url, exc) from exc
                time.sleep(_delay(attempt, base_delay, None))
                continue
            if response.status_code in RETRY_STATUSES and not last:
                delay = _delay(attempt, base_delay, response)
                stack.close()
                time.sleep(delay)
                continue
            yield response
            return
    raise ValueError(f"attempts must be at least 1, not {attempts}")
