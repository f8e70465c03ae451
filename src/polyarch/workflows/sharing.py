"""Which containers of the project use each package, per system: what layer planning shares by.

Layer planning (``image.layer_plan``) groups packages by the set of
containers that use them. That set must come from the whole project, not
from the containers one command happens to build: ``polyarch build fd``
and ``polyarch build --all`` must give fd the same layers. So every
container of containers.toml configured for the system is resolved (from
containers.lock with ``--locked``; the package universe is parsed once per
session, so each extra container costs a closure walk, milliseconds), and
the answer is kept for the session.

A container that cannot be resolved (a package missing on this system, a
stale lock entry) is left out with a warning: its own build fails and says
why, and the others still build, with the layers they will have once it is
fixed or removed.
"""

from __future__ import annotations

from polyarch.errors import LockError, ResolveError
from polyarch.image.layer_plan import UsersOf
from polyarch.platforms import System
from polyarch.workflows.resolve import Session, resolve_container


def project_users(session: Session, system: System) -> UsersOf:
    """Package name → the project's containers on ``system`` whose closure holds it."""
    users = session.sharing.get(system.name)
    if users is None:
        users = _resolve_users(session, system)
        session.sharing[system.name] = users
    found = users

    def users_of(name: str) -> frozenset[str]:
        return found.get(name, frozenset())

    return users_of


def _resolve_users(session: Session, system: System) -> dict[str, frozenset[str]]:
    users: dict[str, set[str]] = {}
    for container in session.config.containers:
        if system not in container.systems:
            continue
        try:
            resolution = resolve_container(session, container, [system])[system]
        except (ResolveError, LockError) as error:
            session.progress.warn(
                f"{container.name} ({system.name}) is left out of layer sharing: {error.message}"
            )
            continue
        for p in resolution.packages:
            users.setdefault(p.record.name, set()).add(container.name)
    return {name: frozenset(names) for name, names in users.items()}
