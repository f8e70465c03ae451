"""containers.toml → frozen, validated values.

TOML is parsed with tomllib, then converted with msgspec into structs that
refuse unknown keys and wrong types. msgspec reports the failing key as a path
(``$.containers.fd.pakage``); ``_line_of`` maps that path back to a line of the
file so every message names file, line and key.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from polyarch.errors import ConfigError, UnknownContainerError
from polyarch.platforms import System, parse_system

CONFIG_NAME = "containers.toml"
DEFAULT_BASE = ("bash", "coreutils")
DEFAULT_SYSTEMS = ("aarch64-linux", "x86_64-linux")
DEFAULT_MAX_LAYERS = 100
DEFAULT_PREFER = ("mawk",)
"""Where a dependency leaves a choice (base-files needs some ``awk``), take Debian's
default provider (mawk is Priority: required) rather than the first by name."""
_T = TypeVar("_T")
_S = TypeVar("_S", bound=msgspec.Struct)


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class RepositoryConfig(_Strict, frozen=True, kw_only=True):
    url: str | None = None
    """Mirror base URL; default: the host's apt configuration."""
    suite: str = "bookworm"
    components: tuple[str, ...] = ("main",)
    keyring: str | None = None
    """OpenPGP keyring file; default: the host's Debian archive keyring."""
    snapshot: str | None = None
    snapshot_url: str | None = None


class RegistryConfig(_Strict, frozen=True, kw_only=True):
    repo: str
    username: str | None = None
    password: str | None = None
    """Literal, or ``$VAR`` read from the environment at push time."""
    enable: bool = True


class _ContainerFields(_Strict, frozen=True, kw_only=True):
    systems: tuple[str, ...] | None = None
    base: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None
    prefer: tuple[str, ...] | None = None
    keep_docs: bool | None = None
    max_layers: int | None = None
    env: dict[str, str] | None = None
    labels: dict[str, str] | None = None
    registries: dict[str, Any] | None = None
    """Validated one by one into RegistryConfig, so errors can name the registry."""
    tags: tuple[str, ...] | None = None


class DefaultsConfig(_ContainerFields, frozen=True, kw_only=True):
    pass


class ContainerSpec(_ContainerFields, frozen=True, kw_only=True):
    package: str
    command: str | None = None
    """Binary the entrypoint runs (name on PATH or absolute path); default: package name."""
    packages: tuple[str, ...] = ()
    """Extra packages installed beside ``package``."""
    workdir: str | None = None
    user: str | None = None
    test: tuple[str, ...] | None = None
    expect: str | None = None
    description: str | None = None


class _File(_Strict, frozen=True, kw_only=True):
    repository: RepositoryConfig = msgspec.field(default_factory=RepositoryConfig)
    defaults: DefaultsConfig = msgspec.field(default_factory=DefaultsConfig)
    containers: dict[str, Any] = msgspec.field(default_factory=dict)
    """Validated one by one into ContainerSpec, so errors can name the container."""


@dataclass(frozen=True, slots=True)
class Registry:
    name: str
    repo: str
    username: str | None
    password: str | None
    enable: bool


@dataclass(frozen=True, slots=True)
class Container:
    """One container with the defaults applied: what every later stage uses."""

    name: str
    package: str
    command: str
    packages: tuple[str, ...]
    systems: tuple[System, ...]
    base: tuple[str, ...]
    exclude: tuple[str, ...]
    prefer: tuple[str, ...]
    keep_docs: bool
    max_layers: int
    env: tuple[tuple[str, str], ...]
    labels: tuple[tuple[str, str], ...]
    workdir: str | None
    user: str | None
    test: tuple[str, ...]
    expect: str | None
    description: str | None
    registries: tuple[Registry, ...]
    tags: tuple[str, ...]

    @property
    def roots(self) -> tuple[str, ...]:
        """Packages whose closure makes the image: base first, then the tool's."""
        return (*self.base, self.package, *self.packages)


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    repository: RepositoryConfig
    containers: tuple[Container, ...]

    @property
    def directory(self) -> Path:
        return self.path.parent

    def container(self, name: str) -> Container:
        for c in self.containers:
            if c.name == name:
                return c
        names = [c.name for c in self.containers]
        near = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean {near[0]!r}?" if near else f"defined: {', '.join(names) or 'none'}"
        raise UnknownContainerError(f"no container {name!r} in {self.path}", hint=hint)


def find_config(explicit: str | Path | None = None, cwd: Path | None = None) -> Path:
    """``-f PATH`` if given, else ``containers.toml`` in the current directory."""
    path = Path(explicit) if explicit else (cwd or Path.cwd()) / CONFIG_NAME
    if not path.is_file():
        raise ConfigError(
            f"{path}: no such file",
            hint="run polyarch in a directory with containers.toml, or pass -f PATH",
        )
    return path


