"""containers.lock: written by `polyarch lock`, obeyed by `build --locked`, refreshed by `lock --update`."""

from __future__ import annotations

import hashlib
import shutil
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from cacheproject import build, index_digest, make_project
from conftest import RepoFactory
from debrepo import DebSpec, serve
from hypothesis import given
from hypothesis import strategies as st

from polyarch.config import RepositoryConfig, load_config
from polyarch.debian.sources import find_source
from polyarch.errors import ConfigError, LockError
from polyarch.lock import LOCK_SCHEMA, lock_path, read_lock, render_lock
from polyarch.tomlwrite import string as toml_string

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def project(tmp_path: Path, make_repo: RepoFactory) -> Path:
    return make_project(tmp_path, make_repo)[2]


def lock(cli: Cli, project: Path, cache: Path, *args: str) -> str:
    code, out, err = cli("-f", project, "--cache-dir", cache, "lock", *args)
    assert code == 0, err
    return out


def test_lock_records_every_package_with_its_hash_sorted_and_stable(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    lock(cli, project, tmp_path / "cache")
    path = project.parent / "containers.lock"
    first = path.read_bytes()
    data = tomllib.loads(first.decode())
    assert data["schema"] == LOCK_SCHEMA
    assert list(data["containers"]) == ["fd", "hello"]
    fd = data["containers"]["fd"]
    assert fd["inputs"]["package"] == "fd-find"
    assert list(fd["systems"]) == ["aarch64-linux", "x86_64-linux"]
    amd64 = fd["systems"]["x86_64-linux"]
    assert amd64["debian_arch"] == "amd64"
    [main] = amd64["sources"]
    assert (main["name"], main["suite"], main["codename"]) == ("main", "bookworm", "bookworm")
    assert main["release_date"] == "2023-05-20T10:00:00Z"
    assert main["release_file"] == "InRelease"
    inrelease = (tmp_path / "repo1" / "dists" / "bookworm" / "InRelease").read_bytes()
    assert main["release_sha256"] == hashlib.sha256(inrelease).hexdigest()
    assert main["priority"] == 500
    assert list(main["indexes"]) == ["main/binary-amd64/Packages.gz"]
    assert fd["inputs"]["sources"] == [
        {"name": "main", "suite": "bookworm", "components": ["main"], "snapshot": ""}
    ]
    names = [p["name"] for p in amd64["packages"]]
    assert names == sorted(names) == ["base-files", "bash", "coreutils", "fd-find", "libc6"]
    fd_find = next(p for p in amd64["packages"] if p["name"] == "fd-find")
    deb = tmp_path / "repo1" / fd_find["filename"]
    assert fd_find["size"] == deb.stat().st_size
    assert fd_find["base"] is False and fd_find["source"] == "main"
    # Each package is one line, so a refresh diffs as the lines of what changed.
    lines = first.decode().splitlines()
    assert sum(1 for line in lines if line.startswith("  { name = ") and "version" in line) == 22
    # So is each source: 2 containers x (1 configured + 2 systems x 1 read).
    assert sum(1 for line in lines if line.startswith('  { name = "main", suite = ')) == 6
    # A second run on a current lock changes nothing and needs no network.
    (tmp_path / "repo1" / "dists").rename(tmp_path / "dists-away")
    lock(cli, project, tmp_path / "cache")
    assert path.read_bytes() == first


def test_locked_build_reads_no_index_and_gives_the_unlocked_digest(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    lock(cli, project, tmp_path / "lock-cache")
    online = build(project, tmp_path / "cache-a", tmp_path / "a")
    # Without dists/ there is neither InRelease nor any index to read: pool/ is all there is.
    shutil.rmtree(tmp_path / "repo1" / "dists")
    locked = build(project, tmp_path / "cache-b", tmp_path / "b", locked=True)
    assert locked.index_digest == online.index_digest
    assert index_digest(tmp_path / "b" / "fd") == online.index_digest


def test_locked_build_checks_each_deb_against_the_locked_sha256(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    lock(cli, project, tmp_path / "cache")
    locked = read_lock(project.parent / "containers.lock")
    entry = next(
        p for p in locked.containers["fd"].systems["x86_64-linux"].packages if p.name == "fd-find"
    )
    deb = tmp_path / "repo1" / entry.filename
    data = bytearray(deb.read_bytes())
    data[-1] ^= 1  # same size, one bit off
    deb.write_bytes(bytes(data))
    # With --locked the lock vouches for the file: the error names its line, not "its index".
    with pytest.raises(LockError, match=r"fd-find .* does not match .*containers\.lock:\d+ "):
        build(project, tmp_path / "cache2", tmp_path / "out", locked=True)
    assert not (tmp_path / "out" / "fd").exists()


def test_a_changed_container_makes_locked_builds_fail_naming_it_and_the_change(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    lock(cli, project, tmp_path / "cache")
    project.write_text(project.read_text().replace('package = "hello"', 'package = "fd-find"'))
    code, _out, err = cli(
        "-f", project, "--cache-dir", tmp_path / "cache", "build", "hello", "--all-systems",
        "--locked", "--out", tmp_path / "out",
    )  # fmt: skip
    assert code == LockError.exit_code
    assert "containers.lock does not match containers.toml for 'hello'" in err
    assert "package 'hello' → 'fd-find'" in err
    assert "polyarch lock --update hello" in err
    # The other container's entry still fits.
    code, _out, err = cli(
        "-f", project, "--cache-dir", tmp_path / "cache", "build", "fd", "--all-systems",
        "--locked", "--out", tmp_path / "out",
    )  # fmt: skip
    assert code == 0, err


def test_a_system_added_after_locking_is_named(cli: Cli, project: Path, tmp_path: Path) -> None:
    text = project.read_text()
    project.write_text(
        text.replace('command = "fdfind"', 'command = "fdfind"\nsystems = ["x86_64-linux"]')
    )
    lock(cli, project, tmp_path / "cache")
    project.write_text(text)
    with pytest.raises(LockError, match=r"no aarch64-linux packages for 'fd'.*lock --update fd"):
        build(project, tmp_path / "cache", tmp_path / "out", locked=True)


def test_missing_lock_and_hand_edited_inputs_are_lock_errors(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    with pytest.raises(LockError, match=r"containers.lock: no such file.*polyarch lock"):
        build(project, tmp_path / "cache", tmp_path / "out", locked=True)
    lock(cli, project, tmp_path / "cache")
    path = project.parent / "containers.lock"
    path.write_text(path.read_text().replace('prefer = ["mawk"]', "prefer = []", 1))
    with pytest.raises(LockError, match="edited by hand"):
        build(project, tmp_path / "cache", tmp_path / "out", locked=True)
    path.write_text("schema = 99\n")
    with pytest.raises(LockError, match="schema 99"):
        build(project, tmp_path / "cache", tmp_path / "out", locked=True)


def test_lock_update_name_refreshes_only_that_container(
    cli: Cli, tmp_path: Path, make_repo: RepoFactory
) -> None:
    repo, _url, project = make_project(tmp_path, make_repo)
    lock(cli, project, tmp_path / "cache")
    for arch in ("amd64", "arm64"):
        repo.add(
            DebSpec("libc6", "2.36-10", arch, multi_arch="same", files={"/lib/libc.so.6": b"new"})
        )
    repo.publish()
    before = read_lock(project.parent / "containers.lock")

    def libc(name: str) -> str:
        entry = read_lock(project.parent / "containers.lock").containers[name]
        return next(p.version for p in entry.systems["x86_64-linux"].packages if p.name == "libc6")

    out = lock(cli, project, tmp_path / "cache")  # current entries are kept as they are
    assert read_lock(project.parent / "containers.lock") == before
    out = lock(cli, project, tmp_path / "cache", "--update", "hello")
    assert (libc("hello"), libc("fd")) == ("2.36-10", "2.36-9")
    assert "x86_64-linux: libc6 2.36-9 → 2.36-10" in out
    lock(cli, project, tmp_path / "cache", "--update")
    assert libc("fd") == "2.36-10"


def test_containers_removed_from_the_config_leave_the_lock(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    lock(cli, project, tmp_path / "cache")
    project.write_text(project.read_text().split("[containers.hello]")[0])
    out = lock(cli, project, tmp_path / "cache")
    assert "removed" in out
    assert list(read_lock(project.parent / "containers.lock").containers) == ["fd"]


@given(st.text())
def test_any_string_survives_the_lock_writer(text: str) -> None:
    assert tomllib.loads(f"x = {toml_string(text)}")["x"] == text


def test_render_then_read_gives_the_same_lock(cli: Cli, project: Path, tmp_path: Path) -> None:
    lock(cli, project, tmp_path / "cache")
    path = lock_path(load_config(project))
    parsed = read_lock(path)
    assert render_lock(parsed) == path.read_text()


# --- snapshots ---------------------------------------------------------------------------


def test_snapshot_url_is_the_template_filled_in() -> None:
    cfg = RepositoryConfig(
        snapshot="20250520T000000Z",
        snapshot_url="http://snapshots.example.invalid/archive/debian/{snapshot}/",
        url="http://mirror.example.invalid/debian",
    )
    source = find_source(cfg)
    assert source.url == "http://snapshots.example.invalid/archive/debian/20250520T000000Z"
    assert source.snapshot == "20250520T000000Z"


@pytest.mark.parametrize(
    ("snapshot", "template", "message"),
    [
        ("20250520T000000Z", None, "snapshot_url is not"),
        ("2025-05-20", "http://h.invalid/{snapshot}", "not a timestamp"),
        ("20250520T000000Z", "http://h.invalid/debian", r"with \{snapshot\}"),
        ("20250520T000000Z", "file:///srv/{snapshot}", "not an http"),
    ],
)
def test_bad_snapshot_settings_are_config_errors(
    snapshot: str, template: str | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        find_source(RepositoryConfig(snapshot=snapshot, snapshot_url=template))


def test_a_snapshot_archive_builds_and_its_lock_records_the_snapshot(
    cli: Cli, tmp_path: Path, make_repo: RepoFactory
) -> None:
    repo, _url, project = make_project(tmp_path, make_repo)
    archive = tmp_path / "snapshots"
    archive.mkdir()
    (archive / "20250520T000000Z").symlink_to(repo.root)
    with serve(archive) as snapshots:
        project.write_text(
            project.read_text().replace(
                "[repository]\n",
                '[repository]\nsnapshot = "20250520T000000Z"\n'
                f'snapshot_url = "{snapshots}/{{snapshot}}"\n',
            )
        )
        lock(cli, project, tmp_path / "cache")
        entry = read_lock(project.parent / "containers.lock").containers["fd"]
        assert entry.inputs.sources[0].snapshot == "20250520T000000Z"
        result = build(project, tmp_path / "cache", tmp_path / "out", locked=True)
    assert result.systems[0].version == "8.6.0-3"
    # Another snapshot is another archive state: the lock no longer fits.
    project.write_text(project.read_text().replace("20250520T000000Z", "20250601T000000Z", 1))
    with pytest.raises(
        LockError, match="source main: snapshot '20250520T000000Z' → '20250601T000000Z'"
    ):
        build(project, tmp_path / "cache", tmp_path / "out", locked=True)
