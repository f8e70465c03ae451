"""Same bytes on any host: fd built by polyarch running on aarch64 has the x86_64 digests.

polyarch builds an arm64 ``python3`` image of Debian's python3 (3.11), which
podman runs under qemu-user (binfmt_misc). Inside it, polyarch's own source and
the aarch64 wheels of its dependencies (fetched with ``pip download --platform
manylinux…aarch64 --only-binary=:all:``, so the native libdeflate, msgspec and
zstd of that architecture) build fd for both systems from containers.lock and
the .debs this host downloaded. Every layer digest and the index digest must
equal those of the same build on this x86_64 host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from polyarch import cmd
from polyarch.config import RepositoryConfig
from polyarch.debian.sources import find_source
from polyarch.engine import Engine
from polyarch.platforms import parse_system

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
ARM = parse_system("aarch64-linux")
PYTHON_CONTAINER = """
[containers.python]
package = "python3"
command = "python3"
systems = ["aarch64-linux"]
test = ["--version"]
"""


def polyarch(*args: str | Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "polyarch", "-q", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def aarch64_site(directory: Path) -> Path:
    """polyarch's dependencies as aarch64 wheels for CPython 3.11, unpacked into one directory."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    wheels = directory / "wheels"
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(wheels)]
    argv += ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp"]
    for platform in ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64"):
        argv += ["--platform", platform]
    result = subprocess.run(
        argv + pyproject["project"]["dependencies"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    site = directory / "site"
    for wheel in sorted(wheels.glob("*.whl")):
        assert "x86_64" not in wheel.name, wheel.name
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)  # a wheel is installed by unpacking it
    (extension,) = site.glob("deflate/_deflate*.so")
    machine = int.from_bytes(extension.read_bytes()[18:20], "little")  # ELF e_machine
    assert machine == 183, f"{extension} is not an aarch64 library"  # EM_AARCH64
    return site


def digests(layout: Path) -> dict[str, object]:
    """The index digest and every image's layer digests of an OCI layout written by polyarch."""
    index = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    blobs = layout / "blobs" / "sha256"
    images = json.loads((blobs / index.removeprefix("sha256:")).read_text())["manifests"]
    layers = {}
    for image in images:
        manifest = json.loads((blobs / image["digest"].removeprefix("sha256:")).read_text())
        platform = image["platform"]["architecture"]
        layers[platform] = [layer["digest"] for layer in manifest["layers"]]
    return {"index": index, "layers": layers}


def test_fd_digests_are_the_same_when_polyarch_runs_on_aarch64(
    podman_engine: Engine, emulation_ready: None, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    # The container has no apt configuration: name this host's mirror (read, never written here).
    mirror = find_source(RepositoryConfig(suite="bookworm")).url
    toml = (
        (REPO_ROOT / "containers.toml")
        .read_text()
        .replace("[repository]\n", f'[repository]\nurl = "{mirror}"\n', 1)
    )
    toml += PYTHON_CONTAINER
    (project / "containers.toml").write_text(toml)
    config = project / "containers.toml"
    host_cache = tmp_path / "host-cache"
    common = ("-f", config, "--cache-dir", host_cache)
    polyarch(*common, "lock")

    # On this x86_64 host.
    result_dir = project / "result"
    polyarch(*common, "build", "fd", "--all-systems", "--locked", "--out", result_dir)
    polyarch(*common, "build", "python", "--all-systems", "--locked", "--out", result_dir)
    expected = digests(project / "result" / "fd" / "oci")

    # On aarch64: polyarch's arm64 python3 image, under qemu-user.
    engine = podman_engine
    tag = "aarch64-host"
    archive = project / "result" / "python" / "aarch64-linux.tar"
    loaded = engine.load(archive)
    reference = f"python:{tag}"
    engine.tag(loaded, reference)
    site = aarch64_site(tmp_path)
    arm_cache = tmp_path / "arm-cache"
    # Only the verified .debs travel: layers, records and indexes are made anew there.
    shutil.copytree(host_cache / "debs", arm_cache / "debs")
    out = tmp_path / "arm-out"
    out.mkdir()
    script = (
        "import platform, sys; print(platform.machine(), sys.version.split()[0]); "
        "from polyarch.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    argv = [engine.program, "run", "--rm", "--network=none", f"--platform={ARM.oci_platform}"]
    argv += ["-e", "PYTHONPATH=/polyarch/src:/site", "-e", "PYTHONDONTWRITEBYTECODE=1"]
    for source, target, mode in (
        (REPO_ROOT / "src", "/polyarch/src", "ro"),
        (site, "/site", "ro"),
        (project, "/project", "ro"),
        (arm_cache, "/cache", "rw"),
        (out, "/out", "rw"),
    ):
        argv += ["-v", f"{source}:{target}:{mode}"]
    argv += ["--entrypoint", "python3", reference, "-c", script, "-q"]
    argv += ["-f", "/project/containers.toml", "--cache-dir", "/cache", "build", "fd"]
    argv += ["--all-systems", "--offline", "--out", "/out"]
    try:
        result = cmd.run(argv, env={**os.environ, **engine.env}, timeout=1800)
    finally:
        engine.remove_image(reference)
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, output
    assert output.startswith("aarch64 3.11."), output  # polyarch really ran on aarch64
    assert digests(out / "fd" / "oci") == expected
