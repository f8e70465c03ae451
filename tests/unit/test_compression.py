"""Layer compression: libdeflate, one gzip member or many, the same bytes on every host.

The golden digests below pin the output of ``deflate`` (libdeflate) at its
pinned version: a different version, level or member size changes them, and
then LAYER_FORMAT_VERSION must be bumped along with these values.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import deflate
import pytest
from conftest import RepoFactory, write_project
from debrepo import DebSpec, File
from engines import tiny_program
from hypothesis import given
from hypothesis import strategies as st

import polyarch.determinism as determinism
from polyarch import cmd
from polyarch.config import load_config
from polyarch.determinism import (
    GZIP_MEMBER_SIZE,
    GZIP_SINGLE_MEMBER_MAX,
    GzipWriter,
    gzip_bytes,
    gzip_member,
)
from polyarch.engine import Engine
from polyarch.platforms import parse_system
from polyarch.workflows.load import load_image


def sample(size: int) -> bytes:
    """Deterministic data that compresses like binaries: text and hash noise mixed."""
    parts = []
    for i in range(size // 64 + 1):
        parts.append(hashlib.sha256(str(i).encode()).digest()[: i % 32])
        parts.append(f"line {i} of the sample, somewhat repetitive text\n".encode())
    return b"".join(parts)[:size]


SAMPLE = sample(33 << 20)  # past GZIP_SINGLE_MEMBER_MAX: nine members, 8 x 4 MiB + 1 MiB
GOLDEN = {
    # sha256 of gzip_bytes(data): libdeflate 1.25 (deflate 0.9.0), level 6,
    # one member up to 32 MiB, else 4 MiB members
    "empty": "30e6fa98fb48c2b132824d1ac5e2243c0be9e9082ff32598d34d7687ca7f6c7f",
    "small": "a04197e63a16586f96d82696818d192ba782985f106332c2d957c7772b0130cd",
    "whole": "bdca01750f50a4d72c3b5371759ae99a96b5b00c19a503d9028e921f7db00db6",
    "sample": "b47bba303176ec7567cb4021f536fd4a1e9aa252d21fe392d904646f17b812f3",
}


def golden_inputs() -> dict[str, bytes]:
    return {
        "empty": b"",
        "small": b"polyarch\n" * 1000,
        "whole": SAMPLE[: 32 << 20],  # the largest layer that stays one member
        "sample": SAMPLE,
    }


def test_output_matches_the_golden_digests() -> None:
    for name, data in golden_inputs().items():
        assert hashlib.sha256(gzip_bytes(data)).hexdigest() == GOLDEN[name], name


def test_output_does_not_depend_on_the_system_zlib(tmp_path: Path) -> None:
    # The same digests in a process that cannot load the host's zlib at all.
    for name, data in golden_inputs().items():
        (tmp_path / name).write_bytes(data)
    script = (
        "import sys\n"
        "sys.modules['zlib'] = None  # any import of the host's zlib now fails\n"
        "import hashlib, json, pathlib\n"
        "from polyarch.determinism import gzip_bytes\n"
        "print(json.dumps({p.name: hashlib.sha256(gzip_bytes(p.read_bytes())).hexdigest()"
        " for p in pathlib.Path(sys.argv[1]).iterdir()}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == GOLDEN


def test_a_layer_up_to_the_limit_is_one_member_equal_to_libdeflates_own_gzip() -> None:
    whole = SAMPLE[:GZIP_SINGLE_MEMBER_MAX]
    blob = gzip_bytes(whole)
    assert blob == bytes(deflate.gzip_compress(whole, 6))
    assert blob.startswith(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")  # mtime 0, OS 255
    assert zlib.decompressobj(wbits=31).decompress(blob) == whole  # single-member readers too


def test_a_larger_layer_is_cut_into_members_that_readers_see_as_one_stream() -> None:
    blob = gzip_bytes(SAMPLE)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, mtime 0, OS 255
    assert blob.count(header) == 9
    assert gzip.decompress(blob) == SAMPLE
    # Each member is a whole gzip file of its own 4 MiB chunk.
    first = gzip_member(SAMPLE[:GZIP_MEMBER_SIZE])
    assert blob.startswith(first)
    assert first == bytes(deflate.gzip_compress(SAMPLE[:GZIP_MEMBER_SIZE], 6))


@given(st.lists(st.integers(min_value=0, max_value=30_000), max_size=6))
def test_streaming_writer_equals_the_whole_buffer_compression(cuts: list[int]) -> None:
    # Small limits (64 KiB whole, 16 KiB members), so both shapes come up quickly.
    saved = determinism.GZIP_SINGLE_MEMBER_MAX, determinism.GZIP_MEMBER_SIZE
    determinism.GZIP_SINGLE_MEMBER_MAX, determinism.GZIP_MEMBER_SIZE = 64 << 10, 16 << 10
    try:
        data = SAMPLE[: sum(cuts)]
        out = _Sink()
        writer = GzipWriter(out)
        at = 0
        for n in cuts:
            writer.write(data[at : at + n])
            at += n
        writer.close()
        expected = gzip_bytes(data)
    finally:
        determinism.GZIP_SINGLE_MEMBER_MAX, determinism.GZIP_MEMBER_SIZE = saved
    assert out.data == expected
    assert writer.size == len(expected)
    assert writer.uncompressed_size == len(data)
    assert writer.digest == "sha256:" + hashlib.sha256(expected).hexdigest()
    assert writer.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()


class _Sink:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)


# ----------------------------------------------------------- readers of multi-member layers


Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def many_members(
    cli: Cli, tmp_path: Path, make_repo: RepoFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Path, str]]:
    """``hello`` built with 4 KiB members: its program sits behind ~40 members of data."""
    monkeypatch.setattr(determinism, "GZIP_SINGLE_MEMBER_MAX", 4096)
    monkeypatch.setattr(determinism, "GZIP_MEMBER_SIZE", 4096)
    specs = [
        DebSpec(
            "hello",
            "1.0",
            arch,
            depends="libc6",
            files={
                "/usr/aaa/data": File(sample(160_000)),
                "/usr/bin/hello": File(tiny_program(arch, b"hello from polyarch\n"), 0o755),
            },
        )
        for arch in ("amd64", "arm64")
    ]
    repo, url = make_repo(specs)
    project = write_project(
        tmp_path / "p", url, repo.key.keyring, '[containers.hello]\npackage = "hello"\n'
    )
    tag = f"t{uuid.uuid4().hex[:10]}"
    code, _, err = cli(
        "-f", project, "--cache-dir", tmp_path / "c", "build", "hello", "--all-systems",
        "--out", tmp_path / "result", "--tag", tag,
    )  # fmt: skip
    assert code == 0, err
    blobs = (tmp_path / "result" / "hello" / "oci" / "blobs" / "sha256").iterdir()
    members = max(p.read_bytes().count(b"\x1f\x8b\x08\x00\x00\x00\x00\x00") for p in blobs)
    assert members > 30
    yield project, tag


def test_engines_load_and_run_layers_of_many_members(
    engine: Engine, many_members: tuple[Path, str], tmp_path: Path
) -> None:
    project, tag = many_members
    container = load_config(project).container("hello")
    system = parse_system("x86_64-linux")
    # Loading checks every layer against its diff_id, so a member left unread fails here.
    reference = load_image(engine, container, system, out_dir=tmp_path / "result", tag=tag)
    try:
        result = engine.run(reference, [], timeout=60)
        assert result.exit_code == 0, result.output
        assert "hello from polyarch" in result.output
    finally:
        engine.remove_image(reference)


def test_skopeo_and_umoci_read_layers_of_many_members(
    many_members: tuple[Path, str], tmp_path: Path
) -> None:
    _, tag = many_members
    layout = tmp_path / "result" / "hello" / "oci"
    single = tmp_path / "single"
    argv = ["skopeo", "--override-arch", "arm64", "copy", f"oci:{layout}:{tag}", f"oci:{single}:x"]
    assert cmd.run(argv).returncode == 0
    bundle = tmp_path / "bundle"
    unpack = cmd.run(["umoci", "unpack", "--rootless", "--image", f"{single}:x", str(bundle)])
    assert unpack.returncode == 0, unpack.stderr.decode()
    assert (bundle / "rootfs/usr/aaa/data").read_bytes() == sample(160_000)
    hello = (bundle / "rootfs/usr/bin/hello").read_bytes()
    assert hello == tiny_program("arm64", b"hello from polyarch\n")


def test_tar_format_is_pax() -> None:
    import tarfile

    assert determinism.TAR_FORMAT == tarfile.PAX_FORMAT


def test_polyarchs_own_layer_reader_reads_every_member(monkeypatch: pytest.MonkeyPatch) -> None:
    from polyarch.attest.status import installed_packages

    monkeypatch.setattr(determinism, "GZIP_SINGLE_MEMBER_MAX", 4096)
    monkeypatch.setattr(determinism, "GZIP_MEMBER_SIZE", 4096)
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in [
            ("usr/share/big", sample(100_000)),
            ("var/lib/dpkg/status.d/zz", b"Package: zz\nVersion: 1\nArchitecture: amd64\n"),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    blob = gzip_bytes(tar.getvalue())
    assert blob.count(b"\x1f\x8b\x08\x00\x00\x00\x00\x00") > 20
    found = installed_packages([lambda: io.BytesIO(blob)])
    assert [str(p) for p in found.values()] == ["zz 1 (amd64)"]  # in the last member
