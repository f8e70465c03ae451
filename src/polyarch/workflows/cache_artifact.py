"""The cache in a registry: artifacts that list entries, and the family a name stands for.

An artifact is an image index (``artifactType``
``application/vnd.polyarch.cache.v1``) over manifests of at most
``ENTRIES_PER_MANIFEST`` entries each; every layer descriptor is one entry,
annotated with its kind and key. The same entries always give the same bytes
(sorted, no time stamp), so the same digest.

Many writers, no lost entries: ``cache push host/repo:TAG`` adds a *member*
to the family of TAG, an artifact tagged ``TAG.<16 hex of its digest>``. No
two pushes with different entries can take the same tag, so shards pushing
at the same moment never overwrite each other's listing (a registry has no
compare-and-swap on a tag; this needs none). ``cache pull`` reads every
member and takes the union (``merge``). The bare ``TAG`` is moved to each new
member too, for tools that read one artifact; it is never what a pull relies
on. ``--compact`` folds the family into one member and deletes the ones it
read, each only after the member listing all it listed is in place.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from polyarch import media_types
from polyarch.cache import KEY_PATTERN, Kind
from polyarch.determinism import DIGEST_PATTERN, Digest, canonical_json, sha256_digest
from polyarch.errors import CacheError, RegistryError, UsageError
from polyarch.reference import TAG_PATTERN
from polyarch.registry.plan import Blob, Manifest, PushPlan
from polyarch.registry.pull import MANIFEST_ACCEPT, Puller

ANNOTATION_KIND = "dev.polyarch.cache.kind"
ANNOTATION_KEY = "dev.polyarch.cache.key"
MEDIA_TYPES = {
    Kind.DEBS: media_types.DEBIAN_PACKAGE,
    Kind.BLOBS: media_types.OCI_LAYER_GZIP,
    Kind.LAYERS: media_types.POLYARCH_LAYER_RECORD,
    Kind.INDEXES: media_types.POLYARCH_PACKAGES_INDEX,
    Kind.FACTS: media_types.POLYARCH_PACKAGE_FACTS,
    Kind.CONTENTS: media_types.POLYARCH_CONTENTS_INDEX,
}
"""The media type of each kind's entries in the artifact."""
ENTRIES_PER_MANIFEST = 1000
"""Keeps each manifest far below the 4 MiB registries accept."""
MEMBER_HEX = 16
"""Hex digits of a member's digest in its tag: collisions need 2^32 members."""
EMPTY_CONFIG = b"{}"

EntryKey = tuple[Kind, str]


@dataclass(frozen=True, slots=True)
class Listed:
    """An entry as an artifact lists it: where its bytes are, and which member said so."""

    digest: Digest
    size: int
    member: str


@dataclass(frozen=True, slots=True)
class Member:
    """One artifact of a family: its tag, digest and the entries it lists."""

    tag: str
    digest: Digest
    entries: Mapping[EntryKey, tuple[Digest, int]]


@dataclass(frozen=True, slots=True)
class Entry:
    """An entry to list in an artifact; ``path`` when this machine has its bytes."""

    kind: Kind
    key: str
    digest: Digest
    size: int
    path: Path | None = None

    @property
    def kind_key(self) -> EntryKey:
        return (self.kind, self.key)


# -- writing ------------------------------------------------------------------------------


def member_tag(base: str, digest: Digest) -> str:
    """``TAG.<16 hex>``: the tag of the member whose root is ``digest``."""
    return f"{base}.{digest.removeprefix('sha256:')[:MEMBER_HEX]}"


def check_family_tag(base: str) -> None:
    """A TAG whose members' tags are valid tags too."""
    if len(base) + 1 + MEMBER_HEX > 128 or not TAG_PATTERN.fullmatch(base):
        raise UsageError(
            f"cache tag {base!r} is too long or not a tag",
            hint=f"use at most {127 - MEMBER_HEX} of A-Z a-z 0-9 _ . -",
        )


def artifact_plan(entries: Sequence[Entry], config: Path) -> PushPlan:
    """The push of one artifact listing ``entries`` (sorted by kind and key).

    Blobs are those of entries with a ``path``; the others must already be in
    the repository (a registry accepts a manifest only when every blob it
    names is there). ``config`` is a file holding ``EMPTY_CONFIG``.
    """
    ordered = sorted(entries, key=lambda e: (list(Kind).index(e.kind), e.key))
    config_desc = {
        "mediaType": media_types.OCI_EMPTY,
        "digest": sha256_digest(EMPTY_CONFIG),
        "size": len(EMPTY_CONFIG),
    }
    empty = Blob(sha256_digest(EMPTY_CONFIG), len(EMPTY_CONFIG), media_types.OCI_EMPTY, config)
    blobs = {empty.digest: empty}
    manifests: list[Manifest] = []
    for start in range(0, len(ordered), ENTRIES_PER_MANIFEST):
        chunk = ordered[start : start + ENTRIES_PER_MANIFEST]
        data = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": media_types.OCI_MANIFEST,
                "artifactType": media_types.POLYARCH_CACHE,
                "config": config_desc,
                "layers": [
                    {
                        "mediaType": MEDIA_TYPES[e.kind],
                        "digest": e.digest,
                        "size": e.size,
                        "annotations": {ANNOTATION_KIND: e.kind, ANNOTATION_KEY: e.key},
                    }
                    for e in chunk
                ],
            }
        )
        manifests.append(Manifest(sha256_digest(data), media_types.OCI_MANIFEST, data))
        for e in chunk:
            if e.path is not None:
                blobs.setdefault(e.digest, Blob(e.digest, e.size, MEDIA_TYPES[e.kind], e.path))
    index = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": media_types.OCI_INDEX,
            "artifactType": media_types.POLYARCH_CACHE,
            "manifests": [
                {
                    "mediaType": media_types.OCI_MANIFEST,
                    "artifactType": media_types.POLYARCH_CACHE,
                    "digest": m.digest,
                    "size": len(m.data),
                }
                for m in manifests
            ],
        }
    )
    root = Manifest(sha256_digest(index), media_types.OCI_INDEX, index)
    return PushPlan(tuple(blobs.values()), (*manifests, root), None)


