"""Real registries for push tests, all on 127.0.0.1 and all stopping by themselves.

- ``run_registry``: Debian's docker-registry (distribution v2) with plain HTTP, or
  TLS from a trustme CA, with htpasswd Basic auth or Bearer token auth. The
  process gets SIGKILL when the test process dies (PR_SET_PDEATHSIG) and at
  the end of the ``with`` block.
- ``TokenServer``: a token endpoint issuing ES256 JWTs signed by a trustme leaf
  whose CA docker-registry trusts (``auth.token.rootcertbundle``).
- ``FaultProxy``: a TCP proxy that cuts one connection once after N bytes.
- ``make_layout``: a small two-platform OCI layout with random layers.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from polyarch.determinism import canonical_json, gzip_bytes, sha256_digest

REGISTRY = shutil.which("docker-registry")
_ACCESS_LINE = re.compile(r'"([A-Z]+) (\S+) HTTP/[0-9.]+" (\d{3}) (\d+|-)')
SKOPEO = shutil.which("skopeo")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    # Linux: the registry gets SIGKILL if the test process dies without cleaning up.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def htpasswd_line(user: str, password: str) -> str:
    """A bcrypt htpasswd line: ``htpasswd -B`` when apache2-utils is there, else libxcrypt via crypt."""
    tool = shutil.which("htpasswd")
    if tool:
        out = subprocess.run(
            [tool, "-nbB", user, password], capture_output=True, check=True, text=True
        )
        return out.stdout.strip()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # Python 3.11/3.12; glibc's libxcrypt does bcrypt ($2b$)

    salt = "$2b$05$" + base64.b64encode(secrets.token_bytes(16), altchars=b"./").decode()[:22]
    hashed = crypt.crypt(password, salt)
    assert hashed and hashed.startswith("$2b$"), "libxcrypt without bcrypt"
    return f"{user}:{hashed}"


@dataclass
class RunningRegistry:
    host: str
    """``127.0.0.1:PORT``: what references name."""
    root: Path
    process: subprocess.Popen[bytes]
    log: Path

    def log_size(self) -> int:
        """Where the log ends now: pass it to ``requests_since`` later."""
        return self.log.stat().st_size

    def requests_since(self, offset: int) -> list[tuple[str, str, int, int]]:
        """(method, path, status, response bytes) of each request logged after ``offset``
        (needs ``access_log``): the registry's own account of what a client asked."""
        with self.log.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        found = []
        for m in _ACCESS_LINE.finditer(text):
            size = int(m.group(4)) if m.group(4).isdigit() else 0
            found.append((m.group(1), m.group(2), int(m.group(3)), size))
        return found

    def repo_blobs(self, repo: str) -> set[str]:
        """Digests linked into a repository (what it holds), read from the storage tree."""
        layers = self.root / "docker/registry/v2/repositories" / repo / "_layers/sha256"
        return {f"sha256:{p.name}" for p in layers.iterdir()} if layers.is_dir() else set()


@contextmanager
def run_registry(
    workdir: Path,
    *,
    tls: trustme.LeafCert | None = None,
    htpasswd: str | None = None,
    token: TokenServer | None = None,
    access_log: bool = False,
    delete: bool = True,
) -> Iterator[RunningRegistry]:
    """Start docker-registry on a free loopback port; killed when the block ends.

    ``access_log`` writes one line per request to ``RunningRegistry.log``
    (``requests_since`` reads them), so a test can see what a client asked.
    ``delete=False`` makes it answer manifest deletes with 405, as many registries do.
    """
    assert REGISTRY is not None
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    http: dict[str, Any] = {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)}
    if tls is not None:
        cert, key = workdir / "server.pem", workdir / "server.key"
        tls.cert_chain_pems[0].write_to_path(str(cert))
        tls.private_key_pem.write_to_path(str(key))
        http["tls"] = {"certificate": str(cert), "key": str(key)}
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": not access_log}},
        "storage": {
            "filesystem": {"rootdirectory": str(workdir / "storage")},
            "delete": {"enabled": delete},
        },
        "http": http,
    }
    if htpasswd is not None:
        (workdir / "htpasswd").write_text(htpasswd + "\n")
        config["auth"] = {"htpasswd": {"realm": "polyarch-test", "path": str(workdir / "htpasswd")}}
    if token is not None:
        bundle = workdir / "token-ca.pem"
        token.ca.cert_pem.write_to_path(str(bundle))
        config["auth"] = {
            "token": {
                "realm": token.realm,
                "service": token.service,
                "issuer": token.issuer,
                "rootcertbundle": str(bundle),
            }
        }
    # JSON is YAML: docker-registry reads it as is.
    (workdir / "config.yml").write_text(json.dumps(config))
    log = workdir / "registry.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [REGISTRY, "serve", str(workdir / "config.yml")],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("docker-registry did not start listening") from None
                time.sleep(0.05)
        yield RunningRegistry(f"127.0.0.1:{port}", workdir / "storage", process, log)
    finally:
        process.kill()
        process.wait(timeout=10)


