"""Several signed sources: each verified with its own key, chosen between as apt chooses.

Every repository here is a real signed one (dpkg-deb, gpg) served on 127.0.0.1,
each with its own key unless a test says otherwise.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cacheproject import build
from conftest import RepoFactory, write_project
from debrepo import DebSpec, File, TestKey, TestRepo

from polyarch.cache import Cache
from polyarch.config import load_config
from polyarch.errors import IntegrityError, ResolveError, SignatureError
from polyarch.platforms import parse_system
from polyarch.workflows.resolve import Session, resolve_container

Cli = Callable[..., tuple[int, str, str]]
AMD64, ARM64 = parse_system("x86_64-linux"), parse_system("aarch64-linux")
ARCHES = ("amd64", "arm64")
TOOL = '[containers.tool]\npackage = "tool"\n'


def libc(version: str, arch: str) -> DebSpec:
    return DebSpec(
        "libc6", version, arch, multi_arch="same", files={"/lib/libc.so.6": version.encode()}
    )


def tool(version: str = "1.0", depends: str = "libc6 (>= 2.36)", arch: str = "amd64") -> DebSpec:
    return DebSpec(
        "tool",
        version,
        arch,
        depends=depends,
        files={"/usr/bin/tool": File(f"#!/bin/sh\necho {version}\n".encode(), 0o755)},
    )


def table(name: str, url: str, keyring: Path, suite: str | None = None, **extra: object) -> str:
    """A ``[sources.NAME]`` table."""
    lines = [f"[sources.{name}]", f'url = "{url}"', f'keyring = "{keyring}"']
    if suite is not None:
        lines.append(f'suite = "{suite}"')
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n\n"


def main_repo(make_repo: RepoFactory, *extra: DebSpec) -> tuple[TestRepo, str]:
    return make_repo([*(tool(arch=a) for a in ARCHES), *extra], arches=ARCHES)


def security_repo(
    make_repo: RepoFactory, key: TestKey, specs: list[DebSpec], **kwargs: object
) -> tuple[TestRepo, str]:
    """A security archive: suite bookworm-security, .debs under pool/updates/ as Debian has them."""
    kwargs.setdefault("arches", ARCHES)
    return make_repo(
        specs, with_base=False, key=key, suite="bookworm-security", pool="pool/updates", **kwargs
    )


def project(
    tmp_path: Path, main: tuple[TestRepo, str], sources: str, containers: str = TOOL
) -> Path:
    repo, url = main
    return write_project(tmp_path / "project", url, repo.key.keyring, containers, sources=sources)


def resolved(path: Path, cache: Path, name: str = "tool") -> dict[str, dict[str, tuple[str, str]]]:
    """System → package → (version, source) of a fresh resolution."""
    config = load_config(path)
    session = Session(config=config, cache=Cache(cache))
    try:
        result = resolve_container(session, config.container(name), (AMD64, ARM64))
    finally:
        session.close()
    return {
        s.name: {p.record.name: (p.record.version, p.source) for p in r.packages}
        for s, r in result.items()
    }


NO_UPDATES = "[sources.updates]\nenable = false\n\n"


# --- each source on its own chain ------------------------------------------------------------


def test_two_sources_with_different_keys_give_the_security_fix(
    make_repo: RepoFactory, other_key: TestKey, tmp_path: Path
) -> None:
    main = main_repo(make_repo)
    security, security_url = security_repo(
        make_repo, other_key, [libc("2.36-9+deb12u1", a) for a in ARCHES]
    )
    path = project(tmp_path, main, NO_UPDATES + table("security", security_url, other_key.keyring))
    for system in resolved(path, tmp_path / "cache").values():
        assert system["libc6"] == ("2.36-9+deb12u1", "security")
        assert system["bash"] == ("5.2.15-2", "main")
    # The build downloads from both archives, each .deb checked against its own index.
    result = build(path, tmp_path / "cache", tmp_path / "out", name="tool")
    by_name = {p.record.name: p for p in result.systems[0].resolution.packages}
    assert by_name["libc6"].record.filename.startswith("pool/updates/main/")
    assert [s.name for s in result.systems[0].resolution.sources] == ["main", "security"]
    # The provenance cites each archive's InRelease and each .deb at its own archive.
    provenance = json.loads((result.path / "sbom" / "x86_64-linux.provenance.json").read_text())
    cited = {
        d["uri"]: d["digest"]["sha256"]
        for d in provenance["predicate"]["buildDefinition"]["resolvedDependencies"]
    }
    inrelease = (security.dist / "InRelease").read_bytes()
    assert cited[f"{security_url}/dists/bookworm-security/InRelease"] == (
        hashlib.sha256(inrelease).hexdigest()
    )
    libc6 = by_name["libc6"].record
    assert cited[f"{security_url}/{libc6.filename}"] == libc6.sha256
    bash = by_name["bash"].record
    assert cited[f"{main[1]}/{bash.filename}"] == bash.sha256
    parameters = provenance["predicate"]["buildDefinition"]["externalParameters"]
    assert [s["name"] for s in parameters["sources"]] == ["main", "security"]


def test_three_sources_with_three_keys_each_verified_with_its_own(
    make_repo: RepoFactory, other_key: TestKey, third_key: TestKey, tmp_path: Path
) -> None:
    main = main_repo(make_repo)
    _, updates_url = make_repo(
        [libc("2.36-9+deb12u1", a) for a in ARCHES],
        with_base=False,
        key=other_key,
        suite="bookworm-updates",
    )
    _, vendor_url = make_repo(
        [DebSpec("vendor-tool", "3.0", a, depends="libc6") for a in ARCHES],
        with_base=False,
        key=third_key,
        suite="stable",
    )
    sources = (
        table("updates", updates_url, other_key.keyring)
        + "[sources.security]\nenable = false\n\n"
        + table("vendor", vendor_url, third_key.keyring, suite="stable")
    )
    containers = '[containers.tool]\npackage = "tool"\npackages = ["vendor-tool"]\n'
    systems = resolved(project(tmp_path, main, sources, containers), tmp_path / "cache")
    assert systems["x86_64-linux"]["libc6"] == ("2.36-9+deb12u1", "updates")
    assert systems["aarch64-linux"]["vendor-tool"] == ("3.0", "vendor")
    assert systems["aarch64-linux"]["tool"] == ("1.0", "main")


def test_one_sources_tampered_inrelease_is_refused_naming_that_source(
    make_repo: RepoFactory, other_key: TestKey, tmp_path: Path
) -> None:
    main = main_repo(make_repo)
    security, url = security_repo(make_repo, other_key, [libc("2.36-9+deb12u1", a) for a in ARCHES])
    inrelease = security.dist / "InRelease"
    inrelease.write_bytes(inrelease.read_bytes().replace(b"Date: Sat", b"Date: Sun"))
    path = project(tmp_path, main, NO_UPDATES + table("security", url, other_key.keyring))
    with pytest.raises(SignatureError) as caught:
        resolved(path, tmp_path / "cache")
    assert caught.value.message.startswith("source 'security': ")
    assert "bookworm-security/InRelease" in caught.value.message
    assert "modified after signing" in caught.value.message


def test_a_third_party_key_is_not_in_the_main_keyring(
    make_repo: RepoFactory, third_key: TestKey, tmp_path: Path
) -> None:
    main = main_repo(make_repo)
    _, vendor_url = make_repo(
        [DebSpec("vendor-tool", "3.0", a) for a in ARCHES],
        with_base=False,
        key=third_key,
        suite="stable",
    )
    containers = '[containers.tool]\npackage = "tool"\npackages = ["vendor-tool"]\n'
    off = NO_UPDATES + "[sources.security]\nenable = false\n\n"
    # Left to the main keyring (no keyring of its own), the vendor's InRelease is refused.
    without_key = off + f'[sources.vendor]\nurl = "{vendor_url}"\nsuite = "stable"\n\n'
    with pytest.raises(SignatureError) as caught:
        resolved(project(tmp_path, main, without_key, containers), tmp_path / "cache")
    assert caught.value.message.startswith("source 'vendor': ")
    assert f"not signed by a key in {main[0].key.keyring}" in caught.value.message
    assert "[sources.vendor] keyring" in str(caught.value.hint)
    main_keyring = main[0].key.keyring.read_bytes()
    assert third_key.keyring.read_bytes() not in main_keyring
    # With its own keyring it is read, and the main source is still checked with the main key.
    with_key = off + table("vendor", vendor_url, third_key.keyring, suite="stable")
    systems = resolved(project(tmp_path, main, with_key, containers), tmp_path / "cache")
    assert systems["x86_64-linux"]["vendor-tool"] == ("3.0", "vendor")


# --- apt's choice ----------------------------------------------------------------------------


def test_the_highest_version_wins_among_sources_of_equal_priority(
    make_repo: RepoFactory, other_key: TestKey, tmp_path: Path
) -> None:
    # main has 2.36-9 (base) and a point-release 2.36-9+deb12u3; security has +deb12u2.
    main = main_repo(make_repo, *(libc("2.36-9+deb12u3", a) for a in ARCHES))
    _, url = security_repo(make_repo, other_key, [libc("2.36-9+deb12u2", a) for a in ARCHES])
    path = project(tmp_path, main, NO_UPDATES + table("security", url, other_key.keyring))
    assert resolved(path, tmp_path / "cache")["x86_64-linux"]["libc6"] == ("2.36-9+deb12u3", "main")


@pytest.mark.parametrize(
    ("fields", "priority"),
    [
        ({"NotAutomatic": "yes", "ButAutomaticUpgrades": "yes"}, None),  # backports: 100
        ({"NotAutomatic": "yes"}, None),  # experimental: 1
        ({}, 100),  # configured
    ],
    ids=["backports-release", "not-automatic-release", "configured-priority"],
)
def test_a_lower_priority_source_serves_only_names_the_others_lack(
    make_repo: RepoFactory,
    other_key: TestKey,
    tmp_path: Path,
    fields: dict[str, str],
    priority: int | None,
) -> None:
    main = main_repo(make_repo)
    _, url = make_repo(
        [
            *(libc("2.38-1~bpo12+1", a) for a in ARCHES),
            *(DebSpec("only-there", "1.0", a) for a in ARCHES),
        ],
        with_base=False,
        key=other_key,
        suite="bookworm-backports",
        release_fields=fields,
    )
    extra = {} if priority is None else {"priority": priority}
    sources = (
        NO_UPDATES
        + "[sources.security]\nenable = false\n\n"
        + table("backports", url, other_key.keyring, suite="bookworm-backports", **extra)
    )
    containers = '[containers.tool]\npackage = "tool"\npackages = ["only-there"]\n'
    systems = resolved(project(tmp_path, main, sources, containers), tmp_path / "cache")
    assert systems["x86_64-linux"]["libc6"] == ("2.36-9", "main")
    assert systems["x86_64-linux"]["only-there"] == ("1.0", "backports")


def test_a_negative_priority_source_is_used_only_when_pinned(
    make_repo: RepoFactory, other_key: TestKey, tmp_path: Path
) -> None:
    main = main_repo(make_repo)
    _, url = make_repo(
        [DebSpec("only-there", "1.0", a) for a in ARCHES],
        with_base=False,
        key=other_key,
        suite="sid",
    )
    sources = NO_UPDATES + "[sources.security]\nenable = false\n\n"
    sources += table("unstable", url, other_key.keyring, suite="sid", priority=-1)
    unpinned = '[containers.tool]\npackage = "tool"\npackages = ["only-there"]\n'
    with pytest.raises(ResolveError, match="only-there"):
        resolved(project(tmp_path, main, sources, unpinned), tmp_path / "cache")
    pinned = '[containers.tool]\npackage = "tool"\npackages = ["only-there/sid"]\n'
    systems = resolved(project(tmp_path, main, sources, pinned), tmp_path / "cache")
    assert systems["aarch64-linux"]["only-there"] == ("1.0", "unstable")


def test_backports_are_used_only_when_a_container_asks_for_them(
    make_repo: RepoFactory, other_key: TestKey, tmp_path: Path
) -> None:
    main = main_repo(make_repo, *(DebSpec("libfoo1", "1.0-1", a) for a in ARCHES))
    backports = [
        # A newer tool that needs a newer libfoo1, both only in backports.
        *(tool("2.0~bpo12+1", "libc6 (>= 2.36), libfoo1 (>= 2.0)", a) for a in ARCHES),
        *(DebSpec("libfoo1", "2.0-1~bpo12+1", a) for a in ARCHES),
        *(libc("2.38-1~bpo12+1", a) for a in ARCHES),
    ]
    _, url = make_repo(
        backports,
        with_base=False,
        key=other_key,
        suite="bookworm-backports",
        release_fields={"NotAutomatic": "yes", "ButAutomaticUpgrades": "yes"},
    )
    sources = NO_UPDATES + "[sources.security]\nenable = false\n\n"
    sources += table("backports", url, other_key.keyring, suite="bookworm-backports")
    plain = resolved(project(tmp_path, main, sources), tmp_path / "cache")
    assert plain["x86_64-linux"]["tool"] == ("1.0", "main")
    assert plain["x86_64-linux"]["libc6"] == ("2.36-9", "main")
    # tool/bookworm-backports: the tool from there, and (as apt's pkg/release does) the
    # libfoo1 it needs, which the usual candidate cannot satisfy; libc6 (>= 2.36) can.
    asked = '[containers.tool]\npackage = "tool/bookworm-backports"\n'
    systems = resolved(project(tmp_path, main, sources, asked), tmp_path / "cache")
    assert systems["x86_64-linux"]["tool"] == ("2.0~bpo12+1", "backports")
    assert systems["x86_64-linux"]["libfoo1"] == ("2.0-1~bpo12+1", "backports")
    assert systems["x86_64-linux"]["libc6"] == ("2.36-9", "main")
    # A pin of a dependency alone: libc6 from backports, the tool from main.
    pinned = '[containers.tool]\npackage = "tool"\npins = { libc6 = "backports" }\n'
    systems = resolved(project(tmp_path, main, sources, pinned), tmp_path / "cache")
    assert systems["aarch64-linux"]["tool"] == ("1.0", "main")
    assert systems["aarch64-linux"]["libc6"] == ("2.38-1~bpo12+1", "backports")
    # The command defaults to the package name without its release.
    assert load_config(tmp_path / "project" / "containers.toml").container("tool").command == "tool"


def test_a_pinned_package_missing_from_its_source_is_named(
    make_repo: RepoFactory, other_key: TestKey, tmp_path: Path
) -> None:
    main = main_repo(make_repo)
    _, url = make_repo([], with_base=False, key=other_key, suite="bookworm-backports")
    sources = NO_UPDATES + "[sources.security]\nenable = false\n\n"
    sources += table("backports", url, other_key.keyring, suite="bookworm-backports")
    asked = '[containers.tool]\npackage = "tool/bookworm-backports"\n'
    with pytest.raises(ResolveError, match=r"tool is pinned to source 'backports'.*1\.0 in main"):
        resolved(project(tmp_path, main, sources, asked), tmp_path / "cache")


def test_the_same_version_with_different_hashes_is_an_error_naming_both_sources(
    make_repo: RepoFactory, other_key: TestKey, tmp_path: Path
) -> None:
    main = main_repo(make_repo, *(libc("2.36-9+deb12u1", a) for a in ARCHES))
    rebuilt = [
        DebSpec("libc6", "2.36-9+deb12u1", a, multi_arch="same", files={"/lib/libc.so.6": b"other"})
        for a in ARCHES
    ]
    _, url = security_repo(make_repo, other_key, rebuilt)
    path = project(tmp_path, main, NO_UPDATES + table("security", url, other_key.keyring))
    with pytest.raises(IntegrityError) as caught:
        resolved(path, tmp_path / "cache")
    message = str(caught.value)
    assert "libc6 2.36-9+deb12u1" in message
    assert "'main'" in message and "'security'" in message
    assert 'pins = { libc6 = "main" }' in message
    # Pinned to one of them, it is no longer ambiguous.
    pinned = '[containers.tool]\npackage = "tool"\npins = { libc6 = "security" }\n'
    path = project(tmp_path, main, NO_UPDATES + table("security", url, other_key.keyring), pinned)
    assert resolved(path, tmp_path / "cache")["x86_64-linux"]["libc6"][1] == "security"


def test_an_identical_copy_in_two_sources_is_one_version_read_from_the_first(
    make_repo: RepoFactory, other_key: TestKey, tmp_path: Path
) -> None:
    main = main_repo(make_repo)
    security, url = security_repo(make_repo, other_key, [])
    for arch in ARCHES:
        deb = next((main[0].root / "pool/main/l/libc6").glob(f"*_{arch}.deb"))
        security.add_raw("libc6", "2.36-9", arch, deb.read_bytes(), extra="Multi-Arch: same\n")
    security.publish()
    path = project(tmp_path, main, NO_UPDATES + table("security", url, other_key.keyring))
    assert resolved(path, tmp_path / "cache")["x86_64-linux"]["libc6"] == ("2.36-9", "main")


def test_a_source_without_an_architecture_is_skipped_for_it(
    make_repo: RepoFactory, other_key: TestKey, tmp_path: Path
) -> None:
    # Like bookworm-security, which carries no s390x: amd64 only here.
    main = main_repo(make_repo)
    _, url = security_repo(
        make_repo, other_key, [libc("2.36-9+deb12u1", "amd64")], arches=("amd64",)
    )
    path = project(tmp_path, main, NO_UPDATES + table("security", url, other_key.keyring))
    systems = resolved(path, tmp_path / "cache")
    assert systems["x86_64-linux"]["libc6"] == ("2.36-9+deb12u1", "security")
    assert systems["aarch64-linux"]["libc6"] == ("2.36-9", "main")


def test_resolve_shows_each_packages_source_in_json_and_table(
    cli: Cli, make_repo: RepoFactory, other_key: TestKey, tmp_path: Path
) -> None:
    main = main_repo(make_repo)
    security, url = security_repo(make_repo, other_key, [libc("2.36-9+deb12u1", a) for a in ARCHES])
    path = project(tmp_path, main, NO_UPDATES + table("security", url, other_key.keyring))
    code, out, err = cli(
        "-f", path, "--cache-dir", tmp_path / "c", "resolve", "tool", "--all-systems", "--json"
    )
    assert code == 0, err
    data = json.loads(out)["systems"]["aarch64-linux"]
    packages = {p["name"]: p for p in data["packages"]}
    assert (packages["libc6"]["source"], packages["bash"]["source"]) == ("security", "main")
    sources = {s["name"]: s for s in data["sources"]}
    assert sources["security"]["url"] == url
    assert sources["security"]["codename"] == "bookworm-security"
    assert sources["security"]["security"] is True and sources["main"]["security"] is False
    inrelease = (security.dist / "InRelease").read_bytes()
    assert sources["security"]["release_sha256"] == hashlib.sha256(inrelease).hexdigest()
    code, out, err = cli(
        "-f", path, "--cache-dir", tmp_path / "c", "resolve", "tool", "--system", "arm64"
    )
    assert code == 0, err
    row = next(line for line in out.splitlines() if "libc6" in line)
    assert "security" in row and "2.36-9+deb12u1" in row
