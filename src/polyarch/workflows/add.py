"""add: a tool in one command — ``polyarch add rg`` writes ``[containers.rg]``.

1. **Find** what WHAT names, in the archive's Contents indexes (verified like
   every index; ``debian/contents.py``) for the kernel's own system: a
   command shipped in /usr/bin, /bin, /usr/sbin or /sbin by exactly one
   package, else a package whose one command it is (``--command`` picks
   among several). Unknown names get near commands and near packages.
2. **Resolve** the new container on every system it will be built for: the
   table is added to the text first and the whole file parsed again, so the
   defaults apply and everything is checked as ``polyarch build`` will.
3. **Probe** (with an engine): build the image of the kernel's own system
   into a temporary directory, load it under a throwaway tag, and keep the
   first of ``--version`` and ``--help`` that exits 0 as the container's
   ``test``; the image is removed again. Without an engine ``--version`` is
   written, and the CLI says it was not tried.
4. **Write** containers.toml atomically (``config_edit``: every byte outside
   the new table stays), unless it is a dry run.
"""

from __future__ import annotations

import difflib
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from polyarch.config import Config, Container, parse_config
from polyarch.config_edit import add_container_table
from polyarch.config_rules import InvalidValue, container_name
from polyarch.debian.contents import COMMAND_DIRS, Contents
from polyarch.debian.resolver import Resolution
from polyarch.debian.universe import PackageUniverse
from polyarch.engine import Engine
from polyarch.errors import MirrorError, ResolveError, UsageError
from polyarch.files import atomic_write
from polyarch.platforms import System, native_system
from polyarch.workflows.resolve import Session, resolve_container

PROBES: tuple[tuple[str, ...], ...] = (("--version",), ("--help",))
"""The smoke tests tried, in order; the first that exits 0 in the image is written."""
PROBE_TIMEOUT_SECONDS = 60.0
"""``--version`` answers at once, even under qemu; a minute means it waits for input."""
_LISTED = 12
"""How many commands or packages a message lists before "and N more"."""


@dataclass(frozen=True, slots=True)
class Choice:
    """What WHAT names: a package and the command its container runs."""

    package: str
    command: str
    path: str | None
    """Where Contents says the command is; None when taken from ``--command`` alone."""
    via: str
    """``command`` (WHAT is a command name) or ``package`` (WHAT is a package name)."""


@dataclass(frozen=True, slots=True)
class Probe:
    args: tuple[str, ...]
    exit_code: int
    output: str


@dataclass(frozen=True, slots=True)
class Added:
    """What ``add_tool`` did (or, for a dry run, would do)."""

    name: str
    config: Path
    text: str
    """containers.toml with the new table."""
    table: dict[str, object]
    choice: Choice
    versions: dict[System, str]
    """The package's version on each system."""
    probed: System | None
    """The system whose image was tried in the engine; None when nothing was tried."""
    probes: tuple[Probe, ...]
    written: bool

    @property
    def tested(self) -> bool:
        return any(p.exit_code == 0 for p in self.probes)


def add_tool(
    session: Session,
    what: str,
    *,
    name: str | None = None,
    command: str | None = None,
    engine: Engine | None = None,
    native: System | None = None,
    dry_run: bool = False,
) -> Added:
    """Add WHAT to the session's containers.toml (``session.config.path``; it may be empty).

    ``native`` is the system of the kernel that runs ``engine``'s containers
    (default: this host's). The session's config is replaced by the one with
    the new container.
    """
    base = session.config
    name = _container_name(name or what, base)
    native = native or native_system()
    choice = find_tool(session, native, what, command)
    values: dict[str, object] = {"package": choice.package}
    if choice.command != choice.package:
        values["command"] = choice.command
    text = _read(base.path)
    where = str(base.path)
    trial = add_container_table(text, name, {**values, "test": list(PROBES[0])}, where)
    session.config = parse_config(trial, base.path)
    container = session.config.container(name)
    resolutions = resolve_container(session, container, container.systems)
    versions = {s: _version(container, r) for s, r in resolutions.items()}
    probes: tuple[Probe, ...] = ()
    probed = native if engine is not None and native in container.systems else None
    if engine is not None and probed is not None:
        probes = probe_tests(session, container, probed, engine)
    passing = next((p.args for p in probes if p.exit_code == 0), PROBES[0])
    table = {**values, "test": list(passing)}
    final = add_container_table(text, name, table, where)
    session.config = parse_config(final, base.path)
    if not dry_run:
        atomic_write(base.path, final.encode())
    return Added(name, base.path, final, table, choice, versions, probed, probes, not dry_run)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""


def _container_name(name: str, config: Config) -> str:
    try:
        container_name(name)
    except InvalidValue as exc:
        raise UsageError(
            f"{name!r} cannot name a container: {exc.what}", hint="pass --name NAME"
        ) from None
    if any(c.name == name for c in config.containers):
        raise UsageError(
            f"{config.path} already has [containers.{name}]",
            hint="pass --name with another name, or edit that table",
        )
    return name


