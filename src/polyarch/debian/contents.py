"""Contents indexes: which package ships which command (for ``polyarch add``).

A Debian archive publishes, per component, ``Contents-ARCH.gz`` (every path of
every package of that arch) and ``Contents-all.gz`` (Architecture: all
packages, which are in no Contents-ARCH). The signed Release lists both with
their SHA256, so they are verified like every index (``repository.py``);
only the ``.gz`` form is served, although the Release lists the plain one too.

Format, one line per path, sorted, no header: ``PATH<whitespace>SECTION/PKG[,...]``
(``contrib/utils/x`` outside main). A path may hold spaces, so a line splits on
its last run of whitespace. Paths are as packaged (``bin/ls``, not
``usr/bin/ls``).

Only the command directories are kept (``COMMAND_DIRS``): ~36,000 lines of
amd64's 1.6 million, ~10,000 of all's 5 million. The gzip stream is read in
chunks and only chunks holding such a line are matched, so memory stays at a
few MiB beside the compressed file. The kept lines are cached under the
compressed file's SHA256 (cache kind ``contents``), so a second lookup reads
a small file instead of 45 MiB of indexes.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

import msgspec

from polyarch.cache import Cache, Kind
from polyarch.errors import IntegrityError

COMMAND_DIRS = ("usr/bin", "bin", "usr/sbin", "sbin")
"""Where a command's binary lives, in the order a root shell's PATH looks (merged /usr)."""
CONTENTS_VARIANTS = (".gz", "")
"""The plain file is listed in Releases but not served by Debian's mirrors; .gz is."""
_LINE = re.compile(rb"\n((?:usr/)?s?bin/[^\n/]+?)[ \t]+([^\s]+)(?=\n)")
"""A line whose path is directly in a command directory; the literal newline in front
lets the regex engine jump from line start to line start."""
_STARTS = tuple(b"\n" + d.encode() + b"/" for d in COMMAND_DIRS)
_CHUNK = 1 << 20


class _Lines(msgspec.Struct, frozen=True, array_like=True):
    """The cached form: each kept line's path and package field, in file order."""

    paths: list[str]
    packages: list[str]


_FORMAT = "contents-commands-1:" + ",".join(_Lines.__struct_fields__)
_LAYOUT = hashlib.sha256(_FORMAT.encode()).hexdigest()[:8]
_DECODER = msgspec.msgpack.Decoder(_Lines)


def cache_key(sha256_hex: str) -> str:
    """The cache key of a parsed Contents file: its compressed file's SHA256 and the format."""
    return f"{sha256_hex}-{_LAYOUT}"


def is_current_key(key: str) -> bool:
    """Whether a ``contents`` cache key is of this version's format (others are never read)."""
    return key.endswith(cache_key(""))


def contents_files(
    listed: Mapping[str, tuple[int, str]], components: Iterable[str], arch: str
) -> list[tuple[str, int, str]]:
    """(path, size, sha256) of each component's Contents-ARCH and Contents-all that a Release
    lists (``listed``: path → (size, sha256)), the preferred form of each."""
    found = []
    for component in components:
        for name in (arch, "all"):
            paths = [f"{component}/Contents-{name}{suffix}" for suffix in CONTENTS_VARIANTS]
            path = next((p for p in paths if p in listed), None)
            if path is not None:
                found.append((path, *listed[path]))
    return found


def parse_contents(compressed: bytes, where: str) -> _Lines:
    """The command lines of a Contents file (gzip, or plain if it does not start like gzip)."""
    paths: list[str] = []
    packages: list[str] = []
    plain = not compressed.startswith(b"\x1f\x8b")
    inflate = None if plain else zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
    rest = b"\n"
    view = memoryview(compressed)
    try:
        for start in range(0, len(compressed), _CHUNK):
            piece = view[start : start + _CHUNK]
            buffer = rest + (bytes(piece) if inflate is None else inflate.decompress(piece))
            cut = buffer.rfind(b"\n") + 1
            if any(buffer.find(s, 0, cut) >= 0 for s in _STARTS):
                _collect(buffer[:cut], paths, packages)
            rest = b"\n" + buffer[cut:]
        tail = rest + (b"" if inflate is None else inflate.flush()) + b"\n"
    except zlib.error as exc:
        raise IntegrityError(f"{where} is not a valid gzip file: {exc}") from None
    _collect(tail, paths, packages)
    return _Lines(paths, packages)


