"""The image options of containers.toml (files, accounts, annotations, cmd, entrypoint,
timezone, auto_tags): what is accepted, how defaults merge, what is refused and where."""

from __future__ import annotations

import pytest
from test_config import located, parse

from polyarch.config_image import Account, ImageFile
from polyarch.registry.tags import AutoTags


def test_every_option_is_read_with_names_resolved_to_ids() -> None:
    app = parse(
        """
[containers.app]
package = "fd-find"
user = "nonroot:staff"
cmd = ["--hidden"]
entrypoint = ["/usr/bin/tini", "--", "fdfind"]
timezone = "America/Argentina/Buenos_Aires"
annotations = { "org.example.team" = "tools" }
auto_tags = { latest = false, major = false }

[containers.app.accounts]
nonroot = { uid = 65532 }
ci = { uid = 1000, gid = 50, group = "staff", home = "/nonexistent", shell = "/bin/bash" }

[containers.app.files]
"/etc/app.toml" = "conf/app.toml"
"/srv/www" = { source = "/abs/www", mode = "0640", owner = "ci" }
"/usr/local/bin/x" = { source = "x", owner = "65532:0" }
"""
    ).container("app")
    o = app.options
    assert o.accounts == (
        Account("ci", 1000, 50, "staff", "/nonexistent", "/bin/bash"),
        Account("nonroot", 65532, 65532, "nonroot", "/home/nonroot", "/usr/sbin/nologin"),
    )
    assert o.files == (
        ImageFile("/etc/app.toml", "conf/app.toml", None, 0, 0),
        ImageFile("/srv/www", "/abs/www", 0o640, 1000, 50),
        ImageFile("/usr/local/bin/x", "x", None, 65532, 0),
    )
    assert o.cmd == ("--hidden",) and o.entrypoint == ("/usr/bin/tini", "--", "fdfind")
    assert o.annotations == (("org.example.team", "tools"),)
    assert o.auto_tags == AutoTags(latest=False, major=False)
    assert o.has_layer
    # The zone's files come from tzdata: it joins the container's packages.
    assert app.packages == ("tzdata",)


def test_defaults_merge_with_the_containers_own_options() -> None:
    config = parse(
        """
[defaults]
timezone = "UTC"
annotations = { a = "1", b = "2" }
auto_tags = { branch = false, latest = false }
accounts.nonroot = { uid = 65532 }
files."/etc/motd" = "motd"

[containers.app]
package = "jq"
packages = ["tzdata"]
annotations = { b = "3" }
auto_tags = { latest = true }
accounts.nonroot = { uid = 1000 }
files."/etc/motd" = "other-motd"

[containers.plain]
package = "jq"
timezone = "Europe/Berlin"
"""
    )
    app, plain = config.container("app").options, config.container("plain").options
    assert app.annotations == (("a", "1"), ("b", "3"))
    assert app.auto_tags == AutoTags(branch=False, latest=True)
    assert [(a.name, a.uid) for a in app.accounts] == [("nonroot", 1000)]
    assert [f.source for f in app.files] == ["other-motd"]
    assert app.timezone == "UTC" and plain.timezone == "Europe/Berlin"
    assert config.container("app").packages == ("tzdata",)  # not twice


def test_a_container_without_options_has_none_and_no_layer_of_its_own() -> None:
    fd = parse('[containers.fd]\npackage = "fd-find"\n').container("fd")
    assert not fd.options.has_layer
    assert fd.options.cmd is None and fd.options.entrypoint is None
    assert fd.options.auto_tags == AutoTags()
    assert fd.packages == ()


