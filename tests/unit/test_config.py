"""containers.toml: what is accepted, what is refused and how the refusal reads."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from polyarch.config import CONFIG_NAME, find_config, load_config, parse_config
from polyarch.config_rules import MAX_NAME_LENGTH
from polyarch.errors import ConfigError, UnknownContainerError
from polyarch.reference import TAG_PATTERN, parse_reference
from polyarch.tomlkeys import line_of

REPO_ROOT = Path(__file__).resolve().parents[2]
FD = '[containers.fd]\npackage = "fd-find"\n'
"""A valid container."""
_KEY = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*")'
LOCATED = re.compile(rf"^containers\.toml:(\d+): ({_KEY}(?:\.{_KEY})*): (.+) \((.+)\)$", re.DOTALL)
"""Every refusal: FILE:LINE: dotted.key: what is wrong (what to do)."""


def parse(text: str):  # type: ignore[no-untyped-def]
    return parse_config(text, Path("containers.toml"))


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as exc:
        parse(text)
    assert exc.value.exit_code == 3
    assert exc.value.hint, "every refusal says what to do"
    return str(exc.value)


def located(text: str) -> tuple[int, str, str]:
    """(line, dotted key, what is wrong) of the refusal of ``text``."""
    message = error_of(text)
    m = LOCATED.match(message)
    assert m, f"not FILE:LINE: key: what (hint): {message!r}"
    return int(m.group(1)), m.group(2), m.group(3)


# -- what is accepted -----------------------------------------------------------------------


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


def test_every_key_at_its_limits_is_accepted() -> None:
    name = "a" * MAX_NAME_LENGTH
    config = parse(
        f"""
[defaults.registries.ghcr]
repo = "ghcr.io/owner/{{name}}"

[containers.{name}]
package = "g++-12"
packages = ["libstdc++6", "python3.11"]
command = "/usr/lib/gcc/x86_64-linux-gnu/12/cc1plus"
systems = ["x86_64-linux", "amd64"]
max_layers = 127
env = {{ LANG = "C.UTF-8", "lower.case" = "", PATH = "/opt/bin:/usr/bin" }}
labels = {{ "org.opencontainers.image.title" = "g++", "Team Name" = "tools" }}
workdir = "/"
user = "nobody:65534"
test = ["--version", "", "-x"]
expect = "^g\\\\+\\\\+"
tags = ["1.0", "{"x" * 128}", "_tag"]
registries.local = {{ repo = "http://127.0.0.1:5000/tools/{{name}}", enable = false }}

