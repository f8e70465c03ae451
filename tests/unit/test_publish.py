"""Publishing without a registry: tags, targets and credentials, annotations, the annotated layout."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from registry_server import make_layout

from polyarch.config import Container, parse_config
from polyarch.debian.copyright import debian_licenses
from polyarch.errors import ConfigError, UsageError
from polyarch.image.layout import annotate_layout
from polyarch.image.oci import ANNOTATION_LICENSES, ANNOTATION_REVISION, ANNOTATION_SOURCE
from polyarch.registry.plan import read_layout
from polyarch.vcs import git_revision, git_source, public_url
from polyarch.workflows.publish import publish_annotations, publish_tags, publish_version
from polyarch.workflows.targets import TargetKind, push_targets

SECRET = "tok-3x4mple-n0t-printed"
GITHUB_ENV = {
    "GITHUB_TOKEN": SECRET,
    "GITHUB_ACTOR": "octo-cat",
    "GITHUB_REPOSITORY": "Octo-Org/Tools",
}


def container(registries: str = "", extra: str = "") -> Container:
    text = f'[containers.fd]\npackage = "fd-find"\ncommand = "fdfind"\n{extra}\n{registries}'
    return parse_config(text, Path("/nowhere/containers.toml")).container("fd")


# -- tags --------------------------------------------------------------------------------


def test_tags_are_explicit_then_version_then_branch_and_latest_on_the_default_branch() -> None:
    tags = publish_tags(["stable"], version="v1.2.3", branch="main", env={})
    assert tags == ["stable", "1.2.3", "1.2", "1", "main", "latest"]


def test_a_pull_request_branch_becomes_a_valid_tag_without_latest() -> None:
    assert publish_tags([], env={"GITHUB_REF_NAME": "133/merge"}) == ["133-merge"]


def test_a_push_with_nothing_naming_a_tag_is_tagged_latest() -> None:
    assert publish_tags([], env={}) == ["latest"]


def test_auto_tags_of_the_container_reach_the_pushed_tags() -> None:
    auto = container(extra="auto_tags = { branch = false, major = false }").options.auto_tags
    assert publish_tags([], version="1.2.3", branch="main", env={}, auto=auto) == [
        "1.2.3",
        "1.2",
        "latest",
    ]


def test_with_latest_off_a_push_that_names_no_tag_is_refused() -> None:
    auto = container(extra="auto_tags = { latest = false }").options.auto_tags
    with pytest.raises(UsageError, match="auto_tags turns latest off"):
        publish_tags([], env={}, auto=auto)
    assert publish_tags(["stable"], env={}, auto=auto) == ["stable"]


def test_the_version_comes_from_the_flag_then_version_then_a_pushed_git_tag() -> None:
    assert publish_version("2.0", {"VERSION": "1.0"}) == "2.0"
    assert publish_version(None, {"VERSION": "1.0"}) == "1.0"
    assert publish_version(None, {"GITHUB_REF_TYPE": "tag", "GITHUB_REF_NAME": "v3.1"}) == "v3.1"
    assert publish_version(None, {"GITHUB_REF_TYPE": "branch", "GITHUB_REF_NAME": "main"}) is None


# -- targets and credentials --------------------------------------------------------------


def test_disabled_registries_are_skipped_and_name_is_substituted() -> None:
    c = container(
        '[containers.fd.registries.on]\nrepo = "registry.example.test/team/{name}"\n'
        '[containers.fd.registries.off]\nrepo = "other.example.test/fd"\nenable = false\n'
    )
    targets = push_targets(c, env={}, docker_config=Path("/nonexistent/config.json"))
    assert [(t.name, t.repository) for t in targets] == [("on", "registry.example.test/team/fd")]


def test_a_dollar_password_is_read_from_the_environment_and_never_shown() -> None:
    c = container(
        '[containers.fd.registries.r]\nrepo = "registry.example.test/fd"\n'
        'username = "ci"\npassword = "$PUSH_TOKEN"\n'
    )
    (target,) = push_targets(c, env={"PUSH_TOKEN": SECRET})
    assert target.credentials is not None
    assert (target.credentials.username, target.credentials.password) == ("ci", SECRET)
    assert SECRET not in repr(target)


def test_an_unset_password_variable_is_a_config_error_naming_only_the_variable() -> None:
    c = container(
        '[containers.fd.registries.r]\nrepo = "registry.example.test/fd"\n'
        'username = "ci"\npassword = "$PUSH_TOKEN"\n'
    )
    with pytest.raises(ConfigError, match=r"\$PUSH_TOKEN"):
        push_targets(c, env={})


def test_to_overrides_the_configured_registries() -> None:
    c = container('[containers.fd.registries.r]\nrepo = "registry.example.test/fd"\n')
    targets = push_targets(
        c, to="127.0.0.1:5000/elsewhere", env={}, docker_config=Path("/nonexistent")
    )
    assert [(t.kind, t.repository) for t in targets] == [
        (TargetKind.EXPLICIT, "127.0.0.1:5000/elsewhere")
    ]


def test_to_with_a_tag_is_refused() -> None:
    with pytest.raises(UsageError, match="tag or digest"):
        push_targets(container(), to="127.0.0.1:5000/x:v1", env={})


def test_github_mode_targets_ghcr_owner_and_container_name_with_the_workflow_token() -> None:
    (target,) = push_targets(container(), env=GITHUB_ENV)
    assert (target.name, target.repository) == ("github", "ghcr.io/octo-org/fd")
    assert target.credentials is not None and target.credentials.username == "octo-cat"
    assert SECRET not in repr(target)


def test_github_mode_for_image_files_targets_the_repository_itself() -> None:
    (target,) = push_targets(None, env=GITHUB_ENV)
    assert target.repository == "ghcr.io/octo-org/tools"


def test_configured_registries_win_over_github_mode() -> None:
    c = container('[containers.fd.registries.r]\nrepo = "registry.example.test/fd"\n')
    (target,) = push_targets(c, env=GITHUB_ENV, docker_config=Path("/nonexistent"))
    assert target.repository == "registry.example.test/fd"


def test_nowhere_to_push_says_how_to_configure_one() -> None:
    with pytest.raises(UsageError, match="nowhere to push") as info:
        push_targets(container(), env={})
    assert "--to" in str(info.value)


def test_every_registry_disabled_is_an_error() -> None:
    c = container('[containers.fd.registries.r]\nrepo = "x.example.test/fd"\nenable = false\n')
    with pytest.raises(UsageError, match="enable = false"):
        push_targets(c, env=GITHUB_ENV)


def test_a_password_on_stdin_for_several_registries_is_refused() -> None:
    c = container(
        '[containers.fd.registries.a]\nrepo = "a.example.test/fd"\n'
        '[containers.fd.registries.b]\nrepo = "b.example.test/fd"\n'
    )
    with pytest.raises(UsageError, match="several registries"):
        push_targets(c, username="u", password_stdin=b"pw\n", env={})


def test_a_registry_repo_that_is_no_reference_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"registries\.r"):  # refused as the file is loaded
        push_targets(container('[containers.fd.registries.r]\nrepo = "Not A Repo"\n'), env={})


# -- annotations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("remote", "url"),
    [
        ("git@github.com:owner/tools.git", "https://github.com/owner/tools"),
        (
            "https://x-access-token:ghs_secret@github.com/owner/tools.git",
            "https://github.com/owner/tools",
        ),
        ("ssh://git@git.example.test:2222/team/tools", "https://git.example.test:2222/team/tools"),
        ("/srv/git/tools.git", None),
        ("file:///srv/git/tools.git", None),
    ],
)
def test_git_remotes_become_public_urls_without_credentials(remote: str, url: str | None) -> None:
    assert public_url(remote) == url


def git(directory: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    out = subprocess.run(
        ["git", "-C", str(directory), *args], capture_output=True, text=True, check=True, env=env
    )
    return out.stdout.strip()


def test_revision_and_source_come_from_the_git_repository_of_the_config(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "containers.toml").write_text("")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "x")
    git(tmp_path, "remote", "add", "origin", "https://user:hunter2@git.example.test/team/tools.git")
    annotations = publish_annotations(tmp_path, version=None, env={})
    assert annotations[ANNOTATION_REVISION] == git(tmp_path, "rev-parse", "HEAD")
    assert annotations[ANNOTATION_SOURCE] == "https://git.example.test/team/tools"
    assert "hunter2" not in json.dumps(annotations)


def test_outside_a_repository_revision_is_absent_and_source_falls_back_to_github(
    tmp_path: Path,
) -> None:
    assert git_revision(tmp_path) is None
    env = {"GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "o/r"}
    assert git_source(tmp_path, env) == "https://github.com/o/r"
    assert ANNOTATION_SOURCE not in publish_annotations(tmp_path, version="1", env={})


COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: fd-find

Files: *
Copyright: 2017 someone
License: {license}

Files: debian/*
Copyright: 2018 someone else
License: GPL-2+
"""


