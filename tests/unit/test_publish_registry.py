"""polyarch manifest end to end: a container built from a generated repository, pushed to a
real docker-registry on 127.0.0.1, and checked with skopeo."""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from conftest import RegistryStarter, RepoFactory, Tool, write_project
from debrepo import DebSpec, File
from registry_server import SKOPEO, RunningRegistry, htpasswd_line, skopeo

from polyarch.determinism import sha256_digest

pytestmark = pytest.mark.skipif(SKOPEO is None, reason="needs skopeo")

Cli = Callable[..., tuple[int, str, str]]
ARCHES = {"amd64": "x86_64-linux", "arm64": "aarch64-linux"}
PASSWORD = "Pa55-w0rd-that-must-never-show"
CI_VARIABLES = (
    "VERSION",
    "GITHUB_TOKEN",
    "GITHUB_ACTOR",
    "GITHUB_REPOSITORY",
    "GITHUB_REF_NAME",
    "GITHUB_REF_TYPE",
    "GITHUB_EVENT_PATH",
    "GITHUB_SERVER_URL",
    "CI_COMMIT_TAG",
    "CI_COMMIT_BRANCH",
    "CI_DEFAULT_BRANCH",
    "BRANCH_NAME",
    "SOURCE_DATE_EPOCH",
)
COPYRIGHT = (
    b"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
    b"Files: *\nCopyright: 2024 Test\nLicense: Expat or Apache-2.0\n"
)


def hello_packages() -> list[DebSpec]:
    return [
        DebSpec(
            "hello",
            "2.10-3",
            arch,
            depends="libc6 (>= 2.36)",
            files={
                "/usr/bin/hello": File(f"hello {arch}\n".encode(), 0o755),
                "/usr/share/doc/hello/copyright": COPYRIGHT,
            },
        )
        for arch in ARCHES
    ]


@pytest.fixture(autouse=True)
def no_ci_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The tests decide every CI variable; the host's docker config is not consulted."""
    for name in CI_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))


@pytest.fixture
def repo_url(make_repo: RepoFactory) -> tuple[str, Path]:
    repo, url = make_repo(hello_packages())
    return url, repo.key.keyring


def project(tmp_path: Path, repo_url: tuple[str, Path], extra: str = "") -> Path:
    url, keyring = repo_url
    return write_project(
        tmp_path / "project",
        url,
        keyring,
        f'[containers.hello]\npackage = "hello"\ncommand = "hello"\n{extra}\n',
    )


def manifest(cli: Cli, config: Path, tmp_path: Path, *args: str | Path) -> tuple[int, str, str]:
    return cli(
        "-q",
        "manifest",
        *args,
        "-f",
        config,
        "--cache-dir",
        tmp_path / "cache",
        "--out",
        tmp_path / "result",
    )


def inspect_raw(ref: str, *extra: str) -> tuple[bytes, dict[str, Any]]:
    result = skopeo("inspect", "--raw", "--tls-verify=false", *extra, f"docker://{ref}")
    assert result.returncode == 0, result.stderr
    raw = result.stdout.encode()
    return raw, json.loads(raw)


def list_tags(repository: str, *, evidence: bool = False) -> set[str]:
    """The repository's tags; those of attached evidence (``sha256-<hex>[.kind]``) only with
    ``evidence`` (test_attest_registry.py checks them)."""
    result = skopeo("list-tags", "--tls-verify=false", f"docker://{repository}")
    assert result.returncode == 0, result.stderr
    tags = set(json.loads(result.stdout)["Tags"])
    return tags if evidence else {t for t in tags if not t.startswith("sha256-")}


def pushes(out: str) -> list[dict[str, Any]]:
    value = json.loads(out)
    assert value["schema"] == "polyarch.manifest/v1"
    result: list[dict[str, Any]] = value["pushes"]
    return result


# -- polyarch manifest NAME --push --------------------------------------------------------------