[containers."fd.v2"]
package = "fd-find"
command = "fdfind"
user = "1000"
workdir = "/home/user/work dir"
"""
    )
    long, fd = config.containers
    assert long.name == name and long.max_layers == 127
    assert [s.name for s in long.systems] == ["x86_64-linux"]
    assert [r.name for r in long.registries] == ["ghcr", "local"]
    assert fd.name == "fd.v2" and fd.workdir == "/home/user/work dir"
    # What the container name becomes: a docker reference and file names under --out.
    ref = parse_reference(f"{name}:{'x' * 110}-powerpc64le-linux")
    assert ref.repository == f"library/{name}"
    assert len(f".{name}.old-12345678".encode()) <= 255


def test_config_values_are_immutable() -> None:
    jq = parse('[containers.jq]\npackage = "jq"\n').container("jq")
    with pytest.raises(AttributeError):
        jq.package = "other"  # type: ignore[misc]


# -- how a refusal reads ----------------------------------------------------------------------


def test_unknown_key_names_file_line_and_key() -> None:
    message = error_of('[containers.fd]\npackage = "fd-find"\ncomand = "fdfind"\n')
    assert message.startswith("containers.toml:3: containers.fd.comand: unknown key")
    assert "did you mean 'command'?" in message


def test_wrong_type_names_the_key_and_line() -> None:
    message = error_of('[defaults]\nbase = ["bash"]\n\n[containers.fd]\npackage = 7\n')
    assert message.startswith(
        "containers.toml:5: containers.fd.package: expected a string, got an integer"
    )
    assert 'package = "fd-find"' in message


def test_a_missing_package_is_named() -> None:
    assert located("[defaults]\n\n[containers.fd]\ncommand = 'fd'\n")[:2] == (
        3,
        "containers.fd.package",
    )


def test_unknown_system_is_refused_with_the_known_ones() -> None:
    message = error_of('[containers.fd]\npackage = "fd-find"\nsystems = ["x86-linux"]\n')
    assert message.startswith(
        "containers.toml:3: containers.fd.systems: unknown system 'x86-linux'"
    )
    assert "x86_64-linux" in message


def test_duplicate_container_names_are_refused_with_the_line() -> None:
    message = error_of('[containers.fd]\npackage = "ab"\n[containers.fd]\npackage = "bc"\n')
    assert message.startswith("containers.toml:3: invalid TOML: Cannot declare")
    assert "write each table and key once" in message


def test_unknown_registry_key_names_the_registry() -> None:
    message = error_of(
        '[containers.fd]\npackage = "fd-find"\nregistries.gh = { repo = "x", pasword = "y" }\n'
    )
    assert message.startswith("containers.toml:3: containers.fd.registries.gh.pasword: unknown key")


def test_a_defaults_value_is_refused_where_the_defaults_say_it() -> None:
    text = '[defaults]\nmax_layers = 1\n\n[containers.fd]\npackage = "fd-find"\n'
    assert located(text)[:2] == (2, "defaults.max_layers")


def test_a_defaults_registry_is_checked_with_each_containers_name() -> None:
    owner = "o" * 130  # fine with fd; with a 128-character name the path passes 255
    text = (
        f'[defaults.registries.ghcr]\nrepo = "ghcr.io/{owner}/{{name}}"\n\n'
        f'[containers.fd]\npackage = "fd-find"\n\n[containers.{"f" * 128}]\npackage = "fd-find"\n'
    )
    line, key, what = located(text)
    assert (line, key) == (2, "defaults.registries.ghcr.repo")
    assert f"with {{name}} = '{'f' * 128}'" in what


# -- every key's rule -------------------------------------------------------------------------

REFUSED = [
    # (a line of [containers.fd], its dotted key, what the message says)
    ('package = "fd_find"', "package", "is not a Debian package name"),
    ("packages = ['x']", "packages", "'x' is not a Debian package name"),
    ('base = ["bash", "../etc"]', "base", "'../etc' is not a Debian package name"),
    ('exclude = ["Perl-base"]', "exclude", "is not a Debian package name"),
    ('prefer = ["mawk awk"]', "prefer", "is not a Debian package name"),
    ('systems = ["x86_64-linux", "riscv"]', "systems", "unknown system 'riscv'"),
    ("systems = []", "systems", "no systems to build"),
    ("max_layers = 128", "max_layers", "between 2 and 127"),
    ("max_layers = true", "max_layers", "expected an integer, got true or false"),
    ('layering = "flat"', "layering", "unknown layering 'flat'"),
    ("layering = 1", "layering", "expected a string, got an integer"),
    ('env = { "" = "x" }', 'env.""', "is empty or holds '='"),
    ('env = { "A=B" = "x" }', 'env."A=B"', "is empty or holds '='"),
    ('env = { A = "a\\u0000b" }', "env.A", "holds a NUL character"),
    ('env = { "A\\u0000" = "b" }', 'env."A\\u0000"', "a key holds a NUL character"),
    ("env = { A = 1 }", "env", "expected a string, got an integer"),
    ('labels = { "" = "x" }', 'labels.""', "empty or holds control characters"),
    ('labels = { "a\\nb" = "x" }', 'labels."a\\nb"', "empty or holds control characters"),
    ('workdir = "work"', "workdir", "'work' is not a normalised absolute path"),
    ('workdir = "/a/../b"', "workdir", "is not a normalised absolute path"),
    ('workdir = "/work/"', "workdir", "is not a normalised absolute path"),
    (f'workdir = "/{"a" * 256}"', "workdir", "has a part over 255"),
    ('user = "root:wheel:x"', "user", "is not a user name or id"),
    ('user = "a b"', "user", "is not a user name or id"),
    ('user = "4294967295"', "user", "is not a user name or id"),
    ('user = ""', "user", "is not a user name or id"),
    ('command = ""', "command", "is empty"),
    ('command = "bin/fd"', "command", "is a relative path"),
    ('command = ".."', "command", "cannot be a file name"),
    ('command = "/"', "command", "is a directory"),
    ('command = "/usr//bin/fd"', "command", "is not a normalised absolute path"),
    ('command = "/usr/bin/../fd"', "command", "is not a normalised absolute path"),
    ('command = "fdfind --hidden"', "command", "holds whitespace or control characters"),
    (f'command = "{"f" * 256}"', "command", "cannot be a file name"),
    ('test = "--help"', "test", "expected a list, got a string"),
    ('test = ["--help", 1]', "test", "expected a string, got an integer"),
    ('test = ["a\\u0000"]', "test", "holds a NUL character"),
    ('expect = "("', "expect", "bad regex: missing )"),
    ('expect = "a{99999999999}"', "expect", "bad regex: the repetition number is too large"),
    (f'expect = "{"(" * 1200}{")" * 1200}"', "expect", "bad regex"),
    ('tags = ["stable", "bad tag"]', "tags", "'bad tag' is not a valid image tag"),
    ('tags = [".hidden"]', "tags", "is not a valid image tag"),
    (f'tags = ["{"x" * 129}"]', "tags", "is not a valid image tag"),
    ("tags = [1]", "tags", "expected a string, got an integer"),
    ('registries.gh = { repo = "Not A Repo" }', "registries.gh.repo", "is not an image repository"),
    (
        'registries.gh = { repo = "ghcr.io/o/fd:1.0" }',
        "registries.gh.repo",
        "names a tag or digest",
    ),
    (
        f'registries.gh = {{ repo = "ghcr.io/o/fd@sha256:{"0" * 64}" }}',
        "registries.gh.repo",
        "names a tag or digest",
    ),
    ('registries.gh = { repo = "ghcr.io/o/{nmae}" }', "registries.gh.repo", "not an image repo"),
    ("registries.gh = { repo = 7 }", "registries.gh.repo", "expected a string, got an integer"),
    ("registries.gh = 7", "registries.gh", "expected a table, got an integer"),
    ("description = 2024-01-02", "description", "expected a string, got a date"),
]


@pytest.mark.parametrize(("line", "key", "what"), REFUSED)
def test_a_value_that_breaks_its_keys_rule_is_refused_with_its_line(
    line: str, key: str, what: str
) -> None:
    package = "" if line.startswith("package ") else 'package = "fd-find"\n'
    found_line, found_key, found_what = located(f"[containers.fd]\n{line}\n{package}")
    assert (found_line, found_key) == (2, f"containers.fd.{key}")
    assert what in found_what


@pytest.mark.parametrize(
    ("text", "key", "what"),
    [
        ('[repository]\nsuite = "../x"\n', "repository.suite", "not a suite or component"),
        ('[repository]\ncomponents = ["main", ""]\n', "repository.components", "not a suite"),
        ("[repository]\ncomponents = []\n", "repository.components", "no components"),
        ('[repository]\nurl = "ftp://host/debian"\n', "repository.url", "not an http(s) URL"),
        ('[repository]\nurl = "http://"\n', "repository.url", "not an http(s) URL"),
        ('[repository]\nurl = "http://[::1/debian"\n', "repository.url", "not an http(s) URL"),
    ],
)
def test_repository_values_are_checked(text: str, key: str, what: str) -> None:
    found_line, found_key, found_what = located(text)
    assert (found_line, found_key) == (2, key)
    assert what in found_what


@pytest.mark.parametrize(
    "name", ["Fd", "fd-", "-fd", "a..b", "a.-b", "a:b", "a/b", "my tool", "../x", "a___b"]
)
def test_container_names_must_be_image_names(name: str) -> None:
    line, key, what = located(f'\n[containers."{name}"]\npackage = "fd-find"\n')
    assert line == 2 and key.startswith("containers.")
    assert "lowercase" in what


def test_a_container_name_longer_than_the_limit_is_refused_before_any_work() -> None:
    name = "a" * (MAX_NAME_LENGTH + 1)
    line, key, what = located(f'{FD}\n[containers.{name}]\npackage = "fd-find"\n')
    assert (line, key) == (4, f"containers.{name}")
    assert f"more than {MAX_NAME_LENGTH}" in what


def test_every_accepted_tag_is_one_the_image_code_takes() -> None:
    config = parse(f'{FD}tags = ["1", "1.2.3-rc1", "_x", "{"y" * 128}"]\n')
    assert all(TAG_PATTERN.fullmatch(t) for t in config.container("fd").tags)


# -- lines of quoted, dotted and hidden keys ----------------------------------------------------


def test_a_quoted_table_name_is_reported_on_its_own_line() -> None:
    text = f'{FD}\n# the next one escapes --out\n[containers."../x"]\npackage = "fd-find"\n'
    assert located(text)[:2] == (5, 'containers."../x"')


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ('[containers."a.b"]\npackage = 7\n', 2, 'containers."a.b".package'),
        ('[containers]\n"fd.v2".package = 7\n', 2, 'containers."fd.v2".package'),
        ('[containers]\n"my tool" . package = "fd-find"\n', 2, 'containers."my tool"'),
        ("[ containers . 'x y' ]\npackage = 'fd-find'\n", 1, 'containers."x y"'),
        ('[containers."\\u0046d"]\npackage = "fd-find"\n', 1, "containers.Fd"),
        ('[containers.fd]\npackage = "fd-find"\n[containers.fd.env]\n"" = "x"\n', 4, ""),
    ],
)
def test_quoted_and_dotted_keys_are_found(text: str, line: int, key: str) -> None:
    found_line, found_key, _ = located(text)
    assert found_line == line
    if key:
        assert found_key == key


def test_keys_inside_multi_line_values_are_not_mistaken_for_keys() -> None:
    text = (
        f'{FD}description = """\n[containers.fd]\ntags = ["fake"]\n"""\n'
        "test = [\n  '[containers.fd]',\n  \"tags = 1\",  # ]\n]\n"
        "tags = ['bad tag']\n"
    )
    assert located(text)[:2] == (11, "containers.fd.tags")


def test_line_of_falls_back_to_the_closest_table() -> None:
    text = "[defaults]\nbase = []\n\n[containers.fd]\npackage = 'fd-find'\n"
    assert line_of(text, ("containers", "fd", "systems")) == 4
    assert line_of(text, ("nowhere",)) == 1


# -- reading the file --------------------------------------------------------------------------


def test_unknown_container_suggests_a_near_name() -> None:
    config = parse('[containers.ripgrep]\npackage = "ripgrep"\n')
    with pytest.raises(UnknownContainerError) as exc:
        config.container("ripgre")
    assert "did you mean 'ripgrep'" in str(exc.value)
    assert exc.value.exit_code != ConfigError.exit_code


def test_missing_file_says_how_to_point_at_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        find_config(cwd=tmp_path)
    assert "no such file" in str(exc.value) and "-f PATH" in str(exc.value)


def test_a_directory_given_with_f_is_called_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory") as exc:
        find_config(tmp_path)
    (tmp_path / CONFIG_NAME).write_text(FD)
    with pytest.raises(ConfigError, match="is a directory") as exc:
        find_config(tmp_path)
    assert f"-f {tmp_path / CONFIG_NAME}" in str(exc.value)


def test_toml_syntax_errors_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "containers.toml"
    path.write_text(f"{FD}[containers.rg\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value).startswith(f"{path}:3: invalid TOML: ")
    assert exc.value.hint


def test_a_file_that_is_not_utf8_is_one_located_error(tmp_path: Path) -> None:
    path = tmp_path / "containers.toml"
    path.write_bytes(FD.encode() + b'description = "caf\xe9"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value) == (
        f"{path}:3: not UTF-8 text (byte 0xe9 at column 19) "
        "(save containers.toml as UTF-8, as TOML requires)"
    )


def test_deep_nesting_is_a_config_error() -> None:
    assert "nested too deeply" in error_of(f"{FD}test = {'[' * 5000}{']' * 5000}\n")


# -- the command line ---------------------------------------------------------------------------

CliRunner = Callable[..., tuple[int, str, str]]


def test_the_cli_reports_a_bad_file_in_one_line_with_exit_3(tmp_path: Path, cli: CliRunner) -> None:
    (tmp_path / CONFIG_NAME).write_bytes(b'[containers.fd]\npackage = "fd\xff"\n')
    for where, says in ((tmp_path, "is a directory"), (tmp_path / CONFIG_NAME, "not UTF-8")):
        code, out, err = cli("-f", where, "resolve", "fd")
        assert code == 3 and not out
        assert err.count("\n") == 1 and says in err and "Traceback" not in err


@pytest.mark.parametrize(
    "command",
    [
        ["build", "fd"],
        ["build", "--all"],
        ["resolve", "fd"],
        ["load", "fd"],
        ["test", "fd"],
        ["all", "fd"],
        ["all", "--all"],
    ],
    ids=" ".join,
)
def test_a_system_the_container_is_not_configured_for_is_refused_by_every_command(
    tmp_path: Path, cli: CliRunner, command: list[str]
) -> None:
    keyring = tmp_path / "keyring.gpg"
    keyring.write_bytes(b"")
    project = tmp_path / CONFIG_NAME
    # A mirror nobody answers on: a refusal must come before any download, build or engine.
    project.write_text(
        f'[repository]\nurl = "http://127.0.0.1:9/debian"\nkeyring = "{keyring}"\n\n'
        f'{FD}systems = ["x86_64-linux"]\n'
    )
    out_dir, cache = tmp_path / "out", tmp_path / "cache"
    extra = [] if command[0] == "resolve" else ["--out", out_dir]
    code, _, err = cli(
        "-f", project, "--cache-dir", cache, *command, "--system", "aarch64-linux", *extra
    )
    assert code == 2
    assert "fd is not configured for aarch64-linux" in err
    assert "containers.fd.systems" in err
    assert not out_dir.exists()
