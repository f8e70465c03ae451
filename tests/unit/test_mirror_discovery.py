"""Which mirror, suite and keyring polyarch uses: containers.toml first, then the host's apt."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from debian import deb822
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from polyarch.config import RepositoryConfig
from polyarch.debian.sources import (
    DEFAULT_KEYRING,
    _deb822_entries,
    deb822_paragraphs,
    find_source,
)
from polyarch.errors import ConfigError, MirrorError

MIRROR = "http://mirror.example.invalid/debian"
SECURITY = "http://mirror.example.invalid/debian-security"


@pytest.fixture
def keyring(tmp_path: Path) -> Path:
    path = tmp_path / "archive-keyring.gpg"
    path.write_bytes(b"not read by find_source")
    return path


def apt_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "apt"
    (root / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def cfg(keyring: Path, **fields: object) -> RepositoryConfig:
    return RepositoryConfig(keyring=str(keyring), **fields)  # type: ignore[arg-type]


def test_deb822_source_for_the_suite_is_used_and_security_entry_skipped(
    tmp_path: Path, keyring: Path
) -> None:
    apt = apt_dir(
        tmp_path,
        {
            "sources.list.d/debian.sources": (
                f"Types: deb\nURIs: {SECURITY}\nSuites: bookworm-security\nComponents: main\n\n"
                f"Types: deb\n# a comment line\nURIs: {MIRROR}/\n"
                "Suites: bookworm bookworm-updates\nComponents: main contrib\n"
            )
        },
    )
    source = find_source(cfg(keyring), apt_dir=apt)
    assert source.url == MIRROR
    assert (source.suite, source.components, source.keyring) == ("bookworm", ("main",), keyring)


def test_one_line_sources_list_with_options_is_understood(tmp_path: Path, keyring: Path) -> None:
    apt = apt_dir(
        tmp_path,
        {
            "sources.list": (
                "# deb http://commented.example.invalid/debian bookworm main\n"
                f"deb-src {MIRROR}-src bookworm main\n"
                f"deb {SECURITY} bookworm-security main\n"
                f"deb [arch=amd64 signed-by={keyring}] {MIRROR} bookworm main  # trailing comment\n"
            )
        },
    )
    assert find_source(cfg(keyring), apt_dir=apt).url == MIRROR


def test_list_files_in_sources_list_d_are_read(tmp_path: Path, keyring: Path) -> None:
    apt = apt_dir(tmp_path, {"sources.list.d/mirror.list": f"deb {MIRROR} bookworm main\n"})
    assert find_source(cfg(keyring), apt_dir=apt).url == MIRROR


def test_disabled_and_source_only_deb822_entries_are_skipped(tmp_path: Path, keyring: Path) -> None:
    apt = apt_dir(
        tmp_path,
        {
            "sources.list.d/a.sources": (
                "Types: deb\nURIs: http://disabled.example.invalid/debian\nSuites: bookworm\n"
                "Components: main\nEnabled: no\n\n"
                "Types: deb-src\nURIs: http://src.example.invalid/debian\nSuites: bookworm\n"
                "Components: main\n\n"
                f"Types: deb deb-src\nURIs: {MIRROR}\nSuites: bookworm\nComponents: main\n"
            )
        },
    )
    assert find_source(cfg(keyring), apt_dir=apt).url == MIRROR


def test_third_party_repository_for_the_same_suite_is_not_taken_for_debian(
    tmp_path: Path, keyring: Path
) -> None:
    apt = apt_dir(
        tmp_path,
        {
            "sources.list.d/a-vendor.list": "deb http://vendor.example.invalid/linux bookworm stable\n",
            "sources.list.d/debian.sources": f"Types: deb\nURIs: {MIRROR}\nSuites: bookworm\nComponents: main\n",
        },
    )
    assert find_source(cfg(keyring), apt_dir=apt).url == MIRROR


def test_host_on_another_release_lends_its_main_archive(tmp_path: Path, keyring: Path) -> None:
    apt = apt_dir(
        tmp_path,
        {
            "sources.list.d/debian.sources": (
                f"Types: deb\nURIs: {SECURITY}\nSuites: trixie-security\nComponents: main\n\n"
                f"Types: deb\nURIs: {MIRROR}\nSuites: trixie\nComponents: main\n"
            )
        },
    )
    source = find_source(cfg(keyring, suite="bookworm"), apt_dir=apt)
    assert (source.url, source.suite) == (MIRROR, "bookworm")


def test_configured_url_wins_over_apt_and_loses_its_trailing_slash(
    tmp_path: Path, keyring: Path
) -> None:
    apt = apt_dir(tmp_path, {"sources.list": f"deb {MIRROR} bookworm main\n"})
    source = find_source(
        cfg(keyring, url="http://other.example.invalid/debian/", components=("main", "contrib")),
        apt_dir=apt,
    )
    assert source.url == "http://other.example.invalid/debian"
    assert source.components == ("main", "contrib")


def test_no_url_and_no_apt_sources_asks_for_repository_url(tmp_path: Path, keyring: Path) -> None:
    apt = apt_dir(tmp_path, {})
    with pytest.raises(MirrorError, match=r"no Debian mirror for bookworm") as info:
        find_source(cfg(keyring), apt_dir=apt)
    assert "[repository] url" in str(info.value)


def test_missing_apt_directory_asks_for_repository_url(tmp_path: Path, keyring: Path) -> None:
    with pytest.raises(MirrorError, match=r"\[repository\] url"):
        find_source(cfg(keyring), apt_dir=tmp_path / "no-such-dir")


def test_missing_keyring_is_a_config_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gpg"
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        find_source(RepositoryConfig(url=MIRROR, keyring=str(missing)))


def test_apt_signed_by_keyring_is_used_when_none_is_configured(
    tmp_path: Path, keyring: Path
) -> None:
    apt = apt_dir(
        tmp_path,
        {
            "sources.list.d/debian.sources": (
                f"Types: deb\nURIs: {MIRROR}\nSuites: bookworm\nComponents: main\nSigned-By: {keyring}\n"
            )
        },
    )
    assert find_source(RepositoryConfig(), apt_dir=apt).keyring == keyring


@pytest.mark.skipif(not DEFAULT_KEYRING.is_file(), reason="host has no debian-archive-keyring")
def test_debian_archive_keyring_is_the_default(tmp_path: Path) -> None:
    assert find_source(RepositoryConfig(url=MIRROR)).keyring == DEFAULT_KEYRING


def test_url_that_is_not_http_is_refused(keyring: Path) -> None:
    with pytest.raises(ConfigError, match="not an http"):
        find_source(cfg(keyring, url="ftp://mirror.example.invalid/debian"))


_field_name = st.sampled_from(["Types", "URIs", "uris", "Suites", "Components", "Signed-By", "X-Y"])
_value = st.text(alphabet="abc:/. -", max_size=12)
_line = st.one_of(
    st.tuples(_field_name, st.sampled_from([":", ": "]), _value).map("".join),
    _value.map(lambda v: " " + v.strip() if v.strip() else " ."),  # continuation
    st.sampled_from(["", "   ", "# a comment", "#Types: deb"]),
)


def _orphan_continuation(text: str) -> bool:
    """A continuation line with no field before it in its paragraph (comments aside)."""
    previous = ""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if line[:1] in (" ", "\t") and line.strip() and not previous.strip():
            return True
        previous = line
    return False


@settings(max_examples=300, deadline=None)
@given(st.lists(_line, max_size=12).map("\n".join))
def test_deb822_paragraphs_are_read_as_python_debian_reads_them(text: str) -> None:
    # python-debian drops the rest of a file after a paragraph that starts with a
    # continuation line; apt reads on (judged by apt itself below), and so does polyarch.
    assume(not _orphan_continuation(text))
    reference = [
        {k.lower(): v for k, v in para.items()}
        for para in deb822.Deb822.iter_paragraphs(text.splitlines(True), use_apt_pkg=False)
    ]
    assert [p for p in deb822_paragraphs(text) if p] == [p for p in reference if p]


_APT_SOURCES = """\
 stray continuation line
