"""One image's bill of materials, before it is written in any format.

Built from the resolved closure and each package's cached ``PackageFacts``,
so a warm build needs no .deb. DEPENDS_ON edges come from each package's own
Depends and Pre-Depends fields, matched against the closure (a name in it,
or a package in it that Provides the name): the same for a locked build,
whose closure carries no resolver reasons, as for a fresh one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote

from polyarch import __version__
from polyarch.attest.facts import PackageFacts
from polyarch.determinism import Digest
from polyarch.platforms import System

_RELATION_NAME = re.compile(r"\s*([a-z0-9][a-z0-9+.-]*)")


@dataclass(frozen=True, slots=True)
class ArchiveSource:
    """A signed Debian archive the packages came from."""

    url: str
    """Mirror base URL (holds dists/ and pool/)."""
    suite: str
    codename: str
    release_file: str | None = None
    """``InRelease`` (or ``Release``) when the build read it; None for a --locked build."""
    release_sha256: str | None = None

    @property
    def release_url(self) -> str | None:
        if self.release_file is None:
            return None
        return f"{self.url}/dists/{self.suite}/{self.release_file}"


@dataclass(frozen=True, slots=True)
class OperatingSystem:
    """The distribution the image's packages belong to, from its ``/etc/os-release``."""

    id: str
    version: str | None
    codename: str | None

    @property
    def distro(self) -> str:
        """The purl ``distro`` qualifier: ``debian-12``, else the codename."""
        if self.version:
            return f"{self.id}-{self.version}"
        return self.codename or self.id


@dataclass(frozen=True, slots=True)
class InventoryPackage:
    facts: PackageFacts
    sha256: str
    """The .deb's SHA256 (lower-case hex)."""
    url: str | None
    """Where the .deb is downloaded from."""
    root: bool
    """One of the container's own packages (``package``, ``packages``), not a dependency."""
    depends_on: tuple[str, ...]
    """Names of the packages of the closure it depends on, sorted."""
    license: str | None
    """SPDX expression: its own, else that of the package its doc directory links to."""
    license_texts: tuple[tuple[str, str], ...]
    distro: str
    """The purl ``distro`` qualifier (``debian-12``)."""

    @property
    def name(self) -> str:
        return self.facts.name

    @property
    def purl(self) -> str:
        return deb_purl(self.facts, self.distro)


@dataclass(frozen=True, slots=True)
class ImageInventory:
    """Everything the SBOMs of one system image say."""

    container: str
    system: System
    digest: Digest | None
    """The image manifest's digest; None for the copy of the SBOM inside the image."""
    version: str
    """The container's own package version."""
    created: int
    """SOURCE_DATE_EPOCH."""
    os: OperatingSystem
    packages: tuple[InventoryPackage, ...]
    """Sorted by name."""
    sources: tuple[ArchiveSource, ...]
    tool: str = "polyarch"
    tool_version: str = __version__

    @property
    def image_purl(self) -> str:
        """``pkg:oci/NAME@sha256:...?arch=...``, or without ``@`` inside the image."""
        qualifiers = {"arch": self.system.oci_architecture}
        if self.system.oci_variant:
            qualifiers["variant"] = self.system.oci_variant
        return purl("oci", None, self.container, self.digest, qualifiers)


def purl(
    kind: str, namespace: str | None, name: str, version: str | None, qualifiers: Mapping[str, str]
) -> str:
    """A package URL (purl spec), encoded as packageurl-python does: ``:`` stays, ``+`` is %2B."""
    text = f"pkg:{kind}/" + (f"{_quote(namespace)}/" if namespace else "") + _quote(name)
    if version:
        text += "@" + _quote(version)
    pairs = [(k, v) for k, v in sorted(qualifiers.items()) if v]
    if pairs:
        text += "?" + "&".join(f"{k}={_quote(v)}" for k, v in pairs)
    return text


def _quote(text: str) -> str:
    return quote(text, safe=":")