def test_a_pushed_index_lists_both_platforms_and_each_copies_back_with_its_digest(
    cli: Cli, tmp_path: Path, repo_url: tuple[str, Path], registry: RunningRegistry
) -> None:
    config = project(tmp_path, repo_url)
    ref = f"{registry.host}/tools/hello"
    code, out, err = manifest(cli, config, tmp_path, "hello", "--push", "--to", ref, "--json")
    assert code == 0, err
    (push,) = pushes(out)
    raw, index = inspect_raw(f"{ref}:latest")
    assert sha256_digest(raw) == push["digest"] == json.loads(out)["digest"]
    by_arch = {m["platform"]["architecture"]: m["digest"] for m in index["manifests"]}
    assert set(by_arch) == set(ARCHES)
    assert index["annotations"]["org.opencontainers.image.licenses"] == "MIT OR Apache-2.0"
    assert index["annotations"]["org.opencontainers.image.version"] == "2.10-3"
    assert "org.opencontainers.image.revision" not in index["annotations"]  # not a git repo
    for arch, digest in by_arch.items():
        dest = tmp_path / f"copy-{arch}"
        copied = skopeo(
            "copy", "--src-tls-verify=false", "--override-arch", arch,
            f"docker://{ref}:latest", f"oci:{dest}:x",
        )  # fmt: skip
        assert copied.returncode == 0, copied.stderr
        top = json.loads((dest / "index.json").read_text())
        assert top["manifests"][0]["digest"] == digest
    # What was pushed is the layout polyarch wrote, byte for byte.
    layout = tmp_path / "result" / "hello" / "manifest"
    assert (layout / "blobs/sha256" / push["digest"].removeprefix("sha256:")).read_bytes() == raw


def test_a_second_push_uploads_no_blob_and_no_build_gives_the_same_digest(
    cli: Cli, tmp_path: Path, repo_url: tuple[str, Path], registry: RunningRegistry
) -> None:
    config = project(tmp_path, repo_url)
    ref = f"{registry.host}/hello"
    code, out, err = manifest(cli, config, tmp_path, "hello", "--push", "--to", ref, "--json")
    assert code == 0, err
    (first,) = pushes(out)
    assert first["blobs_uploaded"] > 0
    code, out, err = manifest(
        cli, config, tmp_path, "hello", "--push", "--to", ref, "--json", "--no-build",
        "--tag", "again",
    )  # fmt: skip
    assert code == 0, err
    (second,) = pushes(out)
    assert (second["blobs_uploaded"], second["bytes_uploaded"]) == (0, 0)
    assert second["blobs_skipped"] == first["blobs_uploaded"]
    assert second["digest"] == first["digest"]
    # The registry holds the index by digest: ping, one HEAD and the tag PUT, no blob HEADs.
    assert second["requests"] <= 5 < first["blobs_uploaded"]
    assert list_tags(ref) == {"latest", "again"}


def test_config_tags_and_automatic_tags_all_land_as_tags_of_one_index(
    cli: Cli, tmp_path: Path, repo_url: tuple[str, Path], registry: RunningRegistry
) -> None:
    config = project(tmp_path, repo_url, 'tags = ["stable"]')
    ref = f"{registry.host}/hello"
    code, out, err = manifest(
        cli, config, tmp_path, "hello", "--push", "--to", ref, "--tag", "extra",
        "--version", "v1.4.2", "--branch", "main", "--json",
    )  # fmt: skip
    assert code == 0, err
    expected = {"stable", "extra", "1.4.2", "1.4", "1", "main", "latest"}
    assert list_tags(ref) == expected
    (push,) = pushes(out)
    assert set(push["tags"]) == expected
    # Extra tags are manifest PUTs of the same index: one blob upload each, never.
    assert push["manifests_pushed"] == 2 + len(expected)
    digests = {sha256_digest(inspect_raw(f"{ref}:{t}")[0]) for t in expected}
    assert digests == {push["digest"]}
    index = inspect_raw(f"{ref}:latest")[1]
    assert index["annotations"]["org.opencontainers.image.version"] == "v1.4.2"


