"""A registry that only says no, or never says anything: the error names what was seen, how
many tries were made, and how long polyarch waited; nothing waits without bound.

Real sockets on 127.0.0.1: an HTTP server that answers 429/500 to everything, and
a TCP server that accepts connections and never answers.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from polyarch.errors import RegistryError
from polyarch.registry.client import RegistryClient
from polyarch.retry import RetryPolicy

Cli = Callable[..., tuple[int, str, str]]
FAST = RetryPolicy(attempts=5, backoff=0.01)


@contextmanager
def refusing_registry(statuses: list[int]) -> Iterator[tuple[str, list[int]]]:
    """Answers ``statuses`` in turn (the last one forever); yields (host, statuses served)."""
    served: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = statuses[min(len(served), len(statuses) - 1)]
            served.append(status)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def silent_registry() -> Iterator[str]:
    """Accepts connections and never answers; yields its host."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


def test_a_registry_that_answers_429_names_the_status_and_counts_every_try() -> None:
    with refusing_registry([429, 429, 500, 429]) as (host, served):
        client = RegistryClient(host, policy=FAST)
        with pytest.raises(RegistryError) as caught:
            client.ping()
    message = str(caught.value)
    assert len(served) == 5
    assert "http: HTTP 429 ×4, HTTP 500" in message
    # The HTTPS probe (which a plain-HTTP registry cannot answer) is one try too.
    assert "gave up after 6 attempts" in message
    assert client.requests == 6


def test_a_registry_that_never_answers_is_given_up_on_in_bounded_time() -> None:
    policy = RetryPolicy(attempts=50, backoff=0.05, max_elapsed=1.5)
    with silent_registry() as host:
        client = RegistryClient(host, timeout=0.5, policy=policy)
        started = time.monotonic()
        with pytest.raises(RegistryError) as caught:
            client.ping()
        waited = time.monotonic() - started
    message = str(caught.value)
    assert "no answer within 0.5 s" in message
    assert waited < 1.5 + 0.5 + 0.5 + 1.0  # https try, then http tries while under 1.5 s
    assert client.requests < 10


def test_cli_one_line_for_a_registry_that_only_says_429(cli: Cli, tmp_path: Path) -> None:
    with refusing_registry([429]) as (host, served):
        code, _out, err = cli("--cache-dir", tmp_path / "c", "cache", "pull", f"{host}/cache:x")
    assert code == RegistryError.exit_code
    assert "HTTP 429" in err and "WRONG_VERSION_NUMBER" in err.split("http: ")[0]
    assert f"gave up after {len(served) + 1} attempts" in err
    assert len(err.strip().splitlines()) == 1
