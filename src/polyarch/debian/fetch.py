"""Download .deb files into the cache, each checked against its index's SHA256.

Files are streamed to a temporary cache file while their size and SHA256 are
computed; only a file that matches becomes a cache entry (``Cache.writer``
renames it into place), so the cache never holds an unverified package.
A cached file is hashed again before use: a flipped bit on disk or an edited
file is discarded and downloaded afresh rather than built into an image.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Protocol

import httpx

from polyarch import http
from polyarch.cache import Cache, Kind
from polyarch.debian.packages import PackageRecord
from polyarch.errors import FetchError, IntegrityError
from polyarch.files import file_size
from polyarch.progress import NULL_PROGRESS, Progress

CHUNK = 1 << 20


class DebSource(Protocol):
    """Where .debs are downloaded from: a ``Repository``, or a ``DebLocator`` over several."""

    @property
    def client(self) -> httpx.Client: ...

    def url_of(self, record: PackageRecord) -> str: ...


class _Counter:
    """Progress in bytes, shared by the download threads."""

    def __init__(self, progress: Progress, task: int) -> None:
        self._progress, self._task = progress, task
        self._lock = threading.Lock()

    def advance(self, amount: int) -> None:
        with self._lock:
            self._progress.advance(self._task, amount)


def cached_deb(record: PackageRecord, cache: Cache) -> Path | None:
    """The cached .deb for ``record`` if it is there and intact; a damaged one is evicted.

    An intact file of another size than ``record`` claims stays (it is what its
    SHA256 names): the download that follows reports the mismatch.
    """
    path = cache.verified(Kind.DEBS, record.sha256)
    if path is None or file_size(path) != record.size:
        return None
    return path


def _describe(record: PackageRecord) -> str:
    return f"{record.name} {record.version} ({record.architecture})"


def _download(
    record: PackageRecord,
    url: str,
    client: httpx.Client,
    cache: Cache,
    counter: _Counter,
    attempts: int,
    anchor: Callable[[], str],
) -> Path:
    for attempt in range(attempts):
        written = 0
        try:
            with http.stream_with_retries(client, url, attempts=attempts) as response:
                if response.status_code != 200:
                    raise FetchError(
                        f"cannot download {_describe(record)} from {url}: HTTP {response.status_code}",
                        hint="the mirror may have dropped this version; run again to refresh "
                        "the index, or use a snapshot mirror",
                    )
                digest = hashlib.sha256()
                with cache.writer(Kind.DEBS, record.sha256) as out:
                    for chunk in response.iter_bytes(CHUNK):
                        written += len(chunk)
                        if written > record.size:
                            break  # a longer file cannot match; stop reading it
                        digest.update(chunk)
                        out.write(chunk)
                        counter.advance(len(chunk))
                    actual = digest.hexdigest()
                    if written != record.size or actual != record.sha256:
                        # Raised inside the writer, so the temporary file is removed.
                        got = f"{written}+" if written > record.size else str(written)
                        where = anchor()
                        raise IntegrityError(
                            f"{_describe(record)} from {url} does not match {where} "
                            f"(size {got}, expected {record.size}; "
                            f"sha256 {actual}, expected {record.sha256})",
                            hint="the mirror or a proxy serves a damaged file; try again "
                            "later or use another mirror"
                            + ("" if where == "its index" else ", or check the lock's history"),
                        )
            return cache.path(Kind.DEBS, record.sha256)
        except httpx.TransportError as exc:
            # The connection broke mid-body: start this file again from scratch.
            counter.advance(-written if written <= record.size else 0)
            if attempt + 1 == attempts:
                raise http.unreachable(url, exc) from exc
            time.sleep(http.POLICY.delay(attempt))
    raise ValueError(f"attempts must be at least 1, not {attempts}")


def fetch_debs(
    records: Sequence[PackageRecord],
    repository: DebSource,
    cache: Cache,
    *,
    jobs: int = 6,
    progress: Progress = NULL_PROGRESS,
    attempts: int | None = None,
    anchor: Callable[[PackageRecord], str] | None = None,
) -> dict[str, Path]:
    """Make every record's .deb present and verified in the cache.

    Returns SHA256 hex → cache path for every record. The first failure
    (``IntegrityError`` for a mismatch, ``FetchError``/``MirrorError`` when a
    file cannot be had) cancels what has not started and is raised; files
    already verified stay cached. ``anchor(record)`` names what vouches for a
    record in a mismatch message (default: "its index").
    """
    attempts = attempts or http.POLICY.attempts
    vouch = anchor or (lambda _record: "its index")
    unique = {r.sha256: r for r in records}
    task = progress.task(
        f"fetching {len(unique)} packages", total=sum(r.size for r in unique.values())
    )
    counter = _Counter(progress, task)
    client = repository.client

    def one(record: PackageRecord) -> Path:
        path = cached_deb(record, cache)
        if path is None:
            # Another process sharing the cache may be downloading it: wait, then look again.
            with cache.lock(Kind.DEBS, record.sha256):
                path = cached_deb(record, cache)
                if path is None:
                    url = repository.url_of(record)
                    return _download(
                        record, url, client, cache, counter, attempts, lambda: vouch(record)
                    )
        counter.advance(record.size)
        return path

    result: dict[str, Path] = {}
    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="fetch") as pool:
            futures: dict[Future[Path], str] = {
                pool.submit(one, record): sha for sha, record in unique.items()
            }
            done, _pending = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None]
            if failed:
                pool.shutdown(wait=True, cancel_futures=True)
                exc = failed[0].exception()
                assert exc is not None
                raise exc
            for future, sha in futures.items():
                result[sha] = future.result()
    finally:
        progress.done(task)
    return result
