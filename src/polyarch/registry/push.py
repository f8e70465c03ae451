"""Push an OCI image layout to a registry (OCI distribution spec).

Order: blobs (HEAD to skip what exists, cross-repository mount where this
machine knows the registry has the blob, else upload, in parallel), then
manifests by digest, then the root by tag, then extra tags as PUTs of the same
bytes. When the repository already holds the root by digest, blobs and child
manifests are skipped (a registry accepts a manifest only once all it names is
present), so a warm re-push is a HEAD and the tag PUTs. A registry that
answers with a different digest than the bytes we hashed is an error.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from polyarch.determinism import Digest
from polyarch.errors import RegistryAuthError, RegistryError, UsageError
from polyarch.progress import NULL_PROGRESS, Progress
from polyarch.reference import DEFAULT_TAG, TAG_HINT, Reference, is_valid_tag, parse_reference
from polyarch.registry.client import (
    ANONYMOUS,
    RegistryAccess,
    RegistryClient,
)
from polyarch.registry.plan import Blob, Format, Manifest, PushPlan, convert_plan, read_layout
from polyarch.registry.records import BlobRecord, default_record_dir, record_path
from polyarch.registry.responses import error_codes, registry_message
from polyarch.registry.upload import BlobUpload, check_digest

MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class PushResult:
    """What a push did. ``digest`` is the root's (the index's) digest as pushed."""

    reference: str
    """``registry/repository@digest``."""
    digest: Digest
    media_type: str
    tags: tuple[str, ...]
    blobs_uploaded: int
    blobs_skipped: int
    """Already in the repository (HEAD answered 200)."""
    blobs_mounted: int
    """Mounted from another repository of the same registry, no bytes sent."""
    bytes_uploaded: int
    manifests_pushed: int
    """Manifest PUTs, including one per tag."""
    requests: int
    retries: int


@dataclass
class _Counts:
    uploaded: int = 0
    skipped: int = 0
    mounted: int = 0
    bytes: int = 0
    manifests: int = 0
    present: list[str] = field(default_factory=list)


class _Pusher:
    def __init__(
        self,
        client: RegistryClient,
        ref: Reference,
        record: BlobRecord,
        mount_from: Sequence[str],
        progress: Progress,
        chunk_size: int,
        chunked_above: int,
    ) -> None:
        self.client = client
        self.ref = ref
        self.repo = ref.repository
        self.record = record
        self.mount_from = list(mount_from)
        self.progress = progress
        self.scope = f"repository:{self.repo}:pull,push"
        self.upload = BlobUpload(client, self.repo, self.scope, chunk_size, chunked_above)
        self.counts = _Counts()
        self.task = 0
        self._lock = threading.Lock()

    # -- blobs ------------------------------------------------------------------

    def push_blob(self, blob: Blob) -> None:
        self._push_blob(blob, recheck=False)

    def recheck_blob(self, blob: Blob) -> None:
        """Push ``blob`` again if the repository lacks it now (counted only then)."""
        self._push_blob(blob, recheck=True)

    def _push_blob(self, blob: Blob, *, recheck: bool) -> None:
        client = self.client
        head = client.request("HEAD", f"/v2/{self.repo}/blobs/{blob.digest}", scopes=(self.scope,))
        if head.status_code == 200:
            if not recheck:
                self.count(skipped=1, blob=blob)
            return
        if head.status_code != 404:
            raise RegistryError(
                f"{client.registry}: HEAD blob {blob.digest}: {registry_message(head)}"
            )
        session: str | None = None
        for other in self._mount_candidates(blob):
            try:
                response = client.request(
                    "POST",
                    httpx.URL(
                        f"/v2/{self.repo}/blobs/uploads/",
                        params={"mount": blob.digest, "from": other},
                    ),
                    scopes=(self.scope, f"repository:{other}:pull"),
                )
            except RegistryAuthError:
                continue  # no pull access to the other repository: upload instead
            if response.status_code == 201:
                self._check_digest(response, blob.digest, "blob")
                self.count(mounted=1, blob=blob)
                return
            if response.status_code == 202 and response.headers.get("location"):
                session = response.headers["location"]
                break
        self.upload.send(blob, session)
        self.count(uploaded=1, blob=blob)

    def _mount_candidates(self, blob: Blob) -> list[str]:
        candidates = [*self.mount_from, *self.record.repositories(blob.digest)]
        return [r for r in dict.fromkeys(candidates) if r != self.repo][:3]

    def count(self, *, blob: Blob, uploaded: int = 0, skipped: int = 0, mounted: int = 0) -> None:
        with self._lock:
            self.counts.uploaded += uploaded
            self.counts.skipped += skipped
            self.counts.mounted += mounted
            self.counts.bytes += blob.size if uploaded else 0
            self.counts.present.append(blob.digest)
        self.progress.advance(self.task, blob.size)

    def result(self, plan: PushPlan, tags: tuple[str, ...]) -> PushResult:
        counts = self.counts
        return PushResult(
            reference=f"{self.ref.name}@{plan.root.digest}",
            digest=plan.root.digest,
            media_type=plan.root.media_type,
            tags=tags,
            blobs_uploaded=counts.uploaded,
            blobs_skipped=counts.skipped,
            blobs_mounted=counts.mounted,
            bytes_uploaded=counts.bytes,
            manifests_pushed=counts.manifests,
            requests=self.client.requests,
            retries=self.client.retried,
        )

    # -- manifests ----------------------------------------------------------------

    def has_manifest(self, manifest: Manifest) -> bool:
        """True if the repository already holds ``manifest`` by digest (these exact bytes)."""
        try:
            response = self.client.request(
                "HEAD",
                f"/v2/{self.repo}/manifests/{manifest.digest}",
                scopes=(self.scope,),
                headers={"Accept": manifest.media_type},
            )
        except RegistryAuthError:
            return False  # a registry that will not say gets the full push, which checks each blob
        return (
            response.status_code == 200
            and response.headers.get("docker-content-digest", manifest.digest) == manifest.digest
        )

    def put_manifest(self, manifest: Manifest, reference: str) -> None:
        response = self.client.request(
            "PUT",
            f"/v2/{self.repo}/manifests/{reference}",
            scopes=(self.scope,),
            headers={"Content-Type": manifest.media_type},
            content=manifest.data,
        )
        if response.status_code not in (200, 201):
            error = _BlobsUnknown if error_codes(response) & _BLOBS_UNKNOWN else RegistryError
            raise error(
                f"{self.client.registry} refused manifest {manifest.digest} as {self.repo}:{reference}: "
                f"{registry_message(response)}",
                hint="the registry may not accept this media type; try --format docker",
            )
        self._check_digest(response, manifest.digest, "manifest")
        self.counts.manifests += 1

    def _check_digest(self, response: httpx.Response, expected: str, what: str) -> None:
        check_digest(self.client, response, expected, what)


def push_layout(
    layout: Path,
    ref: str,
    *,
    tags: Sequence[str] = (),
    access: RegistryAccess = ANONYMOUS,
    jobs: int = 4,
    format: Format = "oci",
    progress: Progress = NULL_PROGRESS,
    mount_from: Sequence[str] = (),
    record_dir: Path | None = None,
    chunk_size: int = 32 * MIB,
    chunked_above: int = 256 * MIB,
) -> PushResult:
    """Push the image (index) in OCI layout ``layout`` to ``ref``, then tag it with ``tags``.

    ``ref`` is ``host[:port]/repo[:tag]`` (``http://`` forces plain HTTP, which
    is refused except to loopback or with ``access.insecure``). The tag is ref's, else
    the layout's ref name, else the first of ``tags``, else ``latest``.
    ``mount_from`` names other repositories of the same registry to mount blobs
    from; the record in ``record_dir`` (default: the polyarch cache) adds those
    this machine pushed before. Blobs above ``chunked_above`` bytes go in
    ``chunk_size`` PATCHes (at least the registry's OCI-Chunk-Min-Length).
    """
    reference = parse_reference(ref)
    plan = convert_plan(read_layout(layout, reference.tag), format)
    return push_plan(
        plan,
        reference,
        _tags_of(reference, plan, tags),
        access=access,
        jobs=jobs,
        progress=progress,
        mount_from=mount_from,
        record_dir=record_dir,
        chunk_size=chunk_size,
        chunked_above=chunked_above,
    )


def push_plan(
    plan: PushPlan,
    reference: Reference,
    tags: Sequence[str],
    *,
    access: RegistryAccess = ANONYMOUS,
    jobs: int = 4,
    progress: Progress = NULL_PROGRESS,
    mount_from: Sequence[str] = (),
    record_dir: Path | None = None,
    chunk_size: int = 32 * MIB,
    chunked_above: int = 256 * MIB,
) -> PushResult:
    """Push ``plan`` to ``reference``'s repository: the root under each of ``tags``, or
    by its digest alone (untagged) when ``tags`` is empty."""
    record = BlobRecord(record_path(record_dir or default_record_dir(), reference.api_host))
    shown = reference.with_tag(tags[0]) if tags else f"{reference.name}@{plan.root.digest}"
    with access.client(reference) as client:
        client.ping()
        pusher = _Pusher(client, reference, record, mount_from, progress, chunk_size, chunked_above)
        pusher.task = progress.task(f"push {shown}", total=sum(b.size for b in plan.blobs))
        try:
            _send(pusher, plan, tags, jobs)
        finally:
            for digest in pusher.counts.present:
                record.add(digest, reference.repository)
            record.save()
            progress.done(pusher.task)
        return pusher.result(plan, tuple(tags))


def _tags_of(reference: Reference, plan: PushPlan, tags: Sequence[str]) -> list[str]:
    """The tag the root is PUT under first (the reference's, the layout's, the first
    given, ``latest``), then the other tags, each checked."""
    for tag in tags:
        if not is_valid_tag(tag):
            raise UsageError(f"invalid tag {tag!r}", hint=TAG_HINT)
    if reference.digest and reference.digest != plan.root.digest:
        raise UsageError(
            f"{reference} names digest {reference.digest}, "
            f"but the layout's image is {plan.root.digest}",
            hint="drop the @digest or push the matching layout",
        )
    primary = reference.tag or plan.tag or (tags[0] if tags else DEFAULT_TAG)
    return [primary, *(t for t in dict.fromkeys(tags) if t != primary)]


def _send(pusher: _Pusher, plan: PushPlan, tags: Sequence[str], jobs: int) -> None:
    """Blobs, then child manifests by digest, then the root under each of ``tags``
    (by its digest when there is no tag, unless the registry holds it already)."""
    if pusher.has_manifest(plan.root):
        # The registry holds this exact root, and it only accepted it with every
        # child and blob present: a warm re-push is only the tag PUTs.
        for blob in plan.blobs:
            pusher.count(skipped=1, blob=blob)
    else:
        _parallel(pusher.push_blob, plan.blobs, jobs)
        for manifest in plan.manifests[:-1]:
            _put_manifest(pusher, plan, manifest, manifest.digest, jobs)
        tags = tags or [plan.root.digest]
    for tag in tags:
        _put_manifest(pusher, plan, plan.root, tag, jobs)


_BLOBS_UNKNOWN = {"MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN", "DIGEST_INVALID"}
"""What a registry answers a manifest whose blobs it does not (yet) hold."""


class _BlobsUnknown(RegistryError):
    """The registry refused a manifest for blobs it says it lacks."""


def _put_manifest(
    pusher: _Pusher, plan: PushPlan, manifest: Manifest, reference: str, jobs: int
) -> None:
    """PUT ``manifest``; if the registry says it lacks blobs, push what it lacks and try again.

    Pushes of the same blob from several machines at the same moment (the shards of a
    distributed build share base layers and the evidence's empty config) race inside
    docker-registry 2.8: a blob every pusher was told is there can be unreadable for a
    moment, and the manifest is refused with DIGEST_INVALID / MANIFEST_BLOB_UNKNOWN.
    Each blob is asked for again (HEAD; uploaded only if missing) before the next try,
    paced by the client's retry policy.
    """
    policy = pusher.client.policy
    for attempt in range(policy.attempts):
        try:
            pusher.put_manifest(manifest, reference)
            return
        except _BlobsUnknown as error:
            if attempt == policy.attempts - 1:
                raise RegistryError(
                    error.message,
                    hint="another push of the same image may still be running, or the "
                    "registry lost blobs: push again",
                ) from error
        time.sleep(policy.delay(attempt))
        _parallel(pusher.recheck_blob, plan.blobs, jobs)


def _parallel(fn: Callable[[Blob], None], blobs: Sequence[Blob], jobs: int) -> None:
    """Run ``fn`` over ``blobs`` in up to ``jobs`` threads; the first failure stops the rest."""
    if jobs <= 1 or len(blobs) <= 1:
        for blob in blobs:
            fn(blob)
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(fn, b) for b in blobs]
        concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
        for f in futures:
            f.cancel()
        for f in futures:
            error = f.exception() if f.done() and not f.cancelled() else None
            if error is not None:
                raise error
