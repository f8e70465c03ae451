"""containers.toml: what is accepted, what is refused and how the refusal reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from polyarch.config import find_config, load_config, parse_config
from polyarch.errors import ConfigError, UnknownContainerError

REPO_ROOT = Path(__file__).resolve().parents[2]


def parse(text: str):  # type: ignore[no-untyped-def]
    return parse_config(text, Path("containers.toml"))


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as exc:
        parse(text)
    return str(exc.value)


def test_the_repository_example_defines_fd_and_rg() -> None:
    config = load_config(REPO_ROOT / "containers.toml")
    fd, rg = config.container("fd"), config.container("rg")
    assert (fd.package, fd.command) == ("fd-find", "fdfind")
    assert (rg.package, rg.command) == ("ripgrep", "rg")
    assert [s.name for s in fd.systems] == ["aarch64-linux", "x86_64-linux"]
    assert fd.base == ("bash", "coreutils")


def test_defaults_apply_and_container_values_win() -> None:
    config = parse(
        """
[defaults]
systems = ["x86_64-linux"]
exclude = ["perl-base"]
env = {A = "1", B = "2"}

[containers.jq]
package = "jq"
exclude = ["libonig5"]
env = {B = "3"}
systems = ["linux/arm64", "armhf"]
"""
    )
    jq = config.container("jq")
    assert jq.command == "jq"
    assert [s.name for s in jq.systems] == ["aarch64-linux", "armv7l-linux"]
    assert jq.exclude == ("libonig5", "perl-base")
    assert jq.env == (("A", "1"), ("B", "3"))
    assert jq.test == ("--help",)


def test_config_values_are_immutable() -> None:
    jq = parse('[containers.jq]\npackage = "jq"\n').container("jq")
    with pytest.raises(AttributeError):
        jq.package = "other"  # type: ignore[misc]


def test_unknown_key_names_file_line_and_key() -> None:
    message = error_of('[containers.fd]\npackage = "fd-find"\ncomand = "fdfind"\n')
    assert message.startswith("containers.toml:3: containers.fd.comand: unknown key")
    assert "did you mean 'command'?" in message


def test_wrong_type_names_the_key_and_line() -> None:
    message = error_of('[defaults]\nbase = ["bash"]\n\n[containers.fd]\npackage = 7\n')
    assert message.startswith("containers.toml:5: containers.fd.package:")
    assert "Expected `str`" in message


def test_unknown_system_is_refused_with_the_known_ones() -> None:
    message = error_of('[containers.fd]\npackage = "fd-find"\nsystems = ["x86-linux"]\n')
    assert message.startswith(
        "containers.toml:3: containers.fd.systems: unknown system 'x86-linux'"
    )
    assert "x86_64-linux" in message


def test_duplicate_container_names_are_refused_with_the_line() -> None:
    message = error_of('[containers.fd]\npackage = "a"\n[containers.fd]\npackage = "b"\n')
    assert "containers.toml" in message and "line 3" in message


def test_unknown_registry_key_names_the_registry() -> None:
    message = error_of(
        '[containers.fd]\npackage = "fd-find"\nregistries.gh = { repo = "x", pasword = "y" }\n'
    )
    assert message.startswith("containers.toml:3: containers.fd.registries.gh.pasword: unknown key")


def test_bad_expect_regex_is_refused() -> None:
    assert "bad regex" in error_of('[containers.fd]\npackage = "f"\nexpect = "("\n')


def test_container_names_must_be_image_names() -> None:
    assert "lowercase" in error_of('[containers.Fd]\npackage = "f"\n')


def test_unknown_container_suggests_a_near_name() -> None:
    config = parse('[containers.ripgrep]\npackage = "ripgrep"\n')
    with pytest.raises(UnknownContainerError) as exc:
        config.container("ripgre")
    assert "did you mean 'ripgrep'" in str(exc.value)
    assert exc.value.exit_code != ConfigError.exit_code


def test_missing_file_says_how_to_point_at_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        find_config(cwd=tmp_path)
    assert "-f PATH" in str(exc.value)


def test_toml_syntax_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "containers.toml"
    path.write_text("[containers.fd\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(path) in str(exc.value)
