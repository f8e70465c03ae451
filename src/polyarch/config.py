"""containers.toml → frozen, validated values.

TOML is parsed with tomllib, converted with msgspec into structs that refuse unknown
keys and wrong types, then each value is held to the rule of its key. msgspec reports a
failing key as a path (``$.containers.fd.pakage``); ``tomlkeys.line_of`` maps it back to
a line, so every refusal reads ``FILE:LINE: dotted.key: what is wrong (what to do)``.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from polyarch import config_image, config_sources
from polyarch import config_rules as rules
from polyarch.config_image import ImageOptions
from polyarch.config_rules import InvalidValue
from polyarch.errors import ConfigError, UnknownContainerError
from polyarch.image.layer_plan import DEFAULT_LAYERING, DEFAULT_MAX_LAYERS, Layering
from polyarch.platforms import System
from polyarch.tomlkeys import deepest_line, dotted, kind_names, kind_of, line_of

CONFIG_NAME = "containers.toml"
DEFAULT_BASE = ("bash", "coreutils")
DEFAULT_SYSTEMS = ("aarch64-linux", "x86_64-linux")
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
    max_unpacked_bytes: int | None = None
    layering: str | None = None
    env: dict[str, str] | None = None
    labels: dict[str, str] | None = None
    registries: dict[str, Any] | None = None
    """Validated one by one into RegistryConfig, so errors can name the registry."""
    tags: tuple[str, ...] | None = None
    sbom_in_image: bool | None = None
    """Put the image's SPDX document inside it (off by default: it changes the digest)."""
    pins: dict[str, str] | None = None
    """Package → source name or suite it must come from (as apt's ``pkg/release``)."""
    files: dict[str, Any] | None = None
    accounts: dict[str, Any] | None = None
    annotations: dict[str, str] | None = None
    timezone: str | None = None
    auto_tags: dict[str, Any] | None = None


class DefaultsConfig(_ContainerFields, frozen=True, kw_only=True):
    pass


class ContainerSpec(_ContainerFields, frozen=True, kw_only=True):
    package: str
    """A package name, or ``name/release`` to take it from one source."""
    command: str | None = None
    """Binary the entrypoint runs (name on PATH or absolute path); default: package name."""
    packages: tuple[str, ...] = ()
    """Extra packages installed beside ``package``."""
    workdir: str | None = None
    user: str | None = None
    test: tuple[str, ...] | None = None
    expect: str | None = None
    description: str | None = None
    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None


class _File(_Strict, frozen=True, kw_only=True):
    repository: RepositoryConfig = msgspec.field(default_factory=RepositoryConfig)
    sources: dict[str, Any] = msgspec.field(default_factory=dict)
    """Validated one by one into config_sources.SourceConfig, so errors can name the source."""
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
    max_unpacked_bytes: int | None
    """Per-package limit of unpacked bytes (a larger package is refused); None: the
    reader's default, ``polyarch.debian.deb.MAX_UNPACKED_BYTES``."""
    layering: Layering
    env: tuple[tuple[str, str], ...]
    labels: tuple[tuple[str, str], ...]
    workdir: str | None
    user: str | None
    test: tuple[str, ...]
    expect: str | None
    description: str | None
    registries: tuple[Registry, ...]
    tags: tuple[str, ...]
    sbom_in_image: bool = False
    pins: tuple[tuple[str, str], ...] = ()
    """(package, source name) it must come from, sorted: ``pins`` and ``name/release`` roots."""
    options: ImageOptions = dataclasses.field(default_factory=ImageOptions)  # config_image.py

    @property
    def roots(self) -> tuple[str, ...]:
        """Packages whose closure makes the image: base first, then the tool's."""
        return (*self.base, self.package, *self.packages)


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    repository: RepositoryConfig
    containers: tuple[Container, ...]
    sources: tuple[config_sources.SourceSpec, ...] = ()
    """The enabled package sources, the main one ([repository]) first."""
    digest: str = ""  # SHA-256 of the text read: what a build stamp fingerprints

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
    if path.is_dir():
        inside = path / CONFIG_NAME
        raise ConfigError(
            f"{path}: is a directory",
            hint=f"pass the file itself: -f {inside}" if inside.is_file() else "pass -f FILE",
        )
    if not path.is_file():
        raise ConfigError(
            f"{path}: {'not a regular file' if path.exists() else 'no such file'}",
            hint="run polyarch in a directory with containers.toml, or pass -f PATH",
        )
    return path