def load_config(path: str | Path) -> Config:
    """Read and validate a containers.toml file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    return parse_config(text, path)


def parse_config(text: str, path: Path) -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    file = _convert(raw, _File, (), path, text)
    defaults = file.defaults
    for reg_name, reg in (defaults.registries or {}).items():
        _convert(reg, RegistryConfig, ("defaults", "registries", reg_name), path, text)
    containers: list[Container] = []
    for name, raw_spec in file.containers.items():
        spec = _convert(raw_spec, ContainerSpec, ("containers", name), path, text)
        for reg_name, reg in (spec.registries or {}).items():
            _convert(reg, RegistryConfig, ("containers", name, "registries", reg_name), path, text)
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name):
            line = _line_of(text, ("containers", name))
            raise ConfigError(
                f"{path}:{line}: containers.{name}: container names must be lowercase "
                "letters, digits, '.', '_' or '-' (they become image names)"
            )
        containers.append(_apply_defaults(path, text, name, spec, defaults))
    return Config(path=path, repository=file.repository, containers=tuple(containers))


def _pick(value: _T | None, default: _T | None, fallback: _T) -> _T:
    if value is not None:
        return value
    if default is not None:
        return default
    return fallback


def _apply_defaults(
    path: Path, text: str, name: str, spec: ContainerSpec, d: DefaultsConfig
) -> Container:
    def systems_of(values: tuple[str, ...], where: tuple[str, ...]) -> tuple[System, ...]:
        out: list[System] = []
        for v in values:
            try:
                s = parse_system(v)
            except Exception as exc:
                raise ConfigError(
                    f"{path}:{_line_of(text, where)}: {'.'.join(where)}: {exc}"
                ) from exc
            if s not in out:
                out.append(s)
        return tuple(out)

    if spec.systems is not None:
        systems = systems_of(spec.systems, ("containers", name, "systems"))
    else:
        systems = systems_of(_pick(None, d.systems, DEFAULT_SYSTEMS), ("defaults", "systems"))
    if not systems:
        raise ConfigError(f"{path}: containers.{name}: no systems to build")
    max_layers = _pick(spec.max_layers, d.max_layers, DEFAULT_MAX_LAYERS)
    if not 2 <= max_layers <= 127:
        line = _line_of(text, ("containers", name, "max_layers"))
        raise ConfigError(f"{path}:{line}: containers.{name}.max_layers: must be between 2 and 127")
    if spec.expect is not None:
        try:
            re.compile(spec.expect)
        except re.error as exc:
            line = _line_of(text, ("containers", name, "expect"))
            raise ConfigError(f"{path}:{line}: containers.{name}.expect: bad regex: {exc}") from exc
    registries = {
        k: msgspec.convert(v, RegistryConfig)
        for k, v in {**(d.registries or {}), **(spec.registries or {})}.items()
    }
    return Container(
        name=name,
        package=spec.package,
        command=spec.command or spec.package,
        packages=spec.packages,
        systems=systems,
        base=_pick(spec.base, d.base, DEFAULT_BASE),
        exclude=tuple(sorted({*(d.exclude or ()), *(spec.exclude or ())})),
        prefer=_pick(spec.prefer, d.prefer, DEFAULT_PREFER),
        keep_docs=_pick(spec.keep_docs, d.keep_docs, False),
        max_layers=max_layers,
        env=tuple(sorted({**(d.env or {}), **(spec.env or {})}.items())),
        labels=tuple(sorted({**(d.labels or {}), **(spec.labels or {})}.items())),
        workdir=spec.workdir,
        user=spec.user,
        test=spec.test if spec.test is not None else ("--help",),
        expect=spec.expect,
        description=spec.description,
        registries=tuple(
            Registry(k, r.repo, r.username, r.password, r.enable)
            for k, r in sorted(registries.items())
        ),
        tags=_pick(spec.tags, d.tags, ()),
    )


# --- error locations -------------------------------------------------------

_KNOWN_KEYS = sorted(
    {
        name
        for struct in (_File, RepositoryConfig, RegistryConfig, DefaultsConfig, ContainerSpec)
        for name in struct.__struct_fields__
    }
)

_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_.\-\"' ]+?)\s*=")


def _split_dotted(key: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in key.split("."))


def _line_of(text: str, path: tuple[str, ...]) -> int:
    """Best line for a dotted key path: the key itself, else its closest parent table."""
    best_line, best_len = 1, 0
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            table = _split_dotted(header.group(1))
            full = table
        else:
            key = _KEY.match(line)
            if not key:
                continue
            full = table + _split_dotted(key.group(1))
        common = 0
        for a, b in zip(full, path, strict=False):
            if a != b:
                break
            common += 1
        if common == len(full) and common > best_len:
            best_line, best_len = number, common
            if common == len(path):
                return number
    return best_line


def _convert(value: Any, kind: type[_S], where: tuple[str, ...], path: Path, text: str) -> _S:
    if not isinstance(value, dict):
        line = _line_of(text, where)
        raise ConfigError(f"{path}:{line}: {'.'.join(where)}: expected a table")
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        raise ConfigError(_located(path, text, str(exc), where)) from exc


def _located(path: Path, text: str, msgspec_message: str, where: tuple[str, ...] = ()) -> str:
    """Turn msgspec's "... - at `$.a.b[0]`" into "file:line: a.b: ..."."""
    m = re.search(r" - at `\$((?:\.[^.`\[]+|\[\d+\])*)`$", msgspec_message)
    what = msgspec_message
    keys: list[str] = list(where)
    if m:
        what = msgspec_message[: m.start()]
        keys += re.findall(r"\.([^.`\[]+)", m.group(1))
    unknown = re.match(r"Object contains unknown field `([^`]+)`", what)
    if unknown:
        keys.append(unknown.group(1))
        near = difflib.get_close_matches(unknown.group(1), _KNOWN_KEYS, n=1)
        what = f"unknown key (did you mean {near[0]!r}?)" if near else "unknown key"
    dotted = ".".join(keys) or "(top level)"
    line = _line_of(text, tuple(keys))
    return f"{path}:{line}: {dotted}: {what}"