def deb_purl(facts: PackageFacts, distro: str) -> str:
    """``pkg:deb/debian/NAME@VERSION?arch=ARCH&distro=DISTRO``."""
    return purl(
        "deb",
        "debian",
        facts.name,
        facts.version,
        {"arch": facts.architecture, "distro": distro},
    )


def operating_system(facts: Sequence[PackageFacts], codename: str | None) -> OperatingSystem:
    """The OS from the os-release a package of the closure ships (base-files), else Debian."""
    for f in sorted(facts, key=lambda f: f.name):
        if f.os_release:
            return OperatingSystem(
                f.os_release.get("ID") or "debian",
                f.os_release.get("VERSION_ID") or None,
                f.os_release.get("VERSION_CODENAME") or codename,
            )
    return OperatingSystem("debian", None, codename)


def relation_names(field: str) -> list[list[str]]:
    """``a (>= 1) | b, c:any`` → ``[["a", "b"], ["c"]]``: each clause's alternatives, by name."""
    clauses: list[list[str]] = []
    for clause in field.split(","):
        names = [m.group(1) for alt in clause.split("|") if (m := _RELATION_NAME.match(alt))]
        if names:
            clauses.append(names)
    return clauses


def dependency_edges(facts: Sequence[PackageFacts]) -> dict[str, tuple[str, ...]]:
    """Name → names of the closure packages its Pre-Depends and Depends are satisfied by.

    Per clause, the first alternative the closure has: by that name, else a
    package providing it (the first by name). Clauses the closure cannot
    satisfy (excluded on purpose) add no edge.
    """
    names = {f.name for f in facts}
    providers: dict[str, list[str]] = {}
    for f in sorted(facts, key=lambda f: f.name):
        for clause in relation_names(f.provides):
            providers.setdefault(clause[0], []).append(f.name)
    edges: dict[str, tuple[str, ...]] = {}
    for f in facts:
        targets: set[str] = set()
        for clause in relation_names(f.pre_depends) + relation_names(f.depends):
            for alternative in clause:
                target = alternative if alternative in names else None
                if target is None and providers.get(alternative):
                    target = providers[alternative][0]
                if target is not None:
                    if target != f.name:
                        targets.add(target)
                    break
        edges[f.name] = tuple(sorted(targets))
    return edges


def inventory_packages(
    closure: Sequence[tuple[str, str | None, bool]],
    facts: Mapping[str, PackageFacts],
    distro: str,
) -> tuple[InventoryPackage, ...]:
    """The packages of one image: ``closure`` is (sha256, .deb URL, is a root) per package."""
    chosen = [facts[sha256] for sha256, _url, _root in closure]
    edges = dependency_edges(chosen)
    by_name = {f.name: f for f in chosen}
    packages = []
    for sha256, url, root in closure:
        f = facts[sha256]
        owner = f
        if f.license is None and f.doc_link in by_name:
            owner = by_name[f.doc_link]  # e.g. libgcc-s1's documentation is gcc-12-base's
        packages.append(
            InventoryPackage(
                facts=f,
                sha256=sha256,
                url=url,
                root=root,
                depends_on=edges[f.name],
                license=owner.license,
                license_texts=owner.license_texts,
                distro=distro,
            )
        )
    return tuple(sorted(packages, key=lambda p: (p.name, p.facts.architecture, p.sha256)))


def parse_deb_purl(text: str) -> tuple[str, str, str] | None:
    """``pkg:deb/NAMESPACE/NAME@VERSION?arch=A...`` → (name, version, arch); None if not one."""
    if not text.startswith("pkg:deb/"):
        return None
    rest, _, query = text[len("pkg:deb/") :].partition("?")
    path, _, version = rest.partition("@")
    name = path.rsplit("/", 1)[-1]
    qualifiers = dict(pair.partition("=")[::2] for pair in query.split("&") if pair)
    return unquote(name), unquote(version), unquote(qualifiers.get("arch", ""))
