"""The build stamp: a warm build whose inputs and outputs are unchanged does nothing more.

Each test builds a generated, signed repository for real; "built in full"
is observed by counting calls of ``build_container`` (the CLI looks it up
when it needs it), and one test runs polyarch in its own process to see
that the stamped answer does not even load the code that builds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import RepoFactory, write_project
from debrepo import DebSpec, TestRepo

import polyarch.workflows.build as build_module
from polyarch.workflows.stamp import STAMPS_DIR

Cli = Callable[..., tuple[int, str, str]]
ARCHES = ("amd64", "arm64")
CONTAINERS = """
[containers.hello]
package = "hello"
command = "hello"
"""


def specs(version: str = "2.10-3") -> list[DebSpec]:
    return [
        DebSpec("hello", version, arch, files={"/usr/bin/hello": b"#!/bin/sh\necho hello\n"})
        for arch in ARCHES
    ]


class Project:
    def __init__(self, tmp_path: Path, make_repo: RepoFactory) -> None:
        self.repo, url = make_repo(specs())
        self.config = write_project(tmp_path / "project", url, self.repo.key.keyring, CONTAINERS)
        self.cache = tmp_path / "cache"
        self.out = tmp_path / "project" / "result"

    @property
    def result(self) -> Path:
        return self.out / "hello"

    def stamps(self) -> list[Path]:
        return sorted((self.cache / STAMPS_DIR).glob("[0-9a-f]*"))


@pytest.fixture
def project(tmp_path: Path, make_repo: RepoFactory) -> Project:
    return Project(tmp_path, make_repo)


@pytest.fixture
def full_builds(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The containers ``build_container`` was called for (the full build), in order."""
    calls: list[str] = []
    original = build_module.build_container

    def counting(session, container, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(container.name)
        return original(session, container, *args, **kwargs)

    monkeypatch.setattr(build_module, "build_container", counting)
    yield calls


def build(cli: Cli, project: Project, *args: str) -> str:
    code, out, err = cli(
        "-f", project.config, "--cache-dir", project.cache,
        "build", "hello", "--all-systems", "--out", project.out, *args,
    )  # fmt: skip
    assert code == 0, err
    return out


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_an_unchanged_build_answers_from_its_stamp_with_the_same_report(
    cli: Cli, project: Project, full_builds: list[str]
) -> None:
    first_table = build(cli, project)
    first_json = json.loads(build(cli, project, "--json"))  # its outputs were racy-fresh: hashed
    before = files_of(project.result)
    assert full_builds == ["hello"]  # the --json build found the outputs up to date
    assert len(project.stamps()) == 1
    assert build(cli, project) == first_table
    assert json.loads(build(cli, project, "--json")) == first_json
    assert full_builds == ["hello"]
    assert files_of(project.result) == before


def _edit_config(project: Project) -> None:
    project.config.write_text(project.config.read_text() + "\n# a comment changes the inputs\n")


def _publish_update(project: Project) -> None:
    repo: TestRepo = project.repo
    for spec in specs("2.10-4"):
        repo.add(spec)
    repo.publish()


@pytest.mark.parametrize(
    ("change", "args"),
    [
        (_edit_config, ()),
        (_publish_update, ()),
        (None, ("--tag", "v2")),
    ],
    ids=["containers.toml edited", "the archive published an update", "another tag"],
)
def test_any_changed_input_builds_in_full(
    cli: Cli,
    project: Project,
    full_builds: list[str],
    change: Callable[[Project], None] | None,
    args: tuple[str, ...],
) -> None:
    build(cli, project)
    if change is not None:
        change(project)
    build(cli, project, *args)
    assert full_builds == ["hello", "hello"]


def test_another_epoch_builds_in_full(
    cli: Cli, project: Project, full_builds: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    build(cli, project)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    build(cli, project)
    assert full_builds == ["hello", "hello"]


@pytest.mark.parametrize(
    "damage",
    ["edit a byte", "add a file", "remove a file", "replace by a symlink"],
)
def test_outputs_changed_by_hand_are_rebuilt(
    cli: Cli, project: Project, full_builds: list[str], damage: str
) -> None:
    build(cli, project)
    build(cli, project)
    assert full_builds == ["hello"]
    before = files_of(project.result)
    archive = project.result / "x86_64-linux.tar"
    if damage == "edit a byte":
        data = bytearray(archive.read_bytes())
        data[len(data) // 2] ^= 0xFF
        archive.write_bytes(bytes(data))  # same size, same name
    elif damage == "add a file":
        (project.result / "oci" / "stray").write_text("x")
    elif damage == "remove a file":
        archive.unlink()
    else:
        archive.unlink()
        archive.symlink_to("/etc/passwd")
    build(cli, project)
    assert full_builds == ["hello", "hello"]
    assert files_of(project.result) == before
    assert not archive.is_symlink()


@pytest.mark.parametrize(
    "content",
    [b"", b"not json", b'{"format": 1}', b'{"format": 99, "root": "/", "inputs": ""}'],
    ids=["empty", "garbage", "incomplete", "other format"],
)
def test_a_damaged_stamp_only_means_a_full_build(
    cli: Cli, project: Project, full_builds: list[str], content: bytes
) -> None:
    build(cli, project)
    [stamp] = project.stamps()
    stamp.write_bytes(content)
    build(cli, project)
    assert full_builds == ["hello", "hello"]
    assert stamp.read_bytes() != content  # written anew
    build(cli, project)
    assert full_builds == ["hello", "hello"]


def test_a_stamp_of_other_outputs_does_not_answer(
    cli: Cli, project: Project, full_builds: list[str], tmp_path: Path
) -> None:
    build(cli, project)
    elsewhere = tmp_path / "elsewhere"
    code, _, err = cli(
        "-f", project.config, "--cache-dir", project.cache,
        "build", "hello", "--all-systems", "--out", elsewhere,
    )  # fmt: skip
    assert code == 0, err
    assert full_builds == ["hello", "hello"]
    assert files_of(elsewhere / "hello") == files_of(project.result)


def test_locked_builds_neither_read_nor_write_stamps(
    cli: Cli, project: Project, full_builds: list[str]
) -> None:
    code, _, err = cli("-f", project.config, "--cache-dir", project.cache, "lock")
    assert code == 0, err
    build(cli, project, "--locked")
    build(cli, project, "--locked")
    assert full_builds == ["hello", "hello"]
    assert project.stamps() == []


def test_the_stamped_answer_loads_no_code_that_builds(project: Project) -> None:
    def run() -> list[str]:
        script = (
            "import sys\nfrom polyarch.cli import main\n"
            f"code = main({['-q', '-f', str(project.config), '--cache-dir', str(project.cache), 'build', 'hello', '--all-systems', '--out', str(project.out)]!r})\n"
            "assert code == 0, code\n"
            "print(' '.join(m for m in sorted(sys.modules) if m.startswith(("
            "'polyarch.workflows.build', 'polyarch.workflows.evidence', 'polyarch.image.oci', "
            "'polyarch.image.layers', 'polyarch.attest.spdx', 'polyarch.debian.resolver', "
            "'polyarch.debian.deb', 'polyarch.debian.universe'))))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.split("\n")[-2].split()

    assert "polyarch.workflows.build" in run()  # the first build builds
    assert run() == []


def test_the_stamped_answer_names_the_outputs_as_this_build_was_asked(
    cli: Cli, project: Project, full_builds: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    build(cli, project, "--json")
    monkeypatch.chdir(project.out.parent)
    code, out, err = cli(
        "-f", project.config.name, "--cache-dir", project.cache,
        "build", "hello", "--all-systems", "--out", project.out.name, "--json",
    )  # fmt: skip
    assert code == 0, err
    assert full_builds == ["hello"]  # the same directory, named another way: stamped
    assert json.loads(out)["containers"][0]["path"] == str(Path(project.out.name) / "hello")


def test_cache_prune_removes_a_crashed_writers_stamp_and_with_older_than_old_stamps(
    cli: Cli, project: Project, full_builds: list[str]
) -> None:
    build(cli, project)
    [stamp] = project.stamps()
    leftover = stamp.parent / ".stamp-crashed"
    leftover.write_bytes(b"{")
    long_ago = 1_000_000_000
    os.utime(leftover, (long_ago, long_ago))
    prune = ("-f", project.config, "--cache-dir", project.cache, "cache", "prune")
    assert cli(*prune)[0] == 0
    assert not leftover.exists() and project.stamps() == [stamp]
    os.utime(stamp, (long_ago, long_ago))
    assert cli(*prune, "--older-than", "30d")[0] == 0
    assert project.stamps() == []
    build(cli, project)
    assert full_builds == ["hello", "hello"]


# -- what a hostile review found (each failed before its fix) ----------------------------


@pytest.mark.parametrize("change", ["edit", "make executable", "remove"])
def test_a_changed_host_file_builds_in_full(
    cli: Cli, project: Project, full_builds: list[str], change: str
) -> None:
    conf = project.config.parent / "hello.conf"
    conf.write_text("v1\n")
    project.config.write_text(
        project.config.read_text()
        + '\n[containers.hello.files]\n"/etc/hello.conf" = "hello.conf"\n'
    )
    build(cli, project)
    build(cli, project)
    assert full_builds == ["hello"]
    before = files_of(project.result)
    if change == "edit":
        conf.write_text("v2\n")
    elif change == "make executable":
        conf.chmod(0o755)
    else:
        conf.unlink()
        code, _, err = cli(
            "-f", project.config, "--cache-dir", project.cache,
            "build", "hello", "--all-systems", "--out", project.out,
        )  # fmt: skip
        assert code == 16 and "cannot read" in err  # as a full build says it
        return
    build(cli, project)
    assert full_builds == ["hello", "hello"]
    assert files_of(project.result) != before


def test_a_build_waits_while_another_writes_the_same_outputs(
    cli: Cli, project: Project, full_builds: list[str]
) -> None:
    from polyarch.cache import Cache
    from polyarch.workflows.stamp import outputs_lock

    build(cli, project)
    done = threading.Event()

    def second() -> None:
        _edit_config(project)  # a full build, which must write under the lock
        build(cli, project)
        done.set()

    with outputs_lock(Cache(project.cache), project.result) as held:
        assert held
        writer = threading.Thread(target=second)
        writer.start()
        assert not done.wait(3)  # it built everything but waits to write and stamp
    writer.join(60)
    assert done.is_set() and full_builds == ["hello", "hello"]


def test_outputs_that_cannot_be_stamped_are_still_built(
    cli: Cli, project: Project, tmp_path: Path
) -> None:
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/out-\xff"))
    code, _, err = cli(
        "-f", project.config, "--cache-dir", project.cache,
        "build", "hello", "--all-systems", "--out", odd,
    )  # fmt: skip
    assert code == 0, err
    assert (odd / "hello" / "oci" / "index.json").is_file() and project.stamps() == []


def test_an_output_directory_in_a_link_loop_gets_the_full_builds_error(
    cli: Cli, project: Project, tmp_path: Path
) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    code, _, err = cli(
        "-f", project.config, "--cache-dir", project.cache,
        "build", "hello", "--all-systems", "--out", loop,
    )  # fmt: skip
    assert code == 60 and "Traceback" not in err and err.startswith("polyarch: error:")


@pytest.mark.parametrize(
    "lie",
    [
        {"images": []},
        {"container": "evil"},
        {"index_digest": "sha256:" + "0" * 64},
        {"size": -1},
    ],
    ids=["no images", "another container", "an index not on disk", "a negative size"],
)
def test_a_stamp_whose_summary_lies_is_not_believed(
    cli: Cli, project: Project, full_builds: list[str], lie: dict[str, object]
) -> None:
    build(cli, project)
    [stamp] = project.stamps()
    data = json.loads(stamp.read_bytes())
    if "size" in lie:
        data["summary"]["images"][0]["size"] = lie["size"]
    else:
        data["summary"].update(lie)
    stamp.write_text(json.dumps(data))
    table = build(cli, project)
    assert full_builds == ["hello", "hello"] and "evil" not in table


def test_a_fifo_where_a_stamp_belongs_does_not_hang_the_build(
    cli: Cli, project: Project, full_builds: list[str]
) -> None:
    build(cli, project)
    [stamp] = project.stamps()
    stamp.unlink()
    os.mkfifo(stamp)
    build(cli, project)  # a hang would stop the test run here
    assert full_builds == ["hello", "hello"]


def test_an_empty_directory_left_in_the_outputs_is_removed(
    cli: Cli, project: Project, full_builds: list[str]
) -> None:
    build(cli, project)
    (project.result / "junk").mkdir()
    build(cli, project)
    assert full_builds == ["hello", "hello"] and not (project.result / "junk").exists()


def test_what_does_not_change_the_outputs_does_not_unstamp_them(
    cli: Cli, project: Project, full_builds: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def build_systems(systems: str) -> None:
        code, _, err = cli(
            "-f", project.config, "--cache-dir", project.cache,
            "build", "hello", "--system", systems, "--out", project.out,
        )  # fmt: skip
        assert code == 0, err

    build_systems("x86_64-linux,aarch64-linux")
    monkeypatch.setenv("POLYARCH_ENGINE", "podman")  # read by engine commands, not builds
    build_systems("aarch64-linux,x86_64-linux")
    assert full_builds == ["hello"]


def test_a_keyring_changed_behind_its_link_builds_in_full(
    cli: Cli, project: Project, full_builds: list[str], tmp_path: Path
) -> None:
    original = project.repo.key.keyring
    target = tmp_path / "keyring.gpg"
    target.write_bytes(original.read_bytes())
    link = tmp_path / "keyring-link.gpg"
    link.symlink_to(target)
    project.config.write_text(project.config.read_text().replace(str(original), str(link)))
    build(cli, project)
    build(cli, project)
    assert full_builds == ["hello"]
    target.write_bytes(original.read_bytes() * 2)  # the same key twice: still verifies
    build(cli, project)
    assert full_builds == ["hello", "hello"]
