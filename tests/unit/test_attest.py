"""SBOMs, provenance and signatures of builds from a generated, signed repository.

Every document is judged by an independent implementation (spdx-tools, the
CycloneDX schema, in-toto-attestation, securesystemslib); package lists are
compared with the images' own status.d and the .debs' SHA256s.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from attest_judges import (
    cdx_debs,
    cyclonedx_problems,
    image_status,
    provenance_problems,
    spdx_debs,
    spdx_problems,
    sslib_verify,
)
from attestproject import ARCHES, Project, load, new_project
from conftest import RepoFactory
from debrepo import TestRepo
from packageurl import PackageURL

from polyarch.attest.keys import load_public_key
from polyarch.workflows.stamp import STAMPS_DIR

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def project(tmp_path: Path, make_repo: RepoFactory) -> Project:
    return new_project(tmp_path, make_repo)


def run(cli: Cli, project: Project, cache: Path, *args: str | Path) -> tuple[int, str, str]:
    return cli("-f", project.config, "--cache-dir", cache, *args)


def build(cli: Cli, project: Project, cache: Path, *args: str | Path) -> None:
    out = project.config.parent / "result"
    code, _out, err = run(
        cli, project, cache, "build", "hello", "--all-systems", "--out", out, *args
    )
    assert code == 0, err


def deb_hashes(repo: TestRepo) -> dict[str, str]:
    """File name → SHA256 of every .deb in the repository's pool."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in (repo.root / "pool").rglob("*.deb")
    }


# -- the documents are valid --------------------------------------------------------------


def test_every_build_writes_sboms_and_provenance_the_independent_validators_accept(
    cli: Cli, project: Project, tmp_path: Path
) -> None:
    build(cli, project, tmp_path / "cache")
    sbom = project.result / "sbom"
    assert sorted(p.name for p in sbom.iterdir()) == sorted(
        f"{system}.{kind}.json"
        for system in ARCHES.values()
        for kind in ("spdx", "cdx", "provenance")
    )
    for system in ARCHES.values():
        assert spdx_problems(load(sbom / f"{system}.spdx.json")) == []
        assert cyclonedx_problems((sbom / f"{system}.cdx.json").read_text()) == []
        assert provenance_problems(load(sbom / f"{system}.provenance.json")) == []


def test_the_sboms_list_exactly_the_status_d_of_each_image_with_each_debs_sha256(
    cli: Cli, project: Project, tmp_path: Path
) -> None:
    build(cli, project, tmp_path / "cache")
    pool = deb_hashes(project.repo)
    for arch, system in ARCHES.items():
        status = image_status(project.result / f"{system}.tar")
        spdx = spdx_debs(load(project.result / "sbom" / f"{system}.spdx.json"))
        cdx = cdx_debs(load(project.result / "sbom" / f"{system}.cdx.json"))
        assert set(spdx) == set(cdx) == status
        assert len(status) == 8 and ("hello", "1:2.10-3", arch) in status
        for (name, version, _arch), sha256 in spdx.items():
            deb = f"{name}_{version.split(':')[-1]}_{arch}.deb"
            assert pool[deb] == sha256 == cdx[(name, version, arch)]


