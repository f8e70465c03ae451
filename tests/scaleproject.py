"""A generated-repository project for the scale-out tests: three runnable tools × two systems.

Each tool is a tiny static program (tests/engines.py) that prints its version
and exits 0, and bash is one that prints what polyarch's shell check expects,
so the smoke tests pass in docker and podman. alpha and beta share a library
beyond the base packages (a layer two shards may both build); gamma has none.
Shard processes run as a CI job would: ``python -m polyarch`` with a HOME and
a cache of their own, the registry the only thing they share.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import RepoFactory, base_packages, write_project
from debrepo import DebSpec, File
from engines import tiny_program

ARCHES = ("amd64", "arm64")
TOOLS = ("alpha", "beta", "gamma")


def specs() -> list[DebSpec]:
    out: list[DebSpec] = []
    for arch in ARCHES:
        for spec in base_packages(arch):
            if spec.name == "bash":
                spec.files = {
                    "/bin/bash": File(tiny_program(arch, b"POLYARCH-OK\n", exit_zero=True), 0o755)
                }
            out.append(spec)
        out.append(
            DebSpec(
                "libshared1",
                "1.0-1",
                arch,
                depends="libc6",
                multi_arch="same",
                files={"/usr/lib/libshared.so.1": b"shared " + arch.encode()},
            )
        )
        for tool in TOOLS:
            program = tiny_program(arch, f"{tool} 1.0 ({arch})\n".encode(), exit_zero=True)
            out.append(
                DebSpec(
                    tool,
                    "1.0-1",
                    arch,
                    depends="libc6, libshared1" if tool != "gamma" else "libc6",
                    files={f"/usr/bin/{tool}": File(program, 0o755)},
                )
            )
    return out


CONTAINERS = "".join(
    f'[containers.{t}]\npackage = "{t}"\ntest = ["--version"]\nexpect = "{t} 1.0"\n\n'
    for t in TOOLS
)


def make_scale_project(tmp_path: Path, make_repo: RepoFactory) -> Path:
    """containers.toml of a served repository with the three tools, locked."""
    repo, url = make_repo(specs(), arches=ARCHES, with_base=False)
    project = write_project(tmp_path / "project", url, repo.key.keyring, CONTAINERS)
    run_polyarch(tmp_path / "lock-home", "-f", project, "lock")
    return project


def run_polyarch(home: Path, *args: str | Path) -> str:
    """``python -m polyarch ARGS`` as a job of its own: HOME and cache under ``home``."""
    process = start_polyarch(home, *args)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, f"polyarch {' '.join(map(str, args))}: {err.decode()}"
    return out.decode()


def start_polyarch(home: Path, *args: str | Path) -> subprocess.Popen[bytes]:
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "HOME": str(home),
        "POLYARCH_CACHE_DIR": str(home / "cache"),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DOCKER_CONFIG", None)
    return subprocess.Popen(
        [sys.executable, "-m", "polyarch", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=home,
    )


def run_shard(
    home: Path, project: Path, cache_ref: str, images: str, entry: dict[str, str]
) -> dict[str, dict[str, object]]:
    """One shard job, as the generated workflow's build job runs it: pull what its builds
    need from the shared cache, build and push each image by digest, push its new cache
    entries. Each command's ``--json`` answer, by step."""
    containers = entry["containers"].split()
    systems = entry["systems"]
    common = ["-f", str(project)]
    steps = {
        "pull": [*common, "cache", "pull", cache_ref, "--for", *containers, "--system", systems,
                 "--missing-ok", "--json"],
        "build": [*common, "build", *containers, "--system", systems, "--locked",
                  "--out", str(home / "result"), "--push", images, "--json"],
        "push": [*common, "cache", "push", cache_ref, "--kind", "layers", "--kind", "blobs",
                 "--kind", "facts", "--json"],
    }  # fmt: skip
    answers: dict[str, dict[str, object]] = {}
    for step, argv in steps.items():
        answers[step] = json.loads(run_polyarch(home, *argv))
    return answers


def index_digests(out: Path) -> dict[str, str]:
    """Each container's index digest in an ``--out`` directory of a build."""
    found = {}
    for tool in TOOLS:
        index = json.loads((out / tool / "oci" / "index.json").read_text())
        found[tool] = index["manifests"][0]["digest"]
    return found
