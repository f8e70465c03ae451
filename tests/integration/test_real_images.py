"""fd and rg from the real Debian archive: reproducible, shared layers, accepted by skopeo,
umoci, docker and podman, and runnable natively and under qemu-user."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from polyarch.cache import Cache
from polyarch.config import load_config
from polyarch.engine import Engine, RunResult
from polyarch.errors import ContainerTestError
from polyarch.platforms import System, native_system, parse_system
from polyarch.workflows.build import BuildResult, build_container
from polyarch.workflows.resolve import Session
from polyarch.workflows.smoke_test import raise_for_failures, run_smoke_tests

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
X86, ARM = parse_system("x86_64-linux"), parse_system("aarch64-linux")
NATIVE = native_system()
UNAME = {"x86_64-linux": "x86_64", "aarch64-linux": "aarch64"}
TOOLS = {"fd": ("fdfind", "fd-find"), "rg": ("rg", "ripgrep")}


@pytest.fixture(scope="module")
def config():  # type: ignore[no-untyped-def]
    return load_config(REPO_ROOT / "containers.toml")


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("result")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Cache:
    return Cache(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def builds(config, out: Path, cache: Cache) -> dict[str, BuildResult]:  # type: ignore[no-untyped-def]
    session = Session(config=config, cache=cache)
    return {
        name: build_container(session, config.container(name), (X86, ARM), out_dir=out)
        for name in TOOLS
    }


def test_fd_built_twice_from_separate_empty_caches_has_the_same_index_digest(
    builds: dict[str, BuildResult],
    config,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    session = Session(config=config, cache=Cache(tmp_path / "other-cache"))
    again = build_container(session, config.container("fd"), (ARM, X86), out_dir=tmp_path / "out")
    assert again.index == builds["fd"].index
    assert again.index_digest == builds["fd"].index_digest
    assert (again.path / "x86_64-linux.tar").read_bytes() == (
        builds["fd"].path / "x86_64-linux.tar"
    ).read_bytes()


def test_closures_hold_libc6_of_the_right_arch_and_every_deb_matches_its_hash(
    builds: dict[str, BuildResult], cache: Cache
) -> None:
    for result in builds.values():
        for b in result.systems:
            libc = [p.record for p in b.resolution.packages if p.record.name == "libc6"]
            assert libc and libc[0].architecture == b.system.debian_arch
            for p in b.resolution.packages:
                assert p.record.architecture in (b.system.debian_arch, "all")
                deb = cache.get("debs", p.record.sha256)
                assert deb is not None, p.record.name
                assert hashlib.sha256(deb.read_bytes()).hexdigest() == p.record.sha256


def test_fd_and_rg_share_their_base_layers(builds: dict[str, BuildResult]) -> None:
    for system in (X86, ARM):
        fd = next(b for b in builds["fd"].systems if b.system == system).image.layers
        rg = next(b for b in builds["rg"].systems if b.system == system).image.layers
        base = [
            layer.digest
            for layer in fd
            if "libc6" in layer.packages
            or "bash" in layer.packages
            or "coreutils" in layer.packages
        ]
        assert len(base) == 3
        assert set(base) <= {layer.digest for layer in rg}
        assert fd[0].digest == rg[0].digest  # the filesystem skeleton


def _skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, check=True)


def _single(layout: Path, system: System, dest: Path) -> Path:
    """One platform of the index copied into its own layout (what umoci can unpack)."""
    args = ["--override-arch", system.oci_architecture]
    if system.oci_variant:
        args += ["--override-variant", system.oci_variant]
    _skopeo(*args, "copy", "--preserve-digests", f"oci:{layout}:latest", f"oci:{dest}:latest")
    return dest


@pytest.mark.parametrize("system", [X86, ARM], ids=lambda s: s.name)
def test_skopeo_inspects_and_copies_each_platform(
    builds: dict[str, BuildResult], system: System, tmp_path: Path
) -> None:
    layout = builds["fd"].path / "oci"
    raw = json.loads(_skopeo("inspect", "--raw", f"oci:{layout}:latest").stdout)
    platforms = {
        (m["platform"]["architecture"], m["platform"].get("variant")) for m in raw["manifests"]
    }
    assert platforms == {("amd64", None), ("arm64", "v8")}
    single = _single(layout, system, tmp_path / "single")
    copied = json.loads((single / "index.json").read_text())["manifests"][0]["digest"]
    built = next(b for b in builds["fd"].systems if b.system == system).image.manifest_digest
    assert copied == built
    info = json.loads(_skopeo("inspect", f"oci:{single}:latest").stdout)
    assert info["Architecture"] == system.oci_architecture
    archive_info = json.loads(
        _skopeo("inspect", f"docker-archive:{builds['fd'].path / f'{system.name}.tar'}").stdout
    )
    assert archive_info["Architecture"] == system.oci_architecture


@pytest.fixture(scope="module")
def rootfs(
    builds: dict[str, BuildResult], tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, str], Path]:
    """umoci-unpacked root filesystems of every tool and system."""
    found = {}
    for name, result in builds.items():
        for system in (X86, ARM):
            work = tmp_path_factory.mktemp(f"{name}-{system.name}")
            single = _single(result.path / "oci", system, work / "single")
            subprocess.run(
                [
                    "umoci",
                    "unpack",
                    "--rootless",
                    "--image",
                    f"{single}:latest",
                    str(work / "bundle"),
                ],
                check=True,
                capture_output=True,
            )
            found[(name, system.name)] = work / "bundle"
    return found


@pytest.mark.parametrize("name", sorted(TOOLS))
@pytest.mark.parametrize("system", [X86, ARM], ids=lambda s: s.name)
def test_umoci_unpacks_a_rootfs_with_tool_bash_coreutils_and_a_resolving_entrypoint(
    rootfs: dict[tuple[str, str], Path], name: str, system: System
) -> None:
    bundle = rootfs[(name, system.name)]
    root = bundle / "rootfs"
    command, _ = TOOLS[name]
    entrypoint = json.loads((bundle / "config.json").read_text())["process"]["args"][0]
    assert entrypoint == f"/usr/bin/{command}"
    for path in (entrypoint, "/usr/bin/bash", "/usr/bin/ls", "/usr/bin/wc", "/bin/sh"):
        assert (root / path.lstrip("/")).exists(), path
    assert (root / "bin").is_symlink() and (root / "tmp").stat().st_mode & 0o7777 == 0o1777
    loader = {
        "x86_64-linux": "lib64/ld-linux-x86-64.so.2",
        "aarch64-linux": "lib/ld-linux-aarch64.so.1",
    }
    assert (root / loader[system.name]).exists()


def _in_rootfs(root: Path, system: System, argv: list[str]) -> str:
    """Run a program of the rootfs: chroot natively; qemu-user (-L) for the foreign system."""
    if system == NATIVE:
        full = ["chroot", str(root), *argv]
    else:
        full = [
            shutil.which(f"qemu-{system.qemu_name}-static") or f"qemu-{system.qemu_name}",
            "-L",
            str(root),
            str(root / argv[0].lstrip("/")),
            *argv[1:],
        ]
    result = subprocess.run(full, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("system", [X86, ARM], ids=lambda s: s.name)
def test_the_tools_run_inside_the_unpacked_rootfs(
    rootfs: dict[tuple[str, str], Path], system: System
) -> None:
    fd_root = rootfs[("fd", system.name)] / "rootfs"
    rg_root = rootfs[("rg", system.name)] / "rootfs"
    assert _in_rootfs(fd_root, system, ["/usr/bin/fdfind", "--version"]).startswith("fdfind 8.")
    assert _in_rootfs(rg_root, system, ["/usr/bin/rg", "--version"]).startswith("ripgrep 13.")
    if system == NATIVE:
        listing = _in_rootfs(fd_root, system, ["/usr/bin/bash", "-c", "ls / | wc -l"])
    else:
        # Under qemu -L only the first program is emulated; bash's children need binfmt,
        # so run the pipeline through chroot, which the F-flag handler makes work.
        listing = subprocess.run(
            ["chroot", str(fd_root), "/usr/bin/bash", "-c", "uname -m; ls / | wc -l"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert listing.startswith(UNAME[system.name])
        listing = listing.split("\n", 1)[1]
    assert int(listing.strip()) >= 10


@pytest.mark.parametrize("system", [X86, ARM], ids=lambda s: s.name)
def test_engines_load_and_run_both_systems(
    engine: Engine,
    builds: dict[str, BuildResult],
    out: Path,
    system: System,
    emulation_ready: None,
    config,  # type: ignore[no-untyped-def]
) -> None:
    tag = f"t{uuid.uuid4().hex[:10]}"
    fd = config.container("fd")
    try:
        reports = run_smoke_tests(engine, fd, [system], out_dir=out, tag=tag)
        raise_for_failures(reports)
        report = reports[0]
        assert [c.name for c in report.checks] == [
            "entrypoint (image config)",
            "fdfind --help",
            "bash -c (coreutils check)",
        ]
        assert report.checks[0].command == 'Entrypoint = ["/usr/bin/fdfind"]'
        assert "Usage: fdfind" in report.checks[1].output
        assert report.checks[2].output == "POLYARCH-OK"
        ref = report.reference
        result = engine.run(
            ref,
            ["-c", "uname -m"],
            entrypoint="bash",
            platform=None if system == NATIVE else system.oci_platform,
            timeout=120,
        )
        assert result.output.strip().splitlines()[-1] == UNAME[system.name]
    finally:
        engine.remove_image(f"fd:{tag}")
        engine.remove_image(f"fd:{tag}-{system.name}")


def test_manifest_test_loads_the_native_image_out_of_the_index(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, err = cli(
        "-f",
        REPO_ROOT / "containers.toml",
        "--cache-dir",
        tmp_path / "cache",
        "manifest-test",
        "rg",
        "--out",
        tmp_path / "result",
        "--engine",
        "podman",
    )
    assert code == 0, err
    assert "passed" in out and "rg:latest" in out


@dataclass(frozen=True)
class _TimedEngine(Engine):
    """The real engine, noting when each container run starts and ends."""

    runs: list[tuple[float, float]] = field(default_factory=list, hash=False, compare=False)

    def run(self, *args: Any, **kwargs: Any) -> RunResult:
        started = time.monotonic()
        try:
            return super().run(*args, **kwargs)
        finally:
            self.runs.append((started, time.monotonic()))


def test_each_system_is_tested_in_one_container_start_side_by_side(
    engine: Engine,
    builds: dict[str, BuildResult],
    out: Path,
    emulation_ready: None,
    config,  # type: ignore[no-untyped-def]
) -> None:
    timed = _TimedEngine(engine.name, engine.program, engine.env)
    tag = f"t{uuid.uuid4().hex[:10]}"
    try:
        reports = run_smoke_tests(timed, config.container("fd"), [X86, ARM], out_dir=out, tag=tag)
        raise_for_failures(reports)
        assert [r.system for r in reports] == [X86, ARM]
        assert len(timed.runs) == 2  # one container start per system
        (_, first_end), (second_start, _) = sorted(timed.runs)
        assert second_start < first_end  # the second started before the first had finished
    finally:
        for ref in (f"fd:{tag}", f"fd:{tag}-{ARM.name}"):
            engine.remove_image(ref)


@pytest.mark.parametrize(
    ("change", "failed", "reason", "output"),
    [
        ({"test": ("--no-such-flag",)}, "fdfind --no-such-flag", "non-zero exit", "--no-such-flag"),
        ({"expect": "^nothing like this"}, "fdfind --help", "does not match", "sharkdp/fd/issues"),
        ({"command": "/usr/bin/fd"}, "entrypoint (image config)", "expected the command", ""),
    ],
    ids=["exit code", "expect", "entrypoint"],
)
def test_a_failing_check_is_named_with_its_output(
    engine: Engine,
    builds: dict[str, BuildResult],
    out: Path,
    config,  # type: ignore[no-untyped-def]
    change: dict[str, Any],
    failed: str,
    reason: str,
    output: str,
) -> None:
    fd = dataclasses.replace(config.container("fd"), **change)
    tag = f"t{uuid.uuid4().hex[:10]}"
    try:
        (report,) = run_smoke_tests(engine, fd, [X86], out_dir=out, tag=tag)
        with pytest.raises(ContainerTestError) as caught:
            raise_for_failures([report])
        message = str(caught.value)
        assert f"fd (x86_64-linux): {failed} failed: " in message
        assert reason in message
        assert output in message
        if failed != "entrypoint (image config)":
            # The other check of the same run is judged on its own: it passed.
            assert [c.passed for c in report.checks] == [True, False, True]
    finally:
        engine.remove_image(f"fd:{tag}")
