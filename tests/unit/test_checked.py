"""The memo of checked files: a file is hashed again whenever it may have changed.

Real files on this machine's file system; the only liberty taken is a shorter
"racy" window (``RACY_NS``) than the 2 s that covers coarse file systems, with
a sleep longer than any kernel clock tick wherever the rule matters.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path

import pytest

from polyarch import checked
from polyarch.cache import Cache, Kind
from polyarch.checked import CheckedFiles

TICK = 0.05
"""Longer than the kernel's coarse clock tick (at most 10 ms), shorter than a test should wait."""


@pytest.fixture(autouse=True)
def short_racy_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checked, "RACY_NS", int(TICK * 1e9))


class Counting:
    """A verifier that hashes the file and counts how often it was asked."""

    def __init__(self, data: bytes) -> None:
        self.claim = "sha256:" + hashlib.sha256(data).hexdigest()
        self.calls = 0

    def __call__(self, f: io.BufferedReader) -> bool:
        self.calls += 1
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest() == self.claim


def settled(path: Path, data: bytes) -> Path:
    """``data`` written to ``path``, and its ctime left behind the racy window."""
    path.write_bytes(data)
    time.sleep(3 * TICK)
    return path


def flip_keeping_size_and_mtime(path: Path) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # what a careful tamperer does


def test_an_unchanged_file_is_verified_once(tmp_path: Path) -> None:
    path = settled(tmp_path / "blob", b"x" * 1000)
    verify = Counting(path.read_bytes())
    memo = CheckedFiles(tmp_path / "memo")
    assert memo.check(path, verify.claim, verify)
    assert memo.check(path, verify.claim, verify)
    assert CheckedFiles(tmp_path / "memo").check(path, verify.claim, verify)  # another process
    assert verify.calls == 1


def test_a_byte_flipped_after_verification_is_caught(tmp_path: Path) -> None:
    path = settled(tmp_path / "blob", b"x" * 1000)
    verify = Counting(path.read_bytes())
    assert CheckedFiles(tmp_path / "memo").check(path, verify.claim, verify)
    flip_keeping_size_and_mtime(path)
    # Same size, same mtime: only the kernel's ctime says the file changed.
    assert not CheckedFiles(tmp_path / "memo").check(path, verify.claim, verify)
    assert verify.calls == 2


def test_a_chmod_or_a_replaced_file_is_verified_again(tmp_path: Path) -> None:
    path = settled(tmp_path / "blob", b"x" * 1000)
    verify = Counting(path.read_bytes())
    memo = CheckedFiles(tmp_path / "memo")
    assert memo.check(path, verify.claim, verify)
    path.chmod(0o600)
    assert memo.check(path, verify.claim, verify)
    other = settled(tmp_path / "other", b"x" * 1000)
    os.replace(other, path)  # another inode with the same bytes
    assert memo.check(path, verify.claim, verify)
    assert verify.calls == 3


def test_another_claim_about_the_same_file_is_verified(tmp_path: Path) -> None:
    path = settled(tmp_path / "blob", b"x" * 1000)
    verify = Counting(path.read_bytes())
    memo = CheckedFiles(tmp_path / "memo")
    assert memo.check(path, verify.claim, verify)
    assert not memo.check(path, "sha256:" + "0" * 64, lambda f: False)
    assert verify.calls == 1


def test_a_file_changed_within_the_racy_window_is_not_remembered(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"x" * 1000)  # ctime: now, as close to the check as it gets
    verify = Counting(path.read_bytes())
    memo = CheckedFiles(tmp_path / "memo")
    assert memo.check(path, verify.claim, verify)
    assert memo.check(path, verify.claim, verify)
    assert verify.calls == 2
    assert not (tmp_path / "memo").exists()


def test_a_symlink_is_never_followed(tmp_path: Path) -> None:
    target = settled(tmp_path / "target", b"x" * 1000)
    link = tmp_path / "link"
    link.symlink_to(target)
    verify = Counting(target.read_bytes())
    assert not CheckedFiles(tmp_path / "memo").check(link, verify.claim, verify)
    assert verify.calls == 0


def test_a_damaged_memo_record_only_means_hashing_again(tmp_path: Path) -> None:
    path = settled(tmp_path / "blob", b"x" * 1000)
    verify = Counting(path.read_bytes())
    assert CheckedFiles(tmp_path / "memo").check(path, verify.claim, verify)
    (record,) = (p for p in (tmp_path / "memo").rglob("*") if p.is_file())
    for junk in (b"", b"\xff\xfe", b"[]", b'{"format": 1}'):
        record.write_bytes(junk)
        assert CheckedFiles(tmp_path / "memo").check(path, verify.claim, verify)
    assert verify.calls == 5


def test_a_cached_blob_flipped_after_a_remembered_check_is_evicted(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    data = os.urandom(4096)
    key = hashlib.sha256(data).hexdigest()
    with cache.writer(Kind.BLOBS, key) as f:
        f.write(data)
    time.sleep(3 * TICK)
    assert cache.verified(Kind.BLOBS, key) is not None
    assert Cache(tmp_path / "cache").verified(Kind.BLOBS, key) is not None  # from the memo
    blob = cache.path(Kind.BLOBS, key)
    blob.chmod(0o644)
    flip_keeping_size_and_mtime(blob)
    assert Cache(tmp_path / "cache").verified(Kind.BLOBS, key) is None
    assert not blob.exists()  # evicted, as without the memo
