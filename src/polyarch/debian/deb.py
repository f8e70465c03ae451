"""Read a .deb as a stream, without ever extracting it onto the host.

A .deb is an ``ar`` archive of three members: ``debian-binary`` ("2.0"),
``control.tar[.xz|.zst|.gz]`` (the control stanza and maintainer scripts) and
``data.tar[.xz|.zst|.gz]`` (the files). The ``ar`` layer is parsed by hand:
the format is a 8-byte magic plus fixed 60-byte text headers, and no library
on PyPI streams it (``arpy`` and friends seek or load whole members), while a
data member is the bulk of the package and should flow straight from the file
through the decompressor into ``tarfile``'s stream mode (``r|``).

Every member name is normalised to an absolute path (``./usr/bin/x`` →
``/usr/bin/x``). Names with ``..``, absolute names, hard links to anything that
is not an earlier regular file of the same package, device nodes and fifos, and
a truncated or corrupt data.tar are refused with ``PackageError`` naming the
package and the path.

Paths longer than ``PATH_MAX`` or with a component longer than ``NAME_MAX``
(bytes, as Linux counts them) are refused too: no engine can unpack them, and
``docker load`` would fail long after the build said it succeeded. A package
whose files add up to more than ``MAX_UNPACKED_BYTES`` is refused as it is read.

Symlinks may point anywhere, including ``/etc/shadow`` or ``../../..``: their
targets are kept as written and only ever interpreted *inside* the image by
the container runtime. polyarch never resolves or follows a symlink on the
host (nothing is extracted; layers are written from memory), so a link cannot
make polyarch read or write a host file.

Memory stays bounded whatever a package holds: file contents are kept in
memory up to ``MEMORY_BUDGET`` per package; beyond it (or for any file larger
than ``SPOOL_FILE_SIZE``) they go to a nameless temporary file beside the
.deb (``Spooled``), which vanishes when the contents are dropped. The sum of
the sizes the data.tar declares is checked against ``max_unpacked`` before
the bytes are read, so an archive bomb is refused, not unpacked.
"""

from __future__ import annotations

import gzip
import io
import lzma
import os
import sys
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, Self

from polyarch.debian.spool import MEMORY_BUDGET, SPOOL_FILE_SIZE, Spool, Spooled
from polyarch.errors import PackageError

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

EntryKind = Literal["file", "dir", "symlink", "hardlink"]

AR_MAGIC = b"!<arch>\n"
_AR_HEADER_SIZE = 60
_COMPRESSIONS = ("", ".xz", ".zst", ".gz")
_MAX_CONTROL_SIZE = 64 * 1024 * 1024  # control.tar is a few KB; refuse absurd ones
PATH_MAX = 4096
"""Linux's limit on a path, its terminating NUL included."""
NAME_MAX = 255
"""Linux's limit on one path component, in bytes."""
MAX_UNPACKED_BYTES = 8 * 1024**3
"""Default limit on the files of one package, in bytes (the largest Debian packages
unpack to a few GB); more is refused as a decompression bomb."""


@dataclass(frozen=True)
class DebEntry:
    """One filesystem entry of a package (or one polyarch makes itself).

    ``path`` is absolute and normalised, without a trailing slash. ``data`` is
    the content of a ``file`` held in memory, or ``spooled`` holds it on disk;
    a ``hardlink`` carries its target's content too (the same objects, so
    writers can turn it into a copy when the target is not in the same layer).
    ``target`` is a symlink's target as written, or a hard link's normalised
    absolute target.
    """

    path: str
    kind: EntryKind
    mode: int
    data: bytes = b""
    target: str = ""
    spooled: Spooled | None = None
    uid: int = 0
    gid: int = 0
    """Owner in the image: root for everything from packages, containers.toml's for its own."""

    @property
    def size(self) -> int:
        return self.spooled.size if self.spooled is not None else len(self.data)

    def reader(self) -> IO[bytes]:
        """A stream of the content, wherever it is kept."""
        return self.spooled.reader() if self.spooled is not None else io.BytesIO(self.data)

    def content(self) -> bytes:
        """The whole content in memory: only for files known to be small (certificates)."""
        return self.data if self.spooled is None else self.spooled.reader().read()

    def same_content(self, other: DebEntry) -> bool:
        """True when both name the very same bytes (a hard link and its target)."""
        return self.data is other.data and self.spooled is other.spooled