# Types: deb
#URIs: http://commented.example.invalid/debian

Types: deb deb-src
URIs: http://a.example.invalid/debian
  http://b.example.invalid/debian
Suites: bookworm
 bookworm-updates
Components: main

Types: deb
URIs: http://off.example.invalid/debian
Suites: trixie
Components: main
Enabled: no

types: deb
uris: http://lower.example.invalid/debian
suites: sid
components: main contrib
"""


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="apt-get is the judge (Debian hosts)")
def test_deb822_sources_are_read_as_apt_reads_them(tmp_path: Path) -> None:
    parts = tmp_path / "sources.list.d"
    parts.mkdir()
    (parts / "x.sources").write_text(_APT_SOURCES)
    state = {"Dir::Cache": tmp_path / "cache", "Dir::State::lists": tmp_path / "lists"}
    for d in state.values():
        (d / "partial").mkdir(parents=True)
    options = {"Dir::Etc::sourcelist": "/dev/null", "Dir::Etc::sourceparts": parts, **state}
    argv = ["apt-get", *(f"-o{k}={v}" for k, v in options.items()), "update", "--print-uris"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    by_apt = set(re.findall(r"'(\S+)/dists/(\S+)/InRelease'", out))
    ours = {
        (e.uri.rstrip("/"), suite)
        for e in _deb822_entries(parts / "x.sources")
        for suite in e.suites
    }
    assert ours == by_apt
    assert ("http://lower.example.invalid/debian", "sid") in ours  # the file was read to its end
