"""Downloading .debs into the cache, each verified against its index."""

from __future__ import annotations

import copy
import hashlib
import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import base_packages
from debrepo import DebSpec, TestKey, TestRepo, flaky_serve, serve

from polyarch import http
from polyarch.cache import Cache, Kind
from polyarch.debian.fetch import fetch_debs
from polyarch.debian.packages import PackageRecord
from polyarch.debian.repository import Repository
from polyarch.debian.sources import Source
from polyarch.errors import FetchError, IntegrityError
from polyarch.progress import NullProgress
from polyarch.retry import RetryPolicy


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "POLICY", RetryPolicy(backoff=0.001))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, test_key: TestKey) -> TestRepo:
    """The packages are built once per module; each test serves its own copy."""
    repo = TestRepo(tmp_path_factory.mktemp("template"), test_key, arches=("amd64",))
    for spec in base_packages("amd64"):
        repo.add(spec)
    # Incompressible and stored uncompressed, so the .deb spans several download chunks.
    noise = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(1 << 16))
    repo.add(DebSpec("big", files={"/usr/share/big": noise}, compression="none"))
    repo.publish(release_gpg=False)
    return repo


@pytest.fixture
def repo_copy(template: TestRepo, tmp_path: Path) -> TestRepo:
    repo = copy.copy(template)
    repo.root = tmp_path / "repo"
    shutil.copytree(template.root, repo.root)
    return repo


RepositoryFactory = Callable[[str], Repository]


@pytest.fixture
def open_repository(tmp_path: Path, test_key: TestKey) -> Iterator[RepositoryFactory]:
    with ExitStack() as stack:

        def factory(url: str) -> Repository:
            src = Source(url=url, suite="bookworm", components=("main",), keyring=test_key.keyring)
            return stack.enter_context(Repository(src, Cache(tmp_path / "cache")))

        yield factory


def by_name(records: list[PackageRecord]) -> dict[str, PackageRecord]:
    return {r.name: r for r in records}


def no_stray_files(cache: Cache) -> bool:
    return not [p for p in (cache.root / Kind.DEBS).rglob("*") if p.name.endswith(".tmp")]


class _Recorder(NullProgress):
    def __init__(self) -> None:
        super().__init__()
        self.totals: list[float | None] = []
        self.advanced = 0.0
        self.finished: list[int] = []

    def task(self, description: str, total: float | None = None) -> int:
        self.totals.append(total)
        return super().task(description, total)

    def advance(self, task_id: int, amount: float = 1) -> None:
        self.advanced += amount

    def done(self, task_id: int) -> None:
        self.finished.append(task_id)


def test_debs_are_downloaded_verified_and_cached(
    repo_copy: TestRepo, open_repository: RepositoryFactory, tmp_path: Path
) -> None:
    cache = Cache(tmp_path / "debs")
    with serve(repo_copy.root) as url:
        repository = open_repository(url)
        records = repository.index("amd64")
        progress = _Recorder()
        paths = fetch_debs(records, repository, cache, jobs=3, progress=progress)
    assert set(paths) == {r.sha256 for r in records}
    for record in records:
        path = paths[record.sha256]
        assert path == cache.path(Kind.DEBS, record.sha256)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == record.sha256
    assert progress.totals == [sum(r.size for r in records)]
    assert progress.advanced == sum(r.size for r in records)
    assert progress.finished == [1]


def test_cached_debs_are_not_downloaded_again(
    repo_copy: TestRepo, open_repository: RepositoryFactory, tmp_path: Path
) -> None:
    cache = Cache(tmp_path / "debs")
    with serve(repo_copy.root) as url:
        repository = open_repository(url)
        records = repository.index("amd64")
        first = fetch_debs(records, repository, cache)
        shutil.rmtree(repo_copy.root / "pool")  # the mirror now has no packages
        assert fetch_debs(records, repository, cache) == first


def test_tampered_deb_is_refused_and_not_cached(
    repo_copy: TestRepo, open_repository: RepositoryFactory, tmp_path: Path
) -> None:
    cache = Cache(tmp_path / "debs")
    with serve(repo_copy.root) as url:
        repository = open_repository(url)
        bash = by_name(repository.index("amd64"))["bash"]
        deb = repo_copy.root / bash.filename
        data = bytearray(deb.read_bytes())
        data[-10] ^= 0xFF  # same size, different content
        deb.write_bytes(bytes(data))
        with pytest.raises(IntegrityError, match=r"bash 5\.2\.15-2 \(amd64\)") as info:
            fetch_debs([bash], repository, cache)
    assert repository.url_of(bash) in str(info.value)
    assert "does not match its index" in str(info.value)
    assert cache.get(Kind.DEBS, bash.sha256) is None
    assert no_stray_files(cache)


def test_deb_longer_than_its_index_says_is_refused(
    repo_copy: TestRepo, open_repository: RepositoryFactory, tmp_path: Path
) -> None:
    cache = Cache(tmp_path / "debs")
    with serve(repo_copy.root) as url:
        repository = open_repository(url)
        big = by_name(repository.index("amd64"))["big"]
        deb = repo_copy.root / big.filename
        deb.write_bytes(deb.read_bytes() + b"\0" * (3 << 20))
        with pytest.raises(IntegrityError, match=r"size \d+\+, expected"):
            fetch_debs([big], repository, cache)
    assert cache.get(Kind.DEBS, big.sha256) is None
    assert no_stray_files(cache)