@dataclass(frozen=True)
class DebContents:
    """What polyarch needs of one .deb: its control stanza, postinst and files."""

    package: str
    control: str
    postinst: str | None
    entries: tuple[DebEntry, ...]
    size: int = 0
    """Bytes of the .deb file."""


def normalise_path(name: str) -> str | None:
    """``./usr//bin/./x/`` → ``/usr/bin/x``; ``None`` if it has ``..`` or is absolute.

    The archive's root (``./``) becomes ``/``.
    """
    if name.startswith("/"):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None
    return "/" + "/".join(parts)


def read_deb(path: Path, package: str, *, max_unpacked: int | None = None) -> DebContents:
    """Parse the .deb at ``path`` (already verified by its SHA256) as ``package``.

    Raises ``PackageError`` naming ``package`` for anything malformed or unsafe,
    or whose files add up to more than ``max_unpacked`` bytes (default
    ``MAX_UNPACKED_BYTES``).
    """
    try:
        f = path.open("rb")
    except OSError as exc:
        raise PackageError(
            f"{package}: cannot read {path}: {exc.strerror}",
            hint="run the build again to fetch it",
        ) from exc
    with f:
        if f.read(len(AR_MAGIC)) != AR_MAGIC:
            raise _bad(package, "not a Debian package (no ar header)")
        control: str | None = None
        postinst: str | None = None
        entries: tuple[DebEntry, ...] | None = None
        seen_binary = False
        for name, member in _ar_members(f, package):
            if name == "debian-binary":
                version = member.read(16)
                if not version.startswith(b"2."):
                    raise _bad(package, f"unsupported .deb format {version!r}")
                seen_binary = True
            elif _is_member(name, "control.tar") and control is None:
                control, postinst = _read_control(member, name, package)
            elif _is_member(name, "data.tar") and entries is None:
                limits = _Limits(max_unpacked or MAX_UNPACKED_BYTES, path.parent)
                entries = _read_data(member, name, package, limits)
            # Other members (signatures like _gpgbuilder) do not enter the image.
        if not seen_binary or control is None or entries is None:
            raise _bad(package, "missing debian-binary, control.tar or data.tar member")
        size = os.fstat(f.fileno()).st_size
    return DebContents(package, control, postinst, entries, size)


def _bad(package: str, what: str) -> PackageError:
    return PackageError(
        f"package {package} is malformed or unsafe: {what}",
        hint="the archive may be corrupt or hostile; remove the package from the container",
    )


def _is_member(name: str, stem: str) -> bool:
    return any(name == stem + ext for ext in _COMPRESSIONS)


class _Bounded(io.RawIOBase):
    """The ``size`` bytes of one ar member, read sequentially from the .deb file."""

    def __init__(self, f: IO[bytes], size: int, package: str, name: str) -> None:
        self._f, self._left, self._package, self._name = f, size, package, name

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._left)
        if n == 0:
            return 0
        chunk = self._f.read(n)
        if len(chunk) < n:
            raise _bad(self._package, f"{self._name} ends before its stated size (truncated .deb)")
        buffer[: len(chunk)] = chunk
        self._left -= len(chunk)
        return len(chunk)

    def drain(self) -> None:
        while self.read(1 << 16):
            pass


def _ar_members(f: IO[bytes], package: str) -> Iterator[tuple[str, io.BufferedReader]]:
    """Yield (name, reader) per member; a member not read to its end is skipped."""
    while True:
        header = f.read(_AR_HEADER_SIZE)
        if not header:
            return
        if len(header) != _AR_HEADER_SIZE or header[58:60] != b"`\n":
            raise _bad(package, "corrupt ar member header")
        # GNU ar ends names with "/"; the name field is space padded.
        name = header[0:16].decode("ascii", "replace").rstrip(" ").rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise _bad(package, f"corrupt size in ar member {name!r}") from None
        raw = _Bounded(f, size, package, name)
        yield name, io.BufferedReader(raw)
        raw.drain()
        if size % 2:
            f.read(1)  # members are 2-byte aligned