def test_each_package_has_its_source_supplier_licence_purl_and_dependencies(
    cli: Cli, project: Project, tmp_path: Path
) -> None:
    build(cli, project, tmp_path / "cache")
    document = load(project.result / "sbom" / "x86_64-linux.spdx.json")
    by_name = {p["name"]: p for p in document["packages"]}
    bash, hello, libstdcxx = by_name["bash"], by_name["hello"], by_name["libstdc++6"]
    assert bash["sourceInfo"] == "built from source package bash 5.2.15-2"
    assert hello["sourceInfo"] == "built from source package hello-src 1:2.10-3"
    assert bash["supplier"] == "Organization: Debian Test Team (team@lists.example.org)"
    assert hello["licenseDeclared"] == "MIT OR Apache-2.0"
    assert by_name["libc6"]["licenseDeclared"] == "LGPL-2.1-or-later AND GPL-2.0-or-later"
    # A licence SPDX does not list keeps its text; libstdc++6's doc dir is gcc-12-base's.
    assert bash["licenseDeclared"] == "GPL-3.0-or-later AND LicenseRef-bash--odd-permissive"
    refs = {r["licenseId"]: r["extractedText"] for r in document["hasExtractedLicensingInfos"]}
    assert refs["LicenseRef-bash--odd-permissive"] == "Do what you like.\n\nReally."
    assert libstdcxx["licenseDeclared"] == "GPL-3.0-or-later WITH GCC-exception-3.1"
    assert by_name["base-files"]["licenseDeclared"] == "NOASSERTION"  # not machine-readable
    # purls as packageurl-python writes them; SPDX ids escape what SPDX forbids.
    purl = libstdcxx["externalRefs"][0]["referenceLocator"]
    assert (
        purl
        == PackageURL(
            "deb", "debian", "libstdc++6", "12.2.0-14", {"arch": "amd64", "distro": "debian-12"}
        ).to_string()
    )
    assert libstdcxx["SPDXID"] == "SPDXRef-Package-deb-libstdc-2B-2B6"
    depends = {
        (r["spdxElementId"], r["relatedSpdxElement"])
        for r in document["relationships"]
        if r["relationshipType"] == "DEPENDS_ON"
    }
    assert ("SPDXRef-Package-deb-hello", "SPDXRef-Package-deb-mawk") in depends  # via Provides: awk
    assert ("SPDXRef-Package-deb-hello", "SPDXRef-Package-deb-libstdc-2B-2B6") in depends
    # The OS comes from base-files' os-release; the sources are its annotations.
    assert by_name["debian"]["versionInfo"] == "12"
    inrelease = hashlib.sha256((project.repo.dist / "InRelease").read_bytes()).hexdigest()
    (annotation,) = by_name["debian"]["annotations"]
    assert annotation["comment"] == (
        f"debian-archive {project.url} suite=bookworm codename=bookworm InRelease-sha256={inrelease}"
    )
    # 127.0.0.1 is no download location SPDX accepts: NOASSERTION, the URL is in the provenance.
    assert hello["downloadLocation"] == "NOASSERTION"
    provenance = load(project.result / "sbom" / "x86_64-linux.provenance.json")
    resolved = {
        d["uri"]: d["digest"]["sha256"]
        for d in provenance["predicate"]["buildDefinition"]["resolvedDependencies"]
    }
    assert resolved[f"{project.url}/dists/bookworm/InRelease"] == inrelease
    deb_url = f"{project.url}/pool/main/h/hello/hello_2.10-3_amd64.deb"
    assert resolved[deb_url] == deb_hashes(project.repo)["hello_2.10-3_amd64.deb"]
    assert provenance["predicate"]["buildDefinition"]["internalParameters"]["reproducible"] is True


def test_the_subject_of_every_document_is_its_system_images_manifest_digest(
    cli: Cli, project: Project, tmp_path: Path
) -> None:
    build(cli, project, tmp_path / "cache")
    blobs = project.result / "oci" / "blobs" / "sha256"
    index_entry = json.loads((project.result / "oci" / "index.json").read_text())["manifests"][0]
    index = json.loads((blobs / index_entry["digest"].removeprefix("sha256:")).read_bytes())
    for entry in index["manifests"]:
        system = ARCHES[entry["platform"]["architecture"]]
        hex_digest = entry["digest"].removeprefix("sha256:")
        spdx = load(project.result / "sbom" / f"{system}.spdx.json")
        cdx = load(project.result / "sbom" / f"{system}.cdx.json")
        provenance = load(project.result / "sbom" / f"{system}.provenance.json")
        image = next(p for p in spdx["packages"] if p["primaryPackagePurpose"] == "CONTAINER")
        assert image["checksums"] == [{"algorithm": "SHA256", "checksumValue": hex_digest}]
        assert spdx["documentNamespace"].endswith(f"/hello/{system}/sha256-{hex_digest}")
        assert cdx["metadata"]["component"]["hashes"] == [{"alg": "SHA-256", "content": hex_digest}]
        assert provenance["subject"] == [{"name": "hello", "digest": {"sha256": hex_digest}}]


