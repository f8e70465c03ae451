"""The chain of trust of a Debian archive: signed Release, then index hashes."""

from __future__ import annotations

import copy
import gzip
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import RepoFactory, base_packages
from debrepo import DebSpec, TestKey, TestRepo, flaky_serve, serve

from polyarch import http
from polyarch.cache import Cache, Kind
from polyarch.debian.repository import Repository
from polyarch.debian.sources import Source
from polyarch.errors import IntegrityError, MirrorError, SignatureError
from polyarch.retry import RetryPolicy


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "POLICY", RetryPolicy(backoff=0.001))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, test_key: TestKey) -> TestRepo:
    """The packages are built once per module; each test publishes and serves a copy."""
    repo = TestRepo(tmp_path_factory.mktemp("template"), test_key)
    for arch in repo.arches:
        for spec in base_packages(arch):
            repo.add(spec)
    repo.add(DebSpec("hello", arch="amd64"))
    return repo


@pytest.fixture
def make_repo(template: TestRepo, tmp_path: Path) -> Iterator[RepoFactory]:
    """Like conftest's ``make_repo`` for the template's packages: ``(key=, **publish)``."""
    with ExitStack() as stack:

        def factory(*, key: TestKey | None = None, **publish: object) -> tuple[TestRepo, str]:
            repo = copy.copy(template)
            repo.root = Path(tempfile.mkdtemp(dir=tmp_path, prefix="repo"))
            repo.key = key or template.key
            shutil.copytree(template.root / "pool", repo.root / "pool")
            repo.publish(**publish)  # type: ignore[arg-type]
            return repo, stack.enter_context(serve(repo.root))

        yield factory


def source(url: str, key: TestKey, **fields: object) -> Source:
    return Source(url=url, suite="bookworm", components=("main",), keyring=key.keyring, **fields)  # type: ignore[arg-type]


def repository(url: str, key: TestKey, tmp_path: Path, **kwargs: object) -> Repository:
    return Repository(source(url, key), Cache(tmp_path / "cache"), **kwargs)  # type: ignore[arg-type]


def resign(repo: TestRepo, edit: Callable[[str], str]) -> None:
    """Change the Release text, then sign it again with the repository's key."""
    release = edit((repo.dist / "Release").read_text()).encode()
    (repo.dist / "Release").write_bytes(release)
    (repo.dist / "InRelease").write_bytes(repo.key.clearsign(release))
    (repo.dist / "Release.gpg").write_bytes(repo.key.detach_sign(release))


def test_signed_inrelease_gives_release_and_indexes(
    make_repo: RepoFactory, test_key: TestKey, tmp_path: Path
) -> None:
    repo, url = make_repo(release_gpg=False)
    with repository(url, test_key, tmp_path) as r:
        release = r.release()
        assert (release.suite, release.codename) == ("bookworm", "bookworm")
        assert release.architectures == ("amd64", "arm64")
        assert release.date == datetime(2023, 5, 20, 10, 0, tzinfo=UTC)
        assert "main/binary-amd64/Packages.xz" in release.sha256
        assert release.text == (repo.dist / "Release").read_text()
        amd64 = {p.name: p for p in r.index("amd64")}
        assert set(amd64) == {"libc6", "base-files", "bash", "coreutils", "hello"}
        assert amd64["hello"].component == "main"
        assert {p.name for p in r.index("arm64")} == {"libc6", "base-files", "bash", "coreutils"}
        assert r.url_of(amd64["hello"]) == f"{url}/{amd64['hello'].filename}"
        # gzip is preferred where the Release lists it: it decodes ~4x faster than xz.
        assert list(r.index_hashes("amd64")) == ["main/binary-amd64/Packages.gz"]


def test_release_gpg_is_used_when_there_is_no_inrelease(
    make_repo: RepoFactory, test_key: TestKey, tmp_path: Path
) -> None:
    _repo, url = make_repo(inrelease=False)
    with repository(url, test_key, tmp_path) as r:
        assert "bash" in {p.name for p in r.index("amd64")}


