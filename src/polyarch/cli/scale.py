"""polyarch manifest --assemble (the options and handler), plan, and ci github: docs/SCALE.md."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polyarch.cli._common import (
    ca_bundle_of,
    containers_of,
    load,
    password_of,
)
from polyarch.config import Container
from polyarch.determinism import DIGEST_PATTERN, Digest
from polyarch.errors import UsageError
from polyarch.platforms import parse_system
from polyarch.registry.client import RegistryAccess
from polyarch.ui import ConsoleProgress, human_size, print_table
from polyarch.workflows.assemble import Assembled, assemble_index, images_for
from polyarch.workflows.publish import publish_tags
from polyarch.workflows.push_images import NAME_FIELD, PushedImage, read_pushed
from polyarch.workflows.targets import Target, push_targets

ASSEMBLE_SCHEMA = "polyarch.assemble/v1"


def add_assemble_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--assemble",
        action="store_true",
        help="make the index in the registry from the system images the shards pushed "
        "(build --push); reads manifests only, moves no blob",
    )
    p.add_argument("--all", action="store_true", help="with --assemble: every container")
    p.add_argument(
        "--digests",
        metavar="FILE_OR_DIR",
        action="append",
        default=[],
        help="with --assemble: a shard's build --push --json output (a directory: each *.json "
        "in it); repeat",
    )
    p.add_argument(
        "--digest",
        metavar="SYSTEM=DIGEST",
        action="append",
        default=[],
        help="with --assemble: one system's image, in the repository of the index; repeat",
    )


def cmd_assemble(args: argparse.Namespace, progress: ConsoleProgress) -> int:
    _check_assemble_usage(args)
    containers = containers_of(args, load(args))
    password = password_of(args)
    pushed = read_pushed(Path(d) for d in args.digests)
    work: list[tuple[Container, list[Target], list[str]]] = []
    for container in containers:
        to = args.to.replace(NAME_FIELD, container.name) if args.to else None
        targets = push_targets(
            container,
            to=to,
            username=args.username,
            password_stdin=password,
            progress=progress,
        )
        tags = publish_tags([*container.tags, *args.tag], version=args.version, branch=args.branch)
        work.append((container, targets, tags))
    if args.dry_run:
        _print_dry_run(work, args.json)
        return 0
    access = RegistryAccess(insecure=args.insecure, ca_bundle=ca_bundle_of(args))
    # Every container's images are settled before the first request.
    images = {c.name: images_for(c, [*pushed, *_explicit(args, c, t)]) for c, t, _ in work}
    done: list[Assembled] = []
    try:
        for container, targets, tags in work:
            for target in targets:
                done.append(
                    assemble_index(
                        container,
                        images[container.name],
                        target,
                        tags,
                        access=access,
                        evidence=not args.no_evidence,
                        progress=progress,
                    )
                )
    finally:
        if args.json:
            print(json.dumps(assemble_json(done), indent=2, sort_keys=True))
        elif done:
            print_assembled(done)
    return 0


def _check_assemble_usage(args: argparse.Namespace) -> None:
    conflicting = [
        flag
        for flag, given in (
            ("--image-file", args.image_file),
            ("--no-build", args.no_build),
            ("--sign-key", args.sign_key),
            ("--format docker", args.format == "docker"),
        )
        if given
    ]
    if conflicting:
        raise UsageError(
            f"--assemble does not take {', '.join(conflicting)}",
            hint="it makes the OCI index over images already in the registry",
        )
    if not args.digests and not args.digest:
        raise UsageError(
            "which images? --assemble needs --digests (the shards' build --push --json) "
            "or --digest SYSTEM=DIGEST",
            hint="polyarch manifest fd --assemble --to REF --digests shard-1.json ...",
        )
    if args.digest and (args.all or not args.name):
        raise UsageError("--digest SYSTEM=DIGEST is for one container NAME")


def _explicit(
    args: argparse.Namespace, container: Container, targets: list[Target]
) -> list[PushedImage]:
    found = []
    for text in args.digest:
        system, _, digest = text.partition("=")
        if not DIGEST_PATTERN.fullmatch(digest):
            raise UsageError(f"--digest {text!r}: expected SYSTEM=sha256:<64 hex>")
        found.append(
            PushedImage(container.name, parse_system(system), Digest(digest), targets[0].repository)
        )
    return found


def _print_dry_run(
    work: Sequence[tuple[Container, list[Target], list[str]]], as_json: bool
) -> None:
    rows = [[c.name, t.repository, " ".join(tags)] for c, targets, tags in work for t in targets]
    if as_json:
        value = {
            "schema": ASSEMBLE_SCHEMA,
            "dry_run": True,
            "indexes": [{"container": c, "repository": r, "tags": t.split()} for c, r, t in rows],
        }
        print(json.dumps(value, indent=2, sort_keys=True))
        return
    print_table("would assemble", ["container", "repository", "tags"], rows)


def print_assembled(done: Sequence[Assembled]) -> None:
    rows = [
        [
            a.container,
            a.reference,
            " ".join(a.tags),
            str(len(a.images)),
            str(a.counts.blobs_mounted),
            human_size(a.counts.bytes_received + a.counts.bytes_sent),
            f"{a.seconds:.2f} s",
        ]
        for a in done
    ]
    print_table(
        "assembled (no blob moved)",
        ["container", "index", "tags", "systems", "mounted", "transferred", "time"],
        rows,
    )


def assemble_json(done: Sequence[Assembled]) -> dict[str, Any]:
    """The ``--json`` object of ``manifest --assemble`` (schema ``polyarch.assemble/v1``)."""
    return {
        "schema": ASSEMBLE_SCHEMA,
        "indexes": [
            {
                "container": a.container,
                "repository": a.target.repository,
                "digest": a.digest,
                "reference": a.reference,
                "tags": list(a.tags),
                "annotations": dict(a.annotations),
                "images": [
                    {
                        "system": i.system.name,
                        "platform": i.system.oci_platform,
                        "digest": i.digest,
                        "from": i.repository,
                    }
                    for i in a.images
                ],
                "manifests_read": a.counts.manifests_read,
                "manifests_written": a.counts.manifests_written,
                "blobs_mounted": a.counts.blobs_mounted,
                "blobs_present": a.counts.blobs_present,
                "referrers_copied": a.counts.referrers_copied,
                "bytes_received": a.counts.bytes_received,
                "bytes_sent": a.counts.bytes_sent,
                "requests": a.requests,
                "seconds": round(a.seconds, 3),
            }
            for a in done
        ],
    }