REFUSED = [
    # (lines of [containers.fd], the dotted key, what the message says)
    ('user = "alice"', "user", "no user 'alice' in the image"),
    ('user = "nobody:staff"', "user", "no group 'staff' in the image"),
    ("cmd = '--hidden'", "cmd", "expected a list, got a string"),
    ("entrypoint = []", "entrypoint", "is empty"),
    ('entrypoint = ["bin/tini"]', "entrypoint", "is a relative path"),
    ('timezone = "../../etc/shadow"', "timezone", "is not a time zone name"),
    ('timezone = "Europe/Berlin "', "timezone", "is not a time zone name"),
    ('annotations = { "" = "x" }', 'annotations.""', "annotation key '' is empty"),
    ("annotations = { a = 1 }", "annotations", "expected a string, got an integer"),
    ("auto_tags = { lates = false }", "auto_tags.lates", "unknown key"),
    ('auto_tags = { latest = "no" }', "auto_tags.latest", "expected true or false, got a string"),
    ("accounts.root = { uid = 5 }", "accounts.root", "an account every image has already"),
    ("accounts.Alice = { uid = 5 }", "accounts.Alice", "is not an account name"),
    ("accounts.a = { uid = 0 }", "accounts.a", "uid 0 is root's or nobody's"),
    ("accounts.a = { uid = -1 }", "accounts.a", "uid -1 is out of range"),
    ("accounts.a = { uid = 5, gid = 0 }", "accounts.a", "contradicts root (0)"),
    ('accounts.a = { uid = 5, group = "root" }', "accounts.a", "contradicts root (0)"),
    ('accounts.a = { uid = 5, home = "home/a" }', "accounts.a.home", "not a normalised absolute"),
    ('accounts.a = { uid = 5, home = "/bin/a" }', "accounts.a.home", "under /bin, a link"),
    ('accounts.a = { uid = 5, home = "/" }', "accounts.a.home", "is '/'"),
    ('accounts.a = { uid = 5, shell = "/bin/a:b" }', "accounts.a.shell", "holds ':'"),
    ("accounts.a = { uid = 5, uids = 6 }", "accounts.a.uids", "unknown key"),
    ("accounts.a = { gid = 5 }", "accounts.a.uid", "required key missing"),
    ("accounts.a = 5", "accounts.a", "expected a table, got an integer"),
    ('files."/lib/x" = "x"', 'files."/lib/x"', "under /lib, a link to /usr/lib"),
    ('files."/proc/x" = "x"', 'files."/proc/x"', "mounts over at run time"),
    ('files."/etc/passwd" = "x"', 'files."/etc/passwd"', "is made from accounts"),
    ('files."/etc/localtime" = "x"', 'files."/etc/localtime"', "is made from timezone"),
    ('files."etc/x" = "x"', 'files."etc/x"', "is not a normalised absolute path"),
    ('files."/" = "x"', 'files."/"', "the destination is '/'"),
    ('files."/x" = ""', 'files."/x"', "the source is empty"),
    ('files."/x" = { source = "x", mode = "0999" }', 'files."/x"', "is not an octal mode"),
    ('files."/x" = { source = "x", mode = 420 }', 'files."/x".mode', "expected a string"),
    ('files."/x" = { source = "x", owner = "bob" }', 'files."/x"', "no user 'bob' in the image"),
    ('files."/x" = { mode = "0644" }', 'files."/x".source', "required key missing"),
    ('files."/x" = 7', 'files."/x"', "expected a table, got an integer"),
]


@pytest.mark.parametrize(("line", "key", "what"), REFUSED)
def test_an_option_that_breaks_its_rule_is_refused_with_its_line(
    line: str, key: str, what: str
) -> None:
    found_line, found_key, found_what = located(f'[containers.fd]\n{line}\npackage = "fd-find"\n')
    assert (found_line, found_key) == (2, f"containers.fd.{key}")
    assert what in found_what


def test_two_accounts_with_one_uid_or_clashing_groups_are_refused() -> None:
    _line, key, what = located(
        '[containers.fd]\npackage = "fd-find"\naccounts.a = { uid = 7 }\naccounts.b = { uid = 7 }\n'
    )
    assert key == "containers.fd.accounts.b.uid" and "uid 7 is both a's and b's" in what
    _line, key, what = located(
        '[containers.fd]\npackage = "fd-find"\n'
        'accounts.a = { uid = 7, group = "g" }\naccounts.b = { uid = 8, gid = 9, group = "g" }\n'
    )
    assert key == "containers.fd.accounts.b.gid" and "clashes" in what


def test_a_defaults_option_is_refused_where_the_defaults_say_it() -> None:
    line, key, what = located(
        '[defaults]\nfiles."/bin/x" = "x"\n\n[containers.fd]\npackage = "fd-find"\n'
    )
    assert (line, key) == (2, 'defaults.files."/bin/x"')
    assert "under /bin" in what
