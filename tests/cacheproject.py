"""A generated-repository project for the cache, lock and offline tests, and helpers to build it."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from conftest import RepoFactory, write_project
from debrepo import DebSpec, File, TestRepo

from polyarch.cache import Cache
from polyarch.config import load_config
from polyarch.lock import lock_path, read_lock
from polyarch.workflows.build import BuildResult, build_container
from polyarch.workflows.resolve import Session

ARCHES = ("amd64", "arm64")
CONTAINERS = """
[containers.fd]
package = "fd-find"
command = "fdfind"

[containers.hello]
package = "hello"
command = "hello"
"""


def tool_specs(fd_version: str = "8.6.0-3", extra: bytes = b"") -> list[DebSpec]:
    specs = []
    for arch in ARCHES:
        specs += [
            DebSpec(
                "libhello1",
                "1.0-1",
                arch,
                depends="libc6 (>= 2.36)",
                multi_arch="same",
                files={"/usr/lib/libhello.so.1": b"lib"},
            ),
            DebSpec(
                "hello",
                "2.10-3",
                arch,
                depends="libc6, libhello1",
                files={"/usr/bin/hello": File(b"#!/bin/sh\necho hello\n", 0o755)},
            ),
            DebSpec(
                "fd-find",
                fd_version,
                arch,
                depends="libc6 (>= 2.34)",
                files={
                    "/usr/bin/fdfind": File(b"fd " + arch.encode() + b"\n" + extra, 0o755),
                    "/usr/share/doc/fd-find/copyright": b"MIT",
                },
                compression="none" if extra else "xz",
            ),
        ]
    return specs


def make_project(
    tmp_path: Path, make_repo: RepoFactory, *, extra: bytes = b""
) -> tuple[TestRepo, str, Path]:
    """(repo, url, containers.toml) of a served two-arch repository with fd and hello."""
    repo, url = make_repo(tool_specs(extra=extra), arches=ARCHES)
    return repo, url, write_project(tmp_path / "project", url, repo.key.keyring, CONTAINERS)


def build(
    project: Path,
    cache: Path,
    out: Path,
    *,
    name: str = "fd",
    locked: bool = False,
    offline: bool = False,
) -> BuildResult:
    """Build ``name`` for both systems in-process, as ``polyarch build --all-systems`` does."""
    config = load_config(project)
    session = Session(config=config, cache=Cache(cache), offline=offline)
    if locked or offline:
        session.lock = read_lock(lock_path(config))
    container = config.container(name)
    return build_container(session, container, container.systems, out_dir=out)


def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/debian"


def point_mirror_at(project: Path, url: str) -> None:
    """Rewrite ``[repository] url`` of a containers.toml written by ``write_project``."""
    lines = project.read_text().splitlines(keepends=True)
    project.write_text(
        "".join(f'url = "{url}"\n' if line.startswith("url = ") else line for line in lines)
    )


def index_digest(result_dir: Path) -> str:
    index = json.loads((result_dir / "oci" / "index.json").read_text())
    digest: str = index["manifests"][0]["digest"]
    return digest


def assert_layout_intact(result_dir: Path) -> None:
    """Every blob of the OCI layout hashes to its name, and every blob the index names is there."""
    blobs = result_dir / "oci" / "blobs" / "sha256"
    for blob in blobs.iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name, blob
    index = json.loads((blobs / index_digest(result_dir).removeprefix("sha256:")).read_bytes())
    for m in index["manifests"]:
        manifest = json.loads((blobs / m["digest"].removeprefix("sha256:")).read_bytes())
        for d in [manifest["config"], *manifest["layers"]]:
            assert (blobs / d["digest"].removeprefix("sha256:")).stat().st_size == d["size"]


def polyarch(*args: str | Path, **kwargs: object) -> subprocess.Popen[bytes]:
    """``python -m polyarch ARGS`` as a separate process (stdout and stderr piped)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "polyarch", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        **kwargs,
    )
