"""Evidence attached on push to a real docker-registry on 127.0.0.1, and verified from it alone.

docker-registry 2.8 has no referrers API, so these exercise the tag schemes:
the ``sha256-<hex>`` referrers index and the ``sha256-<hex>.<kind>`` tags.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from attestproject import Project, new_project
from conftest import RepoFactory
from registry_server import REGISTRY, SKOPEO, RunningRegistry, run_registry, skopeo

from polyarch.attest.keys import load_public_key
from polyarch.platforms import parse_system
from polyarch.reference import parse_reference
from polyarch.registry.referrers import Artifact, ArtifactLayer, Subject, attach
from polyarch.workflows.attach import evidence_artifacts

pytestmark = [
    pytest.mark.registry,
    pytest.mark.skipif(
        REGISTRY is None or SKOPEO is None, reason="needs docker-registry and skopeo"
    ),
]

Cli = Callable[..., tuple[int, str, str]]
X86, ARM = parse_system("x86_64-linux"), parse_system("aarch64-linux")


@pytest.fixture
def project(tmp_path: Path, make_repo: RepoFactory) -> Project:
    return new_project(tmp_path, make_repo)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RunningRegistry]:
    with run_registry(tmp_path / "registry") as running:
        yield running


@pytest.fixture(autouse=True)
def keys(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POLYARCH_KEY_PASSWORD", raising=False)
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    for name in ("k", "other"):
        assert cli("keygen", "--out", tmp_path / name)[0] == 0


def push(cli: Cli, project: Project, tmp_path: Path, ref: str, *args: str | Path) -> dict[str, Any]:
    code, out, err = cli(
        "-q", "-f", project.config, "--cache-dir", tmp_path / "cache", "manifest", "hello",
        "--push", "--to", ref, "--out", project.config.parent / "result", "--json", *args,
    )  # fmt: skip
    assert code == 0, err
    value: dict[str, Any] = json.loads(out)
    return value


def raw(ref: str) -> dict[str, Any]:
    result = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}")
    assert result.returncode == 0, result.stderr
    value: dict[str, Any] = json.loads(result.stdout)
    return value


def verify(
    cli: Cli, ref: str, key: Path, cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str]:
    monkeypatch.chdir(cwd)  # no result/ here: the registry is all there is
    code, out, err = cli("verify", ref, "--key", key)
    return code, out + err


def test_pushed_evidence_verifies_from_the_registry_alone(
    cli: Cli,
    project: Project,
    tmp_path: Path,
    registry: RunningRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ref = f"{registry.host}/tools/hello"
    pushed = push(cli, project, tmp_path, ref, "--sign-key", tmp_path / "k.key")
    shutil.rmtree(project.config.parent / "result")
    (attached_x86, attached_arm) = pushed["pushes"][0]["attached"]
    assert {attached_x86["system"], attached_arm["system"]} == {"x86_64-linux", "aarch64-linux"}
    for attached in (attached_x86, attached_arm):
        hex_digest = attached["subject"].removeprefix("sha256:")
        assert attached["referrers_api"] is False
        assert sorted(attached["tags"]) == sorted(
            [f"sha256-{hex_digest}"]
            + [f"sha256-{hex_digest}.{k}" for k in ("spdx", "cdx", "provenance", "dsse")]
        )
        # The referrers index (OCI tag schema), as any OCI 1.1 client reads it.
        index = raw(f"{ref}:sha256-{hex_digest}")
        assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
        types = sorted(m["artifactType"] for m in index["manifests"])
        assert types == sorted([
            "application/spdx+json", "application/vnd.cyclonedx+json",
            "application/vnd.in-toto+json", "application/vnd.dsse.envelope.v1+json",
        ])  # fmt: skip
        for entry in index["manifests"]:
            artifact = raw(f"{ref}@{entry['digest']}")
            assert artifact["subject"]["digest"] == attached["subject"]
            assert artifact["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    code, text = verify(cli, f"{ref}:latest", tmp_path / "k.pub", tmp_path, monkeypatch)
    assert code == 0, text
    keyid = load_public_key(tmp_path / "k.pub").keyid
    assert text.count(keyid[:16]) == 2 and "problem" not in text


def test_a_tampered_sbom_blob_in_the_registry_fails_verification(
    cli: Cli,
    project: Project,
    tmp_path: Path,
    registry: RunningRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ref = f"{registry.host}/hello"
    pushed = push(cli, project, tmp_path, ref, "--sign-key", tmp_path / "k.key")
    subject = pushed["pushes"][0]["attached"][0]["subject"]
    artifact = raw(f"{ref}:{subject.replace(':', '-')}.spdx")
    blob = artifact["layers"][0]["digest"].removeprefix("sha256:")
    data = registry.root / "docker/registry/v2/blobs/sha256" / blob[:2] / blob / "data"
    document = json.loads(data.read_bytes())
    document["packages"] = document["packages"][:-1]
    data.write_text(json.dumps(document))
    code, text = verify(cli, f"{ref}:latest", tmp_path / "k.pub", tmp_path, monkeypatch)
    assert code == 17
    assert f"blob sha256:{blob} does not match its descriptor" in text


def test_a_signature_from_another_key_fails_verification(
    cli: Cli,
    project: Project,
    tmp_path: Path,
    registry: RunningRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ref = f"{registry.host}/hello"
    push(cli, project, tmp_path, ref, "--sign-key", tmp_path / "other.key")
    code, text = verify(cli, f"{ref}:latest", tmp_path / "k.pub", tmp_path, monkeypatch)
    other = load_public_key(tmp_path / "other.pub").keyid
    assert code == 17
    assert f"signed by another key ({other[:16]}), not by" in text


def test_an_sbom_for_another_digest_fails_verification(
    cli: Cli,
    project: Project,
    tmp_path: Path,
    registry: RunningRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ref = f"{registry.host}/hello"
    pushed = push(cli, project, tmp_path, ref, "--sign-key", tmp_path / "k.key", "--no-evidence")
    assert pushed["pushes"][0]["attached"] == []
    index = raw(f"{ref}:latest")
    x86 = next(m for m in index["manifests"] if m["platform"]["architecture"] == "amd64")
    arm_digest = next(
        m["digest"] for m in index["manifests"] if m["platform"]["architecture"] == "arm64"
    )
    # The arm64 image's signed evidence, attached to the amd64 image.
    sbom = project.config.parent / "result" / "hello" / "sbom"
    artifacts = evidence_artifacts(sbom, ARM, "1970-01-01T00:00:00Z")
    repository = parse_reference(f"http://{registry.host}/hello")
    attach(repository, Subject(x86["mediaType"], x86["digest"], x86["size"]), artifacts)
    code, text = verify(cli, f"{ref}:latest", tmp_path / "k.pub", tmp_path, monkeypatch)
    assert code == 17
    assert f"is about {arm_digest}, not this image ({x86['digest']})" in text
    assert "linux/arm64/v8: no signed SPDX statement found" in text


def test_a_second_push_replaces_its_own_referrers_and_keeps_other_kinds(
    cli: Cli, project: Project, tmp_path: Path, registry: RunningRegistry
) -> None:
    ref = f"{registry.host}/hello"
    pushed = push(cli, project, tmp_path, ref, "--sign-key", tmp_path / "k.key")
    attached = pushed["pushes"][0]["attached"][0]
    subject = attached["subject"]
    index = raw(f"{ref}:latest")
    entry = next(m for m in index["manifests"] if m["digest"] == subject)
    notes = Artifact("notes", "application/example", (ArtifactLayer("text/plain", b"hi"),))
    repository = parse_reference(f"http://{registry.host}/hello")
    (note_digest,) = attach(
        repository, Subject(entry["mediaType"], subject, entry["size"]), [notes]
    ).artifacts
    push(cli, project, tmp_path, ref, "--sign-key", tmp_path / "k.key", "--no-build")
    listed = raw(f"{ref}:{subject.replace(':', '-')}")["manifests"]
    kinds = sorted(m["annotations"]["dev.polyarch.evidence.kind"] for m in listed)
    assert kinds == ["cdx", "dsse", "notes", "provenance", "spdx"]
    assert note_digest in {m["digest"] for m in listed}
    # The SBOMs and provenance are the same bytes again; only the ECDSA signature is new.
    before = dict(zip(attached["tags"], attached["artifacts"], strict=False))
    again = {m["annotations"]["dev.polyarch.evidence.kind"]: m["digest"] for m in listed}
    for kind in ("spdx", "cdx", "provenance"):
        assert again[kind] == before[f"{subject.replace(':', '-')}.{kind}"]
    assert again["dsse"] != before[f"{subject.replace(':', '-')}.dsse"]
