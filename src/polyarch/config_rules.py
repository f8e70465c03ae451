"""The rule of each containers.toml key: what a value must look like to get past loading.

A rule takes a value msgspec has already typed and raises ``InvalidValue``
(what is wrong, what to do) when a later stage would choke on it: a name that
is no Debian package, a tag no registry takes, a path that is not absolute.
``polyarch.config`` turns that into ``FILE:LINE: key: what (hint)``. Tags and
repositories are judged by the one reference grammar (``polyarch.reference``).
"""

from __future__ import annotations

import posixpath
import re
import warnings
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from polyarch.errors import UsageError
from polyarch.image.layer_plan import LAYERINGS, Layering
from polyarch.platforms import System, parse_system
from polyarch.reference import DOCKER_HUB, TAG_PATTERN, parse_reference


class InvalidValue(Exception):
    """A value broke its key's rule. ``at`` names a key inside the value (an env name)."""

    def __init__(self, what: str, hint: str | None = None, at: tuple[str, ...] = ()) -> None:
        super().__init__(what)
        self.what, self.hint, self.at = what, hint, at


MAX_NAME_LENGTH = 128
"""Longest container name. The name becomes the image name (``NAME:TAG-SYSTEM`` must stay
a docker reference, whose path is at most 255 characters with ``library/``) and a
directory and temporary names under ``--out`` (at most 255 bytes each)."""
_NAME_MAX_BYTES = 255
"""NAME_MAX: the longest file name (one path component) Linux filesystems take."""
_PATH_MAX_BYTES = 4095
_PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
"""Debian Policy 5.6.7: lowercase letters, digits, + - ., two or more, alphanumeric first."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_USER_PART = r"(?:[0-9]{1,10}|[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?)"
_USER = re.compile(rf"{_USER_PART}(?::{_USER_PART})?")
_MAX_ID = 2**32 - 2
"""Largest uid/gid (2**32 - 1 is the kernel's "no id")."""
_SUITE_PART = r"[A-Za-z0-9][A-Za-z0-9._+~-]*"
_SUITE = re.compile(rf"{_SUITE_PART}(?:/{_SUITE_PART})*")
"""A suite or component; ``/`` only between parts (``bookworm/updates``), never ``..``."""


def container_name(name: str) -> None:
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidValue(
            f"the name is {len(name)} characters long, more than {MAX_NAME_LENGTH}",
            hint=f"name the container with at most {MAX_NAME_LENGTH} characters",
        )
    # The name must be one path component of a docker reference (it is loaded as NAME:TAG),
    # so let the reference parser judge it: it must come back as docker.io/library/NAME.
    try:
        ref = parse_reference(name)
        valid = (ref.registry, ref.repository) == (DOCKER_HUB, f"library/{name}") and not (
            ref.tag or ref.digest
        )
    except UsageError:
        valid = False
    if not valid:
        raise InvalidValue(
            "container names must be lowercase letters and digits, separated by '.', '_', "
            "'__' or '-' (they become image names)",
            hint='rename it, e.g. [containers.fd-find] or [containers."fd.v2"]',
        )


def package_name(name: str) -> None:
    if not _PACKAGE_NAME.fullmatch(name):
        raise InvalidValue(
            f"{name!r} is not a Debian package name",
            hint="package names are lowercase letters, digits, '+', '-' and '.', at least "
            'two characters, starting with a letter or digit, e.g. "fd-find"',
        )


def package_names(names: tuple[str, ...]) -> None:
    for name in names:
        package_name(name)


def systems(values: tuple[str, ...]) -> tuple[System, ...]:
    """The systems named, in order, without repeats."""
    if not values:
        raise InvalidValue(
            "no systems to build", hint='list at least one, e.g. systems = ["x86_64-linux"]'
        )
    out: list[System] = []
    for value in values:
        try:
            system = parse_system(value)
        except UsageError as exc:
            raise InvalidValue(exc.message, exc.hint) from None
        if system not in out:
            out.append(system)
    return tuple(out)


def max_layers(value: int) -> None:
    if not 2 <= value <= 127:
        raise InvalidValue(
            f"must be between 2 and 127, not {value}",
            hint="the base needs a layer and the tool another; 127 keeps under overlayfs's limit",
        )


def max_unpacked_bytes(value: int) -> None:
    if value < 1 << 20:
        raise InvalidValue(
            f"must be at least 1048576 (1 MiB), not {value}",
            hint="it bounds the unpacked size of each package, in bytes",
        )


def layering(value: str) -> Layering:
    for name in LAYERINGS:
        if value == name:
            return name
    raise InvalidValue(
        f"unknown layering {value!r}",
        hint=f"use one of: {', '.join(LAYERINGS)} (docs/CONFIG.md explains them)",
    )


def environment(env: Mapping[str, str]) -> None:
    for name in env:
        if not name or "=" in name:
            raise InvalidValue(
                f"variable name {name!r} is empty or holds '='",
                hint='name variables without "=", e.g. env = { LANG = "C.UTF-8" }',
                at=(name,),
            )


def labels(table: Mapping[str, str], what: str = "label", key_name: str = "labels") -> None:
    for key in table:
        if not key or _CONTROL.search(key):
            raise InvalidValue(
                f"{what} key {key!r} is empty or holds control characters",
                hint=f'use reverse-DNS keys, e.g. {key_name} = {{ "org.example.team" = "tools" }}',
                at=(key,),
            )


def workdir(path: str) -> None:
    absolute_path(path, "workdir")


def command(name: str) -> None:
    """A bare name looked up in the image's PATH dirs, or a normalised absolute path."""
    alone = "command is the binary alone; the smoke test's arguments go in test"
    if not name:
        raise InvalidValue("is empty", hint="name the binary, or leave command out")
    if _CONTROL.search(name) or any(c.isspace() for c in name):
        raise InvalidValue(f"{name!r} holds whitespace or control characters", hint=alone)
    if name == "/":
        raise InvalidValue("'/' is a directory", hint="name the binary, e.g. /usr/bin/tool")
    if name.startswith("/"):
        absolute_path(name, "command")
    elif "/" in name:
        raise InvalidValue(
            f"{name!r} is a relative path",
            hint="give a bare name looked up in the image's PATH, or an absolute path such as "
            f"{_normalised(name)!r}",
        )
    elif name in (".", "..") or len(name.encode()) > _NAME_MAX_BYTES:
        raise InvalidValue(f"{name!r} cannot be a file name", hint=alone)


def _normalised(path: str) -> str:
    return "/" + posixpath.normpath(path).lstrip("/")


def absolute_path(path: str, key: str) -> None:
    clean = _normalised(path)
    if _CONTROL.search(path):
        raise InvalidValue(f"{path!r} holds control characters", hint=f"fix {key}")
    if path != clean:
        raise InvalidValue(
            f"{path!r} is not a normalised absolute path", hint=f'write {key} = "{clean}"'
        )
    if len(path.encode()) > _PATH_MAX_BYTES or any(
        len(part.encode()) > _NAME_MAX_BYTES for part in path.split("/")
    ):
        raise InvalidValue(
            f"the path is longer than {_PATH_MAX_BYTES} bytes or has a part over {_NAME_MAX_BYTES}",
            hint="no filesystem holds it; shorten it",
        )


def user(value: str) -> None:
    """``user``, ``uid``, ``user:group`` or ``uid:gid``, as docker and podman read it."""
    ids = [part for part in value.split(":") if part.isascii() and part.isdigit()]
    if not _USER.fullmatch(value) or any(int(part) > _MAX_ID for part in ids):
        raise InvalidValue(
            f"{value!r} is not a user name or id",
            hint='write a name or uid, optionally with ":group" or ":gid", '
            'e.g. user = "65534:65534"',
        )


def regex(pattern: str) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FutureWarnings about sets are not refusals
            re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise InvalidValue(
            f"bad regex: {exc}", hint="write a Python regular expression, e.g. expect = '^fd '"
        ) from None


def tags(values: tuple[str, ...]) -> None:
    for tag in values:
        if not TAG_PATTERN.fullmatch(tag):
            raise InvalidValue(
                f"{tag!r} is not a valid image tag",
                hint="tags are 1 to 128 letters, digits, '_', '.' and '-', not starting "
                "with '.' or '-'",
            )


def repository_of(repo: str, container: str) -> None:
    """A registry ``repo``: a reference without tag or digest; ``{name}`` is the container."""
    filled = repo.replace("{name}", container)
    shown = f"{repo!r} (with {{name}} = {container!r})" if filled != repo else repr(repo)
    try:
        ref = parse_reference(filled)
    except UsageError as exc:
        raise InvalidValue(
            f"{shown} is not an image repository: {exc.message}",
            hint='write host[:port]/path, e.g. repo = "ghcr.io/OWNER/{name}"; '
            "only {name} is filled in",
        ) from None
    if ref.tag or ref.digest:
        raise InvalidValue(
            f"{shown} names a tag or digest",
            hint="give the repository only; tags come from tags, --tag, --version and --branch",
        )


def suite(value: str) -> None:
    if not _SUITE.fullmatch(value):
        raise InvalidValue(
            f"{value!r} is not a suite or component name",
            hint="use the archive's name, e.g. bookworm, bookworm-updates, main, non-free",
        )


def components(values: tuple[str, ...]) -> None:
    if not values:
        raise InvalidValue("no components to search", hint='list them, e.g. ["main"]')
    for value in values:
        suite(value)


def url(value: str) -> None:
    try:
        parts = urlsplit(value)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        valid = False
    if not valid or _CONTROL.search(value) or " " in value:
        raise InvalidValue(
            f"{value!r} is not an http(s) URL",
            hint="write it like http://HOST/debian, or leave url out to use the host's apt source",
        )


MAIN_SOURCE = "main"
"""The name the main source (``[repository]``) goes by in locks and output."""
MAX_PRIORITY = 1000
_SOURCE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_SNAPSHOT_STAMP = re.compile(r"\d{8}T\d{6}Z")


def source_name(name: str) -> None:
    if name == MAIN_SOURCE:
        raise InvalidValue(
            "the main source is [repository], not [sources.main]",
            hint="move these keys to [repository]",
        )
    if not _SOURCE_NAME.fullmatch(name):
        raise InvalidValue(
            f"{name!r} is not a source name",
            hint="name sources with up to 32 lowercase letters, digits, '-' and '_', "
            "e.g. [sources.backports]",
        )


def priority(value: int) -> None:
    if not -MAX_PRIORITY <= value <= MAX_PRIORITY:
        raise InvalidValue(
            f"must be between {-MAX_PRIORITY} and {MAX_PRIORITY}, not {value}",
            hint="500 is apt's default, 100 a backports archive's; below 0 the source is "
            "used only for what a container pins to it",
        )


def snapshot(stamp: str) -> None:
    if not _SNAPSHOT_STAMP.fullmatch(stamp):
        raise InvalidValue(
            f"{stamp!r} is not a timestamp like 20250520T000000Z",
            hint="write it as YYYYMMDDTHHMMSSZ (UTC)",
        )


def snapshot_url(template: str) -> None:
    if "{snapshot}" not in template:
        raise InvalidValue(
            f"{template!r} has no {{snapshot}} in it",
            hint='write it like snapshot_url = "http://HOST/archive/debian/{snapshot}"',
        )
    url(template.replace("{snapshot}", "20250520T000000Z"))


def root_package(text: str) -> None:
    """``name`` or ``name/release``: a package, optionally from one source (apt's ``pkg/release``)."""
    name, slash, release = text.partition("/")
    package_name(name)
    if slash:
        try:
            suite(release)
        except InvalidValue:
            raise InvalidValue(
                f"{text!r}: {release!r} is not a suite or source name",
                hint='write it like "fd-find/bookworm-backports"',
            ) from None


def root_packages(texts: tuple[str, ...]) -> None:
    for text in texts:
        root_package(text)


def pins(table: Mapping[str, str]) -> None:
    for name, release in table.items():
        try:
            package_name(name)
            suite(release)
        except InvalidValue as exc:
            raise InvalidValue(exc.what, hint=exc.hint, at=(name,)) from None


EXAMPLES = {
    "package": 'package = "fd-find"',
    "command": 'command = "fdfind" (or an absolute path such as "/usr/bin/fdfind")',
    "packages": 'packages = ["ca-certificates"]',
    "base": 'base = ["bash", "coreutils"]',
    "exclude": 'exclude = ["perl-base"]',
    "prefer": 'prefer = ["mawk"]',
    "systems": 'systems = ["aarch64-linux", "x86_64-linux"]',
    "keep_docs": "keep_docs = true",
    "max_layers": "max_layers = 16",
    "max_unpacked_bytes": "max_unpacked_bytes = 8_589_934_592",
    "layering": 'layering = "shared"',
    "env": 'env = { LANG = "C.UTF-8" }',
    "labels": 'labels = { "org.example.team" = "tools" }',
    "workdir": 'workdir = "/work"',
    "user": 'user = "65534:65534"',
    "test": 'test = ["--version"]',
    "expect": 'expect = "^fd [0-9]"',
    "description": 'description = "a fast find"',
    "registries": 'registries.ghcr = { repo = "ghcr.io/OWNER/{name}" }',
    "repo": 'repo = "ghcr.io/OWNER/{name}"',
    "username": 'username = "ci"',
    "password": 'password = "$REGISTRY_TOKEN"',
    "enable": "enable = false",
    "tags": 'tags = ["stable"]',
    "sbom_in_image": "sbom_in_image = true",
    "files": 'files = { "/etc/app.toml" = { source = "app.toml", mode = "0640" } }',
    "source": 'source = "conf/app.toml"',
    "mode": 'mode = "0644"',
    "owner": 'owner = "nonroot"',
    "accounts": "accounts.nonroot = { uid = 65532 }",
    "uid": "uid = 65532",
    "gid": "gid = 65532",
    "group": 'group = "nonroot"',
    "home": 'home = "/home/nonroot"',
    "shell": 'shell = "/bin/bash"',
    "annotations": 'annotations = { "org.opencontainers.image.vendor" = "Example" }',
    "cmd": 'cmd = ["--color=always"]',
    "entrypoint": 'entrypoint = ["/usr/bin/tini", "--", "fdfind"]',
    "timezone": 'timezone = "Europe/Berlin"',
    "auto_tags": "auto_tags = { latest = false }",
    "version": "version = false",
    "major_minor": "major_minor = false",
    "major": "major = false",
    "branch": "branch = false",
    "latest": "latest = false",
    "url": 'url = "http://HOST/debian"',
    "suite": 'suite = "bookworm"',
    "components": 'components = ["main"]',
    "keyring": 'keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"',
    "snapshot": 'snapshot = "20250520T000000Z"',
    "snapshot_url": 'snapshot_url = "http://HOST/archive/debian/{snapshot}"',
    "priority": "priority = 100",
    "pins": 'pins = { systemd = "bookworm-backports" }',
    "sources": '[sources.backports] suite = "bookworm-backports"',
}


def example_hint(keys: tuple[str, ...]) -> str:
    for key in reversed(keys):
        if key in EXAMPLES:
            return f"write it like {EXAMPLES[key]}; docs/CONFIG.md describes every key"
    return "docs/CONFIG.md describes every key"


FIELD_RULES: dict[str, Callable[[Any], object]] = {
    "package": root_package,
    "command": command,
    "packages": root_packages,
    "base": package_names,
    "exclude": package_names,
    "prefer": package_names,
    "systems": systems,
    "max_layers": max_layers,
    "max_unpacked_bytes": max_unpacked_bytes,
    "layering": layering,
    "env": environment,
    "labels": labels,
    "workdir": workdir,
    "user": user,
    "expect": regex,
    "tags": tags,
    "pins": pins,
}
"""Rules of [defaults] and [containers.NAME] keys; types (``test`` a list of strings, ...)
are msgspec's, NUL anywhere is refused before, ``registries`` need the container's name."""
REPOSITORY_RULES: dict[str, Callable[[Any], object]] = {
    "url": url,
    "suite": suite,
    "components": components,
    "snapshot": snapshot,
    "snapshot_url": snapshot_url,
}
SOURCE_RULES: dict[str, Callable[[Any], object]] = {
    **REPOSITORY_RULES,
    "priority": priority,
}
"""Rules of ``[sources.NAME]`` keys: those of [repository], and the pin priority."""
