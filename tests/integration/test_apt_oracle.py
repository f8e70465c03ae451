"""apt as the judge: on the real archive, polyarch picks the version apt would, package by package.

For fd, curl and git on both systems, a temporary apt root (``APT_CONFIG``,
nothing of the host's apt state read or written) gets the very sources
polyarch reads (main, -updates, security: URLs and keyrings as
``find_sources`` found them). Then every package of polyarch's closure must
be apt's candidate (``apt-cache policy``), and the closure must be the set
``apt-get install --simulate --no-install-recommends`` would install.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from polyarch.cache import Cache
from polyarch.config import parse_config
from polyarch.debian.sources import Source
from polyarch.platforms import System, parse_system
from polyarch.workflows.resolve import Session, resolve_fresh

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt (the oracle)"),
]

SYSTEMS = (parse_system("x86_64-linux"), parse_system("aarch64-linux"))
TOOLS = {"fd": "fd-find", "curl": "curl", "git": "git"}
CONFIG = "".join(f'[containers.{n}]\npackage = "{p}"\n' for n, p in TOOLS.items())
"""The defaults: bookworm + bookworm-updates + bookworm-security, base bash and coreutils."""


def apt_root(root: Path, arch: str, sources: tuple[Source, ...]) -> Path:
    """An isolated apt configuration for ``arch`` over ``sources``; returns its APT_CONFIG."""
    for sub in (
        "etc/apt/sources.list.d",
        "etc/apt/preferences.d",
        "etc/apt/apt.conf.d",
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
        "var/lib/dpkg",
    ):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "var/lib/dpkg/status").write_text("")
    conf = root / "apt.conf"
    conf.write_text(
        f'Dir "{root}/";\n'
        f'Dir::State::status "{root}/var/lib/dpkg/status";\n'
        f'Dir::Etc::main "{root}/etc/apt/apt.conf";\n'
        f'Dir::Etc::parts "{root}/etc/apt/apt.conf.d";\n'
        f'Dir::Etc::sourcelist "{root}/etc/apt/sources.list";\n'
        f'Dir::Etc::sourceparts "{root}/etc/apt/sources.list.d";\n'
        f'Dir::Etc::preferences "{root}/etc/apt/preferences";\n'
        f'Dir::Etc::preferencesparts "{root}/etc/apt/preferences.d";\n'
        f'Dir::Etc::trusted "{root}/etc/apt/trusted.gpg";\n'
        f'Dir::Etc::trustedparts "{root}/etc/apt/trusted.gpg.d";\n'
        f'APT::Architecture "{arch}";\nAPT::Architectures {{ "{arch}"; }};\n'
        'APT::Sandbox::User "root";\nAcquire::Languages "none";\n'
    )
    (root / "etc/apt/sources.list.d/polyarch.sources").write_text(
        "\n".join(
            f"Types: deb\nURIs: {s.url}\nSuites: {s.suite}\n"
            f"Components: {' '.join(s.components)}\nSigned-By: {s.keyring}\n"
            for s in sources
        )
    )
    return conf


def apt(conf: Path, *argv: str) -> str:
    return subprocess.run(
        argv, env={"APT_CONFIG": str(conf), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        check=True, capture_output=True, text=True, timeout=600,
    ).stdout  # fmt: skip


def candidates(conf: Path, names: list[str]) -> dict[str, str]:
    """Package → apt's candidate version (``apt-cache policy``)."""
    found: dict[str, str] = {}
    package = ""
    for line in apt(conf, "apt-cache", "policy", *names).splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            package = line[:-1]
        elif line.strip().startswith("Candidate:"):
            found[package] = line.split()[1]
    return found


def simulated_install(conf: Path, roots: list[str]) -> dict[str, str]:
    """Package → version of everything ``apt-get install -s --no-install-recommends`` installs."""
    out = apt(conf, "apt-get", "install", "-s", "-q", "--no-install-recommends", *roots)
    installs: dict[str, str] = {}
    for line in out.splitlines():
        if line.startswith("Inst "):
            name, version = line.split()[1], line.split()[2].lstrip("(")
            installs[name] = version
    return installs


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    config = parse_config(CONFIG, tmp_path_factory.mktemp("project") / "containers.toml")
    session = Session(config=config, cache=Cache(tmp_path_factory.mktemp("cache")))
    assert [s.name for s in session.sources] == ["main", "updates", "security"]
    return session


@pytest.fixture(scope="module")
def oracles(session: Session, tmp_path_factory: pytest.TempPathFactory) -> dict[System, Path]:
    roots = {}
    for system in SYSTEMS:
        conf = apt_root(
            tmp_path_factory.mktemp(system.debian_arch), system.debian_arch, session.sources
        )
        apt(conf, "apt-get", "-q", "update")
        roots[system] = conf
    return roots


@pytest.mark.parametrize("name", sorted(TOOLS))
@pytest.mark.parametrize("system", SYSTEMS, ids=lambda s: s.name)
def test_every_package_has_the_version_apt_would_pick(
    session: Session, oracles: dict[System, Path], name: str, system: System
) -> None:
    container = session.config.container(name)
    resolution = resolve_fresh(session, container, (system,))[system]
    ours = {p.record.name: p.record.version for p in resolution.packages}
    conf = oracles[system]
    apts = candidates(conf, sorted(ours))
    assert set(apts) == set(ours), "apt knows every package of the closure"
    differing = {n: (v, apts[n]) for n, v in ours.items() if apts[n] != v}
    assert not differing, f"(polyarch, apt) versions differ: {differing}"
    # The same set apt itself would install for the same roots, at the same versions.
    assert simulated_install(conf, [*container.base, container.package]) == ours
    assert [s.name for s in resolution.sources] == ["main", "updates", "security"]