def test_a_pull_request_branch_pushes_a_sanitised_tag_and_not_latest(
    cli: Cli,
    tmp_path: Path,
    repo_url: tuple[str, Path],
    registry: RunningRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GITHUB_REF_NAME", "133/merge")
    config = project(tmp_path, repo_url)
    ref = f"{registry.host}/hello"
    code, _, err = manifest(cli, config, tmp_path, "hello", "--push", "--to", ref)
    assert code == 0, err
    assert list_tags(ref) == {"133-merge"}


def test_configured_registries_with_env_passwords_are_pushed_and_disabled_ones_skipped(
    cli: Cli,
    tmp_path: Path,
    repo_url: tuple[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    start_registry: RegistryStarter,
) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    secure = start_registry(tls=leaf, htpasswd=htpasswd_line("ci", PASSWORD))
    config = project(
        tmp_path,
        repo_url,
        f'[containers.hello.registries.main]\nrepo = "{secure.host}/team/{{name}}"\n'
        'username = "ci"\npassword = "$POLYARCH_TEST_PUSH_TOKEN"\n'
        '[containers.hello.registries.mirror]\nrepo = "127.0.0.1:1/never"\nenable = false\n',
    )
    monkeypatch.setenv("POLYARCH_TEST_PUSH_TOKEN", PASSWORD)
    code, out, err = manifest(
        cli, config, tmp_path, "hello", "--push", "--ca-bundle", bundle, "--json"
    )
    assert code == 0, err
    assert PASSWORD not in out + err
    (push,) = pushes(out)
    assert (push["registry"], push["repository"]) == ("main", f"{secure.host}/team/hello")
    assert secure.repo_blobs("team/hello")

    monkeypatch.setenv("POLYARCH_TEST_PUSH_TOKEN", "wrong-" + PASSWORD)
    code, out, err = manifest(
        cli, config, tmp_path, "hello", "--push", "--ca-bundle", bundle, "--no-build"
    )
    assert code == 31, err
    assert "registry main" in err and "'ci'" in err
    assert PASSWORD not in out + err

    monkeypatch.delenv("POLYARCH_TEST_PUSH_TOKEN")
    code, out, err = manifest(cli, config, tmp_path, "hello", "--push", "--no-build")
    assert code == 3
    assert "$POLYARCH_TEST_PUSH_TOKEN" in err


def test_password_stdin_with_username_logs_in_to_the_to_registry(
    cli: Cli,
    tmp_path: Path,
    repo_url: tuple[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    start_registry: RegistryStarter,
) -> None:
    import io
    import sys

    ca = trustme.CA()
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    secure = start_registry(tls=ca.issue_cert("127.0.0.1"), htpasswd=htpasswd_line("ci", PASSWORD))
    config = project(tmp_path, repo_url)
    stdin = io.TextIOWrapper(io.BytesIO(PASSWORD.encode() + b"\n"))
    monkeypatch.setattr(sys, "stdin", stdin)
    code, out, err = manifest(
        cli, config, tmp_path, "hello", "--push", "--to", f"{secure.host}/hello",
        "--username", "ci", "--password-stdin", "--ca-bundle", bundle,
    )  # fmt: skip
    assert code == 0, err
    assert PASSWORD not in out + err
    assert secure.repo_blobs("hello")


def test_docker_format_pushes_a_docker_manifest_list(
    cli: Cli, tmp_path: Path, repo_url: tuple[str, Path], registry: RunningRegistry
) -> None:
    config = project(tmp_path, repo_url)
    ref = f"{registry.host}/hello"
    code, out, err = manifest(
        cli, config, tmp_path, "hello", "--push", "--to", ref, "--format", "docker", "--json"
    )
    assert code == 0, err
    raw, index = inspect_raw(f"{ref}:latest")
    assert index["mediaType"] == "application/vnd.docker.distribution.manifest.list.v2+json"
    assert sha256_digest(raw) == pushes(out)[0]["digest"] != json.loads(out)["digest"]


def test_github_mode_targets_ghcr_with_the_container_name_and_hides_the_token(
    cli: Cli, tmp_path: Path, repo_url: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", PASSWORD)
    monkeypatch.setenv("GITHUB_ACTOR", "octocat")
    monkeypatch.setenv("GITHUB_REPOSITORY", "Octo-Org/containers")
    monkeypatch.setenv("GITHUB_REF_TYPE", "tag")
    monkeypatch.setenv("GITHUB_REF_NAME", "v2.0.1")
    config = project(tmp_path, repo_url)
    code, out, err = manifest(cli, config, tmp_path, "hello", "--dry-run", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["targets"] == [
        {"registry": "github", "repository": "ghcr.io/octo-org/hello", "username": "octocat"}
    ]
    assert plan["tags"] == ["2.0.1", "2.0", "2"]
    assert PASSWORD not in out + err
    assert not (tmp_path / "result").exists()  # a dry run builds nothing


def test_the_containers_auto_tags_switch_kinds_of_tags_off_in_the_plan(
    cli: Cli, tmp_path: Path, repo_url: tuple[str, Path]
) -> None:
    config = project(tmp_path, repo_url, "auto_tags = { major_minor = false, latest = false }")
    code, out, err = manifest(
        cli,
        config,
        tmp_path,
        "hello",
        "--dry-run",
        "--json",
        "--version",
        "v2.0.1",
        "--branch",
        "main",
        "--to",
        "127.0.0.1:5000/x/hello",
    )
    assert code == 0, err
    assert json.loads(out)["tags"] == ["2.0.1", "2", "main"]


def test_no_build_without_a_build_says_to_build(
    cli: Cli, tmp_path: Path, repo_url: tuple[str, Path]
) -> None:
    config = project(tmp_path, repo_url)
    code, _, err = manifest(cli, config, tmp_path, "hello", "--no-build")
    assert code == 16
    assert "not an OCI image layout" in err


# -- polyarch manifest --image-file ------------------------------------------------------------


@pytest.fixture
def built(cli: Cli, tmp_path: Path, repo_url: tuple[str, Path]) -> Path:
    """``result/hello`` with ``oci/`` and one docker-archive per system."""
    config = project(tmp_path, repo_url)
    code, _, err = cli(
        "-q", "build", "hello", "--all-systems", "-f", config,
        "--cache-dir", tmp_path / "cache", "--out", tmp_path / "built",
    )  # fmt: skip
    assert code == 0, err
    return tmp_path / "built" / "hello"


def test_an_index_of_docker_archives_pushes_and_inspects(
    cli: Cli, tmp_path: Path, built: Path, registry: RunningRegistry
) -> None:
    # One archive as polyarch wrote it, one as skopeo writes it (gzip'd, like Nix's).
    amd64 = built / "x86_64-linux.tar"
    by_skopeo = tmp_path / "arm64.tar"
    copied = skopeo(
        "copy", "--override-arch", "arm64", f"oci:{built / 'oci'}:latest",
        f"docker-archive:{by_skopeo}:hello:arm64",
    )  # fmt: skip
    assert copied.returncode == 0, copied.stderr
    arm64 = tmp_path / "arm64.tar.gz"
    arm64.write_bytes(gzip.compress(by_skopeo.read_bytes()))
    ref = f"{registry.host}/imported"
    code, out, err = manifest(
        cli, tmp_path / "none.toml", tmp_path, "--image-file", amd64, "--image-file", arm64,
        "--push", "--to", ref, "--tag", "v1", "--json",
    )  # fmt: skip
    assert code == 0, err
    value = json.loads(out)
    assert sorted(value["platforms"]) == ["linux/amd64", "linux/arm64/v8"]
    raw, index = inspect_raw(f"{ref}:v1")
    assert sha256_digest(raw) == value["digest"] == value["pushes"][0]["digest"]
    assert {m["platform"]["architecture"] for m in index["manifests"]} == set(ARCHES)
    assert index["annotations"]["org.opencontainers.image.title"] == "imported"
    for arch in ARCHES:
        one = skopeo("inspect", "--tls-verify=false", "--override-arch", arch, f"docker://{ref}:v1")
        assert one.returncode == 0, one.stderr
        assert json.loads(one.stdout)["Architecture"] == arch


def test_image_files_without_push_write_a_layout_and_print_its_digest(
    cli: Cli, tmp_path: Path, built: Path, run_skopeo: Tool
) -> None:
    code, out, err = manifest(
        cli, tmp_path / "none.toml", tmp_path,
        "--image-file", built / "x86_64-linux.tar", "--image-file", built / "aarch64-linux.tar",
    )  # fmt: skip
    assert code == 0, err
    layout = tmp_path / "result" / "manifest" / "manifest"
    top = json.loads((layout / "index.json").read_text())
    digest = top["manifests"][0]["digest"]
    assert digest in out and "linux/arm64/v8" in out
    raw = run_skopeo("inspect", "--raw", f"oci:{layout}:latest")
    assert sha256_digest(raw.encode()) == digest


def test_two_images_of_one_platform_are_an_error_naming_both_files(
    cli: Cli, tmp_path: Path, built: Path
) -> None:
    twin = tmp_path / "twin.tar"
    shutil.copy(built / "x86_64-linux.tar", twin)
    code, _, err = manifest(
        cli, tmp_path / "none.toml", tmp_path,
        "--image-file", built / "x86_64-linux.tar", "--image-file", twin,
    )  # fmt: skip
    assert code == 16
    assert "x86_64-linux.tar" in err and "twin.tar" in err and "linux/amd64" in err
    assert not (tmp_path / "result" / "manifest" / "manifest").exists()


def test_plain_http_to_a_host_that_is_not_loopback_is_refused(
    cli: Cli, tmp_path: Path, built: Path
) -> None:
    code, _, err = manifest(
        cli, tmp_path / "none.toml", tmp_path, "--image-file", built / "x86_64-linux.tar",
        "--push", "--to", "http://10.11.12.13:5000/x",
    )  # fmt: skip
    assert code == 30
    assert "refusing plain HTTP" in err


def test_name_and_image_files_together_are_a_usage_error(cli: Cli, tmp_path: Path) -> None:
    code, _, err = cli("manifest", "hello", "--image-file", tmp_path / "a.tar")
    assert code == 2
    assert "NAME or --image-file" in err
