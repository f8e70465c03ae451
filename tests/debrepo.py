"""Build real, signed Debian repositories inside tests.

- .deb files are made by ``dpkg-deb --build`` (the real tool), in any of the
  compressions Debian uses; hostile ones (path traversal, truncated data) are
  assembled by hand with ``raw_deb`` because dpkg-deb refuses to make them.
- ``Packages``, ``Release`` and an ``InRelease`` clear-signed by a key that the
  test generates with gpg; ``Release.gpg`` too. polyarch verifies them with
  Sequoia (pysequoia), so gpg here is an independent implementation judging it;
  tests/pgpkeys.py makes Sequoia keys for what gpg makes awkward.
- ``serve`` publishes a directory on 127.0.0.1 from a thread that stops with the test.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass(frozen=True)
class Symlink:
    target: str


@dataclass(frozen=True)
class Directory:
    mode: int = 0o755


@dataclass(frozen=True)
class File:
    data: bytes
    mode: int = 0o644


Entry = bytes | File | Symlink | Directory


@dataclass
class DebSpec:
    name: str
    version: str = "1.0"
    arch: str = "amd64"
    depends: str = ""
    pre_depends: str = ""
    provides: str = ""
    conflicts: str = ""
    breaks: str = ""
    multi_arch: str = ""
    essential: bool = False
    files: dict[str, Entry] = field(default_factory=dict)
    postinst: str | None = None
    compression: str = "xz"  # xz | zstd | gzip | none
    description: str = "test package"

    def control(self) -> str:
        fields = [
            ("Package", self.name),
            ("Version", self.version),
            ("Architecture", self.arch),
            ("Maintainer", "Test <test@example.invalid>"),
            ("Essential", "yes" if self.essential else ""),
            ("Multi-Arch", self.multi_arch),
            ("Pre-Depends", self.pre_depends),
            ("Depends", self.depends),
            ("Provides", self.provides),
            ("Conflicts", self.conflicts),
            ("Breaks", self.breaks),
            ("Description", self.description),
        ]
        return "".join(f"{k}: {v}\n" for k, v in fields if v)


# dpkg-deb's output depends on the spec alone (SOURCE_DATE_EPOCH, root owner): each spec
# is built once per test session and its bytes written for every repository listing it.
_BUILT: dict[str, bytes] = {}


def build_deb(spec: DebSpec, out_dir: Path) -> Path:
    """A real .deb made by dpkg-deb from ``spec``."""
    out = out_dir / f"{spec.name}_{spec.version.split(':')[-1]}_{spec.arch}.deb"
    out_dir.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(repr(spec).encode()).hexdigest()
    if key not in _BUILT:
        _BUILT[key] = _dpkg_deb(spec)
    out.write_bytes(_BUILT[key])
    return out


def _dpkg_deb(spec: DebSpec) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        (root / "DEBIAN").mkdir(parents=True)
        (root / "DEBIAN" / "control").write_text(spec.control())
        if spec.postinst is not None:
            p = root / "DEBIAN" / "postinst"
            p.write_text(spec.postinst)
            p.chmod(0o755)
        for path, entry in sorted(spec.files.items()):
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(entry, bytes):
                entry = File(entry)
            if isinstance(entry, Symlink):
                os.symlink(entry.target, target)
            elif isinstance(entry, Directory):
                target.mkdir(exist_ok=True)
                target.chmod(entry.mode)
            else:
                target.write_bytes(entry.data)
                target.chmod(entry.mode)
        out = Path(tmp) / "package.deb"
        subprocess.run(
            [
                "dpkg-deb",
                "--root-owner-group",
                f"-Z{spec.compression}",
                "--build",
                str(root),
                str(out),
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"},
        )
        return out.read_bytes()


def _ar_member(name: str, data: bytes) -> bytes:
    header = f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
    return header + data + (b"\n" if len(data) % 2 else b"")


def raw_deb(control: str, data_tar: bytes, data_name: str = "data.tar") -> bytes:
    """A .deb assembled by hand, for contents dpkg-deb would refuse to build."""
    ctl = io.BytesIO()
    with tarfile.open(fileobj=ctl, mode="w", format=tarfile.GNU_FORMAT) as t:
        info = tarfile.TarInfo("./control")
        body = control.encode()
        info.size = len(body)
        t.addfile(info, io.BytesIO(body))
    return (
        b"!<arch>\n"
        + _ar_member("debian-binary", b"2.0\n")
        + _ar_member("control.tar", ctl.getvalue())
        + _ar_member(data_name, data_tar)
    )


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """An uncompressed tar of exactly these members (names and types as given)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
            else:
                t.addfile(info)
    return buf.getvalue()