# -- deterministic, and warm builds read no .deb ------------------------------------------


def test_evidence_is_byte_identical_from_two_empty_caches_and_warm_builds_read_no_deb(
    cli: Cli, project: Project, tmp_path: Path
) -> None:
    build(cli, project, tmp_path / "cache-a")
    first = {p.name: p.read_bytes() for p in (project.result / "sbom").iterdir()}
    build(cli, project, tmp_path / "cache-b")
    assert {p.name: p.read_bytes() for p in (project.result / "sbom").iterdir()} == first
    # Warm: every layer and every package's facts come from the cache.
    for deb in (tmp_path / "cache-b" / "debs").rglob("*"):
        if deb.is_file():
            deb.unlink()
    code, _out, err = run(cli, project, tmp_path / "cache-b", "build", "hello", "--all-systems",
                          "--out", project.config.parent / "result", "--offline")  # fmt: skip
    assert code == 41, err  # --offline needs a lock: lock, then build offline without any .deb
    code, _out, err = run(cli, project, tmp_path / "cache-b", "lock")
    assert code == 0, err
    build(cli, project, tmp_path / "cache-b", "--offline")
    after = {
        p.name: load(project.result / "sbom" / p.name) for p in (project.result / "sbom").iterdir()
    }
    for name, data in first.items():
        before = json.loads(data)
        if name.endswith(".spdx.json"):
            # Locked: the same packages and relationships; no InRelease was read.
            assert after[name]["packages"][2:] == before["packages"][2:]
            assert after[name]["relationships"] == before["relationships"]


