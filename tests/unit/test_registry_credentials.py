"""Credentials: explicit, $VAR, --password-stdin, docker config auths/credHelpers/credsStore, GitHub."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from polyarch.errors import ConfigError, RegistryAuthError, UsageError
from polyarch.registry.credentials import Credentials, github_target, resolve_credentials

HELPER = """#!/bin/sh
read server
echo "$server" >> "{log}"
case "$server" in
  ghcr.io|https://index.docker.io/v1/) printf '{{"ServerURL":"%s","Username":"helper-user","Secret":"helper-secret"}}' "$server" ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
"""


@pytest.fixture
def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real docker-credential-test program on PATH speaking the helper protocol."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "helper.log"
    script = bindir / "docker-credential-test"
    script.write_text(HELPER.format(log=log))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log


def write_config(tmp_path: Path, config: dict[str, object]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_explicit_dollar_variable_is_read_from_the_environment() -> None:
    creds = resolve_credentials("ghcr.io", username="me", password="$TOKEN", env={"TOKEN": "t0k"})
    assert creds == Credentials("me", "t0k")
    braced = resolve_credentials(
        "ghcr.io", username="me", password="${TOKEN}", env={"TOKEN": "t0k"}
    )
    assert braced == Credentials("me", "t0k")


def test_unset_variable_names_the_variable_and_nothing_else() -> None:
    with pytest.raises(ConfigError, match=r"\$GITHUB_TOKEN, which is not set") as caught:
        resolve_credentials("ghcr.io", username="me", password="$GITHUB_TOKEN", env={"OTHER": "x"})
    assert "export GITHUB_TOKEN" in str(caught.value)


def test_password_stdin_strips_the_trailing_newline() -> None:
    creds = resolve_credentials("ghcr.io", username="me", password_stdin=b"secret\n")
    assert creds == Credentials("me", "secret")


def test_password_without_username_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="without a username"):
        resolve_credentials("ghcr.io", password="x")


def test_repr_hides_the_password() -> None:
    assert "hunter2" not in repr(Credentials("me", "hunter2"))
    assert "hunter2" not in str(Credentials("me", "hunter2"))


def test_docker_config_auths_are_decoded(tmp_path: Path) -> None:
    auth = base64.b64encode(b"alice:pa:ss").decode()
    config = write_config(
        tmp_path,
        {
            "auths": {
                "https://registry.example:5000/v1/": {"auth": auth},
                "other.example": {"auth": base64.b64encode(b"bob:x").decode()},
            }
        },
    )
    assert resolve_credentials("registry.example:5000", docker_config=config) == Credentials(
        "alice", "pa:ss"
    )
    assert resolve_credentials("unknown.example", docker_config=config) is None


def test_docker_hub_entries_match_every_hub_spelling(tmp_path: Path) -> None:
    auth = base64.b64encode(b"hubuser:hubpass").decode()
    config = write_config(tmp_path, {"auths": {"https://index.docker.io/v1/": {"auth": auth}}})
    for host in ("docker.io", "registry-1.docker.io", "index.docker.io"):
        assert resolve_credentials(host, docker_config=config) == Credentials("hubuser", "hubpass")


def test_malformed_auth_entry_is_a_config_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"auths": {"r.example": {"auth": "bm90LWEtcGFpcg=="}}})
    with pytest.raises(ConfigError, match="not base64 of user:password"):
        resolve_credentials("r.example", docker_config=config)


def test_cred_helper_is_run_with_the_host_on_stdin(tmp_path: Path, helper: Path) -> None:
    config = write_config(
        tmp_path,
        {
            "credHelpers": {"ghcr.io": "test"},
            "auths": {"ghcr.io": {"auth": base64.b64encode(b"file:user").decode()}},
        },
    )
    assert resolve_credentials("ghcr.io", docker_config=config) == Credentials(
        "helper-user", "helper-secret"
    )
    assert helper.read_text().split() == ["ghcr.io"]


def test_creds_store_answers_for_hosts_without_an_entry(tmp_path: Path, helper: Path) -> None:
    config = write_config(tmp_path, {"credsStore": "test"})
    assert resolve_credentials("docker.io", docker_config=config) == Credentials(
        "helper-user", "helper-secret"
    )
    assert resolve_credentials("elsewhere.example", docker_config=config) is None
    assert helper.read_text().split() == ["https://index.docker.io/v1/", "elsewhere.example"]


def test_missing_helper_program_is_a_clear_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"credHelpers": {"ghcr.io": "does-not-exist-xyz"}})
    with pytest.raises(Exception, match="docker-credential-does-not-exist-xyz is not installed"):
        resolve_credentials("ghcr.io", docker_config=config)


def test_helper_printing_garbage_is_an_auth_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "docker-credential-bad").write_text("#!/bin/sh\necho not json\n")
    (bindir / "docker-credential-bad").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    config = write_config(tmp_path, {"credHelpers": {"ghcr.io": "bad"}})
    with pytest.raises(RegistryAuthError, match="not credentials"):
        resolve_credentials("ghcr.io", docker_config=config)


def test_missing_docker_config_means_anonymous(tmp_path: Path) -> None:
    assert resolve_credentials("ghcr.io", docker_config=tmp_path / "none.json") is None


def test_docker_config_env_var_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path, {"auths": {"r.example": {"username": "u", "password": "p"}}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert resolve_credentials("r.example") == Credentials("u", "p")


def test_github_mode_targets_ghcr_in_lowercase() -> None:
    ref, creds = github_target(
        {"GITHUB_TOKEN": "ghs_x", "GITHUB_ACTOR": "Octo", "GITHUB_REPOSITORY": "Octo-Org/My.Tool"}
    )
    assert ref == "ghcr.io/octo-org/my.tool"
    assert creds == Credentials("Octo", "ghs_x")


def test_github_mode_names_the_missing_variables() -> None:
    with pytest.raises(ConfigError, match="GITHUB_TOKEN, GITHUB_ACTOR"):
        github_target({"GITHUB_REPOSITORY": "o/n"})
