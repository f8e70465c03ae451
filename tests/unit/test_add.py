"""polyarch add on a generated, signed repository with Contents indexes: what WHAT finds, what is
refused and how, containers.toml kept byte for byte, the Contents lookup cached and verified,
and the smoke test chosen by running the image in docker and podman.

The native system's libc6, bash and coreutils are this host's own programs
(tests/hosttools.py), so the tools (bash scripts) really run in the engine; the
other system gets the miniature fakes of tests/conftest.py, enough to resolve.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ONE_SOURCE, RepoFactory, base_packages
from debrepo import DebSpec, TestRepo
from hosttools import host_world, native_arch, script

from polyarch.cache import Cache, Kind
from polyarch.config import parse_config
from polyarch.engine import Engine
from polyarch.errors import IntegrityError, ResolveError, UsageError
from polyarch.platforms import SYSTEMS, native_system
from polyarch.workflows.add import Added, add_tool
from polyarch.workflows.cache import verify_cache
from polyarch.workflows.resolve import Session

Cli = Callable[..., tuple[int, str, str]]
NATIVE = native_arch()
FOREIGN = "arm64" if NATIVE == "amd64" else "amd64"
SYSTEM_OF = {s.debian_arch: s.name for s in SYSTEMS}
VERSION_FAILS = 'case "$1" in --version) echo "no such option" >&2; exit 2;; esac; echo "usage: $0"'


def tools(arch: str) -> list[DebSpec]:
    def tool(name: str, files: dict[str, str], **fields: str) -> DebSpec:
        return DebSpec(
            name, "1.0-1", arch, files={p: script(b) for p, b in files.items()}, **fields
        )

    return [
        tool("ripgrep", {"/usr/bin/rg": 'echo "ripgrep 13.0.0 $*"'}, depends="libc6"),
        tool("fd-find", {"/usr/bin/fdfind": VERSION_FAILS}, depends="libc6"),
        tool("bat", {"/usr/bin/batcat": 'echo "bat 0.22.1"'}),
        tool(
            "procps",
            {"/usr/bin/ps": "echo ps", "/usr/bin/free": "echo free", "/bin/kill": "echo kill"},
        ),
        tool("rename", {"/usr/bin/rename": "echo a"}),
        tool("file-rename", {"/usr/bin/rename": "echo b"}),
        tool("libfoo1", {"/usr/lib/libfoo.so.1": ""}),
    ]


def specs() -> list[DebSpec]:
    return [
        *host_world(),
        *base_packages(FOREIGN),
        *tools(NATIVE),
        *tools(FOREIGN),
        DebSpec("hello", "2.10", NATIVE, files={"/usr/bin/hello": script("echo hello")}),
        DebSpec("tzdata", "2025b-1", "all", files={"/usr/sbin/tzconfig": script("echo tz")}),
    ]


@pytest.fixture
def repo(make_repo: RepoFactory) -> tuple[TestRepo, str]:
    return make_repo(specs(), arches=(NATIVE, FOREIGN), with_base=False, contents=True)


@pytest.fixture
def project(tmp_path: Path, repo: tuple[TestRepo, str]) -> Path:
    """A containers.toml with comments and a layout of its own, and no container yet."""
    test_repo, url = repo
    path = tmp_path / "project" / "containers.toml"
    path.parent.mkdir()
    path.write_text(
        "# my tools   (kept as written)\n"
        f'[repository]\nurl   = "{url}"     # the mirror\nkeyring = "{test_repo.key.keyring}"\n'
        f"\n{ONE_SOURCE}\n[defaults]  # every container\n"
        f"systems = [ '{SYSTEM_OF[NATIVE]}',\n  '{SYSTEM_OF[FOREIGN]}' ]\n# the end\n"
    )
    return path


def add(project: Path, cache: Path, what: str, **options: object) -> Added:
    text = project.read_text() if project.exists() else ""
    session = Session(config=parse_config(text, project), cache=Cache(cache))
    return add_tool(session, what, **options)  # type: ignore[arg-type]


def without(text: str, block: str) -> str:
    assert text.count(block) == 1
    return text.replace(block, "", 1)


# -- what WHAT finds ----------------------------------------------------------------------------


def test_a_command_finds_its_package_and_the_file_keeps_every_other_byte(
    project: Path, tmp_path: Path
) -> None:
    before = project.read_text()
    added = add(project, tmp_path / "cache", "rg")
    assert (added.choice.package, added.choice.command, added.choice.path) == (
        "ripgrep",
        "rg",
        "/usr/bin/rg",
    )
    assert added.written and added.probes == ()  # no engine given: not tried
    after = project.read_text()
    block = '\n[containers.rg]\npackage = "ripgrep"\ncommand = "rg"\ntest = ["--version"]\n'
    assert without(after, block) == before
    assert {s.name for s in added.versions} == {SYSTEM_OF[NATIVE], SYSTEM_OF[FOREIGN]}
    # A second tool goes below the first, and both earlier texts stay.
    add(project, tmp_path / "cache", "batcat")
    assert (
        without(
            project.read_text(),
            '\n[containers.batcat]\npackage = "bat"\ncommand = "batcat"\ntest = ["--version"]\n',
        )
        == after
    )


def test_a_package_name_with_one_command_uses_it_and_the_name_stays_what(
    project: Path, tmp_path: Path
) -> None:
    added = add(project, tmp_path / "cache", "bat")
    assert (added.name, added.table) == (
        "bat",
        {"package": "bat", "command": "batcat", "test": ["--version"]},
    )


def test_a_package_with_several_commands_lists_them_and_command_picks_one(
    project: Path, tmp_path: Path
) -> None:
    with pytest.raises(UsageError, match=r"package procps ships 3 commands: free, kill, ps") as exc:
        add(project, tmp_path / "cache", "procps")
    assert exc.value.hint == "choose one: polyarch add procps --command NAME"
    added = add(project, tmp_path / "cache", "procps", command="kill", name="kill")
    # bin/kill as packaged is /usr/bin/kill in the image (merged /usr).
    assert (added.choice.command, added.choice.path) == ("kill", "/usr/bin/kill")
    assert added.table["command"] == "kill" and added.name == "kill"
    with pytest.raises(UsageError, match="has no command 'top'"):
        add(project, tmp_path / "cache", "procps", command="top")


def test_a_command_several_packages_ship_names_them(project: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="2 packages ship a command 'rename': file-rename, rename"):
        add(project, tmp_path / "cache", "rename")


def test_an_architecture_all_package_is_found_through_contents_all(
    project: Path, tmp_path: Path
) -> None:
    added = add(project, tmp_path / "cache", "tzconfig")
    assert (added.choice.package, added.choice.path) == ("tzdata", "/usr/sbin/tzconfig")


def test_an_unknown_name_suggests_near_commands_and_packages(project: Path, tmp_path: Path) -> None:
    before = project.read_text()
    with pytest.raises(ResolveError) as exc:
        add(project, tmp_path / "cache", "ripgre")
    assert "no command or package 'ripgre'" in exc.value.message
    assert "'ripgrep' (package)" in str(exc.value.hint)
    with pytest.raises(ResolveError) as exc:
        add(project, tmp_path / "cache", "fdfnd")
    assert "'fdfind' (command)" in str(exc.value.hint)
    assert project.read_text() == before


def test_a_package_without_commands_and_a_package_one_system_lacks_are_refused(
    project: Path, tmp_path: Path
) -> None:
    with pytest.raises(UsageError, match="package libfoo1 ships no command"):
        add(project, tmp_path / "cache", "libfoo1")
    before = project.read_text()
    with pytest.raises(ResolveError, match=f"not available for {SYSTEM_OF[FOREIGN]}"):
        add(project, tmp_path / "cache", "hello")
    assert project.read_text() == before


def test_names_that_are_taken_or_invalid_are_refused_with_what_to_do(
    project: Path, tmp_path: Path
) -> None:
    add(project, tmp_path / "cache", "rg")
    with pytest.raises(UsageError, match=r"already has \[containers.rg\]") as exc:
        add(project, tmp_path / "cache", "rg")
    assert "--name" in str(exc.value.hint)
    with pytest.raises(UsageError, match="'Rg' cannot name a container"):
        add(project, tmp_path / "cache", "rg", name="Rg")


def test_a_dry_run_writes_nothing_and_an_empty_project_gets_a_file(
    tmp_path: Path, repo: tuple[TestRepo, str]
) -> None:
    test_repo, url = repo
    project = tmp_path / "p" / "containers.toml"
    project.parent.mkdir()
    text = f'[repository]\nurl = "{url}"\nkeyring = "{test_repo.key.keyring}"\n\n{ONE_SOURCE}'
    project.write_text(text)
    dry = add(project, tmp_path / "cache", "rg", dry_run=True)
    assert not dry.written and project.read_text() == text
    assert (
        dry.text
        == text + '[containers.rg]\npackage = "ripgrep"\ncommand = "rg"\ntest = ["--version"]\n'
    )


# -- the Contents lookup: verified, cached ------------------------------------------------------


def test_the_second_add_reads_the_cached_lookup_not_the_mirror(
    project: Path, tmp_path: Path, repo: tuple[TestRepo, str]
) -> None:
    add(project, tmp_path / "cache", "rg")
    cache = Cache(tmp_path / "cache")
    assert len(list(cache.entries(Kind.CONTENTS))) == 2  # Contents-ARCH and Contents-all
    for served in repo[0].dist.glob("main/Contents-*.gz"):
        served.unlink()
    assert add(project, tmp_path / "cache", "batcat").choice.package == "bat"
    report = verify_cache(cache)
    assert report.checked[Kind.CONTENTS] == 2 and not report.problems


def test_a_contents_file_that_does_not_match_the_signed_release_is_refused(
    project: Path, tmp_path: Path, repo: tuple[TestRepo, str]
) -> None:
    served = repo[0].dist / "main" / f"Contents-{NATIVE}.gz"
    served.write_bytes(served.read_bytes() + b"\0")
    with pytest.raises(IntegrityError, match="does not match the signed Release"):
        add(project, tmp_path / "cache", "rg")


def test_a_damaged_cached_lookup_is_reported_and_rebuilt(project: Path, tmp_path: Path) -> None:
    add(project, tmp_path / "cache", "rg")
    cache = Cache(tmp_path / "cache")
    (key, path), *_ = sorted(cache.entries(Kind.CONTENTS))
    path.write_bytes(b"\x92\xc1")
    assert [p.key for p in verify_cache(cache).problems] == [key]
    assert add(project, tmp_path / "cache", "batcat").choice.package == "bat"


# -- the smoke test, tried in the engine --------------------------------------------------------


def test_the_first_of_version_and_help_that_exits_0_in_the_image_is_written(
    engine: Engine, project: Path, tmp_path: Path
) -> None:
    rg = add(project, tmp_path / "cache", "rg", engine=engine)
    assert rg.probed == native_system() and [p.args for p in rg.probes] == [("--version",)]
    assert rg.probes[0].output.strip() == "ripgrep 13.0.0 --version"
    fd = add(project, tmp_path / "cache", "fdfind", engine=engine)
    assert [(p.args, p.exit_code) for p in fd.probes] == [(("--version",), 2), (("--help",), 0)]
    assert fd.table["test"] == ["--help"]
    assert 'test = ["--help"]' in project.read_text()
    assert not [ref for ref in images(engine) if ":polyarch-add-" in ref]  # the probes are gone


def images(engine: Engine) -> list[str]:
    listing = subprocess.run(
        [engine.program, "images", "--format", "{{.Repository}}:{{.Tag}}"],
        env={**os.environ, **engine.env},
        capture_output=True,
        text=True,
        check=True,
    )
    return listing.stdout.split()


def test_the_cli_adds_builds_and_tests_the_new_container(
    cli: Cli, engine: Engine, project: Path, tmp_path: Path
) -> None:
    common = ("-q", "-f", project, "--cache-dir", tmp_path / "cache")
    code, out, err = cli(*common, "add", "fdfind", "--engine", engine.name)
    assert code == 0, err
    assert "fdfind (/usr/bin/fdfind) is in package fd-find" in out
    assert "fdfind --version exits 2" in out and "fdfind --help exits 0" in out
    out_dir = tmp_path / "result"
    code, _, err = cli(*common, "build", "fdfind", "--out", out_dir)
    assert code == 0, err
    code, _, err = cli(*common, "test", "fdfind", "--out", out_dir, "--engine", engine.name)
    assert code == 0, err
    code, out, err = cli(*common, "list", "--json", "--out", out_dir)
    assert code == 0, err
    listed = json.loads(out)["containers"]
    assert [(c["name"], c["package"], c["command"]) for c in listed] == [
        ("fdfind", "fd-find", "fdfind")
    ]
    assert listed[0]["last_build"]["manifests"].keys() == {SYSTEM_OF[NATIVE]}
