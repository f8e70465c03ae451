"""A warm build that would change nothing does nothing: the build stamp.

A build's outputs are a function of its inputs: polyarch's own code, the
containers.toml it read, each source (mirror, suite, keyring) and the signed
Release it verified, the container, systems, tag, epoch and output
directory. ``build_container`` ends by writing a stamp for ``OUT/NAME``: a
fingerprint of those inputs, the SHA-256 of every file it left there, and
the summary the CLI prints.

``unchanged_build`` is the warm path. It still fetches and verifies every
source's InRelease (that is how it knows nothing upstream moved: a new
security fix changes a Release), then compares the fingerprint, then checks
that ``OUT/NAME`` holds exactly the stamped files with the stamped content.
Content is checked as everywhere else (``checked.CheckedFiles``): a file
unchanged since this machine last hashed it, by the kernel's ctime, is not
hashed again; any other file is. Only when all of that holds does it answer
with the stamped summary, without resolving, planning layers, assembling
images or deriving evidence, and without importing the code that does.

Files a container copies from the host (``files``) are read and fingerprinted
too, as the container's own layer keys them. Writing ``OUT/NAME`` and stamping
it happen under one lock per output directory, so two builds into the same
directory cannot stamp each other's files.

Like ``checked/``, stamps live in the cache (``CACHE/stamps/``) but describe
this machine's files: they are never pushed or pulled, and a stamp copied to
another machine matches no file there. A missing, unreadable or malformed
stamp only means the full build runs (and writes a new one). Builds that
read containers.lock (``--locked``, ``--offline``) or sign are not stamped:
their inputs include files this fingerprint does not read.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import stat
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec

from polyarch import __version__
from polyarch.cache import Cache, open_regular
from polyarch.checked import CheckedFiles
from polyarch.config import Container
from polyarch.determinism import COMPRESSOR, DIGEST_PATTERN, sha256_file, source_date_epoch
from polyarch.errors import HostError
from polyarch.outputs import Outputs
from polyarch.platforms import SYSTEMS, System
from polyarch.workflows.resolve import Session

STAMPS_DIR = "stamps"
"""Below the cache root: one stamp per output directory; not a kind of entry."""
_FORMAT = 1
_HEX = frozenset("0123456789abcdef")
_CHUNK = 1 << 20


class StampedImage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One system image of a build, as the CLI reports it."""

    system: str
    digest: str
    layers: int
    size: int
    uncompressed: int
    version: str


