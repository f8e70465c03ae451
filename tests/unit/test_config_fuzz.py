"""The config loader under hostile input: whatever the bytes, polyarch's own error or a config
whose every value the later stages take.

Three generators: valid files with bytes flipped, inserted and deleted; valid documents
with any key given a random TOML value (wrong types, unicode, huge strings, nesting,
unknown keys); and documents nested thousands deep. By default the first two run 500
examples each and the third 100 (1,100 inputs, a few seconds); POLYARCH_FUZZ_EXAMPLES=N
runs N, N and N/5, e.g. POLYARCH_FUZZ_EXAMPLES=20000 for a long soak.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from polyarch.config import Config, load_config, parse_config
from polyarch.errors import ConfigError, PolyarchError
from polyarch.image.oci import image_config
from polyarch.reference import TAG_PATTERN, parse_reference

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("POLYARCH_FUZZ_EXAMPLES", "500"))
FUZZ = settings(
    max_examples=EXAMPLES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

VALID: dict[str, Any] = {
    "repository": {"suite": "bookworm", "components": ["main", "contrib"]},
    "defaults": {
        "systems": ["aarch64-linux", "x86_64-linux"],
        "base": ["bash", "coreutils"],
        "env": {"LANG": "C.UTF-8"},
        "registries": {"ghcr": {"repo": "ghcr.io/owner/{name}", "password": "$TOKEN"}},
        "tags": ["stable"],
    },
    "containers": {
        "fd": {
            "package": "fd-find",
            "command": "fdfind",
            "packages": ["ca-certificates"],
            "exclude": ["perl-base"],
            "prefer": ["mawk"],
            "keep_docs": False,
            "max_layers": 50,
            "layering": "per-package",
            "labels": {"org.example.team": "tools"},
            "workdir": "/work",
            "user": "65534:65534",
            "test": ["--version"],
            "expect": "^fd [0-9]",
            "description": "a fast find",
        },
        "rg": {"package": "ripgrep", "command": "/usr/bin/rg", "systems": ["amd64"]},
    },
}
# Strings that are valid for some key and nearly valid for others.
PLAUSIBLE = [
    "fd-find", "g++", "fdfind", "/usr/bin/fd", "shared", "/usr//bin/fd", "bin/fd", "..", "/", "",
    "x86_64-linux", "linux/arm64", "armhf", "riscv64", "65534:65534", "root", "a:b:c",
    "ghcr.io/o/{name}", "ghcr.io/o/fd:1", "127.0.0.1:5000/x", "Not A Repo", "{name}",
    "stable", ".x", "1.0", "^fd", "(", "main", "../x", "http://127.0.0.1:9/debian",
    "ftp://x", "A=B", "$VAR", "x" * 129, "é", "\u202e", "a\nb", "a\x00b", "\t",
]  # fmt: skip
KEYS = sorted(
    {k for table in VALID.values() for k in table}
    | {k for c in VALID["containers"].values() for k in c}
    | {"url", "keyring", "snapshot", "snapshot_url", "repo", "username", "enable", "registries"}
)

plausible = st.sampled_from(PLAUSIBLE)
huge = st.builds(
    lambda piece, n: piece * n,
    st.sampled_from(["x", "é", "/", "a.", "𝄞", "["]),
    st.integers(0, 50_000),
)
scalars = st.one_of(
    plausible,
    st.text(max_size=30),
    huge,
    st.integers(),
    st.floats(),
    st.booleans(),
    st.datetimes(timezones=st.none() | st.just(datetime.UTC)),
    st.dates(),
    st.times(),
)
near_valid = plausible | st.lists(plausible, max_size=3) | st.integers(-1, 200)
"""Values of the right shape for most keys, often valid: so that many documents are accepted
and what is accepted gets checked too."""
keys = st.one_of(st.sampled_from(KEYS), plausible, st.text(max_size=12))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=10,
)


# -- a TOML writer (tests only): arbitrary keys and values as TOML text ------------------------


def toml_string(text: str) -> str:
    # JSON escapes are TOML escapes; TOML also wants DEL escaped.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if value != value else repr(value)  # inf, -inf and 1e+16 are TOML too
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
        )
    return str(value)


def toml_document(table: dict[str, Any], path: tuple[str, ...] = ()) -> str:
    """Scalars, lists and inline tables under their header, then sub-tables as headers."""
    lines = [f"[{'.'.join(toml_string(p) for p in path)}]"] if path else []
    subtables = {k: v for k, v in table.items() if isinstance(v, dict) and len(path) < 2}
    lines += [f"{toml_string(k)} = {toml_value(v)}" for k, v in table.items() if k not in subtables]
    text = "\n".join(lines) + "\n"
    return text + "".join(toml_document(v, (*path, k)) for k, v in subtables.items())


# -- what must hold for every input -------------------------------------------------------------


@dataclass(frozen=True)
class _Layer:
    diff_id: str = "sha256:" + "0" * 64
    packages: tuple[str, ...] = ("base-files",)


def assert_polyarch_outcome(text: str, path: Path = Path("containers.toml")) -> None:
    """Refused with a located one-line ConfigError, or accepted with values later stages take."""
    try:
        config = parse_config(text, path)
    except ConfigError as exc:
        event("refused")
        assert_located(exc, path, text)
        return
    event("accepted")
    assert_usable(config)


def assert_located(exc: PolyarchError, path: Path, text: str) -> None:
    assert exc.exit_code == 3 and exc.hint
    m = re.match(rf"{re.escape(str(path))}:(\d+): ", exc.message)
    assert m, exc.message
    assert 1 <= int(m.group(1)) <= text.count("\n") + 1
    assert "\n" not in str(exc), "one line"


def assert_usable(config: Config) -> None:
    """Every accepted value passes the image and registry code's own checks."""
    for c in config.containers:
        entrypoint = c.command if c.command.startswith("/") else f"/usr/bin/{c.command}"
        for system in c.systems:
            image_config(
                system,
                [_Layer()],  # type: ignore[list-item]
                entrypoint=entrypoint,
                env=c.env,
                workdir=c.workdir,
                user=c.user,
                labels=c.labels,
                created="1970-01-01T00:00:00Z",
            )
            assert parse_reference(f"{c.name}:latest-{system.name}").tag
        assert len(f".{c.name}.old-12345678".encode()) <= 255
        assert all(TAG_PATTERN.fullmatch(t) for t in c.tags)
        for r in c.registries:
            ref = parse_reference(r.repo.replace("{name}", c.name))
            assert ref.tag is None and ref.digest is None
        assert not any("\0" in a for a in c.test)
        if c.expect is not None:
            re.compile(c.expect)
        assert 2 <= c.max_layers <= 127