def _version(container: Container, resolution: Resolution) -> str:
    return next(
        (p.record.version for p in resolution.packages if p.record.name == container.package), "?"
    )


# --- finding the package ------------------------------------------------------------------


def find_tool(session: Session, system: System, what: str, command: str | None) -> Choice:
    """The package and command WHAT names, from ``system``'s Contents and Packages indexes."""
    universe = session.universe(system)
    try:
        contents = archive_contents(session, system)
    except MirrorError:
        # An archive without Contents indexes: a package name with --command still works.
        if command is not None and universe.has(what):
            return Choice(what, command, None, "package")
        raise
    return choose(contents, universe, what, command)


def archive_contents(session: Session, system: System) -> Contents:
    """The Contents of every source that carries ``system``, each verified on its own chain;
    MirrorError when none publishes any."""
    readable = session.archive.readable(system.debian_arch)
    found = Contents.concat(r.contents(system.debian_arch) for r in readable)
    if not found.files:
        main = session.archive.main.source
        raise MirrorError(
            f"{main.url} publishes no Contents index for {main.suite}",
            hint="give the package name and --command instead of a command name",
        )
    return found


def choose(contents: Contents, universe: PackageUniverse, what: str, command: str | None) -> Choice:
    """The rules of step 1 (see the module's doc), on indexes already read."""
    shipped = [s for s in contents.shipping(what) if universe.has(s.package)]
    packages = sorted({s.package for s in shipped})
    is_package = bool(universe.candidates(what))
    if command is None or not is_package:  # WHAT as a command name
        if packages and command not in (None, what):
            raise UsageError(
                f"{what!r} is a command of {_listing(packages)}, not a package",
                hint=f"polyarch add {packages[0]} --command {command}",
            )
        if len(packages) == 1:
            return Choice(packages[0], what, shipped[0].path, "command")
        if len(packages) > 1:
            raise UsageError(
                f"{len(packages)} packages ship a command {what!r}: {_listing(packages)}",
                hint=f"name the one you mean: polyarch add PACKAGE --command {what}",
            )
        if not is_package:
            raise ResolveError(
                f"no command or package {what!r} in the archive",
                hint=_near(contents, universe, what),
            )
    return _command_of_package(contents, what, command)


def _command_of_package(contents: Contents, package: str, command: str | None) -> Choice:
    found = contents.commands_of(package)
    names = sorted({s.command for s in found})
    if command is not None:
        match = [s for s in found if command in (s.command, s.path)]
        if not match:
            listed = f"its commands: {_listing(names)}" if names else "it ships no command"
            raise UsageError(
                f"package {package} has no command {command!r} ({listed})",
                hint="pass one of them with --command" if names else "check the package name",
            )
        return Choice(package, match[0].command, match[0].path, "package")
    if len(names) == 1:
        return Choice(package, names[0], found[0].path, "package")
    if not names:
        dirs = ", ".join(f"/{d}" for d in COMMAND_DIRS)
        raise UsageError(
            f"package {package} ships no command in {dirs}",
            hint="name its program with --command PATH (an absolute path in the image)",
        )
    raise UsageError(
        f"package {package} ships {len(names)} commands: {_listing(names)}",
        hint=f"choose one: polyarch add {package} --command NAME",
    )


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_LISTED])
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def _near(contents: Contents, universe: PackageUniverse, what: str) -> str:
    """Near commands and near packages, the closest first."""
    commands = difflib.get_close_matches(what, sorted(contents.command_names()), n=3, cutoff=0.7)
    candidates = [(c, "command") for c in commands] + [
        (p, "package") for p in universe.near_names(what) if p not in commands
    ]
    ranked = sorted(
        candidates, key=lambda c: (-difflib.SequenceMatcher(None, what, c[0]).ratio(), c)
    )
    near = [f"{name!r} ({kind})" for name, kind in ranked[:4]]
    return (
        f"did you mean {' or '.join(near)}?" if near else "check the name (commands and packages)"
    )


# --- trying the smoke tests -------------------------------------------------------------


def probe_tests(
    session: Session, container: Container, system: System, engine: Engine
) -> tuple[Probe, ...]:
    """Build ``system``'s image in a temporary directory, load it, and try ``PROBES`` in order."""
    from polyarch.workflows.build import build_container
    from polyarch.workflows.load import load_image

    tag = f"polyarch-add-{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory(prefix="polyarch-add-") as tmp:
        build_container(session, container, (system,), out_dir=Path(tmp), tag=tag)
        reference = load_image(engine, container, system, out_dir=Path(tmp), tag=tag)
    probes: list[Probe] = []
    try:
        for args in PROBES:
            result = engine.run(reference, list(args), timeout=PROBE_TIMEOUT_SECONDS)
            probes.append(Probe(args, result.exit_code, result.output))
            if result.exit_code == 0:
                break
    finally:
        engine.remove_image(reference)
    return tuple(probes)