def _decompressed(member: io.BufferedReader, name: str) -> io.BufferedIOBase:
    if name.endswith(".xz"):
        return lzma.LZMAFile(member)
    if name.endswith(".zst"):
        return zstd.ZstdFile(member)
    if name.endswith(".gz"):
        return gzip.GzipFile(fileobj=member, mode="rb")
    return member


# What a damaged compressed stream or tar raises; all mean "corrupt package".
_CORRUPT = (
    tarfile.TarError,
    lzma.LZMAError,
    zstd.ZstdError,
    zlib.error,
    gzip.BadGzipFile,
    EOFError,
)


class _CorruptTar(Exception):
    """A tar header that is truncated or damaged in the middle of an archive."""


class _StrictTarInfo(tarfile.TarInfo):
    """Refuse what ``tarfile`` silently takes as the end of an archive.

    ``tarfile`` stops without error at a truncated or bad-checksum header after
    the first one, which would turn a truncated data.tar into a package with
    files silently missing. Only a zero block (the real end marker) ends it.
    """

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        try:
            return super().frombuf(buf, encoding, errors)
        except tarfile.EOFHeaderError:  # type: ignore[attr-defined]  # not in typeshed
            raise
        except tarfile.HeaderError as exc:
            raise _CorruptTar(str(exc)) from None


def _read_control(member: io.BufferedReader, name: str, package: str) -> tuple[str, str | None]:
    try:
        data = _decompressed(member, name).read(_MAX_CONTROL_SIZE + 1)
        if len(data) > _MAX_CONTROL_SIZE:
            raise _bad(package, f"{name} is larger than {_MAX_CONTROL_SIZE} bytes")
        files: dict[str, bytes] = {}
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:", tarinfo=_StrictTarInfo) as tar:
            for info in tar:
                path = normalise_path(info.name)
                if path in ("/control", "/postinst") and info.isreg():
                    extracted = tar.extractfile(info)
                    assert extracted is not None  # a regular file always has a reader
                    files[path] = extracted.read()
    except (*_CORRUPT, _CorruptTar) as exc:
        raise _bad(package, f"{name} is corrupt ({exc})") from None
    if "/control" not in files:
        raise _bad(package, f"{name} has no control file")
    control = files["/control"].decode("utf-8", "replace")
    postinst = files["/postinst"].decode("utf-8", "replace") if "/postinst" in files else None
    return control, postinst


@dataclass
class _Limits:
    """What one data.tar may take: unpacked bytes in all, memory before spooling."""

    max_unpacked: int
    spool_dir: Path
    unpacked: int = 0
    in_memory: int = 0
    spool: Spool | None = None


def _read_data(
    member: io.BufferedReader, name: str, package: str, limits: _Limits
) -> tuple[DebEntry, ...]:
    entries: list[DebEntry] = []
    files: dict[str, DebEntry] = {}  # regular files so far: hard links may only point here
    symlinks: set[str] = set()
    where = name
    try:
        stream = _decompressed(member, name)
        with tarfile.open(fileobj=stream, mode="r|", tarinfo=_StrictTarInfo) as tar:
            for info in tar:
                where = info.name
                limits.unpacked += info.size if info.isreg() else 0
                if limits.unpacked > limits.max_unpacked:
                    raise PackageError(
                        f"package {package} unpacks to more than {limits.max_unpacked} bytes "
                        f"(at {info.name!r}); refusing a decompression bomb",
                        hint="raise max_unpacked_bytes in containers.toml if the package is trusted",
                    )
                entry = _entry(info, tar, files, package, limits)
                if entry is None:
                    continue
                _refuse_path_through_symlink(entry.path, symlinks, package)
                if entry.kind == "symlink":
                    symlinks.add(entry.path)
                if entry.kind == "file":
                    files[entry.path] = entry
                elif entry.kind == "hardlink":
                    # A link to a link is a link to the file.
                    files[entry.path] = files[entry.target]
                entries.append(entry)
            # Read to the end so a damaged compressed trailer (checksum) is noticed too.
            while stream.read(1 << 16):
                pass
    except (*_CORRUPT, _CorruptTar) as exc:
        raise _bad(package, f"{name} is truncated or corrupt near {where!r} ({exc})") from None
    return tuple(entries)


