"""What polyarch reads back or downloads, under thousands of mutated inputs: the lock, the cache's
layer records and parsed indexes, and .deb files (ar, compressed tar, tar).

Whatever the bytes: a value every later stage can use, or polyarch's own error
(for cache entries: eviction and a rebuild, never an exception), and no file
written, renamed, removed or chmod-ed outside the test's temporary directories.
The last is watched by a Python audit hook, which sees every such operation
of the process (``open`` for writing, ``os.rename``, ``os.remove``, ...).

Bytes are flipped, inserted, deleted and spliced into real seeds: a lock as
``render_lock`` writes it, records and index files as the cache writes them,
and .debs made by dpkg-deb in every compression plus hand-made ones with links.
By default 700 examples per property (4,200 inputs, about a minute);
POLYARCH_FUZZ_EXAMPLES=N runs N each.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from debrepo import DebSpec, Directory, File, Symlink, build_deb, raw_deb, tar_bytes
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from polyarch.cache import Cache, Kind
from polyarch.debian.deb import NAME_MAX, PATH_MAX, read_deb
from polyarch.debian.index import cache_key, load_index
from polyarch.debian.packages import parse_packages
from polyarch.errors import LockError, PackageError
from polyarch.image.layer_plan import LayerPlan
from polyarch.image.layer_record import LayerRecord, decode_layer_record
from polyarch.image.layers import build_layers, read_layer_record
from polyarch.lock import (
    LockedContainer,
    LockedPackage,
    LockedRelease,
    LockedSource,
    LockedSystem,
    LockInputs,
    inputs_sha256,
    new_lock,
    read_lock,
    render_lock,
)
from polyarch.workflows.cache_check import EntryChecker

EXAMPLES = int(os.environ.get("POLYARCH_FUZZ_EXAMPLES", "700"))
FUZZ = settings(
    max_examples=EXAMPLES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# -- writes outside the temp dirs ---------------------------------------------------------------

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_WATCHED = {"os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.symlink", "os.link",
            "os.chmod", "os.utime", "os.truncate", "shutil.rmtree"}  # fmt: skip
_allowed: list[Path] = []
_violations: list[str] = []


def _path(value: Any) -> Path | None:
    if isinstance(value, int) or value is None:
        return None  # an fd: the open that made it was checked
    return Path(os.path.abspath(os.fsdecode(value)))


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _allowed:
        return
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            mode is None and isinstance(flags, int) and flags & _WRITE_FLAGS
        )
        paths = [_path(path)] if writing else []
    elif event in _WATCHED:
        paths = [_path(a) for a in args[:2] if isinstance(a, str | bytes | os.PathLike)]
    else:
        return
    for p in paths:
        if p is not None and not any(p.is_relative_to(root) for root in _allowed):
            _violations.append(f"{event} {p}")


sys.addaudithook(_audit)


@contextlib.contextmanager
def only_writing_in(*roots: Path) -> Iterator[None]:
    """Fail if anything is written outside ``roots`` (and the system temp dir's test dirs)."""
    _allowed[:] = [r.resolve() for r in roots]
    _violations.clear()
    try:
        yield
    finally:
        _allowed.clear()
    assert not _violations, _violations[:5]


# -- mutations ----------------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        # Uniform over the input (hypothesis favours small integers, i.e. the first bytes).
        at = draw(st.integers(0, 1 << 20)) % (len(data) + 1)
        kind = draw(st.sampled_from(["flip", "flip", "insert", "delete", "splice", "digit"]))
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "digit" and at < len(data):
            data[at] = draw(st.sampled_from(b"0123456789 /.-\n\x00\xff"))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=12))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        else:
            source = draw(st.sampled_from(seeds))
            start = draw(st.integers(0, len(source)))
            data[at:at] = source[start : start + draw(st.integers(1, 200))]
    return bytes(data)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("untrusted")


# -- containers.lock ----------------------------------------------------------------------------

_SHA = [hashlib.sha256(bytes([i])).hexdigest() for i in range(8)]


