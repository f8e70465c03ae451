"""The filesystem rules: what goes into an image, and what maintainer scripts would have done.

polyarch never runs maintainer scripts (they would need the target architecture
and a root filesystem). A tool container needs only a few of their effects;
this module makes exactly these, directly, and nothing else:

1. **Merged /usr** (what ``usrmerge``/``base-files`` do): entries under
   ``/bin``, ``/sbin``, ``/lib``, ``/lib32``, ``/lib64``, ``/libx32`` move to
   ``/usr/...``; the image root holds ``bin -> usr/bin``, ``sbin -> usr/sbin``,
   ``lib -> usr/lib`` and ``lib64 -> usr/lib64`` in every image (always, so
   the skeleton layer is the same on every system; on arm64 ``lib64`` simply
   dangles). Both dynamic loaders resolve: amd64's
   ``/lib64/ld-linux-x86-64.so.2`` and arm64's ``/lib/ld-linux-aarch64.so.1``.
   ``lib32``/``libx32`` links are made only when a package ships files there.
   A relative symlink whose meaning would change by the move is made absolute
   (as ``convert-usrmerge`` does). When one package ships a path twice after
   the move (``/bin/x`` and ``/usr/bin/x``) a non-symlink beats a symlink, then
   the ``/usr`` spelling wins.
2. **Documentation left out** unless ``keep_docs``: ``/usr/share/doc`` except
   each ``/usr/share/doc/PACKAGE/copyright`` (licences must ship),
   ``/usr/share/man``, ``/usr/share/info``, ``/usr/share/locale``,
   ``/usr/share/lintian``.
3. **Users, groups, temp dirs** (``base-files``/``base-passwd`` postinst):
   ``/etc/passwd`` and ``/etc/group`` with root and nobody/nogroup,
   ``/etc/nsswitch.conf`` (files, dns), ``/root`` 0700, ``/tmp`` and
   ``/var/tmp`` 1777 — see ``skeleton_entries``.
4. **/bin/sh** (``dash``'s job): ``/usr/bin/sh -> bash`` when no package in the
   closure ships ``/usr/bin/sh`` and bash is there.
5. **Alternatives** (``update-alternatives --install`` in postinst): parsed
   from each postinst; per name the highest priority wins (tie: the package
   first by name), and like Debian the link goes through
   ``/etc/alternatives/NAME``. Made only when the chosen path exists in the
   closure and no package ships the link itself. Lines with shell variables
   or anything else not fully literal are skipped.
6. **CA bundle** (``update-ca-certificates``): when ``ca-certificates`` is in
   the closure, ``/etc/ssl/certs/ca-certificates.crt`` is every
   ``/usr/share/ca-certificates/**/*.crt``, sorted by path, concatenated.
7. **dpkg status** (what dpkg itself records): one
   ``/var/lib/dpkg/status.d/PACKAGE`` per package, distroless-style, in that
   package's own layer, so trivy and grype see what the image holds.

A container's own settings (accounts, host files, the time zone) are made in
``image/custom.py``, in a layer of that container's own.

Within one layer no path appears twice: later entries win, and directories
merge. Across layers the later layer wins, as in any OCI image.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from polyarch.debian.deb import DebContents, DebEntry
from polyarch.errors import PackageError

MERGED_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
ROOT_LINKS = ("bin", "sbin", "lib", "lib64")
"""Merged-/usr links every image has; ``lib32``/``libx32`` only when used."""

EXCLUDED_TREES = ("/usr/share/man", "/usr/share/info", "/usr/share/locale", "/usr/share/lintian")
DOC_DIR = "/usr/share/doc"
STATUS_DIR = "/var/lib/dpkg/status.d"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
CA_SOURCE_DIR = "/usr/share/ca-certificates"
ALTERNATIVES_DIR = "/etc/alternatives"

PASSWD = (
    "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
)
GROUP = "root:x:0:\nnogroup:x:65534:\n"
NSSWITCH = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\n"

_PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]*$")


def merged_usr_path(path: str) -> str:
    """Where ``path`` lives in a merged-/usr tree: ``/bin/ls`` → ``/usr/bin/ls``."""
    first = path[1:].split("/", 1)[0]
    return "/usr" + path if first in MERGED_DIRS else path


def is_excluded(path: str, kind: str) -> bool:
    """True for documentation the default rules leave out (``path`` already merged)."""
    for tree in EXCLUDED_TREES:
        if path == tree or path.startswith(tree + "/"):
            return True
    if not path.startswith(DOC_DIR + "/"):
        return False
    rest = path[len(DOC_DIR) + 1 :].split("/")
    if len(rest) == 1:  # /usr/share/doc/PKG: kept as the home of its copyright (or a link)
        return kind not in ("dir", "symlink")
    return not (len(rest) == 2 and rest[1] == "copyright")


def package_entries(contents: DebContents, *, keep_docs: bool) -> list[DebEntry]:
    """The entries a package contributes to its layer, the rules applied, plus its status file.

    Merged-/usr paths, documentation left out (unless ``keep_docs``), no path
    twice, and ``/var/lib/dpkg/status.d/PACKAGE`` last.
    """
    chosen: dict[str, tuple[tuple[bool, bool], DebEntry]] = {}
    for entry in contents.entries:
        moved = _merged(entry)
        if not keep_docs and is_excluded(moved.path, moved.kind):
            continue
        # Non-symlinks beat symlinks (a /usr/bin/x -> /bin/x alias would loop
        # after merging), then the /usr spelling beats the aliased one.
        rank = (moved.kind != "symlink", moved.path == entry.path)
        previous = chosen.get(moved.path)
        if previous is None or rank >= previous[0]:
            chosen[moved.path] = (rank, moved)
    entries = [entry for _, entry in chosen.values()]
    if not keep_docs:
        entries = _without_empty_doc_dirs(entries)
    entries.append(dpkg_status_entry(contents))
    return entries


def _merged(entry: DebEntry) -> DebEntry:
    path = merged_usr_path(entry.path)
    if entry.kind == "hardlink":
        return replace(entry, path=path, target=merged_usr_path(entry.target))
    if entry.kind == "symlink" and path != entry.path and not entry.target.startswith("/"):
        before = posixpath.normpath(posixpath.join(posixpath.dirname(entry.path), entry.target))
        after = posixpath.normpath(posixpath.join(posixpath.dirname(path), entry.target))
        if merged_usr_path(before) != merged_usr_path(after):
            # e.g. /lib/x -> ../usr/lib/y would point at /usr/usr/lib/y from /usr/lib.
            return replace(entry, path=path, target=before)
    return replace(entry, path=path) if path != entry.path else entry


def _without_empty_doc_dirs(entries: list[DebEntry]) -> list[DebEntry]:
    used = {posixpath.dirname(e.path) for e in entries if e.path.startswith(DOC_DIR + "/")}
    return [
        e
        for e in entries
        if not (e.kind == "dir" and posixpath.dirname(e.path) == DOC_DIR and e.path not in used)
    ]


def dpkg_status_entry(contents: DebContents) -> DebEntry:
    """``/var/lib/dpkg/status.d/PACKAGE``: the control stanza marked installed.

    This is the distroless layout, which trivy and grype read; ``Status`` goes
    right after ``Package`` as in dpkg's own status file.
    """
    name = contents.package
    if not _PACKAGE_NAME.match(name):
        raise PackageError(
            f"{name!r} is not a valid Debian package name",
            hint="the package index is corrupt; refresh it",
        )
    lines = contents.control.strip("\n").split("\n")
    stanza: list[str] = []
    for line in lines:
        if line.startswith("Status:"):
            continue
        stanza.append(line)
        if line.startswith("Package:"):
            stanza.append("Status: install ok installed")
    if not any(line.startswith("Status:") for line in stanza):
        stanza.insert(0, "Status: install ok installed")
    text = "\n".join(stanza) + "\n"
    return DebEntry(f"{STATUS_DIR}/{name}", "file", 0o644, data=text.encode())


def skeleton_entries() -> list[DebEntry]:
    """The layer every image starts with: base directories, merged-/usr links, users."""
    dirs = [
        ("/etc", 0o755),
        ("/root", 0o700),
        ("/tmp", 0o1777),
        ("/usr", 0o755),
        ("/usr/bin", 0o755),
        ("/usr/lib", 0o755),
        ("/usr/sbin", 0o755),
        ("/var", 0o755),
        ("/var/lib", 0o755),
        ("/var/lib/dpkg", 0o755),
        (STATUS_DIR, 0o755),
        ("/var/tmp", 0o1777),
    ]
    entries = [DebEntry(path, "dir", mode) for path, mode in dirs]
    entries += [DebEntry(f"/{name}", "symlink", 0o777, target=f"usr/{name}") for name in ROOT_LINKS]
    entries += [
        DebEntry("/etc/passwd", "file", 0o644, data=PASSWD.encode()),
        DebEntry("/etc/group", "file", 0o644, data=GROUP.encode()),
        DebEntry("/etc/nsswitch.conf", "file", 0o644, data=NSSWITCH.encode()),
    ]
    return entries


@dataclass(frozen=True)
class Alternative:
    """One ``update-alternatives --install LINK NAME PATH PRIORITY [--slave LINK NAME PATH]...``."""

    package: str
    link: str
    name: str
    path: str
    priority: int
    slaves: tuple[tuple[str, str, str], ...] = ()
    """(link, name, path) of each ``--slave``."""


def parse_alternatives(postinst: str, package: str) -> list[Alternative]:
    """Every fully literal ``update-alternatives --install`` in a postinst script.

    Backslash continuations are joined; a command with a shell variable,
    command substitution or anything else not literal is skipped whole.
    """
    found: list[Alternative] = []
    for line in postinst.replace("\\\n", " ").splitlines():
        if "update-alternatives" not in line:
            continue
        try:
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            tokens = list(lexer)
        except ValueError:
            continue  # unbalanced quotes: not something we can read with certainty
        for i, token in enumerate(tokens):
            if posixpath.basename(token) == "update-alternatives":
                alternative = _parse_install(_command_args(tokens[i + 1 :]), package)
                if alternative is not None:
                    found.append(alternative)
    return found


def _command_args(tokens: list[str]) -> list[str]:
    args: list[str] = []
    for token in tokens:
        if token and all(c in "();<>|&" for c in token):
            break  # end of this simple command
        args.append(token)
    return args


def _parse_install(args: list[str], package: str) -> Alternative | None:
    if any("$" in a or "`" in a or "*" in a for a in args) or "--install" not in args:
        return None
    i = args.index("--install")
    if len(args) < i + 5:
        return None
    link, name, path, priority = args[i + 1 : i + 5]
    if not priority.lstrip("-").isdigit():
        return None
    slaves: list[tuple[str, str, str]] = []
    rest = args[i + 5 :]
    while len(rest) >= 4 and rest[0] == "--slave":
        slaves.append((rest[1], rest[2], rest[3]))
        rest = rest[4:]
    for s_link, s_name, s_path in [(link, name, path), *slaves]:
        if not (s_link.startswith("/") and s_path.startswith("/") and _simple_name(s_name)):
            return None
    return Alternative(package, link, name, path, int(priority), tuple(slaves))


def _simple_name(name: str) -> bool:
    return bool(name) and "/" not in name and name not in (".", "..")


def generated_entries(closure: Sequence[DebContents], *, keep_docs: bool = False) -> list[DebEntry]:
    """What the closure as a whole needs and no package ships: /bin/sh, alternatives, CA bundle.

    Also the ``lib32``/``libx32`` root links when a package ships files there.
    ``keep_docs`` must match the package layers' (it decides which alternative
    targets, e.g. man pages, exist).
    """
    present: dict[str, DebEntry] = {}
    for contents in closure:
        for entry in package_entries(contents, keep_docs=keep_docs):
            present[entry.path] = entry
    made: dict[str, DebEntry] = {}

    for extra in ("lib32", "libx32"):
        if any(p.startswith(f"/usr/{extra}/") for p in present):
            made[f"/{extra}"] = DebEntry(f"/{extra}", "symlink", 0o777, target=f"usr/{extra}")

    if "/usr/bin/sh" not in present and "/usr/bin/bash" in present:
        made["/usr/bin/sh"] = DebEntry("/usr/bin/sh", "symlink", 0o777, target="bash")

    made.update(_alternative_links(closure, present))

    if any(c.package == "ca-certificates" for c in closure):
        certs = sorted(
            (path, entry.content())
            for path, entry in present.items()
            if path.startswith(CA_SOURCE_DIR + "/")
            and path.endswith(".crt")
            and entry.kind in ("file", "hardlink")
        )
        bundle = b"".join(data if data.endswith(b"\n") else data + b"\n" for _, data in certs)
        made[CA_BUNDLE] = DebEntry(CA_BUNDLE, "file", 0o644, data=bundle)

    return [made[path] for path in sorted(made)]


def generated_inputs(contents: DebContents) -> DebContents:
    """What ``generated_entries`` reads of a package: all but file contents (CA certificates aside).

    The layer builder keeps this for every package of the closure until the
    generated layer is made, so that stays small whatever the packages hold.
    """
    ca_dir = CA_SOURCE_DIR + "/"
    entries = tuple(
        e
        if e.size == 0 or e.path.startswith(ca_dir)
        else DebEntry(e.path, e.kind, e.mode, target=e.target)
        for e in contents.entries
    )
    return replace(contents, entries=entries)


def _alternative_links(
    closure: Sequence[DebContents], present: dict[str, DebEntry]
) -> dict[str, DebEntry]:
    candidates: dict[str, list[Alternative]] = {}
    for contents in closure:
        for alt in parse_alternatives(contents.postinst or "", contents.package):
            if merged_usr_path(alt.path) in present:
                candidates.setdefault(alt.name, []).append(alt)
    links: dict[str, DebEntry] = {}
    for name in sorted(candidates):
        best = min(candidates[name], key=lambda a: (-a.priority, a.package, a.path))
        for link, alt_name, path in [(best.link, best.name, best.path), *best.slaves]:
            link = merged_usr_path(link)
            shipped = present.get(link)
            if merged_usr_path(path) not in present or (shipped and shipped.kind != "symlink"):
                continue  # update-alternatives never replaces a real file, nor links to nothing
            via = f"{ALTERNATIVES_DIR}/{alt_name}"
            links[link] = DebEntry(link, "symlink", 0o777, target=via)
            links[via] = DebEntry(via, "symlink", 0o777, target=path)
    return links


def layer_tree(groups: Iterable[Iterable[DebEntry]]) -> list[DebEntry]:
    """One layer's entries, in the order a tar must hold them.

    Later groups (and later entries) win a path; directories merge (the later
    mode wins). Entries below a path that ended up a non-directory are dropped;
    missing parent directories are added (0755). A hard link stays a link only
    when its target is the same file in this layer, else it becomes a copy.
    Sorted by path components, so parents precede children; hard links come
    last, after every file they may name.
    """
    chosen: dict[str, DebEntry] = {}
    for group in groups:
        for entry in group:
            chosen[entry.path] = entry
    for path in sorted(chosen):
        missing: list[str] = []
        parent = posixpath.dirname(path)
        while parent != "/":
            above = chosen.get(parent)
            if above is not None and above.kind != "dir":
                # A later entry made an ancestor a file or link: what was below it is gone.
                del chosen[path]
                missing = []
                break
            if above is None:
                missing.append(parent)
            parent = posixpath.dirname(parent)
        for directory in missing:
            chosen[directory] = DebEntry(directory, "dir", 0o755)
    chosen.pop("/", None)
    result: list[DebEntry] = []
    for entry in chosen.values():
        if entry.kind == "hardlink":
            target = chosen.get(entry.target)
            if (
                target is None
                or target.kind != "file"
                or target.spooled is not entry.spooled
                or target.data != entry.data
            ):
                entry = DebEntry(
                    entry.path, "file", entry.mode, data=entry.data, spooled=entry.spooled
                )
        result.append(entry)
    result.sort(key=lambda e: (e.kind == "hardlink", e.path.split("/")))
    return result
