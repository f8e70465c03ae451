"""HTTP for talking to a Debian mirror: one client setup, retries with backoff.

Transient failures (connection errors, timeouts, the statuses of
``polyarch.retry``) are retried with its policy; every other answer (200,
404, 403, ...) is returned to the caller, who knows what a missing file means. A mirror that cannot be
reached at all becomes a ``MirrorError`` naming the URL.
"""

from __future__ import annotations

import os
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx

from polyarch import __version__
from polyarch.errors import MirrorError
from polyarch.retry import MIRROR_POLICY, RetryPolicy, is_transient, retry_after

DEFAULT_TIMEOUT = 30.0
CONNECT_TIMEOUT = 30.0
UNREACHABLE_HINT = "check [repository] url in containers.toml, or the network"
POLICY: RetryPolicy = MIRROR_POLICY
"""The policy mirror requests use; tests replace it with one that does not wait."""


def user_agent() -> str:
    """``polyarch/VERSION``: how polyarch names itself to mirrors and registries."""
    return f"polyarch/{__version__}"


class TrustOnHandshake(ssl.SSLContext):
    """httpx's ``verify=True`` context, whose CA bundle is read at the first TLS handshake.

    httpx makes its context when a client is made, and reading the CA bundle
    is most of the cost (~20 ms); a build against a plain-HTTP mirror never
    shakes hands, so it never pays. The bundle is httpx's choice
    (``SSL_CERT_FILE``, else ``SSL_CERT_DIR``, else certifi's), and every
    handshake waits for it: nothing is ever verified against an empty store.
    """

    def __new__(cls) -> TrustOnHandshake:
        context = super().__new__(cls, ssl.PROTOCOL_TLS_CLIENT)
        # What ssl.create_default_context sets besides the CA bundle.
        context.verify_mode = ssl.CERT_REQUIRED
        context.check_hostname = True
        keylog = os.environ.get("SSLKEYLOGFILE")
        if keylog and not sys.flags.ignore_environment:
            context.keylog_filename = keylog
        return context

    def __init__(self) -> None:
        self._loaded = False
        self._load_lock = threading.Lock()

    def _load_trust(self) -> None:
        with self._load_lock:
            if self._loaded:
                return
            if os.environ.get("SSL_CERT_FILE"):
                self.load_verify_locations(cafile=os.environ["SSL_CERT_FILE"])
            elif os.environ.get("SSL_CERT_DIR"):
                self.load_verify_locations(capath=os.environ["SSL_CERT_DIR"])
            else:
                import certifi

                self.load_verify_locations(cafile=certifi.where())
            self._loaded = True

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        self._load_trust()
        return super().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        self._load_trust()
        return super().wrap_bio(*args, **kwargs)


def new_client(
    timeout: float = DEFAULT_TIMEOUT,
    *,
    verify: ssl.SSLContext | bool = True,
    transport: httpx.BaseTransport | None = None,
    follow_redirects: bool = True,
) -> httpx.Client:
    """An ``httpx.Client`` that names itself polyarch (safe to share between threads).

    ``verify=True`` is httpx's default trust, read only once TLS is used (``TrustOnHandshake``).
    """
    return httpx.Client(
        follow_redirects=follow_redirects,
        timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT)),
        headers={"User-Agent": user_agent()},
        verify=TrustOnHandshake() if verify is True else verify,
        transport=transport,
    )


def _delay(attempt: int, response: httpx.Response | None) -> float:
    return POLICY.delay(attempt, retry_after(response.headers) if response is not None else None)


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
    attempts: int | None = None,
) -> httpx.Response:
    """GET ``url`` with its body read, retrying transient failures.

    Returns the last response whatever its status (a 503 after ``attempts``
    tries, a 404 at once); raises ``MirrorError`` if no answer ever came.
    ``attempts`` defaults to the policy's.
    """
    attempts = attempts or POLICY.attempts
    for attempt in range(attempts):
        last = attempt + 1 == attempts
        try:
            response = client.get(url)
        except httpx.TransportError as exc:
            if last:
                raise unreachable(url, exc) from exc
            time.sleep(_delay(attempt, None))
            continue
        if not is_transient(response.status_code) or last:
            return response
        time.sleep(_delay(attempt, response))
    raise ValueError(f"attempts must be at least 1, not {attempts}")


@contextmanager
def stream_with_retries(
    client: httpx.Client,
    url: str,
    *,
    attempts: int | None = None,
) -> Iterator[httpx.Response]:
    """Like ``get_with_retries`` but yields a response whose body is not read yet.

    Retries cover getting the response headers; a failure while reading the
    body is the caller's to retry (it alone knows what it already wrote).
    """
    attempts = attempts or POLICY.attempts
    for attempt in range(attempts):
        last = attempt + 1 == attempts
        with ExitStack() as stack:
            try:
                response = stack.enter_context(client.stream("GET", url))
            except httpx.TransportError as exc:
                if last:
                    raise unreachable(url, exc) from exc
                time.sleep(_delay(attempt, None))
                continue
            if is_transient(response.status_code) and not last:
                delay = _delay(attempt, response)
                stack.close()
                time.sleep(delay)
                continue
            yield response
            return
    raise ValueError(f"attempts must be at least 1, not {attempts}")