@pytest.mark.parametrize(
    ("license", "spdx"),
    [
        ("MIT or Apache-2.0", "MIT OR Apache-2.0"),
        ("Expat", "MIT"),
        ("GPL-3+", "GPL-3.0-or-later"),
        ("LGPL-2.1", "LGPL-2.1-only"),
        ("BSD-3-clause and Zlib", "BSD-3-Clause AND Zlib"),
        ("GPL-2+ with OpenSSL exception", None),
        ("Some-Custom-License", None),
        ("MIT or", None),
    ],
)
def test_licenses_are_the_spdx_form_of_the_main_files_paragraph(
    license: str, spdx: str | None
) -> None:
    assert debian_licenses(COPYRIGHT.format(license=license)) == spdx


def test_a_copyright_file_that_is_not_machine_readable_gives_no_licenses() -> None:
    assert debian_licenses("This package was debianized by someone.\nLicense: MIT\n") is None


# -- the annotated layout -----------------------------------------------------------------------


def test_annotating_rewrites_only_the_index_and_copies_every_other_blob(tmp_path: Path) -> None:
    sample = make_layout(tmp_path / "oci")
    dest = tmp_path / "out" / "manifest"
    digest = annotate_layout(sample.path, dest, {ANNOTATION_LICENSES: "MIT"})
    plan = read_layout(dest)
    assert plan.root.digest == digest != sample.index_digest
    index = json.loads(plan.root.data)
    assert index["annotations"] == {ANNOTATION_LICENSES: "MIT"}
    assert [m["digest"] for m in index["manifests"]] == list(sample.manifests.values())
    for blob in sample.blobs:
        name = blob.removeprefix("sha256:")
        copied, original = dest / "blobs/sha256" / name, sample.path / "blobs/sha256" / name
        assert copied.read_bytes() == original.read_bytes()
        assert not os.path.samefile(copied, original)
    assert not (dest / "blobs/sha256" / sample.index_digest.removeprefix("sha256:")).exists()


def test_annotating_again_replaces_the_layout_and_gives_the_same_digest(tmp_path: Path) -> None:
    sample = make_layout(tmp_path / "oci", seed=b"x")
    dest = tmp_path / "manifest"
    first = annotate_layout(sample.path, dest, {"a": "1"})
    assert annotate_layout(sample.path, dest, {"a": "1"}) == first
    assert annotate_layout(sample.path, dest, {"a": "2"}) != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest", "oci"]


def test_a_github_token_without_the_other_variables_names_what_is_missing() -> None:
    with pytest.raises(ConfigError, match="GITHUB_ACTOR") as info:
        push_targets(container(), env={"GITHUB_TOKEN": SECRET, "GITHUB_REPOSITORY": "o/r"})
    assert SECRET not in str(info.value)
