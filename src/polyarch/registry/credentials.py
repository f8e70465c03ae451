"""Where push credentials come from: explicit values, ``$VAR``, the docker config, GitHub CI.

Secrets are held in ``Credentials`` whose ``repr`` never shows them, and no
error message here ever contains a secret's value (only the variable's name).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from polyarch import cmd
from polyarch.errors import ConfigError, RegistryAuthError, UsageError
from polyarch.reference import DOCKER_HUB, HUB_ALIASES

_VAR = re.compile(r"^\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))$")
_HUB_CONFIG_KEY = "https://index.docker.io/v1/"


@dataclass(frozen=True, slots=True)
class Credentials:
    """A username and a secret (password or token). The secret never appears in repr."""

    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=<hidden>)"


def expand_secret(value: str, env: Mapping[str, str] | None = None, *, what: str) -> str:
    """``$VAR``/``${VAR}`` → the variable's value at push time; anything else as is.

    An unset or empty variable is a ConfigError that names the variable only.
    """
    match = _VAR.match(value)
    if match is None:
        return value
    name = match.group(1) or match.group(2)
    found = (os.environ if env is None else env).get(name)
    if not found:
        raise ConfigError(
            f"{what} refers to ${name}, which is not set",
            hint=f"export {name} before pushing, or use --password-stdin",
        )
    return found


def default_docker_config() -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def config_key_host(key: str) -> str:
    """The host a docker config key names: ``https://host/v1/`` → ``host``."""
    host = re.sub(r"^[a-z]+://", "", key.strip()).split("/", 1)[0].lower()
    return DOCKER_HUB if host in HUB_ALIASES else host


def resolve_credentials(
    registry_host: str,
    *,
    username: str | None = None,
    password: str | None = None,
    docker_config: Path | None = None,
    password_stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
) -> Credentials | None:
    """Credentials for ``registry_host`` (``host[:port]``), or None for anonymous access.

    Order: an explicit username with ``password`` (``$VAR`` is read from ``env``
    now) or ``password_stdin``; then the docker config's ``credHelpers`` for the
    host, its ``auths`` entry, and its ``credsStore``.
    """
    host = config_key_host(registry_host)
    if password_stdin is not None:
        if password is not None:
            raise UsageError("both a password and --password-stdin were given", hint="use one")
        password = password_stdin.decode("utf-8", "strict").rstrip("\r\n")
        if not password:
            raise UsageError("--password-stdin read an empty password", hint="pipe the token in")
    if password is not None:
        if username is None:
            raise UsageError(
                f"a password for {registry_host} was given without a username",
                hint="set username too (for ghcr.io: your GitHub user name)",
            )
        user = expand_secret(username, env, what=f"the username for {registry_host}")
        secret = expand_secret(password, env, what=f"the password for {registry_host}")
        return Credentials(user, secret)
    config_path = docker_config if docker_config is not None else default_docker_config()
    return _from_docker_config(config_path, host)


def _from_docker_config(path: Path, host: str) -> Credentials | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read docker config {path}: {exc.strerror}") from None
    try:
        config = json.loads(raw)
    except ValueError:
        raise ConfigError(
            f"docker config {path} is not valid JSON",
            hint="fix it or point DOCKER_CONFIG elsewhere",
        ) from None
    if not isinstance(config, dict):
        raise ConfigError(f"docker config {path} is not a JSON object")
    helpers = config.get("credHelpers") or {}
    if isinstance(helpers, dict):
        for key, helper in helpers.items():
            if config_key_host(key) == host and isinstance(helper, str):
                return _from_helper(helper, key)
    auths = config.get("auths") or {}
    if isinstance(auths, dict):
        for key, entry in auths.items():
            if config_key_host(key) == host and isinstance(entry, dict):
                found = _from_auth_entry(entry, path, key)
                if found is not None:
                    return found
    store = config.get("credsStore")
    if isinstance(store, str) and store:
        return _from_helper(store, _HUB_CONFIG_KEY if host == DOCKER_HUB else host)
    return None


def _from_auth_entry(entry: dict[str, object], path: Path, key: str) -> Credentials | None:
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            user, sep, secret = base64.b64decode(auth, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            sep = ""
        if not sep:
            raise ConfigError(
                f"the auth entry for {key} in {path} is not base64 of user:password",
                hint="run docker login again",
            )
        return Credentials(user, secret)
    user_value, secret_value = entry.get("username"), entry.get("password")
    if isinstance(user_value, str) and isinstance(secret_value, str):
        return Credentials(user_value, secret_value)
    return None


def _from_helper(helper: str, server: str) -> Credentials | None:
    """Run ``docker-credential-HELPER get`` (the credential helper protocol)."""
    program = f"docker-credential-{helper}"
    result = cmd.run([program, "get"], input=server.encode(), timeout=60)
    if result.returncode != 0:
        out = (result.stdout + result.stderr).decode(errors="replace").lower()
        if "not found" in out:
            return None
        raise RegistryAuthError(
            f"{program} failed for {server} (exit {result.returncode})",
            hint=f"run `echo {server} | {program} get` to see why",
        )
    try:
        answer = json.loads(result.stdout)
        return Credentials(str(answer["Username"]), str(answer["Secret"]))
    except (ValueError, KeyError, TypeError):
        raise RegistryAuthError(
            f"{program} answered something that is not credentials for {server}",
            hint="check the helper; it must print {Username, Secret} JSON",
        ) from None


def github_target(env: Mapping[str, str] | None = None) -> tuple[str, Credentials]:
    """GitHub Actions mode: ``ghcr.io/<owner>/<name>`` (lowercase) and the workflow's token.

    Reads GITHUB_TOKEN, GITHUB_ACTOR and GITHUB_REPOSITORY; a missing one is a
    ConfigError naming it (never a value).
    """
    source = os.environ if env is None else env
    missing = [
        v for v in ("GITHUB_TOKEN", "GITHUB_ACTOR", "GITHUB_REPOSITORY") if not source.get(v)
    ]
    if missing:
        raise ConfigError(
            f"GitHub mode needs {', '.join(missing)}",
            hint="run inside GitHub Actions with `env: GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}`",
        )
    repository = source["GITHUB_REPOSITORY"].strip().lower()
    if repository.count("/") != 1:
        raise ConfigError(
            "GITHUB_REPOSITORY is not owner/name", hint="GitHub Actions sets it; do not override"
        )
    return f"ghcr.io/{repository}", Credentials(source["GITHUB_ACTOR"], source["GITHUB_TOKEN"])