def test_a_build_whose_facts_are_missing_reads_only_those_packages_again(
    cli: Cli, project: Project, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    build(cli, project, cache)
    first = (project.result / "sbom" / "x86_64-linux.spdx.json").read_bytes()
    facts = sorted(p for p in (cache / "facts").rglob("*") if p.is_file())
    assert len(facts) == 2 * 8  # one per .deb: 8 packages, 2 architectures
    facts[0].unlink()
    facts[1].write_bytes(b'{"format": 1, "name": "forged"}')  # invalid: read again
    # The outputs are up to date, so their stamp would answer without reading any facts.
    shutil.rmtree(cache / STAMPS_DIR)
    build(cli, project, cache)
    assert (project.result / "sbom" / "x86_64-linux.spdx.json").read_bytes() == first
    assert facts[0].is_file() and b"forged" not in facts[1].read_bytes()


def test_sbom_in_image_puts_a_valid_spdx_document_inside_and_is_off_by_default(
    cli: Cli, project: Project, tmp_path: Path
) -> None:
    import tarfile

    build(cli, project, tmp_path / "cache")
    plain = image_layers_files(project.result / "x86_64-linux.tar")
    assert not any(name.startswith("var/lib/db/sbom") for name in plain)
    config = project.config.read_text().replace(
        'command = "hello"', 'command = "hello"\nsbom_in_image = true'
    )
    project.config.write_text(config)
    build(cli, project, tmp_path / "cache")
    files = image_layers_files(project.result / "x86_64-linux.tar")
    inside = json.loads(files["var/lib/db/sbom/hello.spdx.json"])
    assert spdx_problems(inside) == []
    image = next(p for p in inside["packages"] if p["primaryPackagePurpose"] == "CONTAINER")
    assert "checksums" not in image and image["versionInfo"] == "1:2.10-3"
    outside = load(project.result / "sbom" / "x86_64-linux.spdx.json")
    assert spdx_debs(inside) == spdx_debs(outside)
    assert tarfile.is_tarfile(project.result / "x86_64-linux.tar")


def image_layers_files(archive: Path) -> dict[str, bytes]:
    import io
    import tarfile

    files: dict[str, bytes] = {}
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        for layer in manifest[0]["Layers"]:
            data = outer.extractfile(layer).read()  # type: ignore[union-attr]
            with tarfile.open(fileobj=io.BytesIO(data)) as inner:
                for member in inner:
                    if member.isfile():
                        files[member.name.removeprefix("./")] = inner.extractfile(member).read()  # type: ignore[union-attr]
    return files


# -- keys, signatures, verify ---------------------------------------------------------------


def test_keygen_writes_a_0600_private_key_it_never_prints_and_refuses_to_overwrite(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POLYARCH_KEY_PASSWORD", raising=False)
    code, out, err = cli("keygen", "--out", tmp_path / "k")
    assert code == 0, err
    private = (tmp_path / "k.key").read_bytes()
    assert stat.S_IMODE(os.stat(tmp_path / "k.key").st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in private and private.decode() not in out + err
    body = private.decode().splitlines()[1]
    assert body not in out and body not in err
    keyid = load_public_key(tmp_path / "k.pub").keyid
    assert keyid in out
    code, _out, err = cli("keygen", "--out", tmp_path / "k")
    assert code == 18 and "already exists" in err
    assert (tmp_path / "k.key").read_bytes() == private


def test_an_encrypted_key_needs_its_password_and_a_wrong_one_is_a_clear_error(
    cli: Cli, project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLYARCH_KEY_PASSWORD", "correct horse")
    code, _out, err = cli("keygen", "--type", "ed25519", "--out", tmp_path / "k")
    assert code == 0, err
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "k.key").read_bytes()
    monkeypatch.delenv("POLYARCH_KEY_PASSWORD")
    code, _out, err = run(
        cli, project, tmp_path / "cache", "build", "hello", "--sign-key", tmp_path / "k.key"
    )
    assert code == 18 and "is encrypted" in err and "POLYARCH_KEY_PASSWORD" in err
    assert not project.result.exists()  # refused before building anything
    monkeypatch.setenv("POLYARCH_KEY_PASSWORD", "wrong")
    code, _out, err = run(
        cli, project, tmp_path / "cache", "build", "hello", "--sign-key", tmp_path / "k.key"
    )
    assert code == 18 and "wrong password" in err
    code, _out, err = run(
        cli, project, tmp_path / "cache", "build", "hello", "--sign-key", tmp_path / "k.pub"
    )
    assert code == 18 and "public key" in err


@pytest.mark.parametrize("kind", ["ecdsa-p256", "ed25519"])
def test_signed_statements_verify_with_securesystemslib_and_with_polyarch(
    cli: Cli, project: Project, tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POLYARCH_KEY_PASSWORD", raising=False)
    assert cli("keygen", "--type", kind, "--out", tmp_path / "k")[0] == 0
    build(cli, project, tmp_path / "cache", "--sign-key", tmp_path / "k.key")
    public = (tmp_path / "k.pub").read_bytes()
    keyid = load_public_key(tmp_path / "k.pub").keyid
    for system in ARCHES.values():
        for kind_name, predicate in (
            ("spdx", "https://spdx.dev/Document"),
            ("cdx", "https://cyclonedx.org/bom"),
            ("provenance", "https://slsa.dev/provenance/v1"),
        ):
            envelope = (project.result / "sbom" / f"{system}.{kind_name}.dsse.json").read_bytes()
            statement = sslib_verify(envelope, public, keyid)
            assert statement["predicateType"] == predicate
            plain = load(project.result / "sbom" / f"{system}.{kind_name}.json")
            assert (statement if kind_name == "provenance" else statement["predicate"]) == plain
    code, out, err = cli("verify", project.result, "--key", tmp_path / "k.pub", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["ok"] is True and [i["signed_by"] for i in report["images"]] == [[keyid]] * 2
    assert all(i["packages"] == 8 for i in report["images"])


@pytest.fixture
def signed(cli: Cli, project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.delenv("POLYARCH_KEY_PASSWORD", raising=False)
    for name in ("k", "other"):
        assert cli("keygen", "--out", tmp_path / name)[0] == 0
    build(cli, project, tmp_path / "cache", "--sign-key", tmp_path / "k.key")
    return project


def verify(cli: Cli, target: Path | str, key: Path) -> tuple[int, str]:
    code, out, err = cli("verify", target, "--key", key)
    return code, out + err


def test_verify_names_a_changed_sbom_file(cli: Cli, signed: Project, tmp_path: Path) -> None:
    path = signed.result / "sbom" / "x86_64-linux.cdx.json"
    document = load(path)
    document["components"] = document["components"][:-1]
    path.write_text(json.dumps(document))
    code, text = verify(cli, signed.result, tmp_path / "k.pub")
    assert code == 17
    assert f"{path} differs from the signed CycloneDX statement" in text


def test_verify_names_a_signature_from_another_key(
    cli: Cli, signed: Project, tmp_path: Path
) -> None:
    code, text = verify(cli, signed.result, tmp_path / "other.pub")
    other = load_public_key(tmp_path / "other.pub").keyid
    mine = load_public_key(tmp_path / "k.pub").keyid
    assert code == 17
    assert f"signed by another key ({mine[:16]}), not by {other[:16]}" in text


def test_verify_names_an_sbom_made_for_another_digest(
    cli: Cli, signed: Project, tmp_path: Path
) -> None:
    sbom = signed.result / "sbom"
    # The arm64 statements, signed by the right key, put beside the amd64 image.
    for kind in ("spdx", "cdx", "provenance"):
        for suffix in (".json", ".dsse.json"):
            (sbom / f"x86_64-linux.{kind}{suffix}").write_bytes(
                (sbom / f"aarch64-linux.{kind}{suffix}").read_bytes()
            )
    code, text = verify(cli, signed.result, tmp_path / "k.pub")
    arm = load(sbom / "aarch64-linux.provenance.json")["subject"][0]["digest"]["sha256"]
    assert code == 17
    assert (
        f"SPDX statement {sbom}/x86_64-linux.spdx.dsse.json is about sha256:{arm}, not this image"
        in text
    )


def test_sign_refuses_evidence_that_does_not_match_the_image(
    cli: Cli, project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POLYARCH_KEY_PASSWORD", raising=False)
    assert cli("keygen", "--out", tmp_path / "k")[0] == 0
    build(cli, project, tmp_path / "cache")
    path = project.result / "sbom" / "x86_64-linux.spdx.json"
    document = load(path)
    document["packages"] = [p for p in document["packages"] if p["name"] != "mawk"]
    path.write_text(json.dumps(document))
    code, _out, err = cli("sign", project.result, "--key", tmp_path / "k.key")
    assert code == 17
    assert "the SPDX SBOM lacks packages the image's status.d has: mawk 1.3.4-1 (amd64)" in err
    assert not list((project.result / "sbom").glob("*.dsse.json"))
    # The untouched build signs, and then verifies.
    build(cli, project, tmp_path / "cache")
    code, _out, err = cli("sign", project.result, "--key", tmp_path / "k.key")
    assert code == 0, err
    assert verify(cli, project.result, tmp_path / "k.pub")[0] == 0


def test_verify_without_signatures_says_how_to_sign(
    cli: Cli, project: Project, tmp_path: Path
) -> None:
    assert cli("keygen", "--out", tmp_path / "k")[0] == 0
    build(cli, project, tmp_path / "cache")
    code, text = verify(cli, project.result, tmp_path / "k.pub")
    assert code == 17 and "no signed SPDX statement found (sign with polyarch sign" in text


def test_cache_verify_reports_damaged_facts_and_repair_removes_them(
    cli: Cli, project: Project, tmp_path: Path
) -> None:
    from polyarch.cache import Cache
    from polyarch.workflows.cache import verify_cache

    build(cli, project, tmp_path / "cache")
    cache = Cache(tmp_path / "cache")
    key, path = next(iter(cache.entries("facts")))  # type: ignore[arg-type]
    path.write_bytes(b"{not json")
    report = verify_cache(cache, repair=True)
    assert [(p.kind, p.key, p.reason) for p in report.problems] == [
        ("facts", key, "not package facts (of this version)")
    ]
    assert not path.exists()