def _lock_text() -> bytes:
    inputs = LockInputs(
        sources=(LockedSource(name="main", suite="bookworm", components=("main",)),),
        package="fd-find", packages=(), pins={}, base=("bash", "coreutils"), exclude=(),
        prefer=(),
    )  # fmt: skip
    packages = tuple(
        LockedPackage(
            name=name,
            version=version,
            architecture="amd64",
            filename=f"pool/main/{name[0]}/{name}/{name}_{version}_amd64.deb",
            size=1000 + i,
            sha256=_SHA[i],
            base=i < 2,
            source="main",
        )
        for i, (name, version) in enumerate(
            [("bash", "5.2.15-2+b2"), ("libc6", "2.36-9+deb12u4"), ("fd-find", "8.6.0-3")]
        )
    )
    release = LockedRelease(
        name="main", suite="stable", codename="bookworm", release_date="2024-06-29T09:40:00Z",
        release_file="InRelease", release_sha256=_SHA[6], priority=500,
        indexes={"main/binary-amd64/Packages.xz": _SHA[7]},
    )  # fmt: skip
    system = LockedSystem(debian_arch="amd64", sources=(release,), packages=packages)
    entry = LockedContainer(
        inputs_sha256=inputs_sha256(inputs), inputs=inputs, systems={"x86_64-linux": system}
    )
    return render_lock(new_lock({"fd": entry, "rg.v2": entry})).encode()


LOCK_SEEDS = [_lock_text()]


def test_the_lock_seed_is_valid(work: Path) -> None:
    (work / "containers.lock").write_bytes(LOCK_SEEDS[0])
    assert read_lock(work / "containers.lock").containers["fd"].systems


@FUZZ
@given(data=mutated(LOCK_SEEDS))
def test_a_mutated_lock_is_read_whole_or_refused_naming_its_line(work: Path, data: bytes) -> None:
    path = work / "containers.lock"
    path.write_bytes(data)
    with only_writing_in(work):
        try:
            lock = read_lock(path)
        except LockError as exc:
            assert str(exc).startswith(str(path))
            assert "\n" not in exc.message.strip()
            event("refused")
            return
    event("read")
    for entry in lock.containers.values():
        for system in entry.systems.values():
            for p in system.packages:
                assert p.filename and not p.filename.startswith("/")
                assert ".." not in p.filename.split("/")
                assert len(p.sha256) == 64 and p.size >= 0
                assert " " not in p.version and p.version[:1].isalnum()


# -- cache records -------------------------------------------------------------------------------


def _no_read(sha256: str) -> Any:
    raise AssertionError("the skeleton layer reads no package")


@pytest.fixture(scope="module")
def layer_seed(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, Path]:
    """A real layer record, and the cache it came from (which holds its blob)."""
    root = tmp_path_factory.mktemp("records")
    cache = Cache(root)
    build_layers([LayerPlan(skeleton=True)], _no_read, cache, epoch=0, keep_docs=False)
    [(_key, path)] = list(cache.entries(Kind.LAYERS))
    return path.read_bytes(), root


