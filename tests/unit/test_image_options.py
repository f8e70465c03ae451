"""Image options (files, accounts, timezone, annotations, cmd, entrypoint) in built images,
checked inside docker and podman, by skopeo and umoci, and with GNU tar.

The images are built by the CLI from a generated signed repository whose libc6,
bash and coreutils are this host's own programs (tests/hosttools.py), so ``id``,
``stat``, ``cat`` and ``date`` really run in the engine.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ONE_SOURCE, Tool
from debrepo import DebSpec, TestKey, TestRepo, serve
from hosttools import host_world, native_arch, script, zone_file

from polyarch.cli import main
from polyarch.engine import Engine
from polyarch.platforms import native_system
from polyarch.workflows.load import load_image

NATIVE = native_system()
ZONE = "Europe/Berlin"
PROJECT = f"""
[defaults]
systems = ["{NATIVE.name}"]

[containers.app]
package = "greeter"
command = "greet"
user = "nonroot"
workdir = "/work"
timezone = "{ZONE}"
entrypoint = ["echo", "from-entrypoint"]
cmd = ["default-arg"]
test = ["--version"]
expect = "^from-entrypoint --version$"
annotations = {{ "org.example.team" = "tools", "org.opencontainers.image.vendor" = "Example" }}

[containers.app.accounts]
nonroot = {{ uid = 65532 }}
builder = {{ uid = 1000, gid = 1000, group = "staff", home = "/work", shell = "/bin/bash" }}

