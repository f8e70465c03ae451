"""Reading from a registry (OCI distribution spec): manifests and blobs, each checked.

The reading twin of ``push.py``, through the same ``RegistryClient`` (scheme,
authentication, retries, user agent). Everything read is checked against the
digest it was asked for before a caller sees it.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx

from polyarch import media_types
from polyarch.determinism import Digest, sha256_digest
from polyarch.errors import IntegrityError, RegistryError
from polyarch.http import new_client
from polyarch.registry.client import RegistryClient
from polyarch.registry.responses import registry_message

MANIFEST_ACCEPT = ", ".join(
    [
        media_types.OCI_INDEX,
        media_types.OCI_MANIFEST,
        media_types.DOCKER_LIST,
        media_types.DOCKER_MANIFEST,
    ]
)
_REDIRECTS = (301, 302, 303, 307, 308)
BLOB_TIMEOUT = 120.0
TAGS_PAGE = 1000
"""Tags asked for per request of the tag list."""
MAX_TAGS = 100_000
"""A repository listing more tags than this is refused rather than read without end."""


class Puller:
    """Reads one repository of a registry; ``close`` it (or use ``with``) when done.

    Safe to share between threads: blobs are usually fetched in parallel.
    """

    def __init__(self, client: RegistryClient, repository: str) -> None:
        self.client = client
        self.repository = repository
        self.scope = f"repository:{repository}:pull"
        # Registries hand blobs to a storage service by redirect: fetched there
        # with a client of its own, which never carries our credentials.
        self._storage: httpx.Client | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> Puller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._storage is not None:
            self._storage.close()

    def manifest(
        self, reference: str, *, not_found_hint: str | None = None
    ) -> tuple[Digest, dict[str, Any], bytes]:
        """The manifest or index ``reference`` (a tag or a digest): digest, document, bytes.

        A digest reference is checked against the bytes received.
        """
        where = f"{self.client.registry}/{self.repository}:{reference}"
        response = self.client.request(
            "GET",
            f"/v2/{self.repository}/manifests/{reference}",
            scopes=(self.scope,),
            headers={"Accept": MANIFEST_ACCEPT},
        )
        if response.status_code == 404:
            raise RegistryError(f"{where}: not found", hint=not_found_hint)
        if response.status_code != 200:
            raise RegistryError(f"{where}: {registry_message(response)}")
        data = response.content
        actual = sha256_digest(data)
        if reference.startswith("sha256:") and actual != reference:
            raise IntegrityError(
                f"{where}: manifest arrived as {actual}",
                hint="the registry serves altered data; do not trust it",
            )
        try:
            document = json.loads(data)
        except ValueError:
            raise RegistryError(f"{where}: manifest {actual} is not JSON") from None
        if not isinstance(document, dict):
            raise RegistryError(f"{where}: manifest {actual} is not a JSON object")
        return actual, document, data

    def tags(self) -> list[str] | None:
        """Every tag of the repository (page by page), or None if the repository does not exist."""
        found: list[str] = []
        url: str | httpx.URL = httpx.URL(
            f"/v2/{self.repository}/tags/list", params={"n": TAGS_PAGE}
        )
        while True:
            response = self.client.request("GET", url, scopes=(self.scope,))
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise RegistryError(
                    f"{self.client.registry}/{self.repository}: cannot list tags: "
                    f"{registry_message(response)}"
                )
            try:
                page = response.json().get("tags") or []
            except (ValueError, AttributeError):
                raise RegistryError(
                    f"{self.client.registry}/{self.repository}: the tag list is not JSON"
                ) from None
            found += [t for t in page if isinstance(t, str)]
            following = response.links.get("next", {}).get("url")
            if not following or not page or len(found) > MAX_TAGS:
                break
            url = following
        if len(found) > MAX_TAGS:
            raise RegistryError(
                f"{self.client.registry}/{self.repository} lists more than {MAX_TAGS} tags",
                hint="use a repository of its own for the cache",
            )
        return sorted(set(found))

    def blob(self, digest: Digest, size: int) -> bytes:
        """The blob ``digest``, checked to have ``size`` bytes and that digest."""
        response = self.client.request(
            "GET", f"/v2/{self.repository}/blobs/{digest}", scopes=(self.scope,)
        )
        if response.status_code in _REDIRECTS and "location" in response.headers:
            with self._lock:
                if self._storage is None:
                    self._storage = new_client(BLOB_TIMEOUT)
                storage = self._storage
            response = storage.get(str(self.client.url(response.headers["location"])))
        if response.status_code != 200:
            raise RegistryError(
                f"{self.client.registry}/{self.repository}: blob {digest}: "
                f"{registry_message(response)}",
                hint="the artifact is incomplete; push it again",
            )
        data = response.content
        if len(data) != size or sha256_digest(data) != digest:
            raise IntegrityError(
                f"{self.client.registry}/{self.repository}: blob {digest} does not match "
                "its descriptor",
                hint="the registry serves altered data; push it again",
            )
        return data