def test_inrelease_signed_by_a_key_outside_the_keyring_is_refused(
    make_repo: RepoFactory, test_key: TestKey, other_key: TestKey, tmp_path: Path
) -> None:
    _repo, url = make_repo(key=other_key)
    with (
        repository(url, test_key, tmp_path) as r,
        pytest.raises(
            SignatureError, match=re.escape(f"not signed by a key in {test_key.keyring}")
        ) as info,
    ):
        r.release()
    assert "[repository] keyring" in str(info.value)


def test_release_gpg_by_a_key_outside_the_keyring_is_refused(
    make_repo: RepoFactory, test_key: TestKey, other_key: TestKey, tmp_path: Path
) -> None:
    _repo, url = make_repo(key=other_key, inrelease=False)
    with (
        repository(url, test_key, tmp_path) as r,
        pytest.raises(SignatureError, match=r"Release\.gpg is not signed by a key in"),
    ):
        r.release()


def test_tampered_inrelease_is_refused(
    make_repo: RepoFactory, test_key: TestKey, tmp_path: Path
) -> None:
    repo, url = make_repo()
    inrelease = repo.dist / "InRelease"
    inrelease.write_bytes(inrelease.read_bytes().replace(b"Suite: bookworm", b"Suite: bookwork", 1))
    with (
        repository(url, test_key, tmp_path) as r,
        pytest.raises(SignatureError, match="InRelease was modified after signing"),
    ):
        r.release()


def test_tampered_release_with_release_gpg_is_refused(
    make_repo: RepoFactory, test_key: TestKey, tmp_path: Path
) -> None:
    repo, url = make_repo(inrelease=False)
    release = repo.dist / "Release"
    release.write_bytes(release.read_bytes().replace(b"amd64 arm64", b"amd64 arm65"))
    with (
        repository(url, test_key, tmp_path) as r,
        pytest.raises(SignatureError, match="modified after signing"),
    ):
        r.release()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda b: b"Architectures: evil\n\n" + b, "has data before its signed message"),
        (lambda b: b + b"Suite: evil\n", "has data after its signature"),
    ],
    ids=["before", "after"],
)
def test_text_outside_the_signature_is_refused_as_apt_does(
    make_repo: RepoFactory,
    test_key: TestKey,
    tmp_path: Path,
    edit: Callable[[bytes], bytes],
    message: str,
) -> None:
    repo, url = make_repo()
    inrelease = repo.dist / "InRelease"
    inrelease.write_bytes(edit(inrelease.read_bytes()))
    with repository(url, test_key, tmp_path) as r, pytest.raises(SignatureError, match=message):
        r.release()


def test_second_signed_message_appended_to_inrelease_is_refused(
    make_repo: RepoFactory, test_key: TestKey, tmp_path: Path
) -> None:
    repo, url = make_repo()
    inrelease = repo.dist / "InRelease"
    inrelease.write_bytes(inrelease.read_bytes() + test_key.clearsign(b"Suite: bookworm\n"))
    with (
        repository(url, test_key, tmp_path) as r,
        pytest.raises(SignatureError, match="not a single signed message"),
    ):
        r.release()


def test_unsigned_inrelease_is_refused(
    make_repo: RepoFactory, test_key: TestKey, tmp_path: Path
) -> None:
    repo, url = make_repo()
    (repo.dist / "InRelease").write_bytes((repo.dist / "Release").read_bytes())
    with (
        repository(url, test_key, tmp_path) as r,
        pytest.raises(SignatureError, match="no OpenPGP signature"),
    ):
        r.release()


def test_armoured_keyring_is_accepted(
    make_repo: RepoFactory, test_key: TestKey, tmp_path: Path
) -> None:
    _repo, url = make_repo()
    armoured = tmp_path / "keyring.asc"
    armoured.write_bytes(
        subprocess.run(
            ["gpg", "--homedir", str(test_key.home), "--armor", "--export"],
            check=True,
            capture_output=True,
        ).stdout
    )
    src = Source(url=url, suite="bookworm", components=("main",), keyring=armoured)
    with Repository(src, Cache(tmp_path / "cache")) as r:
        assert r.release().suite == "bookworm"


