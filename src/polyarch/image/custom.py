"""A container's own layer: its accounts, host files and time zone (containers.toml's
``accounts``, ``files`` and ``timezone``; see ``config_image``).

It sits on top of the package layers, so those stay shared between images, and
it exists only when one of these keys is set: an image without them has the
same layers and digests as before. Everything in it is made here, reproducibly:

- **accounts**: ``/etc/passwd`` and ``/etc/group`` are the skeleton's (root,
  nobody/nogroup) plus one line per account and per group, sorted by id; each
  home directory (not ``/nonexistent``) is made 0700 and owned by its account.
- **files**: each host file or directory is read from the host (a relative
  source is relative to containers.toml's directory). Directories are walked
  in sorted order; symbolic links inside them are kept as links. Nothing of
  the host's owners, timestamps or permission bits passes but the executable
  bit: files are 0644 (0755 if executable on the host) unless ``mode`` is set,
  directories 0755; the owner is ``owner`` (else root); the mtime is the
  build's one epoch.
- **timezone**: ``/etc/localtime -> /usr/share/zoneinfo/ZONE`` and
  ``/etc/timezone`` (what tzdata's postinst writes); the zone must be a file
  of the tzdata package in the closure (config adds tzdata to the packages).

The layer is cached under the hash of its entries (contents hashed), the zone
and the tzdata package it was checked against.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from polyarch.cache import Cache
from polyarch.config_image import NO_HOME, SYSTEM_GROUPS, Account, ImageFile, ImageOptions
from polyarch.debian.deb import DebContents, DebEntry
from polyarch.determinism import canonical_json
from polyarch.errors import ImageError
from polyarch.image.filesystem import GROUP, PASSWD, layer_tree, merged_usr_path
from polyarch.image.layers import Layer, cached_layer, store_layer

CONTAINER_LAYER_NAME = "(container)"
"""What the history of an image names this layer by."""
CONTAINER_LAYER_FORMAT = 1
"""Bump whenever the bytes of this layer for the same inputs change."""
ZONEINFO = "/usr/share/zoneinfo"
LOCALTIME = "/etc/localtime"
TIMEZONE_FILE = "/etc/timezone"
HOME_MODE = 0o700


def account_entries(accounts: Sequence[Account]) -> list[DebEntry]:
    """/etc/passwd and /etc/group with ``accounts`` added, and their home directories."""
    by_uid = sorted(accounts, key=lambda a: a.uid)
    passwd = PASSWD + "".join(
        f"{a.name}:x:{a.uid}:{a.gid}:{a.name}:{a.home}:{a.shell}\n" for a in by_uid
    )
    groups = {a.group: a.gid for a in accounts if a.group not in SYSTEM_GROUPS}
    group = GROUP + "".join(
        f"{name}:x:{gid}:\n" for name, gid in sorted(groups.items(), key=lambda g: (g[1], g[0]))
    )
    entries = [
        DebEntry("/etc/passwd", "file", 0o644, data=passwd.encode()),
        DebEntry("/etc/group", "file", 0o644, data=group.encode()),
    ]
    entries += [
        DebEntry(a.home, "dir", HOME_MODE, uid=a.uid, gid=a.gid)
        for a in by_uid
        if a.home != NO_HOME
    ]
    return entries


def host_file_entries(files: Sequence[ImageFile], base: Path, container: str) -> list[DebEntry]:
    """The entries of every ``files`` item, read from the host (``base``: the config's dir)."""
    entries: list[DebEntry] = []
    for item in files:
        source = Path(item.source) if os.path.isabs(item.source) else base / item.source
        where = f"{container}: files {item.dest!r}"
        try:
            info = source.stat()  # the named source itself may be a link: follow it
        except OSError as exc:
            raise ImageError(
                f"{where}: cannot read {source}: {exc.strerror}",
                hint="a relative source is relative to containers.toml's directory",
            ) from None
        if stat.S_ISDIR(info.st_mode):
            entries.append(DebEntry(item.dest, "dir", 0o755, uid=item.uid, gid=item.gid))
            entries += _tree(source, item, where)
        else:
            entries.append(_file(source, item.dest, item, where))
    return entries


def _tree(root: Path, item: ImageFile, where: str) -> list[DebEntry]:
    found: list[DebEntry] = []
    for directory, dirs, names in os.walk(root, onerror=_raise):
        dirs.sort()
        rel = Path(directory).relative_to(root).as_posix()
        dest = item.dest if rel == "." else f"{item.dest}/{rel}"
        if rel != ".":
            found.append(DebEntry(dest, "dir", 0o755, uid=item.uid, gid=item.gid))
        for name in sorted(names + [d for d in dirs if os.path.islink(os.path.join(directory, d))]):
            path = Path(directory, name)
            if path.is_symlink():
                target = os.readlink(path)
                found.append(
                    DebEntry(
                        f"{dest}/{name}",
                        "symlink",
                        0o777,
                        target=target,
                        uid=item.uid,
                        gid=item.gid,
                    )
                )
            else:
                found.append(_file(path, f"{dest}/{name}", item, where))
    return found


def _raise(error: OSError) -> None:
    raise ImageError(
        f"cannot read {error.filename}: {error.strerror}", hint="check its permissions"
    )


def _file(path: Path, dest: str, item: ImageFile, where: str) -> DebEntry:
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ImageError(
                f"{where}: {path} is not a regular file, directory or link",
                hint="copy only files and directories",
            )
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{where}: cannot read {path}: {exc.strerror}") from None
    mode = item.mode
    if mode is None:
        mode = 0o755 if info.st_mode & 0o111 else 0o644
    return DebEntry(dest, "file", mode, data=data, uid=item.uid, gid=item.gid)


def timezone_entries(zone: str, tzdata: DebContents) -> list[DebEntry]:
    """/etc/localtime and /etc/timezone for ``zone``; ImageError if tzdata has no such zone."""
    zones = {
        merged_usr_path(e.path).removeprefix(ZONEINFO + "/")
        for e in tzdata.entries
        if e.kind != "dir" and merged_usr_path(e.path).startswith(ZONEINFO + "/")
    }
    if zone not in zones:
        near = difflib.get_close_matches(zone, sorted(zones), n=3)
        raise ImageError(
            f"time zone {zone!r} is not in tzdata {tzdata.package}",
            hint=f"did you mean {' or '.join(near)}?" if near else 'e.g. timezone = "Etc/UTC"',
        )
    return [
        DebEntry(LOCALTIME, "symlink", 0o777, target=f"{ZONEINFO}/{zone}"),
        DebEntry(TIMEZONE_FILE, "file", 0o644, data=f"{zone}\n".encode()),
    ]


def container_layer(
    options: ImageOptions,
    *,
    container: str,
    base: Path,
    cache: Cache,
    epoch: int,
    tzdata: tuple[str, Callable[[], DebContents]] | None,
) -> Layer | None:
    """The container's own layer, from the cache or built now; None without these options.

    ``tzdata`` is the sha256 of the closure's tzdata package and how to read
    it (only a miss with a time zone reads it).
    """
    if not options.has_layer:
        return None
    entries = account_entries(options.accounts) if options.accounts else []
    entries += host_file_entries(options.files, base, container)
    if options.timezone is not None and tzdata is None:
        raise ImageError(
            f"{container}: timezone is set but tzdata is not in the closure",
            hint="tzdata must not be excluded when timezone is set",
        )
    key = hashlib.sha256(
        canonical_json(
            {
                "format": CONTAINER_LAYER_FORMAT,
                "epoch": epoch,
                "entries": [describe_entry(e) for e in entries],
                "timezone": [options.timezone, tzdata[0] if tzdata else None],
            }
        )
    ).hexdigest()
    hit = cached_layer(cache, key)
    if hit is not None:
        return hit
    if options.timezone is not None and tzdata is not None:
        entries += timezone_entries(options.timezone, tzdata[1]())
    return store_layer(cache, key, layer_tree([entries]), epoch, (CONTAINER_LAYER_NAME,))


def describe_entry(entry: DebEntry) -> list[object]:
    """What the layer's cache key (and a build stamp) records of one entry."""
    content = hashlib.sha256(entry.data).hexdigest() if entry.kind == "file" else entry.target
    return [entry.path, entry.kind, entry.mode, entry.uid, entry.gid, content]