def _fuzz_record_seeds() -> list[bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        cache = Cache(tmp)
        build_layers([LayerPlan(skeleton=True)], _no_read, cache, epoch=0, keep_docs=False)
        return [path.read_bytes() for _key, path in cache.entries(Kind.LAYERS)]


RECORD_SEEDS = _fuzz_record_seeds()


@FUZZ
@given(data=mutated(RECORD_SEEDS))
def test_a_mutated_layer_record_is_valid_or_evicted(
    layer_seed: tuple[bytes, Path], data: bytes
) -> None:
    _seed, root = layer_seed
    cache = Cache(root)
    key = "e" * 64
    cache.put(Kind.LAYERS, key, data)
    with only_writing_in(root):
        problem = EntryChecker(_blob(cache)).problem(Kind.LAYERS, key, cache.path(Kind.LAYERS, key))
        try:
            record: LayerRecord | None = decode_layer_record(data)
        except ValueError:
            valid, record = False, None
        else:
            valid = True
        found = read_layer_record(cache, key)
    if not valid:
        assert problem  # what the build evicts, cache verify and cache pull refuse
        assert found is None and cache.get(Kind.LAYERS, key) is None
        assert cache.progress.warnings  # type: ignore[attr-defined]
    elif record is not None:
        assert found == record
        assert record.digest.startswith("sha256:") and len(record.digest) == 71
        assert all(c.startswith("/") for c in record.commands)
    cache.discard(Kind.LAYERS, key)


def _blob(cache: Cache) -> Callable[[str], Path | None]:
    return lambda key: cache.get(Kind.BLOBS, key)


INDEX_TEXT = "\n".join(
    f"Package: pkg{i}\nVersion: 1.{i}-1\nArchitecture: amd64\n"
    + (f"Provides: virt{i % 3} (= 1)\n" if i % 2 else "")
    + f"Filename: pool/main/p/pkg{i}/pkg{i}_1.{i}-1_amd64.deb\nSize: {100 + i}\n"
    f"SHA256: {hashlib.sha256(str(i).encode()).hexdigest()}\n"
    for i in range(24)
).encode()
TRUE_RECORDS = [(r.name, r.version, r.sha256) for r in parse_packages(INDEX_TEXT, "main")]
INDEX_SHA = hashlib.sha256(b"the compressed index").hexdigest()


def _fuzz_index_seeds() -> list[bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        cache = Cache(tmp)
        load_index(cache, INDEX_SHA, lambda: INDEX_TEXT, component="main")
        path = cache.get(Kind.INDEXES, cache_key(INDEX_SHA))
        assert path is not None
        return [path.read_bytes()]


INDEX_SEEDS = _fuzz_index_seeds()


@FUZZ
@given(data=mutated(INDEX_SEEDS), lookups=st.lists(st.integers(0, 30), max_size=6))
def test_a_mutated_parsed_index_gives_the_true_records_or_is_rebuilt(
    work: Path, data: bytes, lookups: list[int]
) -> None:
    root = work / "index-cache"
    cache = Cache(root)
    key = cache_key(INDEX_SHA)
    cache.put(Kind.INDEXES, key, data)
    with only_writing_in(root):
        problem = EntryChecker(_blob(cache)).problem(
            Kind.INDEXES, key, cache.path(Kind.INDEXES, key)
        )
        index = load_index(cache, INDEX_SHA, lambda: INDEX_TEXT, component="main")
        for i in lookups:
            named = index.named(f"pkg{i}")
            assert [(r.name, r.version, r.sha256) for r in named] == [
                t for t in TRUE_RECORDS if t[0] == f"pkg{i}"
            ]
        assert [(r.name, r.version, r.sha256) for r in index] == TRUE_RECORDS
    if data != INDEX_SEEDS[0]:
        assert problem  # cache verify and pull see every change
    cache.discard(Kind.INDEXES, key)


# -- .deb files ----------------------------------------------------------------------------------


def _deb_seeds() -> list[bytes]:
    files = {
        "/usr/bin/tool": File(b"#!/bin/sh\necho tool\n" * 20, 0o755),
        "/usr/share/doc/tool/copyright": b"MIT\n",
        "/usr/lib/tool/data": b"\x00\x01" * 300,
        "/usr/bin/alias": Symlink("tool"),
        "/var/lib/tool": Directory(0o700),
    }
    seeds = []
    with tempfile.TemporaryDirectory() as tmp:
        for compression in ("xz", "gzip", "zstd", "none"):
            spec = DebSpec("tool", "1.0-1", files=files, compression=compression)
            spec.postinst = (
                "#!/bin/sh\nupdate-alternatives --install /usr/bin/t t /usr/bin/tool 10\n"
            )
            seeds.append(build_deb(spec, Path(tmp) / compression).read_bytes())
    link = tarfile.TarInfo("./usr/bin/tool2")
    link.type, link.linkname = tarfile.LNKTYPE, "./usr/bin/tool"
    hand_made = tar_bytes([(tarfile.TarInfo("./usr/bin/tool"), b"x" * 700), (link, None)])
    seeds.append(raw_deb("Package: tool\nVersion: 1\nArchitecture: amd64\n", hand_made))
    return seeds


DEB_SEEDS = _deb_seeds()
CONTROL = "Package: tool\nVersion: 1\nArchitecture: amd64\n"


def _tar_seeds() -> list[bytes]:
    """Plain data.tar members: the hand-made one, and dpkg-deb's (from the uncompressed .deb)."""
    link = tarfile.TarInfo("./usr/bin/tool2")
    link.type, link.linkname = tarfile.LNKTYPE, "./usr/bin/tool"
    sym = tarfile.TarInfo("./usr/bin/alias")
    sym.type, sym.linkname = tarfile.SYMTYPE, "../lib/tool/data"
    folder = tarfile.TarInfo("./usr/lib/tool")
    folder.type = tarfile.DIRTYPE
    long = tarfile.TarInfo("./usr/share/" + "x" * 150)
    seeds = [
        tar_bytes([(folder, None), (tarfile.TarInfo("./usr/bin/tool"), b"x" * 700), (link, None),
                   (sym, None), (long, b"y")]),
    ]  # fmt: skip
    plain = DEB_SEEDS[3]  # compression "none": data.tar is the last member
    seeds.append(plain[plain.index(b"data.tar") + 60 :])
    return seeds


TAR_SEEDS = _tar_seeds()


NAME_PARTS = ["usr", "bin", "tool", ".", "..", "", "etc", "x" * 200, "é", "\x7f", "a b", "*"]
TYPES = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE,
         tarfile.BLKTYPE, tarfile.FIFOTYPE, tarfile.CONTTYPE, b"Z"]  # fmt: skip


@st.composite
def hostile_tars(draw: st.DrawFn) -> bytes:
    """Well-formed tars of hostile members: traversal, links anywhere, devices, odd names."""
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    for _ in range(draw(st.integers(1, 8))):
        parts = draw(st.lists(st.sampled_from(NAME_PARTS), min_size=1, max_size=24))
        name = draw(st.sampled_from(["./", "/", "", "../"])) + "/".join(parts)
        info = tarfile.TarInfo(name)
        info.type = draw(st.sampled_from(TYPES))
        info.mode = draw(st.sampled_from([0o755, 0o644, 0o4755, 0o7777, 0]))
        if info.type in (tarfile.SYMTYPE, tarfile.LNKTYPE):
            info.linkname = draw(st.sampled_from(["", "tool", "/etc/shadow", "../../..", name,
                                                  "./usr/bin/tool", "x" * 5000]))  # fmt: skip
        data = b"x" * draw(st.integers(0, 64)) if info.type == tarfile.REGTYPE else None
        members.append((info, data))
    return tar_bytes(members)


@st.composite
def debs(draw: st.DrawFn) -> bytes:
    """A .deb mutated anywhere; a well-formed .deb around a mutated tar; or around a tar of
    hostile members (the last two reach the tar reader's own rules)."""
    kind = draw(st.sampled_from(["deb", "tar", "members"]))
    if kind == "deb":
        return draw(mutated(DEB_SEEDS))
    tar = draw(mutated(TAR_SEEDS)) if kind == "tar" else draw(hostile_tars())
    return raw_deb(CONTROL, tar)


@settings(
    max_examples=EXAMPLES * 2,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=debs())
def test_a_mutated_deb_is_read_safely_or_refused_as_a_package_error(
    work: Path, data: bytes
) -> None:
    debs = work / "debs"
    debs.mkdir(exist_ok=True)
    deb = debs / "tool.deb"
    deb.write_bytes(data)
    with only_writing_in(debs / "nothing"), contextlib.chdir(debs):
        try:
            contents = read_deb(deb, "tool", max_unpacked=1 << 20)
        except PackageError as exc:
            assert "tool" in exc.message
            reason = re.sub(r"'[^']*'|\(.*", "…", exc.message.split(": ", 1)[-1])
            event(f"refused: {reason[:40]}")
            return
    event("read")
    seen: set[str] = set()
    for entry in contents.entries:
        assert entry.path.startswith("/") and ".." not in entry.path.split("/")
        assert len(os.fsencode(entry.path)) < PATH_MAX
        assert all(len(part) <= NAME_MAX for part in os.fsencode(entry.path).split(b"/"))
        assert entry.kind in ("file", "dir", "symlink", "hardlink")
        if entry.kind == "hardlink":
            assert entry.target in seen
        seen.add(entry.path)
    assert [p.name for p in debs.iterdir()] == ["tool.deb"]