def test_release_dated_more_than_a_day_ahead_is_refused(
    make_repo: RepoFactory, test_key: TestKey, tmp_path: Path
) -> None:
    _repo, url = make_repo()
    # The test repository is dated 2023-05-20 10:00 UTC.
    day_before = datetime(2023, 5, 19, 9, 0, tzinfo=UTC)
    with (
        repository(url, test_key, tmp_path, now=lambda: day_before) as r,
        pytest.raises(SignatureError, match="in the future") as info,
    ):
        r.release()
    assert "clock" in str(info.value)
    hours_before = datetime(2023, 5, 20, 2, 0, tzinfo=UTC)
    with repository(url, test_key, tmp_path, now=lambda: hours_before) as r:
        assert r.release().suite == "bookworm"


def test_expired_valid_until_is_refused_unless_snapshot(
    make_repo: RepoFactory, test_key: TestKey, tmp_path: Path
) -> None:
    repo, url = make_repo()
    resign(
        repo,
        lambda t: t.replace("SHA256:", "Valid-Until: Sat, 27 May 2023 10:00:00 UTC\nSHA256:"),
    )
    with (
        repository(url, test_key, tmp_path) as r,
        pytest.raises(SignatureError, match="expired on 2023-05-27"),
    ):
        r.release()
    snapshot = source(url, test_key, snapshot="20230521T000000Z")
    with Repository(snapshot, Cache(tmp_path / "cache")) as r:
        assert r.release().valid_until == datetime(2023, 5, 27, 10, 0, tzinfo=UTC)


def test_release_of_another_suite_is_refused(
    make_repo: RepoFactory, test_key: TestKey, tmp_path: Path
) -> None:
    repo, url = make_repo()
    resign(repo, lambda t: t.replace("bookworm", "bullseye"))
    with (
        repository(url, test_key, tmp_path) as r,
        pytest.raises(SignatureError, match="is for 'bullseye', not 'bookworm'"),
    ):
        r.release()


def test_tampered_packages_index_is_refused_and_not_cached(
    make_repo: RepoFactory, test_key: TestKey, tmp_path: Path
) -> None:
    repo, url = make_repo()
    index = repo.dist / "main/binary-amd64/Packages.gz"
    plain = gzip.decompress(index.read_bytes())
    index.write_bytes(gzip.compress(plain.replace(b"Package: bash", b"Package: evil")))
    with (
        repository(url, test_key, tmp_path) as r,
        pytest.raises(IntegrityError, match=r"main/binary-amd64/Packages\.gz does not match"),
    ):
        r.index("amd64")
    assert not (tmp_path / "cache" / Kind.INDEXES).exists()


def test_gzip_index_is_used_when_the_release_lists_no_xz(
    make_repo: RepoFactory, test_key: TestKey, tmp_path: Path
) -> None:
    _repo, url = make_repo(compressions=("gz",))
    with repository(url, test_key, tmp_path) as r:
        assert list(r.index_hashes("arm64")) == ["main/binary-arm64/Packages.gz"]
        assert "bash" in {p.name for p in r.index("arm64")}


def test_architecture_the_mirror_lacks_is_a_clear_error(
    make_repo: RepoFactory, test_key: TestKey, tmp_path: Path
) -> None:
    _repo, url = make_repo()
    with (
        repository(url, test_key, tmp_path) as r,
        pytest.raises(MirrorError, match=r"no s390x \(s390x-linux\) packages for bookworm"),
    ):
        r.index("s390x")


def test_component_the_mirror_lacks_is_a_clear_error(
    make_repo: RepoFactory, test_key: TestKey, tmp_path: Path
) -> None:
    _repo, url = make_repo()
    src = Source(
        url=url, suite="bookworm", components=("main", "contrib"), keyring=test_key.keyring
    )
    with (
        Repository(src, Cache(tmp_path / "cache")) as r,
        pytest.raises(MirrorError, match="no component 'contrib'"),
    ):
        r.index("amd64")


def test_components_are_merged_in_configured_order(test_key: TestKey, tmp_path: Path) -> None:
    repo = TestRepo(tmp_path / "repo", test_key, arches=("amd64",), components=("main", "contrib"))
    repo.add(DebSpec("in-contrib"), component="contrib")
    repo.add(DebSpec("in-main"), component="main")
    repo.publish()
    with serve(repo.root) as url:
        src = Source(
            url=url, suite="bookworm", components=("contrib", "main"), keyring=test_key.keyring
        )
        with Repository(src, Cache(tmp_path / "cache")) as r:
            records = r.index("amd64")
    assert [(p.name, p.component) for p in records] == [
        ("in-contrib", "contrib"),
        ("in-main", "main"),
    ]


