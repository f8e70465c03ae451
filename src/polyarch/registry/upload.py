"""Upload one blob to a registry: a monolithic PUT, or chunks for big ones (OCI distribution).

A retried upload starts a new session (the old one may hold partial bytes);
a registry that limits request bodies (413) gets chunks; the bytes sent are
checked against the blob's digest first, and the registry's answer after.
"""

from __future__ import annotations

import hashlib

import httpx

from polyarch.errors import ImageError, RegistryError
from polyarch.registry.client import RegistryClient, RetryableError
from polyarch.registry.plan import Blob
from polyarch.registry.responses import registry_message

_OCTET = {"Content-Type": "application/octet-stream"}


class BlobUpload:
    """Uploads blobs to one repository."""

    def __init__(
        self, client: RegistryClient, repo: str, scope: str, chunk_size: int, chunked_above: int
    ) -> None:
        self.client = client
        self.repo = repo
        self.scope = scope
        self.chunk_size = chunk_size
        self.chunked_above = chunked_above

    def _start_session(self) -> tuple[str, int]:
        response = self.client.request(
            "POST", f"/v2/{self.repo}/blobs/uploads/", scopes=(self.scope,), retry=False
        )
        location = response.headers.get("location")
        if response.status_code != 202 or not location:
            raise RegistryError(
                f"{self.client.registry} refused to start an upload to {self.repo}: {registry_message(response)}",
                hint="check that the repository name is allowed and you may push to it",
            )
        try:
            min_length = int(response.headers.get("oci-chunk-min-length", "0"))
        except ValueError:
            min_length = 0
        return location, min_length

    def send(self, blob: Blob, session: str | None) -> None:
        """Upload ``blob``: in the mount session ``session`` if given, else in a new one."""

        def attempt() -> None:
            nonlocal session
            # A retried upload restarts with a new session: the old one may hold partial bytes.
            if session is not None:
                location, min_length = session, 0
                session = None
            else:
                location, min_length = self._start_session()
            if blob.size > self.chunked_above:
                self._upload_chunked(blob, location, min_length)
                return
            data = _read_verified(blob)
            response = self.client.request(
                "PUT",
                _with_digest(location, blob.digest),
                scopes=(self.scope,),
                headers=_OCTET,
                content=data,
                retry=False,
            )
            if response.status_code == 413:
                # Something between us and the registry limits request bodies: send chunks.
                self._upload_chunked(blob, self._start_session()[0], min_length)
                return
            self._finish(response, blob)

        self.client.retrying(attempt)

    def _upload_chunked(self, blob: Blob, location: str, min_length: int) -> None:
        size = max(self.chunk_size, min_length)
        hasher = hashlib.sha256()
        offset = 0
        with blob.path.open("rb") as f:
            while offset < blob.size:
                chunk = f.read(size)
                if not chunk:
                    break
                hasher.update(chunk)
                end = offset + len(chunk) - 1
                response = self.client.request(
                    "PATCH",
                    location,
                    scopes=(self.scope,),
                    retry=False,
                    headers={**_OCTET, "Content-Range": f"{offset}-{end}"},
                    content=chunk,
                )
                if response.status_code == 416 or response.status_code == 404:
                    raise RetryableError(
                        f"upload of {blob.digest} lost its place: {registry_message(response)}"
                    )
                if response.status_code != 202:
                    raise RegistryError(
                        f"{self.client.registry} refused a chunk of {blob.digest}: {registry_message(response)}"
                    )
                reported = response.headers.get("range", "")
                if reported and not reported.endswith(f"-{end}"):
                    raise RetryableError(
                        f"registry reports range {reported} after sending up to {end}"
                    )
                location = response.headers.get("location") or location
                offset = end + 1
        if offset != blob.size or "sha256:" + hasher.hexdigest() != blob.digest:
            self.client.request("DELETE", location, scopes=(self.scope,), retry=False)
            raise ImageError(
                f"blob {blob.digest} at {blob.path} is corrupt", hint="rebuild the image"
            )
        response = self.client.request(
            "PUT",
            _with_digest(location, blob.digest),
            scopes=(self.scope,),
            headers={**_OCTET, "Content-Length": "0"},
            content=b"",
            retry=False,
        )
        self._finish(response, blob)

    def _finish(self, response: httpx.Response, blob: Blob) -> None:
        if response.status_code == 404:
            raise RetryableError(
                f"upload session of {blob.digest} vanished: {registry_message(response)}"
            )
        if response.status_code != 201:
            raise RegistryError(
                f"{self.client.registry} refused blob {blob.digest}: {registry_message(response)}"
            )
        check_digest(self.client, response, blob.digest, "blob")


def check_digest(
    client: RegistryClient, response: httpx.Response, expected: str, what: str
) -> None:
    """A registry that names another digest than the bytes we sent changed them: refuse."""
    got = response.headers.get("docker-content-digest")
    if got and got != expected:
        raise RegistryError(
            f"{client.registry} stored {what} {expected} as {got}",
            hint="the registry changed the bytes; do not trust this push",
        )


def _read_verified(blob: Blob) -> bytes:
    try:
        data = blob.path.read_bytes()
    except FileNotFoundError:
        raise ImageError(
            f"blob {blob.digest} vanished from {blob.path}", hint="rebuild the image"
        ) from None
    if len(data) != blob.size or "sha256:" + hashlib.sha256(data).hexdigest() != blob.digest:
        raise ImageError(f"blob {blob.digest} at {blob.path} is corrupt", hint="rebuild the image")
    return data


def _with_digest(location: str, digest: str) -> httpx.URL:
    # Location may already carry query parameters (upload state); keep them.
    return httpx.URL(location).copy_merge_params({"digest": digest})
