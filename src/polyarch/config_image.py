"""The image options of containers.toml: ``files``, ``accounts``, ``annotations``, ``cmd``,
``entrypoint``, ``timezone`` and ``auto_tags``, checked at load like every other key.

``polyarch.config`` reads the tables and ``config_rules`` holds the rules of
the plain values (timezone, annotations, entrypoint); this module holds the
shapes and rules of the tables (files, accounts, auto_tags) and how a container's values merge with ``[defaults]`` (tables merge, the
container's entries winning), and returns one frozen ``ImageOptions``. Names
in ``user`` and in a file's ``owner`` must be accounts the image will have:
root, nobody (nogroup), or one of ``accounts``; they are turned into numbers
here, so the image code never guesses.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Protocol, TypeVar

import msgspec

from polyarch.config_rules import InvalidValue, absolute_path, command, labels
from polyarch.config_rules import user as user_syntax
from polyarch.registry.tags import AutoTags

_S = TypeVar("_S", bound=msgspec.Struct)
_R = TypeVar("_R")

ROOT_ID = 0
NOBODY_ID = 65534
SYSTEM_USERS = {"root": ROOT_ID, "nobody": NOBODY_ID}
"""The accounts every image has (``image/filesystem.py``'s /etc/passwd)."""
SYSTEM_GROUPS = {"root": ROOT_ID, "nogroup": NOBODY_ID}
TZDATA = "tzdata"
DEFAULT_SHELL = "/usr/sbin/nologin"
NO_HOME = "/nonexistent"
"""A home that is not made (nobody's), as Debian's adduser writes it."""
_ACCOUNT_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_MODE = re.compile(r"[0-7]{3,4}")
_ZONE = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*")
"""An IANA time zone name as tzdata installs it under /usr/share/zoneinfo (no "..")."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_RUNTIME_MOUNTS = ("proc", "sys", "dev")
_MANAGED = {
    "/etc/passwd": "accounts",
    "/etc/group": "accounts",
    "/etc/localtime": "timezone",
    "/etc/timezone": "timezone",
}
"""Files polyarch writes from other keys: a ``files`` entry would contradict them."""


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class FileSpec(_Strict, frozen=True, kw_only=True):
    """``files."/DEST" = { source, mode, owner }`` (or just ``"SOURCE"``)."""

    source: str
    mode: str | None = None
    """Octal, as a string ("0644"); for a directory, the mode of every file in it."""
    owner: str | None = None


class AccountSpec(_Strict, frozen=True, kw_only=True):
    """``accounts.NAME = { uid, gid, group, home, shell }``."""

    uid: int
    gid: int | None = None
    group: str | None = None
    home: str | None = None
    shell: str | None = None


class AutoTagsSpec(_Strict, frozen=True, kw_only=True):
    """Which of flocken's automatic tags ``polyarch manifest --push`` adds (all by default)."""

    version: bool = True
    major_minor: bool = True
    major: bool = True
    branch: bool = True
    latest: bool = True


OPTION_STRUCTS = (FileSpec, AccountSpec, AutoTagsSpec)
"""Their keys are known keys (for did-you-mean on an unknown one)."""


@dataclass(frozen=True, slots=True)
class Account:
    """A named user of the image, with its primary group."""

    name: str
    uid: int
    gid: int
    group: str
    home: str
    shell: str


@dataclass(frozen=True, slots=True)
class ImageFile:
    """A host file or directory copied to ``dest`` in the image."""

    dest: str
    source: str
    """As written: relative to containers.toml's directory, or absolute."""
    mode: int | None
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class ImageOptions:
    """A container's image options, defaults applied and names resolved to ids."""

    files: tuple[ImageFile, ...] = ()
    accounts: tuple[Account, ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    timezone: str | None = None
    auto_tags: AutoTags = field(default_factory=AutoTags)

    @property
    def has_layer(self) -> bool:
        """Whether the image gets a layer of its own (files, accounts, the time zone)."""
        return bool(self.files or self.accounts or self.timezone)


class Source(Protocol):
    """What this module needs of ``config._Source``: convert a table, run a rule, locate."""

    def convert(self, value: Any, kind: type[_S], keys: tuple[str, ...]) -> _S: ...
    def check(self, keys: tuple[str, ...], rule: Any, *args: Any) -> Any: ...


class _Fields(Protocol):
    """The option keys of [defaults] and [containers.NAME] (``config._ContainerFields``)."""

    @property
    def files(self) -> dict[str, Any] | None: ...
    @property
    def accounts(self) -> dict[str, Any] | None: ...
    @property
    def annotations(self) -> dict[str, str] | None: ...
    @property
    def timezone(self) -> str | None: ...
    @property
    def auto_tags(self) -> dict[str, Any] | None: ...


class _Spec(_Fields, Protocol):
    """A ``[containers.NAME]`` table (``config.ContainerSpec``)."""

    @property
    def user(self) -> str | None: ...
    @property
    def cmd(self) -> tuple[str, ...] | None: ...
    @property
    def entrypoint(self) -> tuple[str, ...] | None: ...


def image_options(
    src: Source, where: tuple[str, ...], spec: _Spec, defaults: _Fields
) -> ImageOptions:
    """The options of the container at ``where``: each value checked where it is written."""
    for keys, fields in ((("defaults",), defaults), (where, spec)):
        for key, rule in FIELD_RULES.items():
            if (value := getattr(fields, key, None)) is not None:
                src.check((*keys, key), rule, value)
    user, cmd, entry = spec.user, spec.cmd, spec.entrypoint
    accounts = _accounts(src, ("defaults",), defaults.accounts)
    accounts.update(_accounts(src, where, spec.accounts))
    src.check(where, check_accounts, accounts)
    if user is not None:
        src.check((*where, "user"), resolve_owner, user, accounts)
    files = _files(src, ("defaults",), defaults.files, accounts)
    files.update(_files(src, where, spec.files, accounts))
    tags: dict[str, Any] = {}
    for origin, raw in ((("defaults",), defaults.auto_tags), (where, spec.auto_tags)):
        if raw is not None:
            src.convert(raw, AutoTagsSpec, (*origin, "auto_tags"))
            tags.update(raw)
    switches = msgspec.convert(tags, AutoTagsSpec)
    return ImageOptions(
        files=tuple(files[dest] for dest in sorted(files)),
        accounts=tuple(accounts[name] for name in sorted(accounts)),
        annotations=tuple(
            sorted({**(defaults.annotations or {}), **(spec.annotations or {})}.items())
        ),
        cmd=cmd,
        entrypoint=entry,
        timezone=spec.timezone if spec.timezone is not None else defaults.timezone,
        auto_tags=AutoTags(**msgspec.structs.asdict(switches)),
    )


def _accounts(
    src: Source, where: tuple[str, ...], tables: dict[str, Any] | None
) -> dict[str, Account]:
    found: dict[str, Account] = {}
    for name, table in (tables or {}).items():
        keys = (*where, "accounts", name)
        spec = src.convert(table, AccountSpec, keys)
        found[name] = src.check(keys, account, name, spec)
    return found


def _files(
    src: Source,
    where: tuple[str, ...],
    tables: dict[str, Any] | None,
    accounts: Mapping[str, Account],
) -> dict[str, ImageFile]:
    found: dict[str, ImageFile] = {}
    for dest, value in (tables or {}).items():
        keys = (*where, "files", dest)
        spec = FileSpec(source=value) if isinstance(value, str) else None
        spec = spec or src.convert(value, FileSpec, keys)
        found[dest] = src.check(keys, image_file, dest, spec, accounts)
    return found


def with_tzdata(packages: tuple[str, ...], options: ImageOptions) -> tuple[str, ...]:
    """``packages``, plus tzdata when a time zone is set (its zone files make /etc/localtime)."""
    if options.timezone is not None and TZDATA not in packages:
        return (*packages, TZDATA)
    return packages


# --- the rules ---------------------------------------------------------------------------


def account(name: str, spec: AccountSpec) -> Account:
    if not _ACCOUNT_NAME.fullmatch(name):
        raise InvalidValue(
            f"{name!r} is not an account name",
            hint="use lowercase letters, digits, '_' and '-', at most 32, not starting "
            'with a digit or "-", e.g. [containers.NAME.accounts.nonroot]',
        )
    if name in SYSTEM_USERS:
        raise InvalidValue(
            f"{name} is an account every image has already",
            hint='choose another name, e.g. "nonroot"; user = "nobody" needs no account',
        )
    uid = _id(spec.uid, "uid")
    gid = _id(spec.gid if spec.gid is not None else uid, "gid")
    if uid in SYSTEM_USERS.values():
        raise InvalidValue(f"uid {uid} is root's or nobody's", hint="use e.g. uid = 65532")
    group = spec.group if spec.group is not None else name
    if not _ACCOUNT_NAME.fullmatch(group):
        raise InvalidValue(f"{group!r} is not a group name", hint='write e.g. group = "nonroot"')
    if SYSTEM_GROUPS.get(group, gid) != gid or (
        gid in SYSTEM_GROUPS.values() and SYSTEM_GROUPS.get(group) != gid
    ):
        raise InvalidValue(
            f"group {group} with gid {gid} contradicts root (0) or nogroup (65534)",
            hint='use gid 0 only with group = "root", 65534 only with "nogroup"',
        )
    home = spec.home if spec.home is not None else f"/home/{name}"
    shell = spec.shell if spec.shell is not None else DEFAULT_SHELL
    for key, path in (("home", home), ("shell", shell)):
        try:
            # The home directory is made in the image; the shell is only named.
            _in_image(path, key) if key == "home" else absolute_path(path, key)
            if ":" in path:
                raise InvalidValue(f"{path!r} holds ':'", hint="/etc/passwd separates with ':'")
            if path == "/":
                raise InvalidValue("is '/'", hint=f'write e.g. home = "/home/{name}"')
        except InvalidValue as exc:
            raise InvalidValue(exc.what, exc.hint, at=(key,)) from None
    return Account(name, uid, gid, group, home, shell)


def _id(value: int, key: str) -> int:
    if not 0 <= value <= 2**32 - 2:
        raise InvalidValue(f"{key} {value} is out of range", hint=f"{key}s are 0 to 4294967294")
    return value


def check_accounts(accounts: Mapping[str, Account]) -> None:
    """No uid twice; each group name has one gid and each gid one name."""
    by_uid: dict[int, str] = {}
    groups: dict[str, int] = dict(SYSTEM_GROUPS)
    names = {gid: name for name, gid in SYSTEM_GROUPS.items()}
    for name in sorted(accounts):
        a = accounts[name]
        if a.uid in by_uid:
            raise InvalidValue(
                f"uid {a.uid} is both {by_uid[a.uid]}'s and {name}'s",
                hint="give each account its own uid",
                at=("accounts", name, "uid"),
            )
        by_uid[a.uid] = name
        if (
            groups.setdefault(a.group, a.gid) != a.gid
            or names.setdefault(a.gid, a.group) != a.group
        ):
            raise InvalidValue(
                f"group {a.group} (gid {a.gid}) clashes with another account's group",
                hint="accounts sharing a group must give it the same name and gid",
                at=("accounts", name, "gid"),
            )


def resolve_owner(owner: str, accounts: Mapping[str, Account]) -> tuple[int, int]:
    """``name``, ``uid``, ``name:group`` or ``uid:gid`` → (uid, gid); names must exist."""
    user_syntax(owner)
    user_part, _, group_part = owner.partition(":")
    users = {**SYSTEM_USERS, **{n: a.uid for n, a in accounts.items()}}
    primary = {ROOT_ID: ROOT_ID, NOBODY_ID: NOBODY_ID, **{a.uid: a.gid for a in accounts.values()}}
    groups = {**SYSTEM_GROUPS, **{a.group: a.gid for a in accounts.values()}}
    uid = _named(user_part, users, "user", "accounts.NAME = { uid = 65532 }")
    if not group_part:
        return uid, primary.get(uid, uid)
    return uid, _named(group_part, groups, "group", "accounts.NAME = { uid = .., group = .. }")


def _named(part: str, known: Mapping[str, int], what: str, example: str) -> int:
    if part.isdigit():
        return int(part)
    if part not in known:
        raise InvalidValue(
            f"no {what} {part!r} in the image (it has {', '.join(sorted(known))})",
            hint=f"add it: {example}, or give a number",
        )
    return known[part]


def image_file(dest: str, spec: FileSpec, accounts: Mapping[str, Account]) -> ImageFile:
    _in_image(dest, "the destination")
    if dest == "/":
        raise InvalidValue("the destination is '/'", hint='copy into a directory, e.g. "/srv/app"')
    if dest in _MANAGED:
        key = _MANAGED[dest]
        raise InvalidValue(f"{dest} is made from {key}", hint=f"set {key} instead of copying it")
    if not spec.source or _CONTROL.search(spec.source):
        raise InvalidValue(
            "the source is empty or holds control characters",
            hint='name a file or directory, relative to containers.toml: source = "conf/app.toml"',
        )
    mode = None
    if spec.mode is not None:
        if not _MODE.fullmatch(spec.mode):
            raise InvalidValue(
                f"mode {spec.mode!r} is not an octal mode",
                hint='write it as a string: mode = "0644"',
            )
        mode = int(spec.mode, 8)
    uid, gid = resolve_owner(spec.owner, accounts) if spec.owner is not None else (0, 0)
    return ImageFile(dest, spec.source, mode, uid, gid)


def _in_image(path: str, key: str) -> None:
    """A normalised absolute path that stays in the image's own tree (merged /usr)."""
    absolute_path(path, key)
    first = PurePosixPath(path).parts[1:2]
    # Here, not at the top: reading containers.toml need not load the .deb reader.
    from polyarch.image.filesystem import MERGED_DIRS

    if first and first[0] in MERGED_DIRS:
        raise InvalidValue(
            f"{path} is under /{first[0]}, a link to /usr/{first[0]} in every image",
            hint=f'write "/usr{path}"',
        )
    if first and first[0] in _RUNTIME_MOUNTS:
        raise InvalidValue(
            f"{path} is under /{first[0]}, which the engine mounts over at run time",
            hint="choose a path elsewhere, e.g. under /etc, /usr/local or /srv",
        )


def annotation_keys(table: Mapping[str, str]) -> None:
    labels(table, "annotation", "annotations")


def timezone(zone: str) -> None:
    if not _ZONE.fullmatch(zone):
        raise InvalidValue(
            f"{zone!r} is not a time zone name",
            hint='write an IANA zone, e.g. timezone = "Europe/Berlin" or "UTC"',
        )


def entrypoint(values: tuple[str, ...]) -> None:
    """A program (as ``command`` is written) and its fixed first arguments."""
    if not values:
        raise InvalidValue(
            "is empty", hint='name the program first, e.g. entrypoint = ["/usr/bin/tini", "--"]'
        )
    command(values[0])


FIELD_RULES: dict[str, Callable[[Any], object]] = {
    "annotations": annotation_keys,
    "timezone": timezone,
    "entrypoint": entrypoint,
}
"""Rules of the plain-valued option keys, held like ``config_rules.FIELD_RULES``."""