def test_warm_index_load_downloads_no_index(
    make_repo: RepoFactory, test_key: TestKey, tmp_path: Path
) -> None:
    repo, url = make_repo()
    with repository(url, test_key, tmp_path) as r:
        cold = r.index("amd64")
    for index in (repo.dist / "main").glob("binary-*/Packages*"):
        index.unlink()  # the server now answers 404 for every index
    with repository(url, test_key, tmp_path) as r:
        assert r.index("amd64") == cold


def test_inrelease_is_fetched_afresh_by_each_repository(
    make_repo: RepoFactory, test_key: TestKey, tmp_path: Path
) -> None:
    repo, url = make_repo()
    with repository(url, test_key, tmp_path) as r:
        r.release()
    (repo.dist / "InRelease").write_bytes(b"not signed")
    with repository(url, test_key, tmp_path) as r, pytest.raises(SignatureError):
        r.release()


def test_unreachable_mirror_is_a_mirror_error_naming_the_url(
    test_key: TestKey, tmp_path: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/debian"
    started = time.monotonic()
    with (
        repository(url, test_key, tmp_path) as r,
        pytest.raises(
            MirrorError, match=re.escape(f"cannot reach {url}/dists/bookworm/InRelease")
        ) as info,
    ):
        r.release()
    assert time.monotonic() - started < 5
    assert "[repository] url" in str(info.value)


def test_transient_503_is_retried_until_the_mirror_answers(
    make_repo: RepoFactory, test_key: TestKey, tmp_path: Path
) -> None:
    repo, _url = make_repo()
    with (
        flaky_serve(repo.root, failures=2) as (url, seen),
        repository(url, test_key, tmp_path) as r,
    ):
        assert "bash" in {p.name for p in r.index("amd64")}
    assert seen["/dists/bookworm/InRelease"] == 3
    assert seen["/dists/bookworm/main/binary-amd64/Packages.gz"] == 3


def test_mirror_that_keeps_failing_gives_up_after_the_attempts(
    make_repo: RepoFactory, test_key: TestKey, tmp_path: Path
) -> None:
    repo, _url = make_repo()
    with (
        flaky_serve(repo.root, failures=100) as (url, seen),
        repository(url, test_key, tmp_path) as r,
        pytest.raises(MirrorError, match="HTTP 503"),
    ):
        r.release()
    assert seen["/dists/bookworm/InRelease"] == http.POLICY.attempts


@pytest.mark.parametrize("worker", ["works", "fails"])
def test_a_large_index_is_parsed_in_a_worker_process_or_else_here(
    make_repo: RepoFactory,
    test_key: TestKey,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    worker: str,
) -> None:
    import polyarch.debian.repository as repository_module

    _repo, url = make_repo()
    with repository(url, test_key, tmp_path / "here") as r:
        expected = list(r.index("amd64"))
    monkeypatch.setattr(repository_module, "PARSE_ELSEWHERE_FROM", 0)  # every index is "large"
    calls: list[list[str]] = []
    real_run = subprocess.run

    def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        if "parse_worker" in " ".join(map(str, argv)):  # not gpgv's
            calls.append(argv)
            if worker == "fails":
                argv = [argv[0], "-c", "raise SystemExit(3)"]
        return real_run(argv, **kwargs)

    monkeypatch.setattr(repository_module.subprocess, "run", run)
    if worker == "works":
        import polyarch.debian.index as index_module

        def not_here(*_: object) -> None:
            raise AssertionError("parsed in this process, not in the worker")

        monkeypatch.setattr(index_module, "scan_packages", not_here)
    with repository(url, test_key, tmp_path / "there") as r:
        assert list(r.index("amd64")) == expected
    assert len(calls) == 1 and calls[0][1] == "-c"
    # Either way the parsed index is in the cache, once.
    assert len(list((tmp_path / "there" / "cache" / Kind.INDEXES).rglob("*-*"))) == 1