def load_config(path: str | Path) -> Config:
    """Read and validate a containers.toml file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read: {exc.strerror}", hint="check the path and its permissions"
        ) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte {data[exc.start]:#04x} at column {column})",
            hint="save containers.toml as UTF-8, as TOML requires",
        ) from None
    return parse_config(text, path)


def parse_config(text: str, path: Path) -> Config:
    """Validate the text of a containers.toml; ``path`` names it in messages."""
    src = _Source(path, text)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise src.syntax_error(str(exc)) from None
    except RecursionError:
        raise ConfigError(
            f"{path}:{deepest_line(text)}: arrays or tables are nested too deeply to read",
            hint="containers.toml needs no more than a few levels",
        ) from None
    _refuse_nul(src, raw)
    file = src.convert(raw, _File, ())
    _check_fields(src, ("repository",), file.repository, rules.REPOSITORY_RULES)
    sources = src.sources(file.repository, file.sources)
    defaults = file.defaults
    _check_fields(src, ("defaults",), defaults, rules.FIELD_RULES)
    default_registries = src.registries(defaults.registries, ("defaults",))
    containers: list[Container] = []
    for name, raw_spec in file.containers.items():
        where = ("containers", name)
        src.check(where, rules.container_name, name)
        spec = src.convert(raw_spec, ContainerSpec, where)
        _check_fields(src, where, spec, rules.FIELD_RULES)
        own = src.registries(spec.registries, where)
        registries = {**default_registries, **own}
        for reg_name, reg in registries.items():
            origin = where if reg_name in own else ("defaults",)
            src.check(
                (*origin, "registries", reg_name, "repo"), rules.repository_of, reg.repo, name
            )
        pins = {**(defaults.pins or {}), **(spec.pins or {})}
        roots = src.check(
            where, config_sources.container_roots, spec.package, spec.packages, pins, sources
        )
        options = config_image.image_options(src, where, spec, defaults)
        containers.append(_apply_defaults(name, spec, defaults, registries, roots, options))
    digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()
    return Config(path, file.repository, tuple(containers), sources, digest)


def _pick(value: _T | None, default: _T | None, fallback: _T) -> _T:
    return value if value is not None else default if default is not None else fallback


def _apply_defaults(
    name: str,
    spec: ContainerSpec,
    d: DefaultsConfig,
    registries: dict[str, RegistryConfig],
    roots: config_sources.Roots,
    options: ImageOptions,
) -> Container:
    """The container as later stages see it; every value was checked where it is written."""
    return Container(
        name=name,
        package=roots.package,
        command=spec.command if spec.command is not None else roots.package,
        packages=config_image.with_tzdata(roots.packages, options),
        systems=rules.systems(_pick(spec.systems, d.systems, DEFAULT_SYSTEMS)),
        base=_pick(spec.base, d.base, DEFAULT_BASE),
        exclude=tuple(sorted({*(d.exclude or ()), *(spec.exclude or ())})),
        prefer=_pick(spec.prefer, d.prefer, DEFAULT_PREFER),
        keep_docs=_pick(spec.keep_docs, d.keep_docs, False),
        max_layers=_pick(spec.max_layers, d.max_layers, DEFAULT_MAX_LAYERS),
        max_unpacked_bytes=_pick(spec.max_unpacked_bytes, d.max_unpacked_bytes, None),
        layering=rules.layering(_pick(spec.layering, d.layering, DEFAULT_LAYERING)),
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
        sbom_in_image=_pick(spec.sbom_in_image, d.sbom_in_image, False),
        pins=roots.pins,
        options=options,
    )


# --- where and how a refusal reads ---------------------------------------------------


_R = TypeVar("_R")
_MSGSPEC_AT = re.compile(r" - at `\$((?:\.[^.`\[]+|\[[^\]`]*\])*)`$")


@dataclass(frozen=True, slots=True)
class _Source:
    """The file being read: turns a refusal into a located, one-line ConfigError."""

    path: Path
    text: str

    def error(self, keys: tuple[str, ...], what: str, hint: str | None = None) -> ConfigError:
        line = line_of(self.text, keys)
        return ConfigError(
            f"{self.path}:{line}: {dotted(keys)}: {what}", hint=hint or rules.example_hint(keys)
        )

    def check(self, keys: tuple[str, ...], rule: Callable[..., _R], *args: Any) -> _R:
        try:
            return rule(*args)
        except InvalidValue as exc:
            raise self.error((*keys, *exc.at), exc.what, exc.hint) from None

    def convert(self, value: Any, kind: type[_S], keys: tuple[str, ...]) -> _S:
        if not isinstance(value, dict):
            raise self.error(keys, f"expected a table, got {kind_of(value)}")
        try:
            return msgspec.convert(value, kind)
        except msgspec.ValidationError as exc:
            raise self._from_msgspec(keys, str(exc)) from None

    def registries(
        self, tables: dict[str, Any] | None, keys: tuple[str, ...]
    ) -> dict[str, RegistryConfig]:
        return {
            name: self.convert(table, RegistryConfig, (*keys, "registries", name))
            for name, table in (tables or {}).items()
        }

    def sources(
        self, repository: RepositoryConfig, tables: dict[str, Any]
    ) -> tuple[config_sources.SourceSpec, ...]:
        """The enabled sources: each ``[sources.NAME]`` checked, then the defaults applied."""
        checked: dict[str, config_sources.SourceConfig] = {}
        for name, table in tables.items():
            keys = ("sources", name)
            self.check(keys, rules.source_name, name)
            checked[name] = self.convert(table, config_sources.SourceConfig, keys)
            _check_fields(self, keys, checked[name], rules.SOURCE_RULES)
        return self.check(("sources",), config_sources.effective_sources, repository, checked)

    def syntax_error(self, message: str) -> ConfigError:
        """tomllib's "Invalid value (at line 3, column 9)" as ``FILE:3: ...``."""
        m = re.search(r" \(at line (\d+), column (\d+)\)$", message)
        if m:
            what, line, where = message[: m.start()], int(m.group(1)), f" (column {m.group(2)})"
        elif message.endswith(" (at end of document)"):
            what, where = message.removesuffix(" (at end of document)"), " (at the end)"
            line = self.text.count("\n") + 1
        else:
            what, line, where = message, 1, ""
        hint = "fix the TOML syntax there; https://toml.io describes it"
        if what.startswith(("Cannot declare", "Cannot overwrite")):
            hint = "write each table and key once"
        return ConfigError(f"{self.path}:{line}: invalid TOML: {what}{where}", hint=hint)

    def _from_msgspec(self, keys: tuple[str, ...], message: str) -> ConfigError:
        """msgspec's "Expected `str`, got `int` - at `$.a.b[0]`" as ``FILE:LINE: a.b: ...``."""
        path = list(keys)
        what = message
        m = _MSGSPEC_AT.search(message)
        if m:
            what = message[: m.start()]
            # Field names are kept; "[0]" and "[...]" (list items, table keys) are not.
            path += [k for k in re.findall(r"\.([^.`\[]+)|\[[^\]`]*\]", m.group(1)) if k]
        if unknown := re.fullmatch(r"Object contains unknown field `(.*)`", what, re.S):
            path.append(unknown.group(1))
            near = difflib.get_close_matches(unknown.group(1), _KNOWN_KEYS, n=1)
            hint = f"did you mean {near[0]!r}?" if near else "remove it; docs/CONFIG.md lists them"
            return self.error(tuple(path), "unknown key", hint)
        if missing := re.fullmatch(r"Object missing required field `(.*)`", what, re.S):
            path.append(missing.group(1))
            return self.error(tuple(path), "required key missing")
        if expected := re.fullmatch(r"Expected `([^`]*)`, got `([^`]*)`", what):
            what = f"expected {kind_names(expected.group(1))}, got {kind_names(expected.group(2))}"
        return self.error(tuple(path), what)