def _refuse_path_through_symlink(path: str, symlinks: set[str], package: str) -> None:
    """Refuse ``x -> /etc`` followed by ``x/passwd``: a write through the package's own link.

    Nothing in a real package needs it, and an engine extracting the layer
    would put the file wherever the link points.
    """
    parent = path.rsplit("/", 1)[0]
    while parent:
        if parent in symlinks:
            raise _bad(package, f"{path!r} lies under its own symlink {parent!r}")
        parent = parent.rsplit("/", 1)[0]


def _refuse_overlong(path: str, what: str, package: str) -> None:
    """Refuse a path no Linux file system can hold (``PATH_MAX``, ``NAME_MAX``)."""
    encoded = os.fsencode(path)
    if len(encoded) >= PATH_MAX:
        raise _bad(
            package, f"{what} {path[:60]!r}… is {len(encoded)} bytes long (limit {PATH_MAX - 1})"
        )
    longest = max(encoded.split(b"/"), key=len)
    if len(longest) > NAME_MAX:
        raise _bad(
            package,
            f"{what} {path[:60]!r}… has a name of {len(longest)} bytes (limit {NAME_MAX})",
        )


def _entry(
    info: tarfile.TarInfo,
    tar: tarfile.TarFile,
    files: dict[str, DebEntry],
    package: str,
    limits: _Limits,
) -> DebEntry | None:
    path = normalise_path(info.name)
    if path is None:
        raise _bad(package, f"path {info.name!r} is absolute or leaves the package root")
    _refuse_overlong(path, "path", package)
    mode = info.mode & 0o7777
    if path == "/":
        return None  # the image root belongs to the filesystem skeleton, not to a package
    if info.isreg():
        return _file_entry(info, tar, path, mode, package, limits)
    if info.isdir():
        return DebEntry(path, "dir", mode)
    if info.issym():
        if not info.linkname or "\0" in info.linkname:
            raise _bad(package, f"symlink {info.name!r} has an empty or invalid target")
        _refuse_overlong(info.linkname, f"target of symlink {path!r}", package)
        return DebEntry(path, "symlink", mode, target=info.linkname)
    if info.islnk():
        target = normalise_path(info.linkname)
        linked = files.get(target) if target is not None else None
        if linked is None:
            raise _bad(
                package,
                f"hard link {info.name!r} points to {info.linkname!r}, "
                "which is not an earlier file of this package",
            )
        return DebEntry(
            path, "hardlink", mode, data=linked.data, target=linked.path, spooled=linked.spooled
        )
    kind = "device" if info.ischr() or info.isblk() else "fifo" if info.isfifo() else "special"
    raise _bad(package, f"{info.name!r} is a {kind}, which a package image may not contain")


def _file_entry(
    info: tarfile.TarInfo,
    tar: tarfile.TarFile,
    path: str,
    mode: int,
    package: str,
    limits: _Limits,
) -> DebEntry:
    """A regular file, its content in memory or spooled (see the module doc)."""
    extracted = tar.extractfile(info)
    assert extracted is not None  # a regular file always has a reader
    if info.size < SPOOL_FILE_SIZE and limits.in_memory + info.size <= MEMORY_BUDGET:
        limits.in_memory += info.size
        return DebEntry(path, "file", mode, data=extracted.read())
    if limits.spool is None:
        limits.spool = Spool(limits.spool_dir)
    offset = limits.spool.append(extracted, info.size)
    return DebEntry(path, "file", mode, spooled=Spooled(limits.spool, offset, info.size))