class BuildSummary(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a build reports: where its outputs are, the index and each system image."""

    container: str
    path: str
    index_digest: str
    images: tuple[StampedImage, ...]

    @property
    def version(self) -> str:
        """The container's own package version (on the first system)."""
        return self.images[0].version


class _Stamp(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format: int
    root: str
    inputs: str
    files: dict[str, str]
    """Path below ``root`` (``/``-separated) → SHA-256 hex of its content."""
    summary: BuildSummary


def build_inputs(
    session: Session,
    container: Container,
    systems: Sequence[System],
    *,
    out_dir: Path,
    tag: str,
    epoch: int,
) -> str | None:
    """The fingerprint of everything a build's outputs depend on; None if not stamped.

    Reads every source's verified Release (fetched afresh: the network is asked).
    """
    out = _resolved(out_dir)
    if session.lock is not None or session.offline or out is None:
        return None
    releases = session.archive.releases()
    digest = hashlib.sha256()

    def feed(*parts: object) -> None:
        for part in parts:
            digest.update(repr(part).encode("utf-8", "surrogateescape") + b"\0")

    feed(_FORMAT, __version__, _code_fingerprint(), sys.version, COMPRESSOR)
    feed(str(session.config.path.resolve()), session.config.digest)
    for source, release in zip(session.sources, releases, strict=True):
        feed(source, _keyring_digest(source.keyring), release.file_name, release.file_sha256)
    feed(container.name, tuple(s.name for s in _ordered(systems)), tag, epoch)
    feed(out, _host_files(session, container))
    return digest.hexdigest()


def _ordered(systems: Sequence[System]) -> list[System]:
    """In system-table order, as a build writes them whatever order they were asked in."""
    return sorted(systems, key=SYSTEMS.index)


def _host_files(session: Session, container: Container) -> list[list[object]]:
    """What the container copies from the host, as its own layer's cache key describes it."""
    if not container.options.files:
        return []
    from polyarch.image.custom import describe_entry, host_file_entries

    entries = host_file_entries(container.options.files, session.config.directory, container.name)
    return [describe_entry(e) for e in entries]


def unchanged_build(
    session: Session,
    container: Container,
    systems: Sequence[System],
    *,
    out_dir: Path,
    tag: str,
    epoch: int | None = None,
) -> BuildSummary | None:
    """The summary of the last build of these inputs, if ``OUT/NAME`` still holds its outputs.

    None when anything differs: then ``build_container`` must run.
    """
    epoch = source_date_epoch() if epoch is None else epoch
    inputs = build_inputs(session, container, systems, out_dir=out_dir, tag=tag, epoch=epoch)
    if inputs is None:
        return None
    root = Outputs(out_dir, container.name).root
    stamp = _read(session.cache, root)
    if stamp is None or stamp.inputs != inputs or not _tells(stamp, container, systems):
        return None
    if not _holds(root, stamp.files, session.cache.checked):
        return None
    # The same directory, perhaps named another way (another working directory): as asked.
    return msgspec.structs.replace(stamp.summary, path=str(root))


def remember_build(cache: Cache, root: Path, inputs: str, summary: BuildSummary) -> None:
    """Stamp ``root`` (just written or found unchanged) as the outputs of ``inputs``.

    Best effort: a stamp that cannot be written only means the next build checks in full.
    """
    previous = _read(cache, root)
    known = previous.files if previous is not None else {}
    resolved, path = _resolved(root), _stamp_path(cache, root)
    try:
        files = _digests(root, known, cache.checked)
        if files is None or resolved is None or path is None:
            return
        data = msgspec.json.encode(_Stamp(_FORMAT, resolved, inputs, files, summary))
    except (OSError, ValueError):  # ValueError: a path that is not UTF-8 cannot be stamped
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".stamp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(temp, path)
        except BaseException:
            os.unlink(temp)
            raise
    except OSError:
        return


def prune_stamps(cache: Cache, *, now: float, grace: float, older_than: float | None) -> None:
    """Remove a crashed writer's temporary stamp (untouched for ``grace`` seconds), and
    with ``older_than`` stamps unused that long (their outputs are then checked in full)."""
    for path in (cache.root / STAMPS_DIR).glob("*"):
        try:
            st = path.lstat()
            age = now - max(st.st_atime, st.st_mtime)
            if (age > grace and path.name.startswith(".")) or (
                older_than is not None and age > older_than
            ):
                path.unlink()
        except OSError:
            continue


def _resolved(path: Path) -> str | None:
    """``path`` made absolute with its links followed; None if that fails (a link loop)."""
    try:
        return str(path.resolve())
    except (OSError, RuntimeError, ValueError):
        return None


def _stamp_path(cache: Cache, root: Path) -> Path | None:
    name = _resolved(root)
    if name is None:
        return None
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()
    return cache.root / STAMPS_DIR / digest


@contextlib.contextmanager
def outputs_lock(cache: Cache, root: Path) -> Iterator[bool]:
    """Hold the lock writers of ``root`` take turns under (writing it, then stamping what
    they wrote); yields whether it is held. A cache that cannot be written holds none, and
    a build then stamps nothing: no stamp it wrote could describe another build's files."""
    name = _resolved(root)
    if name is None:  # a link loop: the build reports it, and stamps nothing
        yield False
        return
    key = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(cache.outputs_lock(key))
        except HostError:
            held = False
        else:
            held = True
        yield held


def _read(cache: Cache, root: Path) -> _Stamp | None:
    path = _stamp_path(cache, root)
    if path is None:
        return None
    opened = open_regular(path)  # a FIFO put where a stamp belongs must not hang the build
    if opened is None:
        return None
    try:
        with opened as f:
            stamp = msgspec.json.decode(f.read(1 << 20), type=_Stamp)
    except (OSError, msgspec.ValidationError, msgspec.DecodeError):
        return None
    if stamp.format != _FORMAT or stamp.root != _resolved(root):
        return None
    if not all(_sha256_hex(d) for d in stamp.files.values()):
        return None
    return stamp


def _tells(stamp: _Stamp, container: Container, systems: Sequence[System]) -> bool:
    """Whether the stamp's summary is about this build and its stamped files: what it reports
    is then what is on disk (a crafted summary is not printed as if true)."""
    summary, files = stamp.summary, stamp.files
    blobs = {f"sha256:{d}" for rel, d in files.items() if _blob_name(rel) == d}
    digests = [summary.index_digest, *(i.digest for i in summary.images)]
    return (
        summary.container == container.name
        and [i.system for i in summary.images] == [s.name for s in _ordered(systems)]
        and all(DIGEST_PATTERN.fullmatch(d) and d in blobs for d in digests)
        and all(min(i.layers, i.size, i.uncompressed) >= 0 for i in summary.images)
    )


def _listing(root: Path) -> dict[str, Path] | None:
    """Every regular file below ``root`` by relative path; None if anything else is there
    (a symlink, a device, or a directory that leads to no file: a build writes none)."""
    found: dict[str, Path] = {}
    pending = [(root, "")]
    while pending:
        directory, prefix = pending.pop()
        empty = True
        with os.scandir(directory) as entries:
            for entry in entries:
                empty = False
                mode = entry.stat(follow_symlinks=False).st_mode
                rel = prefix + entry.name
                if stat.S_ISDIR(mode):
                    pending.append((Path(entry.path), rel + "/"))
                elif stat.S_ISREG(mode):
                    found[rel] = Path(entry.path)
                else:
                    return None
        if empty and prefix:
            return None
    return found


def _holds(root: Path, files: Mapping[str, str], checked: CheckedFiles) -> bool:
    """Whether ``root`` holds exactly ``files``, each with its stamped content."""
    try:
        listing = _listing(root)
    except OSError:
        return False
    if listing is None or listing.keys() != files.keys():
        return False

    def matches(rel: str) -> bool:
        return checked.check(listing[rel], f"sha256:{files[rel]}", _has_sha256(files[rel]))

    with ThreadPoolExecutor(max_workers=2) as pool:  # hashing releases the GIL
        return all(pool.map(matches, sorted(files)))


def _digests(root: Path, known: Mapping[str, str], checked: CheckedFiles) -> dict[str, str] | None:
    """SHA-256 of every file below ``root``; ``known`` digests are tried first (via the memo)."""
    listing = _listing(root)
    if listing is None:
        return None

    def digest_of(rel: str) -> str | None:
        path = listing[rel]
        guess = known.get(rel) or _blob_name(rel)
        if guess and checked.check(path, f"sha256:{guess}", _has_sha256(guess)):
            return guess
        return _file_sha256(path)

    with ThreadPoolExecutor(max_workers=2) as pool:
        digests = dict(zip(sorted(listing), pool.map(digest_of, sorted(listing)), strict=True))
    if not all(digests.values()):
        return None
    return {rel: d for rel, d in digests.items() if d is not None}


def _blob_name(rel: str) -> str | None:
    """The digest an OCI layout blob's path claims (``oci/blobs/sha256/HEX``)."""
    head, _, name = rel.rpartition("/")
    return name if head.endswith("blobs/sha256") and _sha256_hex(name) else None


def _sha256_hex(text: str) -> bool:
    return len(text) == 64 and set(text) <= _HEX


def _has_sha256(expected: str) -> functools.partial[bool]:
    return functools.partial(_stream_is, expected)


def _stream_is(expected: str, f: io.BufferedReader) -> bool:
    return hashlib.file_digest(f, "sha256").hexdigest() == expected


def _file_sha256(path: Path) -> str | None:
    """An output's content (never through a link: outputs hold none)."""
    opened = open_regular(path)
    if opened is None:
        return None
    with opened as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _keyring_digest(path: Path) -> str | None:
    """A keyring's content, through any link to it (verifying it reads the same file)."""
    try:
        return sha256_file(path)
    except OSError:
        return None  # unreadable: the signature check says so


@functools.cache
def _code_fingerprint() -> str:
    """Name, size and mtime of every file of this polyarch: a changed checkout builds in full."""
    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    pending = [package]
    while pending:
        directory = pending.pop()
        with os.scandir(directory) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.name == "__pycache__":
                    continue
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    pending.append(Path(entry.path))
                else:
                    digest.update(f"{entry.path}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return digest.hexdigest()
