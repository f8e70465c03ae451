"""Which packages an image says it holds: its ``/var/lib/dpkg/status.d/`` as the layers leave it.

Layers are applied in order, as a container runtime would: a later file
replaces an earlier one, OCI whiteouts (``.wh.NAME``, ``.wh..wh..opq``)
remove, and a non-directory put where a parent directory was removes what
was below it. Only the status files are kept in memory.
"""

from __future__ import annotations

import gzip
import posixpath
import tarfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, cast

from polyarch.debian.identity import control_fields

STATUS_DIR = "var/lib/dpkg/status.d"
_ANCESTORS = ("var", "var/lib", "var/lib/dpkg", STATUS_DIR)
MAX_STATUS_FILE = 1 << 20
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


@dataclass(frozen=True, slots=True, order=True)
class InstalledPackage:
    name: str
    version: str
    architecture: str

    def __str__(self) -> str:
        return f"{self.name} {self.version} ({self.architecture})"


class StatusError(Exception):
    """A layer cannot be read as a tar (damaged or not a layer)."""


def installed_packages(layers: Iterable[Callable[[], IO[bytes]]]) -> dict[str, InstalledPackage]:
    """File name in status.d → the package its stanza names, after applying ``layers`` in order.

    Each item opens one layer (tar, gzip or not). StatusError if one is not a tar.
    """
    files: dict[str, InstalledPackage] = {}
    for open_layer in layers:
        try:
            with open_layer() as stream, tarfile.open(fileobj=_plain(stream), mode="r|") as tar:
                for member in tar:
                    _apply(files, member, tar)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise StatusError(str(exc) or type(exc).__name__) from None
    return files


def _plain(stream: IO[bytes]) -> IO[bytes]:
    """The tar inside ``stream`` (seekable: layers are checked in memory), gunzipped if gzip.

    ``tarfile``'s own stream mode (``r|gz``) reads only the first gzip member,
    and a large layer has several (``determinism.GZIP_SINGLE_MEMBER_MAX``).
    """
    head = stream.read(2)
    stream.seek(0)
    if head == b"\x1f\x8b":
        return cast(IO[bytes], gzip.GzipFile(fileobj=stream, mode="rb"))
    return stream


def _apply(
    files: dict[str, InstalledPackage], member: tarfile.TarInfo, tar: tarfile.TarFile
) -> None:
    path = posixpath.normpath(member.name.lstrip("/")).removeprefix("./")
    parent, base = posixpath.split(path)
    if base == OPAQUE:
        if parent in _ANCESTORS:
            files.clear()
        return
    if base.startswith(WHITEOUT):
        removed = posixpath.join(parent, base[len(WHITEOUT) :])
        if removed in _ANCESTORS:
            files.clear()
        elif parent == STATUS_DIR:
            files.pop(removed.rsplit("/", 1)[1], None)
        return
    if path in _ANCESTORS:
        if not member.isdir():
            files.clear()
        return
    if parent != STATUS_DIR:
        return
    if not member.isfile() or member.size > MAX_STATUS_FILE:
        files.pop(base, None)
        return
    data = tar.extractfile(member)
    text = data.read().decode("utf-8", "replace") if data is not None else ""
    fields = control_fields(text)
    files[base] = InstalledPackage(
        fields.get("package", ""), fields.get("version", ""), fields.get("architecture", "")
    )
