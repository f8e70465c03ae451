"""Sharing the cache through an OCI registry: ``polyarch cache push`` and ``cache pull``.

``push_cache`` adds the entries the registry's family of artifacts does not
list yet as a new member (``cache_artifact``: the format, and why many
shards may push at once without losing an entry); ``pull_cache`` reads every
member, takes the union, and fills a cache from it. ``pull_cache(want=...)``
takes only what some builds look up (``cache_needs``: a shard's plan).

Trust: a pulled artifact is hostile until checked. Every entry is downloaded
into a staging directory inside the cache and checked there exactly as
``cache verify`` checks (``cache_check``): ``debs`` and ``blobs`` against
their key, ``layers`` records against their schema and checksum and the blob
they name (which must unpack to their diff_id), parsed indexes against every
checksum. One bad entry refuses the whole pull (``CacheError`` naming it) and
nothing enters the cache; so do two members that list one key with other
bytes. What cannot be checked without the signed archive: that a layer record
or parsed index is what *its inputs* give. A pusher who controls the artifact
can map inputs to other well-formed contents, so pull only from a registry
you trust like your CI (the role Cachix plays), or pull only ``--kind debs
--kind blobs`` (see docs/SECURITY.md).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from polyarch.cache import KEY_PATTERN, REGISTRY_RECORDS_DIR, Cache, Kind, open_regular
from polyarch.determinism import Digest, sha256_file
from polyarch.errors import CacheError, HostError, RegistryAuthError, RegistryError, UsageError
from polyarch.files import file_size
from polyarch.image.layer_record import decode_layer_record
from polyarch.progress import NULL_PROGRESS, Progress
from polyarch.reference import DEFAULT_TAG, Reference, parse_reference
from polyarch.registry.client import ANONYMOUS, RegistryAccess, RegistryClient
from polyarch.registry.pull import Puller
from polyarch.registry.push import PushResult, push_plan
from polyarch.workflows.cache_artifact import (
    ANNOTATION_KEY,
    ANNOTATION_KIND,
    EMPTY_CONFIG,
    Entry,
    EntryKey,
    Listed,
    Member,
    artifact_plan,
    check_family_tag,
    member_entries,
    member_tag,
    merge,
    read_artifact,
    read_family,
    refuse_conflicts,
)
from polyarch.workflows.cache_check import EntryChecker
from polyarch.workflows.cache_needs import Needs

__all__ = ["ANNOTATION_KEY", "ANNOTATION_KIND", "pull_cache", "push_cache"]

STAGING_PREFIX = ".pull-"
"""Pulled entries wait in ``CACHE/.pull-*`` until all are checked (prune removes stale ones)."""


@dataclass(frozen=True, slots=True)
class CachePushResult:
    push: PushResult | None
    """None when the family already listed every entry: nothing was pushed."""
    entries: dict[Kind, int]
    """How many entries of each kind the new member lists."""
    tag: str | None = None
    """The new member's tag (``TAG.<hex>``)."""
    listed_before: int = 0
    """Entries the family listed before this push."""
    skipped: int = 0
    """Entries not pushed because a member lists other bytes under their key."""
    deleted: int = 0
    """Members removed by ``compact``."""


def push_cache(
    cache: Cache,
    ref: str,
    *,
    kinds: Sequence[Kind] = tuple(Kind),
    access: RegistryAccess = ANONYMOUS,
    jobs: int = 4,
    compact: bool = False,
    progress: Progress = NULL_PROGRESS,
) -> CachePushResult:
    """Add the cache's entries of ``kinds`` that ``ref``'s family lacks, as a new member.

    Blobs the registry already has are skipped (HEAD), so pushing a cache that
    grew sends only what is new. ``compact`` makes the new member list the
    whole family too, then deletes the members it read (cache_artifact).
    """
    reference = parse_reference(ref)
    if reference.digest:
        raise UsageError(f"cache push {ref}: give a tag, not a digest", hint="host/repo:TAG")
    base = reference.tag or DEFAULT_TAG
    check_family_tag(base)
    entries = _collect(cache, kinds, progress)
    if not entries and not compact:
        raise UsageError(f"the cache {cache.root} is empty", hint="build something first")
    with access.client(reference) as client, Puller(client, reference.repository) as puller:
        members = read_family(puller, base, ref) or []
    listed, conflicts = merge(members)
    new = [e for e in entries if (e.kind, e.key) not in listed]
    skipped = [e for e in entries if e.kind_key in listed and listed[e.kind_key].digest != e.digest]
    for e in skipped[:3]:
        progress.warn(
            f"cache push: {ref} lists other bytes for {e.kind} entry {e.key[:16]}…; not pushed"
        )
    listing = list(new)
    if compact:
        listing += member_entries({k: v for k, v in listed.items() if k not in conflicts})
    counts = {kind: sum(1 for e in listing if e.kind == kind) for kind in kinds}
    if not listing or (compact and len(members) <= 1 and not new):
        return CachePushResult(None, counts, None, len(listed), len(skipped))
    with tempfile.TemporaryDirectory(prefix="polyarch-cache-push-") as tmp:
        config = Path(tmp) / "config"
        config.write_bytes(EMPTY_CONFIG)
        plan = artifact_plan(listing, config)
        tag = member_tag(base, plan.root.digest)
        result = push_plan(
            plan,
            reference,
            [tag, base],
            access=access,
            jobs=jobs,
            progress=progress,
            record_dir=cache.root / REGISTRY_RECORDS_DIR,
        )
    deleted = _delete_members(reference, members, result.digest, access, progress) if compact else 0
    return CachePushResult(result, counts, tag, len(listed), len(skipped), deleted)


