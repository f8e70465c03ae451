"""polyarch outdated: a fix published after the lock (or the build) says "rebuild", then not."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cacheproject import ARCHES, CONTAINERS, tool_specs
from conftest import RepoFactory, write_project
from debrepo import DebSpec, TestKey, TestRepo

from polyarch.errors import REBUILD_NEEDED, LockError, PolyarchError
from polyarch.lock import LOCK_SCHEMA, read_lock

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def project(tmp_path: Path, make_repo: RepoFactory, other_key: TestKey) -> tuple[Path, TestRepo]:
    """fd and hello on a main archive, and an empty security archive with its own key."""
    main, url = make_repo(tool_specs(), arches=ARCHES)
    security, security_url = make_repo(
        [], with_base=False, key=other_key, suite="bookworm-security", pool="pool/updates"
    )
    sources = (
        "[sources.updates]\nenable = false\n\n"
        f'[sources.security]\nurl = "{security_url}"\nkeyring = "{other_key.keyring}"\n\n'
    )
    path = write_project(tmp_path / "project", url, main.key.keyring, CONTAINERS, sources)
    return path, security


def publish_fix(security: TestRepo) -> None:
    for arch in ARCHES:
        security.add(
            DebSpec(
                "libc6",
                "2.36-9+deb12u1",
                arch,
                multi_arch="same",
                files={"/lib/x86_64-linux-gnu/libc.so.6": b"fixed"},
            )
        )
    security.publish()


def run(cli: Cli, path: Path, tmp_path: Path, *args: str | Path) -> tuple[int, str, str]:
    return cli("-f", path, "--cache-dir", tmp_path / "cache", *args)


def test_a_fix_published_after_the_lock_needs_a_rebuild_until_lock_update(
    cli: Cli, project: tuple[Path, TestRepo], tmp_path: Path
) -> None:
    path, security = project
    assert run(cli, path, tmp_path, "lock")[0] == 0
    code, out, err = run(cli, path, tmp_path, "outdated")
    assert (code, err) == (0, "")
    assert "fd: current" in out and "hello: current" in out

    publish_fix(security)
    code, out, err = run(cli, path, tmp_path, "outdated", "--json")
    assert code == REBUILD_NEEDED, err
    data = json.loads(out)
    assert data["schema"] == "polyarch.outdated/v1" and data["rebuild_needed"] is True
    fd = data["containers"]["fd"]
    assert (fd["compared_with"], fd["lock_matches_config"]) == ("lock", True)
    assert fd["changes"] == [
        {
            "system": system,
            "name": "libc6",
            "change": "upgraded",
            "from": "2.36-9",
            "to": "2.36-9+deb12u1",
            "source": "security",
            "security": True,
        }
        for system in ("x86_64-linux", "aarch64-linux")
    ]
    code, out, _ = run(cli, path, tmp_path, "outdated", "hello")
    assert code == REBUILD_NEEDED
    assert "hello: rebuild needed (2 change(s), 2 from a security suite)" in out
    assert "2.36-9+deb12u1" in out and "fd" not in out.split("hello", 1)[0]

    code, out, err = run(cli, path, tmp_path, "lock", "--update")
    assert code == 0, err
    assert "x86_64-linux: libc6 2.36-9 → 2.36-9+deb12u1 (security)" in out
    locked = read_lock(path.parent / "containers.lock").containers["fd"].systems["x86_64-linux"]
    libc6 = next(p for p in locked.packages if p.name == "libc6")
    assert (libc6.version, libc6.source) == ("2.36-9+deb12u1", "security")
    assert libc6.filename.startswith("pool/updates/")
    assert run(cli, path, tmp_path, "outdated")[0] == 0


def test_without_a_lock_the_last_build_is_compared(
    cli: Cli, project: tuple[Path, TestRepo], tmp_path: Path
) -> None:
    path, security = project
    out_dir = tmp_path / "result"
    code, _, err = run(cli, path, tmp_path, "outdated", "fd", "--out", out_dir)
    assert code == LockError.exit_code and "nothing to compare 'fd' with" in err
    code, _, err = run(cli, path, tmp_path, "build", "fd", "--all-systems", "--out", out_dir)
    assert code == 0, err
    assert run(cli, path, tmp_path, "outdated", "fd", "--out", out_dir)[0] == 0
    publish_fix(security)
    code, out, err = run(cli, path, tmp_path, "outdated", "fd", "--out", out_dir, "--json")
    assert code == REBUILD_NEEDED, err
    fd = json.loads(out)["containers"]["fd"]
    assert fd["compared_with"] == "build" and fd["lock_matches_config"] is None
    assert {(c["system"], c["name"], c["from"], c["to"], c["security"]) for c in fd["changes"]} == {
        (s, "libc6", "2.36-9", "2.36-9+deb12u1", True) for s in ("x86_64-linux", "aarch64-linux")
    }
    # A rebuild picks the fix up, and then there is nothing to do.
    assert run(cli, path, tmp_path, "build", "fd", "--all-systems", "--out", out_dir)[0] == 0
    assert run(cli, path, tmp_path, "outdated", "fd", "--out", out_dir)[0] == 0


def test_a_config_changed_since_the_lock_needs_a_rebuild(
    cli: Cli, project: tuple[Path, TestRepo], tmp_path: Path
) -> None:
    path, _ = project
    assert run(cli, path, tmp_path, "lock")[0] == 0
    path.write_text(
        path.read_text().replace('package = "hello"', 'package = "hello"\nexclude = ["libhello1"]')
    )
    code, out, _ = run(cli, path, tmp_path, "outdated", "hello", "--json")
    assert code == REBUILD_NEEDED
    hello = json.loads(out)["containers"]["hello"]
    assert hello["lock_matches_config"] is False
    assert [(c["name"], c["change"]) for c in hello["changes"]] == [("libhello1", "removed")] * 2


def test_a_multi_source_lock_builds_locked_and_offline(
    cli: Cli, project: tuple[Path, TestRepo], tmp_path: Path
) -> None:
    path, security = project
    publish_fix(security)
    assert run(cli, path, tmp_path, "lock")[0] == 0
    online = tmp_path / "online"
    code, _, err = run(cli, path, tmp_path, "build", "fd", "--all-systems", "--out", online)
    assert code == 0, err
    # Neither archive is read any more: the lock and the cache are all there is.
    for repo_dir in tmp_path.glob("repo*"):
        (repo_dir / "dists").rename(repo_dir / "dists-away")
        (repo_dir / "pool").rename(repo_dir / "pool-away")
    offline = tmp_path / "offline"
    code, _, err = run(
        cli, path, tmp_path, "build", "fd", "--all-systems", "--offline", "--out", offline
    )
    assert code == 0, err
    first = json.loads((online / "fd" / "oci" / "index.json").read_text())
    second = json.loads((offline / "fd" / "oci" / "index.json").read_text())
    assert first == second


def test_a_lock_of_the_old_schema_says_to_run_lock_update(
    cli: Cli, project: tuple[Path, TestRepo], tmp_path: Path
) -> None:
    path, _ = project
    lock = path.parent / "containers.lock"
    lock.write_text('schema = 1\n\n[containers.fd]\ninputs_sha256 = "00"\n')
    code, _, err = run(cli, path, tmp_path, "build", "fd", "--locked", "--out", tmp_path / "o")
    assert code == LockError.exit_code
    assert f"has schema 1; this polyarch reads schema {LOCK_SCHEMA}" in err
    assert "run `polyarch lock --update` to rewrite it" in err
    assert err.count("\n") == 1
    code, _, err = run(cli, path, tmp_path, "lock", "--update")
    assert code == 0, err
    assert read_lock(lock).schema == LOCK_SCHEMA
    lock.write_text("schema = 3\n")
    code, _, err = run(cli, path, tmp_path, "build", "fd", "--locked", "--out", tmp_path / "o")
    assert code == LockError.exit_code and "written by a newer polyarch" in err


def test_the_rebuild_status_is_no_errors_exit_code() -> None:
    def codes(cls: type[PolyarchError]) -> set[int]:
        return {cls.exit_code}.union(*(codes(sub) for sub in cls.__subclasses__()))

    assert REBUILD_NEEDED not in codes(PolyarchError) | {0, 1, 2, 130, 141}
