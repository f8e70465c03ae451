"""The container engines polyarch loads and runs images in: docker or podman.

Building needs no engine; only ``load`` and ``test`` do. docker is preferred
when its daemon answers, podman otherwise; ``--engine`` or ``POLYARCH_ENGINE``
choose explicitly. Every call goes through :mod:`polyarch.cmd`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import urlsplit

from polyarch import cmd
from polyarch.errors import EngineError, ToolMissingError, UsageError
from polyarch.reference import is_loopback, parse_reference

EngineName = Literal["docker", "podman"]
ENGINE_NAMES: tuple[EngineName, ...] = get_args(EngineName)

ENGINE_ENV = "POLYARCH_ENGINE"
"""Environment variable that chooses the engine when ``--engine`` is not given."""

POLYARCH_DOCKER_SOCKET = Path("/run/polyarch-docker/docker.sock")
"""Where scripts/setup-host starts dockerd; used when DOCKER_HOST is not set."""

# How long `docker version` may take before the daemon counts as not answering.
DOCKER_PROBE_SECONDS = 5.0
# Loading a docker-archive of a tool container takes seconds; this is a safety net.
LOAD_TIMEOUT_SECONDS = 600.0
# Short engine bookkeeping calls (tag, inspect, rmi).
QUICK_TIMEOUT_SECONDS = 120.0

# docker: "Loaded image: fd:latest" / "Loaded image ID: sha256:…";
# podman: "Loaded image: localhost/fd:latest" (4.x) / "Loaded image(s): a,b" (older).
_LOADED = re.compile(r"^Loaded image(?:\(s\))?(?: ID)?: *(\S.*?)\s*$", re.MULTILINE)

# docker and podman exit with 125 when the engine itself failed (no such image,
# bad option), as opposed to the container's command failing.
ENGINE_FAILURE_EXIT = 125


@dataclass(frozen=True)
class RunResult:
    """What a container run produced. ``output`` is stdout followed by stderr."""

    exit_code: int
    output: str
    command: str
    """The engine command, shell-quoted, for messages about a failed test."""


@dataclass(frozen=True)
class EngineHost:
    """Where an engine runs its containers, as the engine itself reports it (``docker info``)."""

    os: str
    architecture: str
    """As reported: ``x86_64``/``aarch64`` (docker) or ``amd64``/``arm64`` (podman)."""
    kernel: str
    """The kernel release of the machine (or VM) the containers run on."""
    operating_system: str
    """``Docker Desktop``, ``OrbStack``, ``Debian GNU/Linux 12 (bookworm)``, ``fedora`` …"""
    hostname: str
    remote: bool
    """The client talks to the engine over a network or a VM's forwarded socket it says is remote."""
    endpoint: str | None
    """DOCKER_HOST, the docker context's endpoint, or CONTAINER_HOST; None for podman's local default."""
    storage_driver: str = ""
    """Where loaded layers live: ``overlay2``/``overlay``, ``vfs`` (a full copy per layer), ..."""


