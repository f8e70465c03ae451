"""Memory stays bounded whatever a package holds: a .deb of a few kB holding GiBs of zeros.

Each build runs as its own process, so its peak RSS can be measured
(``getrusage(RUSAGE_CHILDREN)`` of a wrapper that runs only that build), and a
MemoryError or traceback would show in its stderr.
"""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import base_packages, write_project
from debrepo import TestKey, TestRepo, raw_deb, serve

from polyarch.errors import PackageError
from polyarch.image.layout_reader import read_oci_layout

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

GIB = 1 << 30
PEAK_RSS_LIMIT = 300 << 20

# A wrapper that runs one command (its address space capped at argv[1] bytes
# unless 0) and reports the command's peak RSS (kB on Linux).
_MEASURE = (
    "import resource, subprocess, sys\n"
    "cap = int(sys.argv[1])\n"
    "def limit():\n"
    "    if cap: resource.setrlimit(resource.RLIMIT_AS, (cap, cap))\n"
    "p = subprocess.run(sys.argv[2:], preexec_fn=limit)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(p.returncode)\n"
)


def zeros_tar_zst(size: int) -> bytes:
    """A data.tar.zst holding ``./usr/bin/zeros`` of ``size`` zero bytes, made in 1 MiB steps."""
    out = io.BytesIO()
    compressor = zstd.ZstdCompressor(level=1)
    info = tarfile.TarInfo("./usr/bin/zeros")  # a "command", so the image is a tool image
    info.size = size
    out.write(compressor.compress(info.tobuf(tarfile.GNU_FORMAT)))
    chunk = bytes(1 << 20)
    for _ in range(size >> 20):
        out.write(compressor.compress(chunk))
    out.write(compressor.compress(bytes(-size % 512 + 1024)))  # padding + end of archive
    out.write(compressor.flush())
    return out.getvalue()


@pytest.fixture
def zeros_project(tmp_path: Path, test_key: TestKey) -> Iterator[Path]:
    """A signed repository with ``zeros-1g`` and ``zeros-2g``, and a project building them."""
    repo = TestRepo(tmp_path / "repo", test_key, arches=("amd64",))
    for spec in base_packages("amd64"):
        repo.add(spec)
    for name, size in (("zeros-1g", GIB), ("zeros-2g", 2 * GIB)):
        control = f"Package: {name}\nVersion: 1.0\nArchitecture: amd64\n"
        deb = raw_deb(control, zeros_tar_zst(size), "data.tar.zst")
        assert len(deb) < 200_000  # a small download...
        repo.add_raw(name, "1.0", "amd64", deb)
    repo.publish()
    with serve(repo.root) as url:
        yield write_project(
            tmp_path / "p",
            url,
            repo.key.keyring,
            '[containers.zeros]\npackage = "zeros-1g"\ncommand = "zeros"\n'
            'systems = ["x86_64-linux"]\n\n'
            '[containers.zeros2]\npackage = "zeros-2g"\ncommand = "zeros"\n'
            'systems = ["x86_64-linux"]\n\n'
            '[containers.limited]\npackage = "zeros-1g"\ncommand = "zeros"\n'
            'systems = ["x86_64-linux"]\nmax_unpacked_bytes = 67108864\n',
        )


def build(
    project: Path, name: str, tmp_path: Path, *, address_space: int = 0, **env: str
) -> tuple[int, int, str]:
    """``polyarch build NAME`` as a process: (exit code, peak RSS in bytes, stderr)."""
    argv = [sys.executable, "-c", _MEASURE, str(address_space), sys.executable, "-m", "polyarch"]
    argv += ["-q", "-f"]
    argv += [str(project), "--cache-dir", str(tmp_path / "cache"), "build", name]
    argv += ["--out", str(tmp_path / "out")]
    result = subprocess.run(
        argv, capture_output=True, text=True, env={**os.environ, **env}, timeout=600
    )
    peak_kib = int(result.stdout.strip().splitlines()[-1])
    return result.returncode, peak_kib * 1024, result.stderr


def test_a_gib_of_zeros_builds_in_bounded_memory(zeros_project: Path, tmp_path: Path) -> None:
    code, peak, err = build(zeros_project, "zeros", tmp_path)
    assert code == 0, err
    assert peak < PEAK_RSS_LIMIT, f"peak RSS {peak >> 20} MiB"
    # ... and the layer really holds the whole file.
    layout = read_oci_layout(tmp_path / "out" / "zeros" / "oci")
    (image,) = layout.images("latest")
    sizes: dict[str, int] = {}
    for layer in image.layers:
        with (
            gzip.open(layout.blob_path(layer.digest)) as f,
            tarfile.open(fileobj=f, mode="r|") as t,
        ):
            sizes.update((info.name, info.size) for info in t)
    assert sizes["usr/bin/zeros"] == GIB


def test_two_gib_build_without_memory_error_even_when_memory_is_short(
    zeros_project: Path, tmp_path: Path
) -> None:
    # With its address space capped below the file's size, a build that held the
    # file in memory would die of MemoryError; a streaming one does not notice.
    code, peak, err = build(
        zeros_project, "zeros2", tmp_path, address_space=GIB + GIB // 2, MALLOC_ARENA_MAX="2"
    )
    assert code == 0, err
    assert "Traceback" not in err and "MemoryError" not in err
    assert peak < PEAK_RSS_LIMIT, f"peak RSS {peak >> 20} MiB"


def test_a_package_over_max_unpacked_bytes_is_refused_with_exit_15(
    zeros_project: Path, tmp_path: Path
) -> None:
    code, peak, err = build(zeros_project, "limited", tmp_path)
    assert code == PackageError.exit_code, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[0]
    assert "zeros-1g unpacks to more than 67108864 bytes" in line
    assert "max_unpacked_bytes" in err
    assert not (tmp_path / "out" / "limited").exists()
    assert peak < PEAK_RSS_LIMIT
