"""Real container engines for tests: dockerd started the way scripts/setup-host does, podman
configured for this host, and tiny images to prove load/run against them.

The images hold one hand-assembled static ELF program (no libc, ~200 bytes) per
architecture that writes a message and exits with ``argc - 1``; that makes
output, arguments and entrypoints checkable without any base image or network.

The dockerd the tests start (when none answers) keeps running after the tests,
like the one scripts/setup-host starts: it listens only on a unix socket under
/run/polyarch-docker, has no network bridge and no iptables rules, and a later
run reuses it. The podman configuration lives in a pytest temporary directory
(its own vfs storage), so tests never touch the host's podman images.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tarfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from polyarch.engine import POLYARCH_DOCKER_SOCKET, Engine

REPO_ROOT = Path(__file__).resolve().parent.parent
SETUP_HOST = REPO_ROOT / "scripts" / "setup-host"

_BASE = 0x400000
_HEADERS = 64 + 56  # ELF header + one program header


def tiny_program(architecture: str, message: bytes, *, exit_zero: bool = False) -> bytes:
    """A static ELF for ``amd64`` or ``arm64`` that writes ``message`` to stdout and exits with argc - 1.

    With ``exit_zero`` it exits 0 whatever its arguments (a stand-in for a tool or shell that succeeds).
    """
    if architecture == "amd64":
        head = (
            b"\xb8\x01\x00\x00\x00"  # mov eax, 1 (write)
            b"\xbf\x01\x00\x00\x00"  # mov edi, 1 (stdout)
            b"\x48\x8d\x35"  # lea rsi, [rip + disp32] -> message
        )
        mov_edx = b"\xba" + struct.pack("<I", len(message))  # mov edx, len
        status = (
            b"\x31\xff"  # xor edi, edi
            if exit_zero
            else b"\x48\x8b\x3c\x24\x48\xff\xcf"  # mov rdi, [rsp] (argc); dec rdi
        )
        tail = (
            mov_edx
            + (
                b"\x0f\x05"  # syscall
                + status
                + b"\xb8\x3c\x00\x00\x00"  # mov eax, 60 (exit)
                b"\x0f\x05"  # syscall
            )
        )
        code = head + struct.pack("<i", len(tail)) + tail
        machine = 62
    elif architecture == "arm64":
        status = (
            [0xD2800009, 0xD503201F]  # mov x9, #0; nop
            if exit_zero
            else [0xF94003E9, 0xD1000529]  # ldr x9, [sp] (argc); sub x9, x9, #1
        )
        words = [
            *status,
            0xD2800020,  # mov x0, #1 (stdout)
            0x100000E1,  # adr x1, message (+28 bytes)
            0xD2800002 | (len(message) << 5),  # mov x2, #len
            0xD2800808,  # mov x8, #64 (write)
            0xD4000001,  # svc #0
            0xAA0903E0,  # mov x0, x9
            0xD2800BA8,  # mov x8, #93 (exit)
            0xD4000001,  # svc #0
        ]
        assert len(message) < 1 << 16
        code = struct.pack("<10I", *words)
        machine = 183
    else:
        raise ValueError(f"no tiny program for {architecture}")
    return _elf(machine, code + message)


def tiny_sleeper(architecture: str) -> bytes:
    """A static ELF for ``amd64`` or ``arm64`` that waits for a signal forever (to test timeouts)."""
    if architecture == "amd64":
        return _elf(62, b"\xb8\x22\x00\x00\x00\x0f\x05\xeb\xf7")  # pause(); jmp back
    if architecture == "arm64":
        # arm64 has no pause(): ppoll() on no descriptors without a timeout waits the same way.
        words = [
            0xD2800000,  # mov x0, #0 (no fds)
            0xD2800001,  # mov x1, #0 (nfds)
            0xD2800002,  # mov x2, #0 (no timeout)
            0xD2800003,  # mov x3, #0 (no sigmask)
            0xD2800928,  # mov x8, #73 (ppoll)
            0xD4000001,  # svc #0
            0x17FFFFFA,  # b back to the first instruction
        ]
        return _elf(183, struct.pack("<7I", *words))
    raise ValueError(f"no tiny sleeper for {architecture}")


def _elf(machine: int, body: bytes) -> bytes:
    size = _HEADERS + len(body)
    ident = b"\x7fELF\x02\x01\x01" + bytes(9)
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH", 2, machine, 1, _BASE + _HEADERS, 64, 0, 0, 64, 56, 1, 0, 0, 0
    )
    program_header = struct.pack("<IIQQQQQQ", 1, 5, 0, _BASE, _BASE, size, size, 0x1000)
    return header + program_header + body


def _tar(files: Mapping[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_docker_archive(
    path: Path,
    *,
    files: Mapping[str, bytes],
    entrypoint: list[str],
    architecture: str,
    variant: str | None = None,
    repo_tag: str | None = None,
) -> Path:
    """Write a one-layer docker-archive (what `docker save` makes) holding ``files``."""
    layer = _tar(files)
    layer_hex = hashlib.sha256(layer).hexdigest()
    config: dict[str, object] = {
        "architecture": architecture,
        "os": "linux",
        "config": {"Entrypoint": entrypoint, "Env": ["PATH=/"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_hex}"]},
        "history": [{"created_by": "polyarch tests"}],
    }
    if variant:
        config["variant"] = variant
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_hex = hashlib.sha256(config_bytes).hexdigest()
    manifest = [
        {
            "Config": f"{config_hex}.json",
            "RepoTags": [repo_tag] if repo_tag else None,
            "Layers": [f"{layer_hex}/layer.tar"],
        }
    ]
    members = {
        f"{config_hex}.json": config_bytes,
        f"{layer_hex}/layer.tar": layer,
        "manifest.json": json.dumps(manifest).encode(),
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buffer.getvalue())
    return path


def docker_answers(host: str, timeout: float = 5) -> bool:
    """Whether a docker daemon answers at ``host`` (a unix:// URL)."""
    try:
        result = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            env={**os.environ, "DOCKER_HOST": host},
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and bool(result.stdout.strip())


def ensure_dockerd() -> str:
    """DOCKER_HOST of an answering daemon: $DOCKER_HOST, or the one scripts/setup-host starts.

    Starts it with ``scripts/setup-host docker`` (root; no packages, no network)
    when nothing answers; raises RuntimeError saying why when it cannot.
    """
    from_env = os.environ.get("DOCKER_HOST")
    if from_env:
        if docker_answers(from_env):
            return from_env
        raise RuntimeError(f"DOCKER_HOST={from_env} is set but no docker daemon answers there")
    host = f"unix://{POLYARCH_DOCKER_SOCKET}"
    if docker_answers(host):
        return host
    if os.geteuid() != 0:
        raise RuntimeError(f"no docker daemon at {host}; run `sudo {SETUP_HOST}` first")
    result = subprocess.run(
        ["bash", str(SETUP_HOST), "docker"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0 or not docker_answers(host):
        raise RuntimeError(f"{SETUP_HOST} docker failed: {result.stdout}{result.stderr}")
    return host


def podman_env(root: Path) -> dict[str, str]:
    """Environment for podman with the host-appropriate configuration and storage under ``root``.

    The same settings as scripts/setup-host writes to /etc/containers (runc,
    cgroupfs, fixed ulimits, vfs), but private to the test session.
    """
    root.mkdir(parents=True, exist_ok=True)
    containers_conf = root / "containers.conf"
    containers_conf.write_text(
        "[containers]\n"
        'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
        'netns = "none"\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
    )
    storage_conf = root / "storage.conf"
    storage_conf.write_text(
        f'[storage]\ndriver = "vfs"\nrunroot = "{root / "run"}"\ngraphroot = "{root / "graph"}"\n'
    )
    return {"CONTAINERS_CONF": str(containers_conf), "CONTAINERS_STORAGE_CONF": str(storage_conf)}


def docker_engine() -> Engine:
    """The docker Engine the tests use (starting dockerd if needed)."""
    return Engine("docker", _which("docker"), {"DOCKER_HOST": ensure_dockerd()})


def podman_engine(root: Path) -> Engine:
    """A podman Engine with private configuration and storage under ``root``."""
    return Engine("podman", _which("podman"), podman_env(root))


def _which(program: str) -> str:
    from polyarch import cmd

    return cmd.which(program)


def unknown_machine_program() -> bytes:
    """A static ELF for a machine number no binfmt_misc handler matches (not even the m68k ones
    that test_emulation registers for a moment): the kernel refuses it, "exec format error"."""
    return _elf(0x4242, b"\x00" * 16)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test process ends, however it ends."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


@contextmanager
def tcp_dockerd(root: Path, timeout: float = 60) -> Iterator[str]:
    """A dockerd of the test's own that also listens on tcp://127.0.0.1:PORT; yields that URL.

    Like the one scripts/setup-host starts (vfs, no bridge, no iptables), with its own
    data, exec root and sockets under ``root``, so the shared daemon is never touched.
    It stops when the block ends, and by itself if the test process dies.
    """
    root.mkdir(parents=True, exist_ok=True)
    tcp = f"tcp://127.0.0.1:{_free_port()}"
    log = (root / "dockerd.log").open("wb")
    daemon = subprocess.Popen(
        [
            shutil.which("dockerd") or "dockerd",
            "--storage-driver=vfs",
            "--iptables=false",
            "--ip-masq=false",
            "--bridge=none",
            f"--host=unix://{root / 'docker.sock'}",
            f"--host={tcp}",
            f"--data-root={root / 'data'}",
            f"--exec-root={root / 'exec'}",
            f"--pidfile={root / 'dockerd.pid'}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent,
    )
    try:
        deadline = time.monotonic() + timeout
        while not docker_answers(tcp, timeout=2):
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd on {tcp} did not start: see {root / 'dockerd.log'}")
            time.sleep(0.3)
        yield tcp
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()


@contextmanager
def podman_service(env: Mapping[str, str], root: Path, idle_seconds: int = 300) -> Iterator[str]:
    """``podman system service`` on a unix socket under ``root``; yields CONTAINER_HOST for it.

    A podman client with CONTAINER_HOST set talks to it as ``podman --remote`` does. The
    service uses ``env``'s configuration and storage; it stops when the block ends, when
    idle for ``idle_seconds``, and when the test process dies.
    """
    root.mkdir(parents=True, exist_ok=True)
    url = f"unix://{root / 'podman.sock'}"
    log = (root / "podman-service.log").open("wb")
    service = subprocess.Popen(
        [shutil.which("podman") or "podman", "system", "service", f"--time={idle_seconds}", url],
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent,
    )
    try:
        deadline = time.monotonic() + 60
        while not (root / "podman.sock").is_socket():
            if service.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"podman service did not start: see {root / 'podman-service.log'}"
                )
            time.sleep(0.2)
        yield url
    finally:
        service.terminate()
        try:
            service.wait(timeout=30)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        log.close()