def _delete_members(
    reference: Reference,
    members: Sequence[Member],
    keep: Digest,
    access: RegistryAccess,
    progress: Progress,
) -> int:
    """Delete the members a compacted member now lists; how many the registry removed."""
    deleted = 0
    with access.client(reference) as client:
        for member in members:
            if member.digest == keep:
                continue
            if not _delete_manifest(client, reference.repository, member.digest):
                progress.warn(
                    f"cache push --compact: {reference.name} does not delete manifests; "
                    "the old members stay (pulls still merge them)"
                )
                break
            deleted += 1
    return deleted


def _delete_manifest(client: RegistryClient, repository: str, digest: Digest) -> bool:
    """Whether the registry removed (or no longer has) the manifest; False when it will not
    delete (405 Unsupported, or no delete permission: ghcr.io deletes only through its own API)."""
    try:
        response = client.request(
            "DELETE",
            f"/v2/{repository}/manifests/{digest}",
            scopes=(f"repository:{repository}:pull,push,delete",),
        )
    except RegistryAuthError:
        return False
    return response.status_code in (200, 202, 404)


def family_listing(ref: str, *, access: RegistryAccess = ANONYMOUS) -> dict[EntryKey, Listed]:
    """What ``ref``'s family lists (manifests only, no blob read); empty when there is none.

    A plan's view of the shared cache: the entries are not checked here, a pull does that.
    """
    reference = parse_reference(ref)
    with access.client(reference) as client, Puller(client, reference.repository) as puller:
        members = read_family(puller, reference.tag or DEFAULT_TAG, ref) or []
    return merge(members)[0]


def _collect(cache: Cache, kinds: Sequence[Kind], progress: Progress) -> list[Entry]:
    found = sorted(
        (kind, key, path)
        for kind in kinds
        for key, path in cache.entries(kind)
        if KEY_PATTERN.fullmatch(key) and _is_regular(path)
    )
    task = progress.task("reading the cache", total=len(found))

    def entry(item: tuple[Kind, str, Path]) -> Entry:
        kind, key, path = item
        # debs and blobs are named by their sha256; the push re-hashes them as it sends.
        digest = Digest(f"sha256:{key}") if kind.content_addressed else sha256_file(path)
        progress.advance(task)
        return Entry(kind, key, digest, file_size(path), path)

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(entry, found))
    finally:
        progress.done(task)


def _is_regular(path: Path) -> bool:
    """A regular file, not a symlink to one: nothing outside the cache is pushed."""
    f = open_regular(path)
    if f is None:
        return False
    f.close()
    return True


@dataclass(frozen=True, slots=True)
class CachePullResult:
    reference: str
    digest: Digest | None
    """The artifact's digest when one was named by digest; None for a family."""
    entries: int
    downloaded: int
    present: int
    """Entries the cache had already (not downloaded)."""
    bytes: int
    per_kind: dict[Kind, int] = field(default_factory=dict)
    members: int = 1
    """Artifacts of the family read."""