@dataclass(frozen=True)
class Engine:
    """One engine, found and answering. ``env`` is laid over the caller's environment."""

    name: EngineName
    program: str
    env: Mapping[str, str] = field(default_factory=dict, hash=False)

    def describe(self) -> str:
        """Engine and where it talks to, e.g. ``docker (unix:///run/…/docker.sock)``."""
        host = self.env.get("DOCKER_HOST")
        return f"{self.name} ({host})" if host else self.name

    def load(self, archive: Path, *, timeout: float = LOAD_TIMEOUT_SECONDS) -> str:
        """Load a docker-archive; return the loaded image's reference (or ID if untagged)."""
        if not archive.is_file():
            raise EngineError(
                f"{archive} does not exist", hint="build it first (polyarch build NAME)"
            )
        result = self._checked(["load", "--input", str(archive)], timeout=timeout)
        text = _text(result.stdout) + "\n" + _text(result.stderr)
        match = _LOADED.search(text)
        if match is None:
            raise EngineError(
                f"{self.name} load {archive} printed no loaded image",
                hint=f"output was: {_tail(text)}",
            )
        # "Loaded image(s): a,b": the first is the image we asked for.
        return match.group(1).split(",")[0].strip()

    def tag(self, src: str, ref: str) -> None:
        """Give the image ``src`` (reference or ID) the additional reference ``ref``."""
        self._checked(["tag", src, ref], timeout=QUICK_TIMEOUT_SECONDS)

    def pull(
        self, ref: str, *, platform: str | None = None, timeout: float = LOAD_TIMEOUT_SECONDS
    ) -> None:
        """Pull ``ref`` (the image for ``platform`` of an index) from its registry.

        A registry on a loopback address may speak plain HTTP (docker allows that
        by itself; podman is told); any other keeps TLS verified.
        """
        argv = ["pull"]
        if platform is not None:
            argv.append(f"--platform={platform}")
        if self.name == "podman" and is_loopback(parse_reference(ref).api_host):
            argv.append("--tls-verify=false")
        self._checked([*argv, ref], timeout=timeout)

    def entrypoint(self, ref: str) -> list[str]:
        """The ``Entrypoint`` of the image ``ref`` as the engine has it (after ``pull``)."""
        result = self._checked(
            ["image", "inspect", "--format", "{{json .Config.Entrypoint}}", ref],
            timeout=QUICK_TIMEOUT_SECONDS,
        )
        try:
            value = json.loads(_text(result.stdout).strip().splitlines()[0])
        except (ValueError, IndexError):
            value = None
        if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
            raise EngineError(
                f"{self.name} reports no Entrypoint list for {ref}",
                hint="the image is not a tool container polyarch built",
            )
        return value

    def run(
        self,
        ref: str,
        args: Sequence[str],
        *,
        entrypoint: str | None = None,
        platform: str | None = None,
        timeout: float,
    ) -> RunResult:
        """Run ``ref`` with ``args`` (no network, no pull, removed afterwards) and collect its output.

        A non-zero exit of the container's command is returned, not raised: the
        caller decides whether that is a failed test. The engine failing to
        start the container at all (exit 125), or the run exceeding
        ``timeout`` seconds, raises EngineError.
        """
        # A name of our own, so a run that times out can be removed: killing the
        # client alone would leave the container running in the daemon.
        import uuid  # here: the CLI imports this module to list the engines

        name = f"polyarch-run-{uuid.uuid4().hex[:12]}"
        # --pull=never: a missing image is an error here, never a download.
        argv = ["run", "--rm", "--pull=never", "--network=none", f"--name={name}"]
        if platform is not None:
            argv.append(f"--platform={platform}")
        if entrypoint is not None:
            argv.append(f"--entrypoint={entrypoint}")
        argv += [ref, *args]
        command = cmd.quoted([self.program, *argv])
        try:
            result = cmd.run([self.program, *argv], env=self._environ(), timeout=timeout)
        except subprocess.TimeoutExpired:
            # kill first: SIGKILL at once, where `rm --force` may wait 10s for SIGTERM
            # (which a PID 1 without a handler ignores).
            for cleanup in (["kill", name], ["rm", "--force", name]):
                cmd.run([self.program, *cleanup], env=self._environ(), timeout=60)
            raise EngineError(
                f"{command} did not finish within {timeout:g}s",
                hint="the container was removed; does the command wait for input?",
            ) from None
        output = _text(result.stdout) + _text(result.stderr)
        if result.returncode == ENGINE_FAILURE_EXIT:
            raise EngineError(
                f"{command} failed: {self.name} could not run the container: {_tail(output)}",
                hint=self._hint(),
            )
        return RunResult(exit_code=result.returncode, output=output, command=command)

    def remove_image(self, ref: str) -> None:
        """Remove the reference ``ref``; nothing happens if there is no such image."""
        result = self._run(["image", "rm", ref], timeout=QUICK_TIMEOUT_SECONDS)
        if result.returncode != 0 and self.has_image(ref):
            raise EngineError(
                f"{cmd.quoted([self.program, 'image', 'rm', ref])} failed: {_tail(_text(result.stderr))}",
                hint="is a container still using it?",
            )

    def image_id(self, ref: str) -> str | None:
        """The ID of the image ``ref`` names, or None when there is none."""
        result = self._run(
            ["image", "inspect", "--format", "{{.Id}}", ref], timeout=QUICK_TIMEOUT_SECONDS
        )
        found = _text(result.stdout).strip()
        return found if result.returncode == 0 and found else None

    def untag(self, ref: str) -> None:
        """Drop the name ``ref``; the image stays while other names point at it."""
        self.remove_image(ref)

    def has_image(self, ref: str) -> bool:
        """Whether the engine has an image called ``ref``."""
        return self._run(["image", "inspect", ref], timeout=QUICK_TIMEOUT_SECONDS).returncode == 0

    def host(self) -> EngineHost:
        """What the engine says about the machine its containers run on (EngineError if it cannot)."""
        if self.name == "docker":
            info = self._json(["info", "--format", "{{json .}}"])
            endpoint = self._environ().get("DOCKER_HOST") or self._docker_context_endpoint()
            return EngineHost(
                os=str(info.get("OSType", "")),
                architecture=str(info.get("Architecture", "")),
                kernel=str(info.get("KernelVersion", "")),
                operating_system=str(info.get("OperatingSystem", "")),
                hostname=str(info.get("Name", "")),
                remote=bool(endpoint) and not str(endpoint).startswith(("unix://", "npipe://")),
                endpoint=endpoint,
                storage_driver=str(info.get("Driver", "")),
            )
        info = self._json(["info", "--format", "json"])
        host = info.get("host")
        host = host if isinstance(host, dict) else {}
        store = info.get("store")
        driver = store.get("graphDriverName", "") if isinstance(store, dict) else ""
        distribution = host.get("distribution")
        name = distribution.get("distribution", "") if isinstance(distribution, dict) else ""
        return EngineHost(
            os=str(host.get("os", "")),
            architecture=str(host.get("arch", "")),
            kernel=str(host.get("kernel", "")),
            operating_system=str(name),
            hostname=str(host.get("hostname", "")),
            remote=bool(host.get("serviceIsRemote", False)),
            endpoint=self._environ().get("CONTAINER_HOST"),
            storage_driver=str(driver),
        )

    def over_network(self) -> bool:
        """Whether the client reaches the engine over a network: DOCKER_HOST (or the docker
        context's endpoint) or CONTAINER_HOST naming tcp:// or ssh:// on another machine.

        A unix socket (a local daemon, Docker Desktop's VM, ``podman machine``)
        and a loopback address are not a network: bytes cost little there.
        """
        variable = "DOCKER_HOST" if self.name == "docker" else "CONTAINER_HOST"
        endpoint = self._environ().get(variable)
        if not endpoint and self.name == "docker":
            endpoint = self._docker_context_endpoint()
        if not endpoint:
            return False
        parts = urlsplit(endpoint)
        if parts.scheme not in ("tcp", "ssh", "http", "https"):
            return False
        return not is_loopback(parts.hostname or "")

    def _json(self, argv: Sequence[str]) -> dict[str, object]:
        result = self._checked(argv, timeout=QUICK_TIMEOUT_SECONDS)
        try:
            value = json.loads(result.stdout)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise EngineError(
                f"{cmd.quoted([self.program, *argv])} printed no JSON object", hint=self._hint()
            )
        return value

    def _docker_context_endpoint(self) -> str | None:
        """The current docker context's endpoint (Docker Desktop, colima, OrbStack set one)."""
        result = self._run(
            ["context", "inspect", "--format", "{{.Endpoints.docker.Host}}"],
            timeout=QUICK_TIMEOUT_SECONDS,
        )
        found = _text(result.stdout).strip()
        return found if result.returncode == 0 and found else None

    def _environ(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def _run(self, argv: Sequence[str], *, timeout: float) -> subprocess.CompletedProcess[bytes]:
        full = [self.program, *argv]
        try:
            return cmd.run(full, env=self._environ(), timeout=timeout)
        except subprocess.TimeoutExpired:
            raise EngineError(
                f"{cmd.quoted(full)} did not finish within {timeout:g}s", hint=self._hint()
            ) from None

    def _checked(
        self, argv: Sequence[str], *, timeout: float
    ) -> subprocess.CompletedProcess[bytes]:
        result = self._run(argv, timeout=timeout)
        if result.returncode != 0:
            detail = _tail(_text(result.stderr) or _text(result.stdout))
            raise EngineError(
                f"{cmd.quoted([self.program, *argv])} failed with exit code {result.returncode}: {detail}",
                hint=self._hint(),
            )
        return result

    def _hint(self) -> str:
        if self.name == "docker":
            return "is dockerd running? scripts/setup-host starts it; or use --engine podman"
        return "see `podman info`; scripts/setup-host writes a containers.conf that works on cgroup v1 hosts"


def detect_engine(
    preferred: str | None = None,
    *,
    docker_socket: Path = POLYARCH_DOCKER_SOCKET,
    probe_timeout: float = DOCKER_PROBE_SECONDS,
) -> Engine:
    """The engine to use: ``preferred``, else $POLYARCH_ENGINE, else docker if its daemon answers, else podman.

    An explicitly chosen engine that is missing or not answering is an error
    (ToolMissingError / EngineError); when choosing automatically, docker that
    does not answer falls back to podman.
    """
    choice = preferred or os.environ.get(ENGINE_ENV) or None
    if choice is not None:
        name = _engine_name(choice)
        if name == "docker":
            return _docker(docker_socket, probe_timeout)
        return _podman()
    try:
        return _docker(docker_socket, probe_timeout)
    except (ToolMissingError, EngineError) as docker_problem:
        try:
            return _podman()
        except ToolMissingError:
            raise EngineError(
                f"no container engine: podman is not installed and {docker_problem.message}",
                hint="install podman (apt-get install podman), or docker.io and start dockerd (scripts/setup-host)",
            ) from None


def docker_host(docker_socket: Path = POLYARCH_DOCKER_SOCKET) -> str | None:
    """DOCKER_HOST from the environment, else setup-host's socket if present, else None (docker's default)."""
    from_env = os.environ.get("DOCKER_HOST")
    if from_env:
        return from_env
    if docker_socket.is_socket():
        return f"unix://{docker_socket}"
    return None


def _engine_name(text: str) -> EngineName:
    for name in ENGINE_NAMES:
        if text.strip().lower() == name:
            return name
    raise UsageError(
        f"unknown container engine {text!r}",
        hint=f"use one of: {', '.join(ENGINE_NAMES)} (--engine or ${ENGINE_ENV})",
    )


def _docker(docker_socket: Path, probe_timeout: float) -> Engine:
    program = cmd.which("docker")
    host = docker_host(docker_socket)
    env = {"DOCKER_HOST": host} if host else {}
    where = host or "docker's default socket (unix:///var/run/docker.sock or the current context)"
    advice = "start it (scripts/setup-host) or use --engine podman"
    probe = [program, "version", "--format", "{{.Server.Version}}"]
    try:
        result = cmd.run(probe, env={**os.environ, **env}, timeout=probe_timeout)
    except subprocess.TimeoutExpired:
        raise EngineError(
            f"docker daemon not answering at {where} within {probe_timeout:g}s", hint=advice
        ) from None
    if result.returncode != 0 or not result.stdout.strip():
        raise EngineError(f"docker daemon not answering at {where}", hint=advice)
    return Engine("docker", program, env)


def _podman() -> Engine:
    return Engine("podman", cmd.which("podman"), {})


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _tail(text: str, lines: int = 3) -> str:
    """The last lines of an engine's output, joined into one line for an error message."""
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()][-lines:]
    return " / ".join(kept) or "(no output)"
