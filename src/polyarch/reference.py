"""Image names: registry references (``[scheme://]host[:port]/path[:tag][@digest]``,
normalised as docker does), local ``NAME[:TAG]`` names, and the tag grammar.

One grammar for every name polyarch reads or writes: tags pushed to a registry,
``RepoTags`` in a docker-archive, ``org.opencontainers.image.ref.name`` in an
OCI layout.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from polyarch.determinism import DIGEST_PATTERN, Digest
from polyarch.errors import ImageError, UsageError

DEFAULT_TAG = "latest"
"""The tag of an image when none is named, as docker uses it."""

# \Z, not $: $ also matches before a trailing newline, which no tag may hold.
TAG_PATTERN = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9._-]{0,127}\Z")
"""A tag, as the distribution spec and docker allow it (also an OCI layout's ref name)."""
TAG_HINT = "tags are up to 128 letters, digits, _ . - and do not start with . or -"

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
HUB_ALIASES = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)
"""Every spelling of Docker Hub's host in references and docker config keys."""

# The grammar of github.com/distribution/reference, restated.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_LOCAL_NAME = re.compile(rf"^(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*$")


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
        if not DIGEST_PATTERN.fullmatch(digest):
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


def is_valid_tag(tag: str) -> bool:
    return TAG_PATTERN.fullmatch(tag) is not None


def check_tag(tag: str) -> str:
    """``tag`` if it is a valid tag, else ImageError."""
    if not is_valid_tag(tag):
        raise ImageError(f"tag {tag!r} is not a valid image tag", hint=TAG_HINT)
    return tag


def split_local_name(name: str) -> tuple[str, str]:
    """``[host/]repo[:tag]`` as an engine names a local image → (repo, tag); tag default ``latest``.

    Unlike ``parse_reference`` nothing is normalised: ``fd:latest`` stays ``fd``,
    as ``docker load`` and ``podman load`` show it.
    """
    if "@" in name:
        raise ImageError(
            f"{name!r} names a digest, not a tag", hint="give NAME:TAG, e.g. fd:latest"
        )
    repo, sep, tag = name.rpartition(":")
    if not sep or "/" in tag:  # no colon, or the colon belongs to host:port
        repo, tag = name, DEFAULT_TAG
    if not _LOCAL_NAME.match(repo):
        raise ImageError(
            f"{name!r} is not a valid image name", hint="use lower-case NAME:TAG, e.g. fd:latest"
        )
    return repo, check_tag(tag)
