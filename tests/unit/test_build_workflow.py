"""polyarch build end to end on a generated, signed repository: outputs, determinism, sharing, refusals."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RepoFactory, write_project
from debrepo import DebSpec, File, raw_deb, tar_bytes
from engines import tiny_program

from polyarch.errors import ImageError, PackageError, ResolveError, UnknownContainerError

Cli = Callable[..., tuple[int, str, str]]
ARCHES = ("amd64", "arm64")

CONTAINERS = """
[containers.hello]
package = "hello"
command = "hello"

[containers.greet]
package = "greet"
command = "greet"
"""


def tools() -> list[DebSpec]:
    specs = []
    for arch in ARCHES:
        specs.append(
            DebSpec(
                "libhello1",
                "1.0-1",
                arch,
                depends="libc6 (>= 2.36)",
                multi_arch="same",
                files={"/usr/lib/libhello.so.1": b"lib"},
            )
        )
        specs.append(
            DebSpec(
                "hello",
                "2.10-3",
                arch,
                depends="libc6 (>= 2.36), libhello1",
                files={"/usr/bin/hello": File(tiny_program(arch, b"hello from polyarch\n"), 0o755)},
            )
        )
        specs.append(
            DebSpec(
                "greet",
                "0.3-1",
                arch,
                depends="libc6",
                files={"/bin/greet": File(tiny_program(arch, b"greetings\n"), 0o755)},
            )
        )
    return specs


@pytest.fixture
def project(tmp_path: Path, make_repo: RepoFactory) -> Path:
    repo, url = make_repo(tools())
    return write_project(tmp_path / "project", url, repo.key.keyring, CONTAINERS)


def build(cli: Cli, project: Path, cache: Path, *args: str) -> tuple[int, str, str]:
    return cli(
        "-f", project, "--cache-dir", cache, "build", *args, "--out", project.parent / "result"
    )


def index_digest(result: Path) -> str:
    index = json.loads((result / "oci" / "index.json").read_text())
    digest: str = index["manifests"][0]["digest"]
    return digest


def manifests(result: Path) -> dict[str, dict]:  # type: ignore[type-arg]
    blobs = result / "oci" / "blobs" / "sha256"
    index = json.loads((blobs / index_digest(result).removeprefix("sha256:")).read_bytes())
    return {
        m["platform"]["architecture"]: json.loads(
            (blobs / m["digest"].removeprefix("sha256:")).read_bytes()
        )
        for m in index["manifests"]
    }


def test_build_writes_an_oci_layout_and_a_docker_archive_per_system(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    code, out, err = build(cli, project, tmp_path / "cache", "hello", "--all-systems")
    assert code == 0, err
    result = project.parent / "result" / "hello"
    assert sorted(p.name for p in result.iterdir()) == [
        "aarch64-linux.tar",
        "oci",
        "sbom",
        "x86_64-linux.tar",
    ]
    assert json.loads((result / "oci" / "index.json").read_text())["manifests"][0][
        "annotations"
    ] == {"org.opencontainers.image.ref.name": "latest"}
    assert set(manifests(result)) == {"amd64", "arm64"}
    with tarfile.open(result / "aarch64-linux.tar") as archive:
        manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = json.load(archive.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == ["hello:latest"]
    assert (config["architecture"], config["variant"]) == ("arm64", "v8")
    assert config["config"]["Entrypoint"] == ["/usr/bin/hello"]
    # The table names both systems and the index digest.
    assert index_digest(result) in out and "aarch64-linux" in out and "x86_64-linux" in out


def test_two_builds_from_separate_empty_caches_are_byte_identical(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    assert build(cli, project, tmp_path / "cache1", "hello", "--all-systems")[0] == 0
    result = project.parent / "result" / "hello"
    first = {
        p.relative_to(result): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in result.rglob("*")
        if p.is_file()
    }
    assert build(cli, project, tmp_path / "cache2", "hello", "--all-systems")[0] == 0
    second = {
        p.relative_to(result): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in result.rglob("*")
        if p.is_file()
    }
    assert first == second


def test_source_date_epoch_changes_the_digest(
    cli: Cli, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build(cli, project, tmp_path / "cache", "hello", "--system", "x86_64-linux")
    before = index_digest(project.parent / "result" / "hello")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    build(cli, project, tmp_path / "cache", "hello", "--system", "x86_64-linux")
    assert index_digest(project.parent / "result" / "hello") != before


def test_two_tools_share_their_base_layers(cli: Cli, project: Path, tmp_path: Path) -> None:
    assert build(cli, project, tmp_path / "cache", "--all", "--all-systems")[0] == 0
    for arch in ARCHES:
        hello = [
            layer["digest"]
            for layer in manifests(project.parent / "result" / "hello")[arch]["layers"]
        ]
        greet = [
            layer["digest"]
            for layer in manifests(project.parent / "result" / "greet")[arch]["layers"]
        ]
        # The skeleton, then the base closure (base-files, bash, coreutils, libc6) in one
        # layer at the bottom of both; each tool's own packages are a layer of their own.
        assert hello[:2] == greet[:2]
        assert hello[2] != greet[2]
        assert set(hello) != set(greet)


def test_a_command_on_bin_is_found_under_merged_usr(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    assert build(cli, project, tmp_path / "cache", "greet", "--system", "aarch64-linux")[0] == 0
    config_ok = manifests(project.parent / "result" / "greet")["arm64"]
    assert config_ok["layers"]
    with tarfile.open(project.parent / "result" / "greet" / "aarch64-linux.tar") as archive:
        manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = json.load(archive.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
    assert config["config"]["Entrypoint"] == ["/usr/bin/greet"]


def test_a_command_missing_from_the_image_is_a_clear_error(
    cli: Cli, tmp_path: Path, make_repo: RepoFactory
) -> None:
    repo, url = make_repo(tools())
    project = write_project(
        tmp_path / "p",
        url,
        repo.key.keyring,
        '[containers.hello]\npackage = "hello"\ncommand = "helo"\n',
    )
    code, _, err = build(cli, project, tmp_path / "cache", "hello", "--system", "x86_64-linux")
    assert code == ImageError.exit_code
    assert "command 'helo' is not in the image" in err and "did you mean hello" in err
    assert not (project.parent / "result" / "hello").exists()


def test_a_traversing_package_is_refused_and_the_previous_result_survives(
    cli: Cli, tmp_path: Path, make_repo: RepoFactory
) -> None:
    evil_members = [
        (tarfile.TarInfo("./usr/bin/evil"), b"x"),
        (tarfile.TarInfo("./../../etc/cron.d/evil"), b"x"),
    ]
    repo, url = make_repo(tools())
    for arch in ARCHES:
        repo.add_raw(
            "evil", "1.0", arch, raw_deb("Package: evil\nVersion: 1.0\n", tar_bytes(evil_members))
        )
    repo.publish()
    project = write_project(tmp_path / "p", url, repo.key.keyring, CONTAINERS)
    assert build(cli, project, tmp_path / "cache", "hello", "--system", "x86_64-linux")[0] == 0
    result = project.parent / "result" / "hello"
    before = index_digest(result)

    project.write_text(
        project.read_text().replace('package = "hello"', 'package = "hello"\npackages = ["evil"]')
    )
    code, _, err = build(cli, project, tmp_path / "cache", "hello", "--system", "x86_64-linux")
    assert code == PackageError.exit_code
    assert "evil" in err and ".." in err
    assert index_digest(result) == before
    assert [p.name for p in result.parent.iterdir()] == ["hello"]  # no temporary directory left


def test_resolve_json_is_the_documented_object(cli: Cli, project: Path, tmp_path: Path) -> None:
    code, out, _ = cli(
        "-f", project, "--cache-dir", tmp_path / "c", "resolve", "hello", "--all-systems", "--json"
    )
    assert code == 0
    data = json.loads(out)
    assert data["schema"] == "polyarch.resolve/v1"
    assert set(data["systems"]) == {"x86_64-linux", "aarch64-linux"}
    arm = {p["name"]: p for p in data["systems"]["aarch64-linux"]["packages"]}
    assert set(arm) == {"base-files", "bash", "coreutils", "libc6", "hello", "libhello1"}
    assert arm["libc6"]["architecture"] == "arm64" and arm["libc6"]["base"] is True
    assert arm["hello"]["base"] is False and arm["libhello1"]["required_by"] == ["hello"]
    assert set(arm["hello"]) == {
        "name",
        "version",
        "architecture",
        "size",
        "sha256",
        "filename",
        "base",
        "required_by",
        "source",
    }
    assert arm["hello"]["source"] == "main"
    [main] = data["systems"]["aarch64-linux"]["sources"]
    assert set(main) == {
        "name",
        "url",
        "suite",
        "codename",
        "priority",
        "security",
        "release_date",
        "release_file",
        "release_sha256",
    }
    assert (main["name"], main["suite"], main["priority"], main["security"]) == (
        "main",
        "bookworm",
        500,
        False,
    )


def test_resolve_download_fetches_and_verifies_every_package(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    code, out, _ = cli(
        "-f",
        project,
        "--cache-dir",
        tmp_path / "c",
        "resolve",
        "hello",
        "--system",
        "arm64",
        "--download",
    )
    assert code == 0 and "libhello1" in out
    debs = list((tmp_path / "c" / "debs").rglob("*"))
    assert sum(1 for d in debs if d.is_file()) == 6


def test_errors_have_their_own_exit_codes_and_one_line(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    code, _, err = cli("-f", project, "--cache-dir", tmp_path / "c", "resolve", "helo")
    assert code == UnknownContainerError.exit_code and "did you mean 'hello'" in err
    assert err.count("\n") == 1
    project.write_text(project.read_text().replace('package = "hello"', 'package = "helo"'))
    code, _, err = cli(
        "-f", project, "--cache-dir", tmp_path / "c", "resolve", "hello", "--system", "x86_64-linux"
    )
    assert code == ResolveError.exit_code and "did you mean 'hello'" in err


def test_a_package_missing_on_one_system_names_that_system(
    cli: Cli, tmp_path: Path, make_repo: RepoFactory
) -> None:
    repo, url = make_repo(
        [*tools(), DebSpec("amdonly", "1", "amd64", files={"/usr/bin/amdonly": b"x"})]
    )
    project = write_project(
        tmp_path / "p", url, repo.key.keyring, '[containers.a]\npackage = "amdonly"\n'
    )
    code, _, err = cli(
        "-f", project, "--cache-dir", tmp_path / "c", "resolve", "a", "--all-systems"
    )
    assert code == ResolveError.exit_code
    assert "not available for aarch64-linux (arm64); it exists for x86_64-linux" in err


def test_a_closed_pipe_ends_the_command_quietly(project: Path, tmp_path: Path) -> None:
    # `polyarch resolve --json | head`: the reader goes away before the output is written.
    import subprocess
    import sys

    for extra in (["--json"], []):
        reader, writer = os.pipe()
        os.close(reader)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "polyarch",
                "-f",
                str(project),
                "--cache-dir",
                str(tmp_path / "c"),
                "resolve",
                "hello",
                "--all-systems",
                *extra,
            ],
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
        os.close(writer)
        assert done.returncode == 141, done.stderr
        assert "Traceback" not in done.stderr and done.stderr == ""


def _files(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under ``root``: (inode, mtime_ns, sha256)."""
    return {
        str(p.relative_to(root)): (
            p.stat().st_ino,
            p.stat().st_mtime_ns,
            hashlib.sha256(p.read_bytes()).digest(),
        )
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_an_unchanged_rebuild_rewrites_no_output(cli: Cli, project: Path, tmp_path: Path) -> None:
    assert build(cli, project, tmp_path / "c", "hello", "--all-systems")[0] == 0
    result = project.parent / "result" / "hello"
    before = _files(result)
    assert build(cli, project, tmp_path / "c", "hello", "--all-systems")[0] == 0
    assert _files(result) == before  # same inodes and mtimes: nothing was written


@pytest.mark.parametrize(
    "tamper",
    ["docker-archive byte", "layout blob byte", "extra file", "missing blob", "index.json"],
)
def test_a_rebuild_replaces_outputs_edited_by_hand_even_with_their_old_mtime(
    cli: Cli, project: Path, tmp_path: Path, tamper: str
) -> None:
    assert build(cli, project, tmp_path / "c", "hello", "--all-systems")[0] == 0
    result = project.parent / "result" / "hello"
    expected = {name: digest for name, (_, _, digest) in _files(result).items()}
    layer_blob = max(
        (result / "oci" / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size
    )
    target = {
        "docker-archive byte": result / "x86_64-linux.tar",
        "layout blob byte": layer_blob,
        "extra file": result / "oci" / "blobs" / "sha256" / "notes.txt",
        "missing blob": layer_blob,
        "index.json": result / "oci" / "index.json",
    }[tamper]
    if tamper == "extra file":
        target.write_text("mine")
    elif tamper == "missing blob":
        target.unlink()
    else:
        stat = target.stat()
        os.chmod(target, 0o644)
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 1  # same size, and the old mtime below: only content tells
        target.write_bytes(bytes(data))
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert build(cli, project, tmp_path / "c", "hello", "--all-systems")[0] == 0
    assert {name: digest for name, (_, _, digest) in _files(result).items()} == expected
