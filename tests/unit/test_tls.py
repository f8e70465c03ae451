"""TLS trust read at the first handshake (``http.TrustOnHandshake``) verifies as httpx's own.

A real HTTPS server on 127.0.0.1 with a self-signed certificate made by
openssl: refused under the default trust (certifi's bundle), accepted once
``SSL_CERT_FILE`` names it — the same rules as httpx's ``verify=True``.
"""

from __future__ import annotations

import http.server
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from polyarch.http import TrustOnHandshake, new_client

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the cert")


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return d / "cert.pem"


@pytest.fixture(scope="module")
def https_url(cert: Path) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, cert.parent / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_an_unknown_certificate_is_refused(https_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with new_client(5) as client, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY"):
        client.get(https_url)
    with httpx.Client() as theirs, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY"):
        theirs.get(https_url)


def test_the_certificate_named_by_ssl_cert_file_is_trusted(
    https_url: str, cert: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    with new_client(5) as client:
        assert client.get(https_url).text == "hello"
    with httpx.Client() as theirs:
        assert theirs.get(https_url).text == "hello"


def test_the_trust_store_is_read_at_the_handshake_not_before(
    https_url: str, cert: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = TrustOnHandshake()
    assert context.cert_store_stats()["x509_ca"] == 0
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    with httpx.Client(verify=context) as client:
        assert client.get(https_url).text == "hello"
    assert context.cert_store_stats()["x509_ca"] == 1