def _collect(buffer: bytes, paths: list[str], packages: list[str]) -> None:
    for path, field in _LINE.findall(buffer):
        paths.append(path.decode("utf-8", "replace"))
        packages.append(field.decode("utf-8", "replace"))


def load_contents(cache: Cache, sha256_hex: str, raw: Callable[[], bytes], where: str) -> Contents:
    """The command lines of the Contents file whose compressed form has ``sha256_hex``.

    From the cache when it holds a well-formed entry (opened without following
    a symlink, decoded against its schema); else ``raw()`` gives the verified
    compressed bytes, which are parsed and cached. A damaged entry is evicted
    and rebuilt.
    """
    key = cache_key(sha256_hex)
    opened = cache.open(Kind.CONTENTS, key)
    if opened is not None:
        with opened:
            lines = decode_cached(opened.read())
        if lines is not None:
            return Contents([lines])
        cache.evict(Kind.CONTENTS, key, "not a parsed Contents index")
    lines = parse_contents(raw(), where)
    cache.put(Kind.CONTENTS, key, msgspec.msgpack.encode(lines))
    return Contents([lines])


def decode_cached(data: bytes) -> _Lines | None:
    """A cache entry's bytes decoded and checked, or None if they are not one."""
    try:
        lines = _DECODER.decode(data)
    except (msgspec.DecodeError, ValueError):
        return None
    if len(lines.paths) != len(lines.packages):
        return None
    return lines


@dataclass(frozen=True, slots=True)
class Shipped:
    """A command file of a package: ``/usr/bin/rg`` of ripgrep."""

    path: str
    """Absolute, merged-/usr (``/bin/ls`` is ``/usr/bin/ls``)."""
    package: str

    @property
    def command(self) -> str:
        return self.path.rsplit("/", 1)[1]


def _package_names(field: str) -> list[str]:
    """``utils/ripgrep,contrib/utils/x`` → ``["ripgrep", "x"]``."""
    return [item.rsplit("/", 1)[-1] for item in field.split(",") if item]


class Contents:
    """The command files of one or more Contents indexes, looked up by command or package."""

    def __init__(self, parts: Iterable[_Lines]) -> None:
        self._parts = tuple(parts)

    @classmethod
    def concat(cls, indexes: Iterable[Contents]) -> Contents:
        return cls([part for index in indexes for part in index._parts])

    @property
    def files(self) -> int:
        """How many Contents files this is made of (0: the archive publishes none)."""
        return len(self._parts)

    @cached_property
    def _shipped(self) -> tuple[Shipped, ...]:
        found: dict[tuple[str, str], Shipped] = {}
        for part in self._parts:
            for path, field in zip(part.paths, part.packages, strict=True):
                merged = "/" + (path if path.startswith("usr/") else f"usr/{path}")
                for package in _package_names(field):
                    found.setdefault((merged, package), Shipped(merged, package))
        return tuple(found[k] for k in sorted(found))

    @cached_property
    def _by_command(self) -> Mapping[str, tuple[Shipped, ...]]:
        table: dict[str, list[Shipped]] = {}
        for item in self._shipped:
            table.setdefault(item.command, []).append(item)
        return {k: tuple(v) for k, v in table.items()}

    @cached_property
    def _by_package(self) -> Mapping[str, tuple[Shipped, ...]]:
        table: dict[str, list[Shipped]] = {}
        for item in self._shipped:
            table.setdefault(item.package, []).append(item)
        return {k: tuple(v) for k, v in table.items()}

    def shipping(self, command: str) -> tuple[Shipped, ...]:
        """Every package file named ``command`` in a command directory, sorted by path."""
        return self._by_command.get(command, ())

    def commands_of(self, package: str) -> tuple[Shipped, ...]:
        """Every command file of ``package``, sorted by path."""
        return self._by_package.get(package, ())

    def command_names(self) -> set[str]:
        return set(self._by_command)

    def __len__(self) -> int:
        return len(self._shipped)
