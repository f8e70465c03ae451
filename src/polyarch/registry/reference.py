"""Image references: ``[scheme://]host[:port]/path[:tag][@digest]``, normalised as docker does."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from polyarch.determinism import Digest
from polyarch.errors import UsageError
from polyarch.image.oci import TAG_PATTERN

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
HUB_ALIASES = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)
"""Every spelling of Docker Hub's host in references and docker config keys."""

# The grammar of github.com/distribution/reference, restated.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (with or without a port)."""
    name = host_without_port(host)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_without_port(host: str) -> str:
    if host.startswith("["):
        return host[1 : host.index("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed image reference. ``registry`` is what users write (``docker.io``)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None
    plain_http: bool = False
    """The user wrote ``http://``: talk plain HTTP (allowed to loopback or with --insecure)."""

    @property
    def api_host(self) -> str:
        """The host the distribution API lives on (Docker Hub's differs from its name)."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.registry, self.repository, tag, None, self.plain_http)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str) -> Reference:
    """Parse ``[http://|https://]host[:port]/path[:tag][@digest]``; UsageError if invalid.

    A first component without ``.`` or ``:`` (and not ``localhost``) is a Docker
    Hub path, so ``alpine`` is ``docker.io/library/alpine``.
    """
    original = text
    plain_http = False
    for scheme in ("http://", "https://", "docker://"):
        if text.startswith(scheme):
            plain_http = scheme == "http://"
            text = text[len(scheme) :]
    hint = "write it as host[:port]/path[:tag], e.g. ghcr.io/owner/tool:1.0"
    digest: str | None = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST.match(digest):
            raise UsageError(f"invalid digest in image reference {original!r}", hint=hint)
    tag: str | None = None
    last = text.rsplit("/", 1)[-1]
    if ":" in last:
        text, tag = text.rsplit(":", 1)
        if not TAG_PATTERN.fullmatch(tag):
            raise UsageError(f"invalid tag {tag!r} in image reference {original!r}", hint=hint)
    first, _, rest = text.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, path = first, rest
    else:
        registry, path = DOCKER_HUB, text
    if registry in HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"
    if not _REPOSITORY.match(path) or len(path) > 255:
        raise UsageError(
            f"invalid repository {path!r} in image reference {original!r}",
            hint="repository names are lowercase letters, digits and . _ - separated by /",
        )
    return Reference(registry, path, tag, Digest(digest) if digest else None, plain_http)
