"""Pushing OCI layouts to a real docker-registry on 127.0.0.1, checked with skopeo."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from conftest import RegistryStarter
from registry_server import (
    SKOPEO,
    FaultProxy,
    RunningRegistry,
    SampleLayout,
    TokenServer,
    htpasswd_line,
    make_layout,
    skopeo,
)

from polyarch.errors import RegistryAuthError, RegistryError
from polyarch.registry.client import RegistryAccess
from polyarch.registry.credentials import Credentials
from polyarch.registry.push import PushResult, push_layout
from polyarch.retry import RetryPolicy

pytestmark = pytest.mark.skipif(SKOPEO is None, reason="needs skopeo")

PASSWORD = "s3cret-Pa55word-never-shown"


class RecordingTransport(httpx.BaseTransport):
    """A real HTTP transport that remembers (method, path, query, body) of each request."""

    def __init__(self, **kwargs: object) -> None:
        self.inner = httpx.HTTPTransport(**kwargs)  # type: ignore[arg-type]
        self.seen: list[tuple[str, str, str, bytes]] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        with self._lock:
            self.seen.append((request.method, request.url.path, request.url.query.decode(), body))
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def layout(tmp_path: Path) -> SampleLayout:
    return make_layout(tmp_path / "layout", tag="v1")


ACCESS_FIELDS = ("credentials", "insecure", "ca_bundle", "policy", "transport")


def push(layout: SampleLayout, ref: str, tmp_path: Path, **kwargs: Any) -> PushResult:
    """push_layout with a fast retry policy; access settings may be given as keywords."""
    kwargs.setdefault("record_dir", tmp_path / "record")
    kwargs.setdefault("policy", RetryPolicy(backoff=0.01))
    access = RegistryAccess(**{k: kwargs.pop(k) for k in ACCESS_FIELDS if k in kwargs})
    return push_layout(layout.path, ref, access=access, **kwargs)


def inspect_raw(ref: str, *extra: str) -> bytes:
    result = skopeo("inspect", "--raw", *extra, f"docker://{ref}")
    assert result.returncode == 0, result.stderr
    return result.stdout.encode()


def test_push_to_plain_http_registry_shows_both_platforms_and_pulls_back(
    registry: RunningRegistry, layout: SampleLayout, tmp_path: Path
) -> None:
    result = push(layout, f"{registry.host}/tools/fd:v1", tmp_path)

    assert result.digest == layout.index_digest
    assert result.blobs_uploaded == len(layout.blobs) and result.blobs_skipped == 0
    raw = inspect_raw(f"{registry.host}/tools/fd:v1", "--tls-verify=false")
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == layout.index_digest
    index = json.loads(raw)
    assert {m["platform"]["architecture"] for m in index["manifests"]} == {"amd64", "arm64"}
    for arch, digest in layout.manifests.items():
        out = tmp_path / f"pulled-{arch}"
        copied = skopeo(
            "copy",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--override-arch",
            arch,
            f"docker://{registry.host}/tools/fd:v1",
            f"dir:{out}",
        )
        assert copied.returncode == 0, copied.stderr
        pulled = (out / "manifest.json").read_bytes()
        assert "sha256:" + hashlib.sha256(pulled).hexdigest() == digest


def test_second_push_of_the_same_layout_uploads_no_blob(
    registry: RunningRegistry, layout: SampleLayout, tmp_path: Path
) -> None:
    first = push(layout, f"{registry.host}/tools/fd:v1", tmp_path)
    second = push(layout, f"{registry.host}/tools/fd:v1", tmp_path)

    assert first.blobs_uploaded == len(layout.blobs)
    assert second.blobs_uploaded == 0 and second.bytes_uploaded == 0
    assert second.blobs_skipped == len(layout.blobs)
    assert second.digest == first.digest


def test_push_to_a_second_repository_mounts_instead_of_uploading(
    registry: RunningRegistry, layout: SampleLayout, tmp_path: Path
) -> None:
    push(layout, f"{registry.host}/team/one:v1", tmp_path)
    second = push(layout, f"{registry.host}/team/two:v1", tmp_path)

    assert second.blobs_mounted == len(layout.blobs)
    assert second.blobs_uploaded == 0 and second.bytes_uploaded == 0
    assert registry.repo_blobs("team/two") >= set(layout.blobs)
    inspect_raw(f"{registry.host}/team/two:v1", "--tls-verify=false")


def test_mount_from_hint_works_without_a_record(
    registry: RunningRegistry, layout: SampleLayout, tmp_path: Path
) -> None:
    push(layout, f"{registry.host}/team/one:v1", tmp_path, record_dir=tmp_path / "rec-a")
    second = push(
        layout,
        f"{registry.host}/team/three:v1",
        tmp_path,
        record_dir=tmp_path / "rec-b",
        mount_from=["team/one"],
    )
    assert second.blobs_mounted == len(layout.blobs) and second.blobs_uploaded == 0


def test_extra_tags_are_puts_of_the_same_manifest_bytes(
    registry: RunningRegistry, layout: SampleLayout, tmp_path: Path
) -> None:
    transport = RecordingTransport()
    result = push(
        layout,
        f"{registry.host}/tools/fd",
        tmp_path,
        tags=["1.2.3", "1.2", "latest"],
        transport=transport,
    )

    assert result.tags == ("v1", "1.2.3", "1.2", "latest")
    uploads = [s for s in transport.seen if s[0] == "POST" and s[1].endswith("/blobs/uploads/")]
    assert len(uploads) == len(layout.blobs)
    index_puts = {
        path.rsplit("/", 1)[1]: body
        for m, path, _, body in transport.seen
        if m == "PUT"
        and "/manifests/" in path
        and not path.endswith(tuple(layout.manifests.values()))
    }
    assert set(index_puts) == {"v1", "1.2.3", "1.2", "latest"}
    assert len({bytes(b) for b in index_puts.values()}) == 1
    for tag in result.tags:
        raw = inspect_raw(f"{registry.host}/tools/fd:{tag}", "--tls-verify=false")
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == layout.index_digest


def test_connection_cut_in_the_middle_of_an_upload_is_retried(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    big = make_layout(tmp_path / "big", shared_size=3_000_000, own_size=2_000)
    proxy = FaultProxy(int(registry.host.rsplit(":", 1)[1]), cut_after=1_000_000)
    try:
        result = push(big, f"{proxy.host}/tools/big:v1", tmp_path, jobs=1)
    finally:
        proxy.close()

    assert proxy.cuts_done == 1
    assert result.retries >= 1
    assert result.blobs_uploaded == len(big.blobs)
    copied = skopeo(
        "copy",
        "--src-tls-verify=false",
        "--override-arch",
        "amd64",
        f"docker://{registry.host}/tools/big:v1",
        f"dir:{tmp_path / 'pulled'}",
    )
    assert copied.returncode == 0, copied.stderr


def test_large_blobs_go_in_chunks_that_the_registry_assembles(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    big = make_layout(tmp_path / "big", shared_size=200_000, own_size=100)
    transport = RecordingTransport()
    push(
        big,
        f"{registry.host}/tools/chunky:v1",
        tmp_path,
        chunked_above=50_000,
        chunk_size=32_768,
        transport=transport,
    )

    patches = [body for m, _, _, body in transport.seen if m == "PATCH"]
    shared_size = max(len(p.read_bytes()) for p in (big.path / "blobs/sha256").iterdir())
    assert len(patches) == -(-shared_size // 32_768)
    assert all(len(p) == 32_768 for p in patches[:-1])
    copied = skopeo(
        "copy",
        "--src-tls-verify=false",
        "--override-arch",
        "arm64",
        f"docker://{registry.host}/tools/chunky:v1",
        f"dir:{tmp_path / 'pulled'}",
    )
    assert copied.returncode == 0, copied.stderr


def test_plain_http_to_a_remote_host_is_refused_before_connecting(
    layout: SampleLayout, tmp_path: Path
) -> None:
    def no_network(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"a request was made: {request.url}")

    with pytest.raises(RegistryError, match="plain HTTP") as caught:
        push(
            layout,
            "http://registry.invalid/tools/fd:v1",
            tmp_path,
            transport=httpx.MockTransport(no_network),
        )
    assert "--insecure" in str(caught.value)


def test_docker_format_push_uses_only_docker_media_types(
    registry: RunningRegistry, layout: SampleLayout, tmp_path: Path
) -> None:
    result = push(layout, f"{registry.host}/tools/fd:docker", tmp_path, format="docker")

    raw = inspect_raw(f"{registry.host}/tools/fd:docker", "--tls-verify=false")
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == result.digest != layout.index_digest
    index = json.loads(raw)
    assert index["mediaType"] == "application/vnd.docker.distribution.manifest.list.v2+json"
    assert b"vnd.oci" not in raw
    for entry in index["manifests"]:
        child = inspect_raw(f"{registry.host}/tools/fd@{entry['digest']}", "--tls-verify=false")
        doc = json.loads(child)
        assert (
            doc["mediaType"]
            == entry["mediaType"]
            == "application/vnd.docker.distribution.manifest.v2+json"
        )
        assert doc["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
        assert {layer["mediaType"] for layer in doc["layers"]} == {
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        }
        assert b"vnd.oci" not in child
    copied = skopeo(
        "copy",
        "--src-tls-verify=false",
        "--override-arch",
        "arm64",
        f"docker://{registry.host}/tools/fd:docker",
        f"dir:{tmp_path / 'pulled'}",
    )
    assert copied.returncode == 0, copied.stderr


def test_a_layout_whose_root_is_one_manifest_pushes_it_by_tag(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    single = make_layout(tmp_path / "single", platforms=(("amd64", None),), single=True, tag="one")
    result = push(single, f"{registry.host}/tools/single", tmp_path)

    assert result.tags == ("one",)
    raw = inspect_raw(f"{registry.host}/tools/single:one", "--tls-verify=false")
    assert json.loads(raw)["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert result.digest == single.index_digest


# -- TLS and Basic auth ---------------------------------------------------------------------


@pytest.fixture
def tls_registry(tmp_path: Path, start_registry: RegistryStarter) -> tuple[RunningRegistry, Path]:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    running = start_registry(
        tls=ca.issue_cert("127.0.0.1", "localhost"), htpasswd=htpasswd_line("pusher", PASSWORD)
    )
    return running, ca_file


def test_tls_registry_with_basic_auth_accepts_the_right_password(
    tls_registry: tuple[RunningRegistry, Path], layout: SampleLayout, tmp_path: Path
) -> None:
    registry, ca_file = tls_registry
    result = push(
        layout,
        f"{registry.host}/tools/fd:v1",
        tmp_path,
        credentials=Credentials("pusher", PASSWORD),
        ca_bundle=ca_file,
    )

    assert result.blobs_uploaded == len(layout.blobs)
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "ca.crt").write_bytes(ca_file.read_bytes())
    raw = inspect_raw(
        f"{registry.host}/tools/fd:v1", f"--cert-dir={certs}", f"--creds=pusher:{PASSWORD}"
    )
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == layout.index_digest


def test_wrong_password_fails_clearly_and_never_shows_the_password(
    tls_registry: tuple[RunningRegistry, Path],
    layout: SampleLayout,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry, ca_file = tls_registry
    wrong = "wrong-" + PASSWORD
    caplog.set_level(logging.DEBUG)
    with pytest.raises(
        RegistryAuthError, match="refused the credentials of user 'pusher'"
    ) as caught:
        push(
            layout,
            f"{registry.host}/tools/fd:v1",
            tmp_path,
            credentials=Credentials("pusher", wrong),
            ca_bundle=ca_file,
        )

    import base64

    secrets = [wrong, base64.b64encode(f"pusher:{wrong}".encode()).decode()]
    shown = [
        str(caught.value),
        repr(caught.value),
        "".join(traceback.format_exception(caught.value)),
        caplog.text,
        repr(Credentials("pusher", wrong)),
    ]
    for text in shown:
        for secret in secrets:
            assert secret not in text


def test_missing_credentials_are_reported_as_such(
    tls_registry: tuple[RunningRegistry, Path], layout: SampleLayout, tmp_path: Path
) -> None:
    registry, ca_file = tls_registry
    with pytest.raises(RegistryAuthError, match="requires credentials"):
        push(layout, f"{registry.host}/tools/fd:v1", tmp_path, ca_bundle=ca_file)


def test_an_untrusted_certificate_is_refused_with_a_hint(
    tls_registry: tuple[RunningRegistry, Path], layout: SampleLayout, tmp_path: Path
) -> None:
    registry, _ = tls_registry
    with pytest.raises(RegistryError, match="not trusted") as caught:
        push(
            layout,
            f"{registry.host}/tools/fd:v1",
            tmp_path,
            credentials=Credentials("pusher", PASSWORD),
        )
    assert "--ca-bundle" in str(caught.value)


# -- Bearer tokens --------------------------------------------------------------------------


@pytest.fixture
def token_registry(
    start_registry: RegistryStarter,
) -> Iterator[tuple[RunningRegistry, TokenServer]]:
    tokens = TokenServer(trustme.CA(), users={"pusher": PASSWORD})
    with tokens.serve():
        yield start_registry(token=tokens), tokens


def test_bearer_token_flow_pushes_and_caches_tokens_per_scope(
    token_registry: tuple[RunningRegistry, TokenServer], layout: SampleLayout, tmp_path: Path
) -> None:
    registry, tokens = token_registry
    creds = Credentials("pusher", PASSWORD)
    result = push(layout, f"{registry.host}/tools/fd:v1", tmp_path, credentials=creds)

    assert result.blobs_uploaded == len(layout.blobs)
    assert tokens.requests == [("pusher", ["repository:tools/fd:pull,push"])]
    mounted = push(layout, f"{registry.host}/tools/other:v1", tmp_path, credentials=creds)
    assert mounted.blobs_mounted == len(layout.blobs)
    assert (
        "pusher",
        ["repository:tools/fd:pull", "repository:tools/other:pull,push"],
    ) in tokens.requests
    raw = inspect_raw(
        f"{registry.host}/tools/other:v1", "--tls-verify=false", f"--creds=pusher:{PASSWORD}"
    )
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == layout.index_digest


def test_bearer_token_with_a_wrong_password_is_an_auth_error(
    token_registry: tuple[RunningRegistry, TokenServer], layout: SampleLayout, tmp_path: Path
) -> None:
    registry, _ = token_registry
    with pytest.raises(RegistryAuthError, match="refused the credentials") as caught:
        push(
            layout,
            f"{registry.host}/tools/fd:v1",
            tmp_path,
            credentials=Credentials("pusher", "nope-" + PASSWORD),
        )
    assert PASSWORD not in str(caught.value)


def test_many_pushers_of_the_same_blobs_at_the_same_moment_all_succeed(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    """Shards of a distributed build push shared blobs at once. docker-registry 2.8 then
    refuses some manifests (DIGEST_INVALID, MANIFEST_BLOB_UNKNOWN) for blobs it told every
    pusher it had: 9 of 15 such rounds failed before pushes asked again for what a refused
    manifest names. Every tag must push, and skopeo must copy it with its digests checked."""
    for round_ in range(4):
        layout = make_layout(
            tmp_path / f"layout-{round_}", shared_size=2_000_000, own_size=300_000,
            seed=f"round {round_}".encode(),
        )  # fmt: skip
        failures: list[str] = []

        def push_tag(i: int, layout: SampleLayout = layout, failures: list[str] = failures) -> None:
            try:
                push(layout, f"{registry.host}/same:t{i}", tmp_path / f"pusher-{i}", jobs=4)
            except RegistryError as error:
                failures.append(str(error))

        pushers = [threading.Thread(target=push_tag, args=(i,)) for i in range(6)]
        for thread in pushers:
            thread.start()
        for thread in pushers:
            thread.join()
        assert not failures, failures[0]
        for i in range(6):
            copied = skopeo(
                "copy", "--all", "--src-tls-verify=false",
                f"docker://{registry.host}/same:t{i}", f"oci:{tmp_path / 'copy'}:r{round_}t{i}",
            )  # fmt: skip
            assert copied.returncode == 0, copied.stderr