# -- reading ------------------------------------------------------------------------------


def read_family(puller: Puller, base: str, ref: str) -> list[Member] | None:
    """Every member of TAG's family (and TAG itself); None when the repository does not exist."""
    tags = puller.tags()
    if tags is None:
        return None
    member = re.compile(re.escape(base) + rf"(?:\.[0-9a-f]{{{MEMBER_HEX}}})?")
    members: dict[Digest, Member] = {}
    for tag in (t for t in tags if member.fullmatch(t)):
        try:
            digest, entries = read_artifact(puller, tag, ref)
        except RegistryError:
            # Deleted by a --compact between the listing and now: its entries are in
            # the member that compaction wrote first, which the listing shows too.
            if not _gone(puller, tag):
                raise
            continue
        members.setdefault(digest, Member(tag, digest, entries))
    return list(members.values())


def _gone(puller: Puller, tag: str) -> bool:
    response = puller.client.request(
        "HEAD",
        f"/v2/{puller.repository}/manifests/{tag}",
        scopes=(puller.scope,),
        headers={"Accept": MANIFEST_ACCEPT},
    )
    return response.status_code == 404


def read_artifact(
    puller: Puller, target: str, ref: str
) -> tuple[Digest, dict[EntryKey, tuple[Digest, int]]]:
    """An artifact's root digest, and (kind, key) → (digest, size) of every entry it lists."""
    hint = "push a cache there with `polyarch cache push`"
    root_digest, root, _ = puller.manifest(target, not_found_hint=hint)
    children = [c for c in root.get("manifests", []) if isinstance(c, dict)]
    manifests = (
        [puller.manifest(str(c.get("digest")), not_found_hint=hint)[1] for c in children]
        if "manifests" in root
        else [root]
    )
    wanted: dict[EntryKey, tuple[Digest, int]] = {}
    for manifest in manifests:
        if manifest.get("artifactType") != media_types.POLYARCH_CACHE:
            raise RegistryError(
                f"{ref} is not a polyarch cache (artifactType {manifest.get('artifactType')!r})",
                hint="name what `polyarch cache push` pushed",
            )
        for d in manifest.get("layers", []):
            kind, key, digest, size = _descriptor(d, ref)
            wanted[(kind, key)] = (digest, size)
    return root_digest, wanted


def merge(members: Sequence[Member]) -> tuple[dict[EntryKey, Listed], dict[EntryKey, set[str]]]:
    """The union of the members' entries, and the entries members disagree about
    (one key, other bytes: which members)."""
    merged: dict[EntryKey, Listed] = {}
    conflicts: dict[EntryKey, set[str]] = {}
    for member in sorted(members, key=lambda m: m.tag):
        for entry, (digest, size) in member.entries.items():
            seen = merged.get(entry)
            if seen is None:
                merged[entry] = Listed(digest, size, member.tag)
            elif seen.digest != digest:
                conflicts.setdefault(entry, {seen.member}).add(member.tag)
    return merged, conflicts


def refuse_conflicts(ref: str, conflicts: Mapping[EntryKey, set[str]]) -> None:
    """CacheError naming the first entry two members of the family disagree about."""
    if not conflicts:
        return
    (kind, key), members = min(conflicts.items())
    raise CacheError(
        f"{ref}: refusing the cache: members {', '.join(sorted(members))} hold different "
        f"{kind} entries {key}",
        hint="nothing was added to the cache; polyarch's entries are deterministic, so one "
        "of them is damaged or from another polyarch version: push to a new cache tag",
    )


def _descriptor(d: object, ref: str) -> tuple[Kind, str, Digest, int]:
    annotations = d.get("annotations") if isinstance(d, dict) else None
    if not isinstance(d, dict) or not isinstance(annotations, dict):
        raise RegistryError(f"{ref}: a cache entry has no annotations")
    kind, key = annotations.get(ANNOTATION_KIND), annotations.get(ANNOTATION_KEY)
    digest, size = d.get("digest"), d.get("size")
    # The key becomes a file name in the cache: only a known kind and a plain hex key.
    if kind not in tuple(Kind) or not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        raise RegistryError(f"{ref}: malformed cache entry {kind!r}/{key!r}")
    if not isinstance(digest, str) or not DIGEST_PATTERN.fullmatch(digest):
        raise RegistryError(f"{ref}: cache entry {key[:12]} has a malformed digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RegistryError(f"{ref}: cache entry {key[:12]} has a malformed size")
    return Kind(kind), key, Digest(digest), size


def member_entries(listed: Mapping[EntryKey, Listed]) -> list[Entry]:
    """The merged listing as entries without local bytes (what a compacted member lists)."""
    return [Entry(kind, key, v.digest, v.size) for (kind, key), v in listed.items()]
