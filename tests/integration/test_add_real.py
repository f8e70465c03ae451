"""polyarch add on the real archive: rg, fdfind, jq, batcat and a package with several commands
added to a project that has only comments; the tables build for both systems and pass
polyarch test under docker (natively and under qemu-user); the comments stay byte for byte."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from polyarch.engine import Engine

pytestmark = pytest.mark.integration

Cli = Callable[..., tuple[int, str, str]]
HEADER = """# My tools.   Built with polyarch;   keep this comment.
#
# [containers.example] — not a table, a comment

[defaults]   # applies to every container
systems = [ "aarch64-linux",  "x86_64-linux" ]   # both
"""
ADDS = [
    # (arguments of polyarch add, the table it must write)
    (["rg"], {"package": "ripgrep", "command": "rg"}),
    (["fdfind"], {"package": "fd-find", "command": "fdfind"}),
    (["jq"], {"package": "jq"}),
    (["batcat"], {"package": "bat", "command": "batcat"}),
    (["procps", "--command", "ps", "--name", "ps"], {"package": "procps", "command": "ps"}),
]


def test_added_tools_build_for_both_systems_and_pass_their_tests(
    cli: Cli, docker_engine: Engine, emulation_ready: None, tmp_path: Path
) -> None:
    project = tmp_path / "containers.toml"
    project.write_text(HEADER)
    common = ("-q", "-f", project, "--cache-dir", tmp_path / "cache")
    code, _out, err = cli(*common, "add", "procps", "--engine", "docker")
    assert code == 2 and "package procps ships" in err and "ps, " in err
    for args, table in ADDS:
        before = project.read_text()
        code, out, err = cli(*common, "add", *args, "--engine", "docker")
        assert code == 0, err
        name = args[args.index("--name") + 1] if "--name" in args else args[0]
        block = f"\n[containers.{name}]\n" + "".join(
            f'{key} = "{value}"\n' for key, value in table.items()
        )
        after = project.read_text()
        assert after.startswith(before) and after[len(before) :].startswith(block), after
        test_line = after[len(before) + len(block) :]
        assert test_line in ('test = ["--version"]\n', 'test = ["--help"]\n')
        assert "exits 0 in the" in out
    assert project.read_text().startswith(HEADER)

    out_dir = tmp_path / "result"
    code, _out, err = cli(*common, "build", "--all", "--all-systems", "--out", out_dir)
    assert code == 0, err
    for _args, _table in ADDS:
        name = _args[-1] if "--name" in _args else _args[0]
        code, _out, err = cli(
            *common, "test", name, "--all-systems", "--out", out_dir, "--engine", "docker"
        )
        assert code == 0, err
    code, out, err = cli(*common, "list", "--json", "--out", out_dir)
    assert code == 0, err
    listed = {c["name"]: c for c in json.loads(out)["containers"]}
    assert list(listed) == ["rg", "fdfind", "jq", "batcat", "ps"]
    for entry in listed.values():
        assert set(entry["last_build"]["manifests"]) == {"aarch64-linux", "x86_64-linux"}
        assert None not in entry["versions"].values()
