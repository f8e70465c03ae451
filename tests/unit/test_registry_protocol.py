"""Protocol behaviour docker-registry never shows (chunk minimums, 429/503, a lying registry).

These run the real client against a small in-process registry (httpx.MockTransport)
that stores what it receives and checks digests like a real one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from registry_server import make_layout

from polyarch.errors import RegistryError
from polyarch.registry.client import RegistryAccess
from polyarch.registry.push import push_layout
from polyarch.registry.responses import parse_challenge
from polyarch.retry import RetryPolicy


class MiniRegistry:
    """Just enough of the distribution API: uploads (monolithic and chunked) and manifests."""

    def __init__(
        self,
        *,
        chunk_min: int | None = None,
        fail_first: dict[str, list[int]] | None = None,
        lie_about_digest: bool = False,
    ) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, bytes] = {}
        self.sessions: dict[str, bytearray] = {}
        self.chunk_min = chunk_min
        self.fail_first = fail_first or {}
        self.lie = lie_about_digest
        self.patch_sizes: list[int] = []
        self.log: list[tuple[str, int]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        response = self._handle(request)
        self.log.append((request.method, response.status_code))
        return response

    def _handle(self, request: httpx.Request) -> httpx.Response:
        failures = self.fail_first.get(request.method)
        if failures:
            return httpx.Response(failures.pop(0), headers={"Retry-After": "0"})
        path = request.url.path
        if path == "/v2/":
            return httpx.Response(200)
        if m := re.fullmatch(r"/v2/(.+)/blobs/(sha256:[0-9a-f]+)", path):
            return httpx.Response(200 if m.group(2) in self.blobs else 404)
        if re.fullmatch(r"/v2/(.+)/blobs/uploads/", path) and request.method == "POST":
            sid = f"s{len(self.sessions)}"
            self.sessions[sid] = bytearray()
            headers = {"Location": f"/v2/upload/{sid}?_state=x"}
            if self.chunk_min:
                headers["OCI-Chunk-Min-Length"] = str(self.chunk_min)
            return httpx.Response(202, headers=headers)
        if m := re.fullmatch(r"/v2/upload/(s\d+)", path):
            buf = self.sessions[m.group(1)]
            body = request.read()
            if request.method == "PATCH":
                start = int(request.headers["content-range"].split("-")[0])
                assert start == len(buf)
                self.patch_sizes.append(len(body))
                buf += body
                return httpx.Response(
                    202, headers={"Location": str(request.url), "Range": f"0-{len(buf) - 1}"}
                )
            if request.method == "PUT":
                assert request.url.params["_state"] == "x"
                buf += body
                digest = "sha256:" + hashlib.sha256(buf).hexdigest()
                if digest != request.url.params["digest"]:
                    return httpx.Response(
                        400, json={"errors": [{"code": "DIGEST_INVALID", "message": "no"}]}
                    )
                self.blobs[digest] = bytes(buf)
                shown = "sha256:" + "0" * 64 if self.lie else digest
                return httpx.Response(201, headers={"Docker-Content-Digest": shown})
        if m := re.fullmatch(r"/v2/(.+)/manifests/(.+)", path):
            body = request.read()
            self.manifests[m.group(2)] = body
            return httpx.Response(
                201, headers={"Docker-Content-Digest": "sha256:" + hashlib.sha256(body).hexdigest()}
            )
        return httpx.Response(404)


def _push(tmp_path: Path, registry: MiniRegistry, **kwargs: object) -> object:
    layout = make_layout(tmp_path / "layout", shared_size=100_000, own_size=1_000)
    handler: Callable[[httpx.Request], httpx.Response] = registry.handle
    return push_layout(
        layout.path,
        "127.0.0.1:1/tools/fd:v1",
        record_dir=tmp_path / "rec",
        access=RegistryAccess(
            policy=RetryPolicy(attempts=int(kwargs.pop("attempts", 5)), backoff=0.001),  # type: ignore[call-overload]
            transport=httpx.MockTransport(handler),
        ),
        **kwargs,
    )  # type: ignore[arg-type]


def test_chunks_are_at_least_the_registry_minimum(tmp_path: Path) -> None:
    registry = MiniRegistry(chunk_min=40_000)
    _push(tmp_path, registry, chunked_above=10_000, chunk_size=8_192)

    assert registry.patch_sizes, "no chunked upload happened"
    assert all(size >= 40_000 for size in registry.patch_sizes[:-1])
    assert max(registry.patch_sizes) == 40_000


def test_429_and_503_are_retried(tmp_path: Path) -> None:
    registry = MiniRegistry(fail_first={"HEAD": [503, 429], "PUT": [502]})
    result = _push(tmp_path, registry, jobs=1)

    assert result.retries == 3  # type: ignore[attr-defined]
    assert len(registry.blobs) == 5


def test_a_registry_that_stores_other_bytes_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="stored blob"):
        _push(tmp_path, MiniRegistry(lie_about_digest=True), jobs=1)


def test_persistent_5xx_gives_up_with_a_clear_error(tmp_path: Path) -> None:
    registry = MiniRegistry(fail_first={"HEAD": [500] * 10})
    with pytest.raises(RegistryError, match="gave up after 3 attempts"):
        _push(tmp_path, registry, jobs=1, attempts=3)


def test_challenges_parse_quoted_and_bare_parameters() -> None:
    c = parse_challenge(
        'Bearer realm="https://auth.example/token",service=registry.example,scope="repository:a/b:pull,push"'
    )
    assert c.scheme == "bearer"
    assert c.params == {
        "realm": "https://auth.example/token",
        "service": "registry.example",
        "scope": "repository:a/b:pull,push",
    }