[containers.app.files]
"/etc/app/app.toml" = {{ source = "conf/app.toml", mode = "0640", owner = "nonroot" }}
"/srv/assets" = {{ source = "assets", owner = "builder:nonroot" }}
"/usr/local/bin/hello" = "bin/hello"
"""
APP_TOML = b'greeting = "hello"\n'


def _write_sources(project: Path) -> None:
    (project / "conf").mkdir(parents=True)
    (project / "conf/app.toml").write_bytes(APP_TOML)
    (project / "conf/app.toml").chmod(0o600)  # the host's mode must not pass
    (project / "assets/css").mkdir(parents=True)
    (project / "assets/css/site.css").write_bytes(b"body {}\n")
    (project / "assets/index.html").write_bytes(b"<p>hi</p>\n")
    (project / "assets/latest.css").symlink_to("css/site.css")
    (project / "bin").mkdir()
    (project / "bin/hello").write_text("#!/bin/bash\necho hello from the host file\n")
    (project / "bin/hello").chmod(0o775)


@pytest.fixture(scope="module")
def repo_url(tmp_path_factory: pytest.TempPathFactory, test_key: TestKey) -> Iterator[str]:
    arch = native_arch()
    repo = TestRepo(tmp_path_factory.mktemp("repo"), test_key, arches=(arch,))
    for spec in host_world():
        repo.add(spec)
    repo.add(
        DebSpec(
            "greeter",
            "1.0",
            arch,
            depends="bash",
            files={"/usr/bin/greet": script('echo "greetings $*"')},
        )
    )
    repo.add(
        DebSpec(
            "tzdata",
            "2025b-0+deb12u1",
            "all",
            files={f"/usr/share/zoneinfo/{z}": zone_file(z) for z in (ZONE, "Etc/UTC")},
        )
    )
    repo.publish()
    with serve(repo.root) as url:
        yield url


Built = tuple[Path, Path, Path]
"""(containers.toml, --out directory, cache directory)"""


def _build(project: Path, url: str, keyring: Path, out: Path, cache: Path) -> None:
    config = project / "containers.toml"
    config.write_text(
        f'[repository]\nurl = "{url}"\nkeyring = "{keyring}"\nsuite = "bookworm"\n\n'
        + ONE_SOURCE
        + PROJECT
    )
    code = main(
        ["-q", "-f", str(config), "--cache-dir", str(cache), "build", "app", "--out", str(out)]
    )
    assert code == 0


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, repo_url: str, test_key: TestKey) -> Built:
    root = tmp_path_factory.mktemp("options")
    _write_sources(root / "project")
    _build(root / "project", repo_url, test_key.keyring, root / "result", root / "cache")
    return root / "project" / "containers.toml", root / "result", root / "cache"


@pytest.fixture
def loaded(engine: Engine, built: Built) -> Iterator[tuple[Engine, str]]:
    from polyarch.config import load_config

    config, out, _cache = built
    tag = f"opt{uuid.uuid4().hex[:10]}"
    reference = load_image(
        engine, load_config(config).container("app"), NATIVE, out_dir=out, tag=tag
    )
    yield engine, reference
    engine.remove_image(reference)


def run_in(loaded: tuple[Engine, str], program: str, *args: str) -> str:
    engine, reference = loaded
    result = engine.run(reference, list(args), entrypoint=program, timeout=120)
    assert result.exit_code == 0, result.output
    return result.output


def test_the_image_runs_as_the_named_account(loaded: tuple[Engine, str]) -> None:
    assert (
        run_in(loaded, "id").strip()
        == "uid=65532(nonroot) gid=65532(nonroot) groups=65532(nonroot)"
    )
    passwd = run_in(loaded, "cat", "/etc/passwd").splitlines()
    assert passwd[0].startswith("root:x:0:0:")
    assert "builder:x:1000:1000:builder:/work:/bin/bash" in passwd
    assert "nonroot:x:65532:65532:nonroot:/home/nonroot:/usr/sbin/nologin" in passwd
    assert "staff:x:1000:" in run_in(loaded, "cat", "/etc/group").splitlines()


def test_home_directories_belong_to_their_accounts(loaded: tuple[Engine, str]) -> None:
    stats = run_in(loaded, "stat", "-c", "%n %a %U %G", "/home/nonroot", "/work")
    assert stats.splitlines() == ["/home/nonroot 700 nonroot nonroot", "/work 700 builder staff"]


def test_files_have_the_mode_and_owner_asked_for(loaded: tuple[Engine, str]) -> None:
    # nonroot may read the 0640 file it owns; its content is the host file's.
    assert run_in(loaded, "cat", "/etc/app/app.toml").encode() == APP_TOML
    stats = run_in(
        loaded,
        "stat",
        "-c",
        "%n %F %a %U %G",
        "/etc/app/app.toml",
        "/srv/assets",
        "/srv/assets/css/site.css",
        "/srv/assets/index.html",
        "/usr/local/bin/hello",
    ).splitlines()
    assert stats == [
        "/etc/app/app.toml regular file 640 nonroot nonroot",
        "/srv/assets directory 755 builder nonroot",
        "/srv/assets/css/site.css regular file 644 builder nonroot",
        "/srv/assets/index.html regular file 644 builder nonroot",
        "/usr/local/bin/hello regular file 755 root root",
    ]
    assert run_in(loaded, "readlink", "/srv/assets/latest.css").strip() == "css/site.css"
    assert run_in(loaded, "hello").strip() == "hello from the host file"


def test_localtime_resolves_to_the_zone(loaded: tuple[Engine, str]) -> None:
    assert run_in(loaded, "readlink", "/etc/localtime").strip() == f"/usr/share/zoneinfo/{ZONE}"
    engine, reference = loaded
    result = engine.run(reference, ["/etc/localtime"], entrypoint="cat", timeout=120)
    assert result.exit_code == 0
    assert result.output == zone_file(ZONE).decode("utf-8", errors="replace")
    assert run_in(loaded, "cat", "/etc/timezone") == f"{ZONE}\n"
    assert run_in(loaded, "date", "+%Z").strip() in ("CET", "CEST")


def test_entrypoint_and_cmd_make_the_default_command_line(loaded: tuple[Engine, str]) -> None:
    engine, reference = loaded
    default = engine.run(reference, [], timeout=120)
    assert default.output.strip() == "from-entrypoint default-arg"
    given = engine.run(reference, ["given"], timeout=120)
    assert given.output.strip() == "from-entrypoint given"


def test_polyarch_test_passes_as_the_named_account(engine: Engine, built: Built) -> None:
    config, out, cache = built
    code = main(
        [
            "-q",
            "-f",
            str(config),
            "--cache-dir",
            str(cache),
            "test",
            "app",
            "--out",
            str(out),
            "--engine",
            engine.name,
            "--tag",
            f"t{uuid.uuid4().hex[:8]}",
        ]
    )
    assert code == 0


def test_annotations_are_in_skopeo_inspect_of_the_index_and_the_manifest(
    built: Built, run_skopeo: Tool, tmp_path: Path
) -> None:
    _config, out, _cache = built
    layout = f"oci:{out / 'app' / 'oci'}:latest"
    index = json.loads(run_skopeo("inspect", "--raw", layout))
    # skopeo copies the native manifest out of the index unchanged (same digest) ...
    run_skopeo("copy", "-q", layout, f"dir:{tmp_path / 'image'}")
    manifest = json.loads(run_skopeo("inspect", "--raw", f"dir:{tmp_path / 'image'}"))
    assert [m["digest"] for m in index["manifests"]] == [
        "sha256:" + hashlib.sha256((tmp_path / "image/manifest.json").read_bytes()).hexdigest()
    ]
    for document in (index, manifest):
        annotations = document["annotations"]
        assert annotations["org.example.team"] == "tools"
        assert annotations["org.opencontainers.image.vendor"] == "Example"
        assert annotations["org.opencontainers.image.title"] == "app"
    # ... and reads the settings that make the command line from its config.
    config = json.loads(run_skopeo("inspect", "--config", f"dir:{tmp_path / 'image'}"))["config"]
    assert config["Entrypoint"] == ["/usr/bin/echo", "from-entrypoint"]
    assert config["Cmd"] == ["default-arg"]
    assert config["User"] == "nonroot"