def pull_cache(
    cache: Cache,
    ref: str,
    *,
    kinds: Sequence[Kind] = tuple(Kind),
    access: RegistryAccess = ANONYMOUS,
    jobs: int = 4,
    want: Needs | None = None,
    missing_ok: bool = False,
    progress: Progress = NULL_PROGRESS,
) -> CachePullResult:
    """Fill ``cache`` from ``ref``: one artifact (``@digest``) or the union of TAG's family.

    Entries already present are skipped. With ``want``, only those entries and
    the blobs their layer records name. Every blob is checked against its
    descriptor's digest and size, and every entry as ``cache verify`` checks
    it, before any enters the cache. ``missing_ok``: a repository with no cache
    yet pulls nothing instead of failing.
    """
    reference = parse_reference(ref)
    with access.client(reference) as client, Puller(client, reference.repository) as puller:
        if reference.digest:
            digest, entries = read_artifact(puller, reference.digest, ref)
            members = [Member(reference.digest, digest, entries)]
        else:
            found = read_family(puller, reference.tag or DEFAULT_TAG, ref)
            if not found and missing_ok:
                return CachePullResult(ref, None, 0, 0, 0, 0, members=0)
            if not found:
                raise RegistryError(
                    f"{reference}: no cache there",
                    hint="push a cache there with `polyarch cache push`",
                )
            members = found
        listed, conflicts = merge(members)
        listed = {k: v for k, v in listed.items() if k[0] in kinds}
        chosen = set(listed) if want is None else want.wanted(listed)
        refuse_conflicts(ref, {k: v for k, v in conflicts.items() if k in chosen})
        with _Staging(cache, ref) as staging:
            sizes = staging.fetch(puller, listed, chosen, jobs, progress, str(reference))
            if want is not None and Kind.BLOBS in kinds:
                named = staging.blobs_named({k for k in chosen if k[0] == Kind.LAYERS})
                more = {k for k in named if k in listed} - chosen
                refuse_conflicts(ref, {k: v for k, v in conflicts.items() if k in more})
                chosen |= more
                sizes += staging.fetch(puller, listed, more, jobs, progress, str(reference))
            staging.check()
            staging.commit()
    per_kind = {kind: sum(1 for (k, _key) in chosen if k == kind) for kind in kinds}
    return CachePullResult(
        reference=f"{reference.name}@{reference.digest}" if reference.digest else str(reference),
        digest=reference.digest,
        entries=len(chosen),
        downloaded=len(sizes),
        present=len(chosen) - len(sizes),
        bytes=sum(sizes),
        per_kind=per_kind,
        members=len(members),
    )


class _Staging:
    """Pulled entries wait in ``CACHE/.pull-*`` until every one of them has been checked."""

    def __init__(self, cache: Cache, ref: str) -> None:
        self.cache, self.ref = cache, ref
        self.files: dict[EntryKey, Path] = {}

    def __enter__(self) -> _Staging:
        try:
            self.cache.root.mkdir(parents=True, exist_ok=True)
            self.root = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.cache.root))
        except OSError as exc:
            raise HostError.of(exc, f"cannot write to the cache {self.cache.root}") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def fetch(
        self,
        puller: Puller,
        listed: dict[EntryKey, Listed],
        chosen: set[EntryKey],
        jobs: int,
        progress: Progress,
        name: str,
    ) -> list[int]:
        """Download the chosen entries the cache lacks; their sizes."""
        todo = [
            (k, listed[k]) for k in sorted(chosen) if not _present(self.cache, *k, listed[k].size)
        ]
        task = progress.task(f"pull {name}", total=sum(v.size for _k, v in todo))

        def fetch(item: tuple[EntryKey, Listed]) -> int:
            (kind, key), entry = item
            if kind.content_addressed and entry.digest != f"sha256:{key}":
                raise self.refuse(kind, key, f"it holds {entry.digest}, not its own content")
            path = self.root / f"{kind}-{key}"
            path.write_bytes(puller.blob(entry.digest, entry.size))
            self.files[(kind, key)] = path
            progress.advance(task, entry.size)
            return entry.size

        try:
            with ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool:
                return list(pool.map(fetch, todo))
        finally:
            progress.done(task)

    def blobs_named(self, records: set[EntryKey]) -> set[EntryKey]:
        """The blobs the layer records ``records`` name (staged, or already in the cache)."""
        found: set[EntryKey] = set()
        for kind, key in records:
            path = self.files.get((kind, key)) or self.cache.get(kind, key)
            f = open_regular(path) if path is not None else None
            if f is None:
                continue
            try:
                with f:
                    record = decode_layer_record(f.read())
            except ValueError as exc:
                raise self.refuse(kind, key, str(exc)) from None
            if record is not None:
                found.add((Kind.BLOBS, record.blob_key))
        return found

    def blob_path(self, key: str) -> Path | None:
        staged = self.files.get((Kind.BLOBS, key))
        return staged if staged is not None else self.cache.verified(Kind.BLOBS, key)

    def check(self) -> None:
        """Every staged entry as ``cache verify`` checks it; CacheError naming the first bad one."""
        checker = EntryChecker(self.blob_path)
        for (kind, key), path in sorted(self.files.items()):
            reason = checker.problem(kind, key, path)
            if reason:
                raise self.refuse(kind, key, reason)

    def commit(self) -> None:
        # Blobs before the records that name them, as a build writes them.
        for kind in Kind:
            for (k, key), path in sorted(self.files.items()):
                if k == kind:
                    self.cache.adopt(kind, key, path)

    def refuse(self, kind: Kind, key: str, reason: str) -> CacheError:
        return CacheError(
            f"{self.ref}: refusing the cache artifact: {kind} entry {key}: {reason}",
            hint="nothing was added to the cache; do not use this artifact, "
            "push it again from a good cache",
        )


def _present(cache: Cache, kind: Kind, key: str, size: int) -> bool:
    path = cache.get(kind, key)
    return path is not None and (not kind.content_addressed or file_size(path) == size)