GPG = shutil.which("gpg") or "gpg"
"""Found once: tests that hide gpgv from PATH still sign with gpg (an independent implementation)."""


class TestKey:
    """An OpenPGP signing key made by gpg for one test session, in its own GNUPGHOME."""

    __test__ = False

    def __init__(self, home: Path, uid: str = "polyarch test <test@example.invalid>") -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        home.chmod(0o700)
        self._gpg("--quick-generate-key", "--passphrase", "", uid, "ed25519", "sign", "never")
        self.keyring = home / "keyring.gpg"
        self.keyring.write_bytes(self._gpg("--export", uid))

    def _gpg(self, *args: str, input: bytes | None = None) -> bytes:
        return subprocess.run(
            [
                GPG,
                "--homedir",
                str(self.home),
                "--batch",
                "--yes",
                "--pinentry-mode",
                "loopback",
                *args,
            ],
            input=input,
            check=True,
            capture_output=True,
        ).stdout

    def clearsign(self, text: bytes) -> bytes:
        return self._gpg("--clearsign", "--digest-algo", "SHA256", input=text)

    def detach_sign(self, data: bytes) -> bytes:
        return self._gpg("--detach-sign", "--armor", "--digest-algo", "SHA256", input=data)


@dataclass
class _Published:
    component: str
    arch: str
    stanza: str
    package: str = ""
    own_arch: str = ""
    """The package's Architecture (``all`` too), for its Contents file."""
    paths: tuple[str, ...] = ()