# -- Bearer tokens -------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenServer:
    """``GET /token?service=&scope=…`` with Basic auth → ``{"token": JWT}``, like Docker Hub's."""

    ca: trustme.CA
    users: dict[str, str]
    service: str = "polyarch-test-registry"
    issuer: str = "polyarch-test-issuer"
    requests: list[tuple[str | None, list[str]]] = field(default_factory=list)
    realm: str = ""

    def __post_init__(self) -> None:
        leaf = self.ca.issue_cert("token-signer.test")
        key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        self._key = key
        cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
        self._x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()

    def issue(self, subject: str, scopes: Sequence[str]) -> str:
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) >= 3:
                access.append(
                    {
                        "type": parts[0],
                        "name": ":".join(parts[1:-1]),
                        "actions": parts[-1].split(","),
                    }
                )
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": [self._x5c]}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 30,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    @contextmanager
    def serve(self) -> Iterator[TokenServer]:
        server_ref = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                from urllib.parse import parse_qs, urlparse

                query = parse_qs(urlparse(self.path).query)
                user = None
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Basic "):
                    name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                    if server_ref.users.get(name) != password:
                        return self._answer(
                            401,
                            {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]},
                        )
                    user = name
                scopes = query.get("scope", [])
                server_ref.requests.append((user, scopes))
                if user is None:
                    return self._answer(
                        401, {"errors": [{"code": "UNAUTHORIZED", "message": "log in"}]}
                    )
                if query.get("service") != [server_ref.service]:
                    return self._answer(
                        400, {"errors": [{"code": "UNSUPPORTED", "message": "service"}]}
                    )
                self._answer(200, {"token": server_ref.issue(user, scopes), "expires_in": 300})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        self.realm = f"http://127.0.0.1:{httpd.server_address[1]}/token"
        try:
            yield self
        finally:
            httpd.shutdown()
            httpd.server_close()


# -- faults -----------------------------------------------------------------------------


class FaultProxy:
    """TCP proxy 127.0.0.1:port → target; cuts the first connection that sends > ``cut_after`` bytes.

    Only ``cuts`` connections are cut; the proxy stops itself after ``lifetime`` seconds.
    """

    def __init__(
        self, target_port: int, *, cut_after: int, cuts: int = 1, lifetime: float = 120
    ) -> None:
        self.target_port = target_port
        self.cut_after = cut_after
        self.cuts_left = cuts
        self.cuts_done = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._deadline = time.monotonic() + lifetime
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.connections += 1
            state = {"sent": 0, "cut": False}
            threading.Thread(
                target=self._pump, args=(client, upstream, state, True), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(upstream, client, state, False), daemon=True
            ).start()
        self._listener.close()

    def _pump(
        self, src: socket.socket, dst: socket.socket, state: dict[str, Any], counting: bool
    ) -> None:
        try:
            while not self._stop.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if counting:
                    state["sent"] += len(data)
                    with self._lock:
                        cut = self.cuts_left > 0 and state["sent"] > self.cut_after
                        if cut:
                            self.cuts_left -= 1
                            self.cuts_done += 1
                    if cut:
                        break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# -- layouts -------------------------------------------------------------------------------

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class SampleLayout:
    path: Path
    index_digest: str
    manifests: dict[str, str]
    """architecture → manifest digest."""
    blobs: list[str]
    """Config and layer digests (unique)."""


def _write_blob(layout: Path, data: bytes) -> str:
    digest = sha256_digest(data)
    path = layout / "blobs" / "sha256" / digest.split(":")[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def _tar_with_file(name: str, content: bytes) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def make_layout(
    path: Path,
    *,
    platforms: Sequence[tuple[str, str | None]] = (("amd64", None), ("arm64", "v8")),
    shared_size: int = 20_000,
    own_size: int = 5_000,
    tag: str = "latest",
    seed: bytes | None = None,
    single: bool = False,
) -> SampleLayout:
    """A layout: index → one manifest per platform → config + a shared layer + an own layer.

    Layers are gzip'd tars of random bytes (``seed`` makes them repeatable).
    ``single`` makes index.json point at the first platform's manifest directly.
    """
    rand = (
        (lambda n, k: (seed + k).ljust(n, b"\0"))
        if seed is not None
        else (lambda n, k: os.urandom(n))
    )
    path.mkdir(parents=True, exist_ok=True)
    (path / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    shared_tar = _tar_with_file("shared.bin", rand(shared_size, b"shared"))
    shared = gzip_bytes(shared_tar)
    shared_digest = _write_blob(path, shared)
    blobs = [shared_digest]
    manifests: dict[str, str] = {}
    descriptors: list[dict[str, Any]] = []
    for arch, variant in platforms:
        own_tar = _tar_with_file(f"{arch}.bin", rand(own_size, arch.encode()))
        own = gzip_bytes(own_tar)
        own_digest = _write_blob(path, own)
        config_doc: dict[str, Any] = {
            "architecture": arch,
            "os": "linux",
            "config": {"Entrypoint": ["/bin/true"]},
            "rootfs": {
                "type": "layers",
                "diff_ids": [sha256_digest(shared_tar), sha256_digest(own_tar)],
            },
            "created": "1970-01-01T00:00:00Z",
        }
        if variant:
            config_doc["variant"] = variant
        config = canonical_json(config_doc)
        config_digest = _write_blob(path, config)
        blobs += [own_digest, config_digest]
        manifest = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest,
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": shared_digest,
                        "size": len(shared),
                    },
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": own_digest,
                        "size": len(own),
                    },
                ],
                "annotations": {"org.opencontainers.image.title": f"test {arch}"},
            }
        )
        manifest_digest = _write_blob(path, manifest)
        manifests[arch] = manifest_digest
        platform = {"architecture": arch, "os": "linux"}
        if variant:
            platform["variant"] = variant
        descriptors.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest),
                "platform": platform,
            }
        )
    index = canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors})
    index_digest = _write_blob(path, index)
    if single:
        top = {**descriptors[0], "annotations": {"org.opencontainers.image.ref.name": tag}}
        top.pop("platform")
        index_digest = str(descriptors[0]["digest"])
    else:
        top = {
            "mediaType": OCI_INDEX,
            "digest": index_digest,
            "size": len(index),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }
    (path / "index.json").write_bytes(
        canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [top]})
    )
    return SampleLayout(path, index_digest, manifests, blobs)


def skopeo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    assert SKOPEO is not None
    return subprocess.run(
        [SKOPEO, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
