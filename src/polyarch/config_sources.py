"""The package sources of containers.toml: ``[repository]`` (the main one) and ``[sources.NAME]``.

A Debian installation reads its release's main suite, ``SUITE-updates`` and
the security archive's ``SUITE-security``; so does polyarch by default when
the main suite is a release codename (``bookworm``, ``stable``, ...). Each of
the two is switched off with ``[sources.updates] enable = false`` (or
``[sources.security]``); other sources (backports, third-party repositories
with their own keys) are added as ``[sources.NAME]`` tables.

This module turns the tables into the list of enabled sources (``SourceSpec``,
main first), and decides what a container's pins name. Where each source's
URL and keyring come from (the host's apt sources, a snapshot) is
``polyarch.debian.sources``; config values are checked here, before anything
is downloaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import msgspec

from polyarch.config_rules import InvalidValue

if TYPE_CHECKING:
    from polyarch.config import RepositoryConfig

SourceKind = Literal["main", "updates", "security", "extra"]
MAIN = "main"
DEFAULT_EXTRAS: tuple[SourceKind, ...] = ("updates", "security")
"""Sources on by default for a release codename, in this order after the main one."""
NO_UPDATES_SUITES = frozenset({"sid", "unstable", "experimental", "rc-buggy"})
"""Suites that have neither ``-updates`` nor ``-security`` (nor do suites with a ``-``)."""


class SourceConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One ``[sources.NAME]`` table as written."""

    url: str | None = None
    """Archive base URL; default: the main archive's (updates, backports), or the
    host's security archive (security)."""
    suite: str | None = None
    components: tuple[str, ...] | None = None
    keyring: str | None = None
    priority: int | None = None
    """apt pin priority; default: from the Release (500, 100 with NotAutomatic and
    ButAutomaticUpgrades, 1 with NotAutomatic alone)."""
    enable: bool = True
    snapshot: str | None = None
    snapshot_url: str | None = None


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """One enabled source as configured; ``None`` values are found later (apt sources)."""

    name: str
    kind: SourceKind
    suite: str
    components: tuple[str, ...]
    url: str | None
    keyring: str | None
    priority: int | None
    snapshot: str | None
    snapshot_url: str | None
    same_archive: bool
    """Read from the main archive (its URL, keyring and snapshot) unless set here."""

    @property
    def is_security(self) -> bool:
        """A security suite: Debian names them ``CODENAME-security``."""
        return self.kind == "security" or self.suite.endswith("-security")


def has_default_extras(suite: str) -> bool:
    """Whether ``suite`` is a release codename with ``-updates`` and ``-security`` suites."""
    return "-" not in suite and "/" not in suite and suite not in NO_UPDATES_SUITES


def effective_sources(
    repository: RepositoryConfig, tables: Mapping[str, SourceConfig]
) -> tuple[SourceSpec, ...]:
    """The enabled sources, main first, then updates, security and the rest in file order.

    Raises ``InvalidValue`` with ``at`` = (source name, key) for a table that
    cannot work (an extra source without a suite).
    """
    main = SourceSpec(
        name=MAIN,
        kind="main",
        suite=repository.suite,
        components=tuple(repository.components),
        url=repository.url,
        keyring=repository.keyring,
        priority=None,
        snapshot=repository.snapshot,
        snapshot_url=repository.snapshot_url,
        same_archive=False,
    )
    specs = [main]
    defaults = has_default_extras(repository.suite)
    names: list[str] = [k for k in DEFAULT_EXTRAS if defaults or k in tables]
    names += [k for k in tables if k not in DEFAULT_EXTRAS]
    for name in names:
        table = tables.get(name, SourceConfig())
        if table.enable:
            specs.append(_spec(name, table, main, defaults))
    return tuple(specs)


def _spec(name: str, table: SourceConfig, main: SourceSpec, defaults: bool) -> SourceSpec:
    kind: SourceKind = "extra"
    for default in DEFAULT_EXTRAS:
        kind = default if name == default else kind
    suite = table.suite
    if suite is None:
        if kind == "extra" or not defaults:
            raise InvalidValue(
                "required key missing"
                if kind == "extra"
                else f"{main.suite!r} has no {name} suite to default to",
                hint=f'name the suite, e.g. suite = "{main.suite}-backports"'
                if kind == "extra"
                else f'set suite, or enable = false; e.g. suite = "bookworm-{name}"',
                at=(name, "suite"),
            )
        suite = f"{main.suite}-{name}"
    # Without a URL of its own a source is another suite of the main archive: the
    # same mirror, keyring and snapshot (security lives in an archive of its own).
    same = table.url is None and kind != "security"
    inherit = main if same else None
    return SourceSpec(
        name=name,
        kind=kind,
        suite=suite,
        components=table.components or (main.components if kind != "extra" else ("main",)),
        url=table.url,
        keyring=table.keyring or (main.keyring if kind != "security" else None),
        priority=table.priority,
        snapshot=table.snapshot or (main.snapshot if inherit or kind == "security" else None),
        snapshot_url=table.snapshot_url or (inherit.snapshot_url if inherit else None),
        same_archive=same,
    )


def source_of_release(release: str, sources: tuple[SourceSpec, ...]) -> str:
    """The name of the source that ``release`` (a source name or suite) means."""
    for spec in sources:
        if release == spec.name:
            return spec.name
    for spec in sources:
        if release == spec.suite:
            return spec.name
    listed = ", ".join(f"{s.name} ({s.suite})" for s in sources)
    raise InvalidValue(
        f"no enabled source is named or has the suite {release!r}",
        hint=f"sources: {listed}; add [sources.NAME] with that suite, or fix the name",
    )


def split_root(text: str) -> tuple[str, str | None]:
    """``foo/bookworm-backports`` → (``foo``, ``bookworm-backports``); ``foo`` → (``foo``, None)."""
    name, slash, release = text.partition("/")
    return name, (release if slash else None)


@dataclass(frozen=True, slots=True)
class Roots:
    """A container's own roots without their ``/release``, and what it pins to which source."""

    package: str
    packages: tuple[str, ...]
    pins: tuple[tuple[str, str], ...]
    """(package, source name), sorted by package."""


def container_roots(
    package: str,
    packages: tuple[str, ...],
    pins: Mapping[str, str],
    sources: tuple[SourceSpec, ...],
) -> Roots:
    """Split ``name/release`` roots and merge them with ``pins`` (package → source or suite).

    Raises ``InvalidValue`` with ``at`` naming the key (``package``, ``packages``
    or ``pins``, NAME) whose release names no enabled source, or pins one package twice.
    """
    chosen: dict[str, str] = {}
    where: dict[str, tuple[str, ...]] = {}

    def pin(name: str, release: str, at: tuple[str, ...]) -> None:
        try:
            source = source_of_release(release, sources)
        except InvalidValue as exc:
            raise InvalidValue(exc.what, exc.hint, at=at) from None
        if chosen.get(name, source) != source:
            raise InvalidValue(
                f"{name} is pinned to both {chosen[name]!r} and {source!r}",
                hint="pin each package to one source",
                at=at,
            )
        chosen[name] = source
        where[name] = at

    bare: list[str] = []
    for key, text in [("package", package)] + [("packages", p) for p in packages]:
        name, release = split_root(text)
        bare.append(name)
        if release is not None:
            pin(name, release, (key,))
    for name, release in pins.items():
        pin(name, release, ("pins", name))
    return Roots(bare[0], tuple(bare[1:]), tuple(sorted(chosen.items())))