class TestRepo:
    """A Debian repository on disk: pool/, dists/SUITE/{InRelease,Release,Release.gpg}."""

    __test__ = False

    def __init__(
        self,
        root: Path,
        key: TestKey,
        suite: str = "bookworm",
        arches: tuple[str, ...] = ("amd64", "arm64"),
        components: tuple[str, ...] = ("main",),
        date: str = "Sat, 20 May 2023 10:00:00 UTC",
        release_fields: dict[str, str] | None = None,
        pool: str = "pool",
    ) -> None:
        self.root, self.key, self.suite = root, key, suite
        self.arches, self.components, self.date = arches, components, date
        self.release_fields = dict(release_fields or {})
        """Extra Release fields (``NotAutomatic``, ``Label``, ...), written after Date."""
        self.pool = pool
        """Where .debs go below the root: ``pool``, or ``pool/updates`` as in a security archive."""
        self._entries: list[_Published] = []
        root.mkdir(parents=True, exist_ok=True)

    def add(self, spec: DebSpec, component: str = "main") -> Path:
        """Build ``spec`` with dpkg-deb and list it in the index of its arch (all: every arch)."""
        deb = build_deb(spec, self.root / self.pool / component / spec.name[0] / spec.name)
        control = spec.control()
        paths = tuple(sorted(p.lstrip("/") for p in spec.files))
        self._index(deb, control, spec.arch, component, (spec.name, paths))
        return deb

    def add_raw(
        self,
        name: str,
        version: str,
        arch: str,
        deb: bytes,
        component: str = "main",
        extra: str = "",
    ) -> Path:
        """List a hand-made .deb (see ``raw_deb``)."""
        path = self.root / self.pool / component / name[0] / name / f"{name}_{version}_{arch}.deb"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(deb)
        control = f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\n{extra}"
        self._index(path, control, arch, component)
        return path

    def _index(
        self,
        deb: Path,
        control: str,
        arch: str,
        component: str,
        files: tuple[str, tuple[str, ...]] = ("", ()),
    ) -> None:
        data = deb.read_bytes()
        rel = deb.relative_to(self.root).as_posix()
        stanza = (
            control.rstrip("\n")
            + f"\nFilename: {rel}\nSize: {len(data)}\nSHA256: {hashlib.sha256(data).hexdigest()}\n"
        )
        for a in self.arches if arch == "all" else (arch,):
            self._entries.append(_Published(component, a, stanza, files[0], arch, files[1]))

    def _contents(self, component: str, arch: str) -> bytes:
        """``Contents-ARCH`` as Debian writes it: sorted paths, ``section/package`` lists."""
        owners: dict[str, set[str]] = {}
        for e in self._entries:
            if e.component == component and e.own_arch == arch and e.package:
                for path in e.paths:
                    owners.setdefault(path, set()).add(f"utils/{e.package}")
        lines = [f"{path:<60} {','.join(sorted(o))}\n" for path, o in sorted(owners.items())]
        return "".join(lines).encode()

    def publish(
        self,
        *,
        inrelease: bool = True,
        release_gpg: bool = True,
        compressions: tuple[str, ...] = ("xz", "gz"),
        contents: bool = False,
    ) -> None:
        """Write the indexes, Release, and its signatures; with ``contents`` also
        ``Contents-ARCH.gz`` and ``Contents-all.gz`` (listed plain too, served .gz only, as
        Debian's mirrors do)."""
        dist = self.root / "dists" / self.suite
        files: dict[str, bytes] = {}
        for component in self.components:
            for arch in self.arches:
                stanzas = [
                    e.stanza for e in self._entries if e.component == component and e.arch == arch
                ]
                plain = "\n".join(stanzas).encode()
                base = f"{component}/binary-{arch}/Packages"
                files[base] = plain
                if "xz" in compressions:
                    files[base + ".xz"] = lzma.compress(plain)
                if "gz" in compressions:
                    files[base + ".gz"] = gzip.compress(plain, mtime=0)
        listed_only: dict[str, bytes] = {}
        for component in self.components if contents else ():
            for arch in (*self.arches, "all"):
                plain = self._contents(component, arch)
                files[f"{component}/Contents-{arch}.gz"] = gzip.compress(plain, mtime=0)
                listed_only[f"{component}/Contents-{arch}"] = plain
        for rel, data in files.items():
            (dist / rel).parent.mkdir(parents=True, exist_ok=True)
            (dist / rel).write_bytes(data)
        files.update(listed_only)
        # Only compressed variants are listed and served when compressions are given,
        # like a real mirror that lists Packages but may not serve it.
        lines = [
            "Origin: polyarch-test",
            f"Suite: {self.suite}",
            f"Codename: {self.suite}",
            f"Date: {self.date}",
            *(f"{k}: {v}" for k, v in self.release_fields.items()),
            f"Architectures: {' '.join(self.arches)}",
            f"Components: {' '.join(self.components)}",
            "SHA256:",
        ]
        for rel, data in sorted(files.items()):
            lines.append(f" {hashlib.sha256(data).hexdigest()} {len(data):>8} {rel}")
        release = ("\n".join(lines) + "\n").encode()
        (dist / "Release").write_bytes(release)
        for stale in ("InRelease", "Release.gpg"):
            (dist / stale).unlink(missing_ok=True)
        if inrelease:
            (dist / "InRelease").write_bytes(self.key.clearsign(release))
        if release_gpg:
            (dist / "Release.gpg").write_bytes(self.key.detach_sign(release))

    @property
    def dist(self) -> Path:
        return self.root / "dists" / self.suite


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve(root: Path) -> Iterator[str]:
    """Serve ``root`` over HTTP on 127.0.0.1; yields the base URL; stops on exit."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _FlakyHandler(SimpleHTTPRequestHandler):
    """Answers 503 to the first ``failures`` requests for each path, then serves files."""

    failures = 0
    seen: dict[str, int]
    lock = threading.Lock()

    def do_GET(self) -> None:
        with self.lock:
            count = self.seen.get(self.path, 0)
            self.seen[self.path] = count + 1
        if count < self.failures:
            self.send_error(503)
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def flaky_serve(root: Path, failures: int) -> Iterator[tuple[str, dict[str, int]]]:
    """Like ``serve``, but each path answers 503 ``failures`` times first; yields (url, counts)."""
    seen: dict[str, int] = {}
    handler = type("Handler", (_FlakyHandler,), {"failures": failures, "seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
