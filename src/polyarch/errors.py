"""Every way polyarch can fail, one class per kind, each with its own exit code.

The library raises these; only the CLI turns them into one line on stderr and
an exit code. Messages are written for the user: what went wrong and what to do.
"""

from __future__ import annotations

import errno
import os

REBUILD_NEEDED = 100
"""Not an error: the documented exit status of ``polyarch outdated`` when a rebuild is due
(newer packages in the sources than in the lock or the last build). Out of the errors'
range, as yum/dnf ``check-update`` exit 100 when updates are available."""


class PolyarchError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class UsageError(PolyarchError):
    """The command line asks for something that cannot be done."""

    exit_code = 2


class ConfigError(PolyarchError):
    """containers.toml (or containers.lock) is missing, malformed or invalid."""

    exit_code = 3


class UnknownContainerError(ConfigError):
    """A container name that containers.toml does not define."""

    exit_code = 4


class MirrorError(PolyarchError):
    """The Debian mirror cannot be found or reached."""

    exit_code = 10


class SignatureError(PolyarchError):
    """InRelease/Release.gpg is not signed by a key in the keyring."""

    exit_code = 11


class IntegrityError(PolyarchError):
    """A file's size or SHA256 does not match what the signed chain says."""

    exit_code = 12


class ResolveError(PolyarchError):
    """The package closure cannot be computed (unknown package, unsatisfiable, conflict)."""

    exit_code = 13


class FetchError(PolyarchError):
    """A package could not be downloaded after retries."""

    exit_code = 14


class PackageError(PolyarchError):
    """A .deb is malformed or tries to escape the image (path traversal, bad links)."""

    exit_code = 15


class ImageError(PolyarchError):
    """An image or its outputs cannot be written or read."""

    exit_code = 16


class EvidenceError(PolyarchError):
    """An image's SBOM, provenance or signature is missing or does not match the image."""

    exit_code = 17


class KeyFileError(PolyarchError):
    """A signing or verification key cannot be read, made or used."""

    exit_code = 18


class EngineError(PolyarchError):
    """docker/podman is missing, not answering, or refused to load or run."""

    exit_code = 20


class EmulationError(PolyarchError):
    """A foreign system cannot run here (no qemu-user, no binfmt_misc handler)."""

    exit_code = 21


class ContainerTestError(PolyarchError):
    """A container's smoke test failed."""

    exit_code = 22


class RegistryError(PolyarchError):
    """A registry refused a request, or cannot be reached."""

    exit_code = 30


class RegistryAuthError(RegistryError):
    """The registry refused the credentials."""

    exit_code = 31


class CacheError(PolyarchError):
    """The cache is unusable, or something needed offline is not in it."""

    exit_code = 40


class LockError(PolyarchError):
    """containers.lock is missing or no longer matches containers.toml."""

    exit_code = 41


class ToolMissingError(PolyarchError):
    """A host program polyarch needs (docker, qemu, skopeo, ...) is not installed."""

    exit_code = 50


class HostError(PolyarchError):
    """The host refused a file operation: disk full, read-only, permission, name too long."""

    exit_code = 60

    @classmethod
    def of(cls, exc: OSError, where: str | None = None) -> HostError:
        """The one-line error for ``exc``; ``where`` says what was being written (else its path)."""
        what, hint = _HOST_ERRORS.get(
            exc.errno or 0, (exc.strerror or type(exc).__name__, "check the path and try again")
        )
        path = exc.filename if exc.filename is not None else None
        place = where or (os.fsdecode(path) if path is not None else "")
        return cls(f"{place}: {what}" if place else what, hint=hint)


_HOST_ERRORS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: (
        "no space left on the device",
        "free some space, or use --out or --cache-dir on another disk",
    ),
    errno.EDQUOT: ("disk quota exceeded", "free some space, or use another --out or --cache-dir"),
    errno.EROFS: (
        "read-only file system",
        "write somewhere writable: --out DIR, --cache-dir DIR or POLYARCH_CACHE_DIR",
    ),
    errno.EACCES: (
        "permission denied",
        "check the owner and mode of the directory, or use another",
    ),
    errno.EPERM: ("operation not permitted", "check the owner and mode, or use another directory"),
    errno.ENAMETOOLONG: (
        "a file name is too long for the file system",
        "use a shorter --out path or container name",
    ),
    errno.EMFILE: ("too many open files", "raise the limit (ulimit -n) or use fewer --jobs"),
    errno.EIO: ("input/output error", "the disk may be failing; check it (dmesg)"),
}