# -- the generators -----------------------------------------------------------------------------

SEEDS = [
    (REPO_ROOT / "containers.toml").read_bytes(),
    toml_document(VALID).encode(),
]


def test_the_seeds_are_valid() -> None:
    for seed in SEEDS:
        assert parse_config(seed.decode(), Path("containers.toml")).containers


@st.composite
def mutated_bytes(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "insert", "delete", "splice"]))
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8) | st.sampled_from(
                [b"[", b"]", b'"', b"'''", b'"""', b"\\", b".", b"=", b"\n", b"#", b"\xff", b"\x00"]
            ))  # fmt: skip
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        else:
            source = draw(st.sampled_from(SEEDS))
            start = draw(st.integers(0, len(source)))
            data[at:at] = source[start : start + draw(st.integers(1, 40))]
    return bytes(data)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(data=mutated_bytes())
def test_mutated_files_load_or_fail_with_polyarchs_own_error(workdir: Path, data: bytes) -> None:
    path = workdir / "containers.toml"
    path.write_bytes(data)
    with contextlib.chdir(workdir):
        try:
            config = load_config(path)
        except ConfigError as exc:
            assert_located(exc, path, data.decode(errors="replace"))
        else:
            assert_usable(config)
    assert sorted(p.name for p in workdir.iterdir()) == ["containers.toml"], "nothing written"


def key_paths(table: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, value in table.items():
        out.append((*path, key))
        if isinstance(value, dict):
            out += key_paths(value, (*path, key))
    return out


@st.composite
def mutated_documents(draw: st.DrawFn) -> str:
    """VALID with keys given other values (often of the right shape), deleted, or added."""
    document = json.loads(json.dumps(VALID))
    for _ in range(draw(st.integers(1, 3))):
        paths = key_paths(document)
        if not paths:
            break
        *parents, key = draw(st.sampled_from(paths))
        table = document
        for parent in parents:
            table = table[parent]
        action = draw(st.sampled_from(["near", "near", "replace", "delete", "add"]))
        if action == "add":
            table[draw(keys)] = draw(values)
        elif action == "delete":
            del table[key]
        else:
            table[key] = draw(near_valid if action == "near" else values)
    return toml_document(document)


@FUZZ
@given(text=mutated_documents())
def test_any_value_in_any_key_is_refused_or_usable(text: str) -> None:
    assert_polyarch_outcome(text)


@settings(max_examples=max(20, EXAMPLES // 5))
@given(
    depth=st.integers(1, 5000),
    kind=st.sampled_from(["[]", "{}", "table"]),
    where=st.sampled_from(["x", "containers.fd.test", "containers.fd.env"]),
)
def test_deep_nesting_is_refused_or_read(depth: int, kind: str, where: str) -> None:
    if kind == "[]":
        value = "[" * depth + "]" * depth
    elif kind == "{}":
        value = "{a = " * depth + "1" + "}" * depth
    else:
        value = "{}\n[" + ".".join(["a"] * depth) + "]"
    assert_polyarch_outcome(
        f'[containers.fd]\npackage = "fd-find"\n\n{where.split(".")[-1]} = {value}\n'
    )
