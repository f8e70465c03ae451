"""[repository] and [sources.NAME]: which sources a project reads, and where each one is."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_config import located

from polyarch.config import parse_config
from polyarch.debian.keys import BUNDLED_KEYRING
from polyarch.debian.sources import DEFAULT_KEYRING, find_sources
from polyarch.errors import ConfigError, MirrorError

MIRROR = "http://mirror.example.invalid/debian"
SECURITY = "http://mirror.example.invalid/debian-security"
FD = '[containers.fd]\npackage = "fd-find"\n'


def parse(text: str):  # type: ignore[no-untyped-def]
    return parse_config(text, Path("containers.toml"))


def names(text: str) -> list[tuple[str, str]]:
    return [(s.name, s.suite) for s in parse(text).sources]


# --- which sources -----------------------------------------------------------------------


def test_a_release_codename_reads_main_updates_and_security_by_default() -> None:
    assert names(FD) == [
        ("main", "bookworm"),
        ("updates", "bookworm-updates"),
        ("security", "bookworm-security"),
    ]
    assert names('[repository]\nsuite = "trixie"\n' + FD)[2] == ("security", "trixie-security")


@pytest.mark.parametrize("suite", ["sid", "unstable", "bookworm-backports", "experimental"])
def test_suites_without_updates_and_security_read_only_themselves(suite: str) -> None:
    assert names(f'[repository]\nsuite = "{suite}"\n' + FD) == [("main", suite)]


def test_each_default_source_can_be_switched_off() -> None:
    off = "[sources.updates]\nenable = false\n"
    assert [n for n, _ in names(off + FD)] == ["main", "security"]
    off += "[sources.security]\nenable = false\n"
    assert [n for n, _ in names(off + FD)] == ["main"]


def test_extra_sources_follow_in_file_order_and_inherit_from_the_main_archive() -> None:
    config = parse(
        '[repository]\ncomponents = ["main", "contrib"]\nkeyring = "/k.gpg"\n'
        '[sources.zz]\nsuite = "bookworm-backports"\npriority = 100\n'
        '[sources.vendor]\nurl = "http://vendor.example.invalid/apt"\nsuite = "stable"\n'
        'keyring = "/vendor.gpg"\n' + FD
    )
    by_name = {s.name: s for s in config.sources}
    assert [s.name for s in config.sources] == ["main", "updates", "security", "zz", "vendor"]
    backports = by_name["zz"]
    assert (backports.same_archive, backports.keyring, backports.priority) == (True, "/k.gpg", 100)
    assert backports.components == ("main",)
    vendor = by_name["vendor"]
    assert (vendor.same_archive, vendor.keyring) == (False, "/vendor.gpg")
    assert by_name["updates"].keyring == "/k.gpg"
    assert by_name["updates"].components == ("main", "contrib")
    assert by_name["security"].keyring is None  # its own archive: found in the host's apt
    assert by_name["security"].is_security and not by_name["updates"].is_security


@pytest.mark.parametrize(
    ("text", "line", "key", "what"),
    [
        ('[sources.main]\nsuite = "x"\n', 1, "sources.main", "the main source is [repository]"),
        ('[sources.Bad]\nsuite = "x"\n', 1, "sources.Bad", "not a source name"),
        ('[sources.bp]\nurl = "http://h/debian"\n', 1, "sources.bp.suite", "required key"),
        (
            '[sources.bp]\nsuite = "bookworm-backports"\npriority = 5000\n',
            3,
            "sources.bp.priority",
            "between",
        ),
        ('[sources.bp]\nsuite = "../x"\n', 2, "sources.bp.suite", "not a suite"),
        (
            '[sources.bp]\nsuite = "x"\nurl = "ftp://h/x"\n',
            3,
            "sources.bp.url",
            "not an http(s) URL",
        ),
        (
            '[sources.bp]\nsuite = "x"\nsnapshot = "2025-05-20"\n',
            3,
            "sources.bp.snapshot",
            "not a timestamp",
        ),
        (
            '[sources.bp]\nsuite = "x"\nsnapshot_url = "http://h/x"\n',
            3,
            "sources.bp.snapshot_url",
            "no {snapshot}",
        ),
        ('[sources.bp]\nsuite = "x"\nsiute = "y"\n', 3, "sources.bp.siute", "unknown key"),
        (
            '[repository]\nsuite = "sid"\n[sources.security]\nurl = "http://h/s"\n',
            3,
            "sources.security.suite",
            "no security suite",
        ),
    ],
)
def test_bad_source_tables_are_refused_with_their_line(
    text: str, line: int, key: str, what: str
) -> None:
    found_line, found_key, found_what = located(text + FD)
    assert (found_line, found_key) == (line, key)
    assert what in found_what


def test_pins_and_package_releases_name_a_source_by_name_or_suite() -> None:
    config = parse(
        '[sources.backports]\nsuite = "bookworm-backports"\n'
        '[containers.fd]\npackage = "fd-find/bookworm-backports"\n'
        'packages = ["git/security"]\npins = { libc6 = "updates" }\n'
    )
    fd = config.container("fd")
    assert (fd.package, fd.packages, fd.command) == ("fd-find", ("git",), "fd-find")
    assert fd.pins == (("fd-find", "backports"), ("git", "security"), ("libc6", "updates"))


@pytest.mark.parametrize(
    ("container", "line", "key", "what"),
    [
        (
            'package = "fd-find/bookworm-backports"\n',
            2,
            "containers.fd.package",
            "no enabled source",
        ),
        (
            'package = "fd-find"\npackages = ["xx/sid"]\n',
            3,
            "containers.fd.packages",
            "no enabled source",
        ),
        (
            'package = "fd-find"\npins = { libc6 = "nope" }\n',
            3,
            "containers.fd.pins.libc6",
            "no enabled source",
        ),
        (
            'package = "fd-find"\npins = { Libc6 = "main" }\n',
            3,
            "containers.fd.pins.Libc6",
            "not a Debian package",
        ),
        ('package = "fd-find/../x"\n', 2, "containers.fd.package", "not a suite or source"),
        (
            'package = "fd-find/main"\npins = { fd-find = "security" }\n',
            3,
            "containers.fd.pins.fd-find",
            "pinned to both",
        ),
    ],
)
def test_a_pin_to_no_enabled_source_is_refused_at_load(
    container: str, line: int, key: str, what: str
) -> None:
    found_line, found_key, found_what = located(f"[containers.fd]\n{container}")
    assert (found_line, found_key) == (line, key)
    assert what in found_what


def test_a_pin_to_a_source_switched_off_is_refused() -> None:
    text = '[sources.security]\nenable = false\n[containers.fd]\npackage = "fd-find/security"\n'
    _, key, what = located(text)
    assert key == "containers.fd.package" and "no enabled source" in what
    with pytest.raises(ConfigError) as caught:
        parse(text)
    assert "sources: main (bookworm), updates (bookworm-updates);" in str(caught.value)


# --- where each source is -----------------------------------------------------------------


@pytest.fixture
def keyring(tmp_path: Path) -> Path:
    path = tmp_path / "archive-keyring.gpg"
    path.write_bytes(b"not read by find_sources")
    return path


def apt_dir(tmp_path: Path, text: str) -> Path:
    root = tmp_path / "apt"
    (root / "sources.list.d").mkdir(parents=True)
    (root / "sources.list.d" / "debian.sources").write_text(text)
    return root


def test_the_security_archive_comes_from_the_hosts_apt_sources(
    tmp_path: Path, keyring: Path
) -> None:
    vendor_key = tmp_path / "security.gpg"
    vendor_key.write_bytes(b"k")
    apt = apt_dir(
        tmp_path,
        f"Types: deb\nURIs: {MIRROR}\nSuites: bookworm bookworm-updates\nComponents: main\n"
        f"Signed-By: {keyring}\n\n"
        f"Types: deb\nURIs: {SECURITY}/\nSuites: bookworm-security\nComponents: main\n"
        f"Signed-By: {vendor_key}\n",
    )
    sources = find_sources(parse(FD), apt_dir=apt)
    assert [(s.name, s.url, s.suite, s.keyring) for s in sources] == [
        ("main", MIRROR, "bookworm", keyring),
        ("updates", MIRROR, "bookworm-updates", keyring),
        ("security", SECURITY, "bookworm-security", vendor_key),
    ]
    assert [s.security for s in sources] == [False, False, True]


def test_a_signed_by_keyring_that_is_not_here_falls_back_to_debians_keys(
    tmp_path: Path, keyring: Path
) -> None:
    # A copied apt configuration (or a Mac's hidden keyrings): Debian's keys judge instead.
    apt = apt_dir(
        tmp_path,
        f"Types: deb\nURIs: {SECURITY}\nSuites: bookworm-security\nComponents: main\n"
        f"Signed-By: {tmp_path / 'gone.gpg'}\n",
    )
    config = parse(f'[repository]\nurl = "{MIRROR}"\nkeyring = "{keyring}"\n' + FD)
    security = find_sources(config, apt_dir=apt)[2]
    assert security.url == SECURITY
    assert security.keyring in (DEFAULT_KEYRING, BUNDLED_KEYRING)


def test_another_releases_security_entry_serves_this_release_too(
    tmp_path: Path, keyring: Path
) -> None:
    apt = apt_dir(
        tmp_path,
        f"Types: deb\nURIs: {MIRROR}\nSuites: trixie\nComponents: main\n\n"
        f"Types: deb\nURIs: {SECURITY}\nSuites: trixie-security\nComponents: main\n",
    )
    config = parse(f'[repository]\nkeyring = "{keyring}"\n' + FD)
    security = find_sources(config, apt_dir=apt)[2]
    assert (security.url, security.suite, security.keyring) == (
        SECURITY,
        "bookworm-security",
        DEFAULT_KEYRING,
    )


def test_without_an_apt_entry_security_is_found_beside_the_main_archive(
    tmp_path: Path, keyring: Path
) -> None:
    config = parse(f'[repository]\nurl = "{MIRROR}/"\nkeyring = "{keyring}"\n' + FD)
    sources = find_sources(config, apt_dir=tmp_path / "no-apt")
    assert sources[2].url == SECURITY
    assert sources[1].url == MIRROR  # updates: another suite of the main archive


def test_without_any_clue_the_security_archive_must_be_named(tmp_path: Path, keyring: Path) -> None:
    config = parse(f'[repository]\nurl = "http://127.0.0.1:9/"\nkeyring = "{keyring}"\n' + FD)
    with pytest.raises(MirrorError) as caught:
        find_sources(config, apt_dir=tmp_path / "no-apt")
    assert "[sources.security] url" in str(caught.value)
    assert "enable = false" in str(caught.value)


def test_a_snapshot_reads_every_source_at_that_snapshot(tmp_path: Path, keyring: Path) -> None:
    template = "http://snapshots.example.invalid/archive/debian/{snapshot}"
    config = parse(
        f'[repository]\nsnapshot = "20250520T000000Z"\nsnapshot_url = "{template}"\n'
        f'keyring = "{keyring}"\n'
        '[sources.backports]\nsuite = "bookworm-backports"\n' + FD
    )
    urls = {s.name: (s.url, s.snapshot) for s in find_sources(config, apt_dir=tmp_path)}
    stamp = "20250520T000000Z"
    base = "http://snapshots.example.invalid/archive"
    assert urls == {
        "main": (f"{base}/debian/{stamp}", stamp),
        "updates": (f"{base}/debian/{stamp}", stamp),
        "backports": (f"{base}/debian/{stamp}", stamp),
        "security": (f"{base}/debian-security/{stamp}", stamp),
    }
    own = parse(
        f'[repository]\nsnapshot = "{stamp}"\nsnapshot_url = "{template}"\nkeyring = "{keyring}"\n'
        f'[sources.security]\nsnapshot = "20250601T000000Z"\n'
        f'snapshot_url = "http://other.example.invalid/s/{{snapshot}}"\n' + FD
    )
    security = find_sources(own, apt_dir=tmp_path)[2]
    assert (security.url, security.snapshot) == (
        "http://other.example.invalid/s/20250601T000000Z",
        "20250601T000000Z",
    )


def test_a_source_keyring_that_does_not_exist_is_named(tmp_path: Path, keyring: Path) -> None:
    config = parse(
        f'[repository]\nurl = "{MIRROR}"\nkeyring = "{keyring}"\n'
        f'[sources.vendor]\nurl = "http://v.example.invalid/apt"\nsuite = "stable"\n'
        f'keyring = "{tmp_path / "missing.gpg"}"\n' + FD
    )
    with pytest.raises(ConfigError, match=r"missing\.gpg of \[sources\.vendor\] does not exist"):
        find_sources(config, apt_dir=tmp_path)