def test_corrupted_cached_deb_is_fetched_again(
    repo_copy: TestRepo, open_repository: RepositoryFactory, tmp_path: Path
) -> None:
    cache = Cache(tmp_path / "debs")
    with serve(repo_copy.root) as url:
        repository = open_repository(url)
        libc6 = by_name(repository.index("amd64"))["libc6"]
        path = fetch_debs([libc6], repository, cache)[libc6.sha256]
        good = path.read_bytes()
        rotten = bytearray(good)
        rotten[len(rotten) // 2] ^= 0x01
        path.write_bytes(bytes(rotten))
        assert fetch_debs([libc6], repository, cache) == {libc6.sha256: path}
    assert path.read_bytes() == good


def test_missing_deb_is_a_fetch_error_naming_package_and_url(
    repo_copy: TestRepo, open_repository: RepositoryFactory, tmp_path: Path
) -> None:
    cache = Cache(tmp_path / "debs")
    with serve(repo_copy.root) as url:
        repository = open_repository(url)
        coreutils = by_name(repository.index("amd64"))["coreutils"]
        (repo_copy.root / coreutils.filename).unlink()
        with pytest.raises(FetchError, match=r"coreutils 9\.1-1") as info:
            fetch_debs([coreutils], repository, cache)
    assert f"{repository.url_of(coreutils)}: HTTP 404" in str(info.value)


def test_one_failure_stops_the_fetch_and_is_raised(
    repo_copy: TestRepo, open_repository: RepositoryFactory, tmp_path: Path
) -> None:
    cache = Cache(tmp_path / "debs")
    with serve(repo_copy.root) as url:
        repository = open_repository(url)
        records = repository.index("amd64")
        (repo_copy.root / by_name(records)["bash"].filename).unlink()
        with pytest.raises(FetchError, match="bash"):
            fetch_debs(records, repository, cache, jobs=2)
    assert no_stray_files(cache)


def test_transient_503_is_retried_then_the_deb_is_fetched(
    repo_copy: TestRepo, open_repository: RepositoryFactory, tmp_path: Path
) -> None:
    cache = Cache(tmp_path / "debs")
    with flaky_serve(repo_copy.root, failures=2) as (url, seen):
        repository = open_repository(url)
        bash = by_name(repository.index("amd64"))["bash"]
        path = fetch_debs([bash], repository, cache)[bash.sha256]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == bash.sha256
    assert seen["/" + bash.filename] == 3


def test_404_is_not_retried(
    repo_copy: TestRepo, open_repository: RepositoryFactory, tmp_path: Path
) -> None:
    with flaky_serve(repo_copy.root, failures=0) as (url, seen):
        repository = open_repository(url)
        bash = by_name(repository.index("amd64"))["bash"]
        (repo_copy.root / bash.filename).unlink()
        with pytest.raises(FetchError):
            fetch_debs([bash], repository, Cache(tmp_path / "debs"))
    assert seen["/" + bash.filename] == 1


def test_deb_cut_off_mid_download_is_fetched_again(
    repo_copy: TestRepo, open_repository: RepositoryFactory, tmp_path: Path
) -> None:
    cuts: list[str] = []

    class CutOnce(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.endswith(".deb") and self.path not in cuts:
                cuts.append(self.path)
                body = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.close_connection = True
                return
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(CutOnce, directory=str(repo_copy.root)))
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    try:
        repository = open_repository(f"http://127.0.0.1:{server.server_address[1]}")
        big = by_name(repository.index("amd64"))["big"]
        progress = _Recorder()
        path = fetch_debs([big], repository, Cache(tmp_path / "debs"), progress=progress)[
            big.sha256
        ]
    finally:
        server.shutdown()
        server.server_close()
    assert cuts == ["/" + big.filename]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == big.sha256
    assert progress.advanced == big.size


def test_duplicate_records_are_fetched_once(
    repo_copy: TestRepo, open_repository: RepositoryFactory, tmp_path: Path
) -> None:
    with serve(repo_copy.root) as url:
        repository = open_repository(url)
        bash = by_name(repository.index("amd64"))["bash"]
        progress = _Recorder()
        paths = fetch_debs([bash, bash], repository, Cache(tmp_path / "debs"), progress=progress)
    assert list(paths) == [bash.sha256]
    assert progress.totals == [bash.size]


def test_two_fetches_sharing_one_cache_download_each_deb_once(
    repo_copy: TestRepo, open_repository: RepositoryFactory, tmp_path: Path
) -> None:
    # Two builds at once on one cache: whoever comes second waits for the entry lock
    # and then finds the .deb there, intact.
    root = tmp_path / "debs"
    with flaky_serve(repo_copy.root, failures=0) as (url, seen):
        first, second = open_repository(url), open_repository(url)
        records = first.index("amd64")
        with ThreadPoolExecutor(max_workers=2) as pool:
            a = pool.submit(fetch_debs, records, first, Cache(root), jobs=4)
            b = pool.submit(fetch_debs, records[::-1], second, Cache(root), jobs=4)
            paths = a.result()
            assert b.result() == paths
    assert {p: n for p, n in seen.items() if p.endswith(".deb")} == {
        "/" + r.filename: 1 for r in records
    }
    for sha, path in paths.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    assert no_stray_files(Cache(root))