_KNOWN_KEYS = sorted(
    {
        name
        for struct in (
            _File,
            RepositoryConfig,
            config_sources.SourceConfig,
            RegistryConfig,
            ContainerSpec,
            *config_image.OPTION_STRUCTS,
        )
        for name in struct.__struct_fields__
    }
)


def _refuse_nul(src: _Source, raw: dict[str, Any]) -> None:
    """No key or string anywhere may hold NUL: it cannot pass to a process, path or image."""
    stack: list[tuple[tuple[str, ...], Any]] = [((), raw)]
    while stack:
        keys, value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if "\0" in key:
                    raise src.error((*keys, key), "a key holds a NUL character", _NO_NUL)
                stack.append(((*keys, key), item))
        elif isinstance(value, list):
            stack.extend((keys, item) for item in value)
        elif isinstance(value, str) and "\0" in value:
            raise src.error(keys, "holds a NUL character", _NO_NUL)


_NO_NUL = "remove the \\u0000 escape"


def _check_fields(
    src: _Source,
    keys: tuple[str, ...],
    struct: msgspec.Struct,
    field_rules: dict[str, Callable[[Any], object]],
) -> None:
    """Hold every key that is set to its rule."""
    for field, rule in field_rules.items():
        value = getattr(struct, field, None)
        if value is not None:
            src.check((*keys, field), rule, value)
