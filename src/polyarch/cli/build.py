"""polyarch build (and, with --push, a shard's push by digest: docs/SCALE.md)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyarch.cli._common import (
    Commands,
    add_lock_options,
    add_out_options,
    add_registry_options,
    add_system_options,
    ca_bundle_of,
    containers_of,
    jobs_of,
    password_of,
    session_of,
    systems_of,
)
from polyarch.cli.attest import add_sign_key_option, sign_key_of
from polyarch.errors import UsageError
from polyarch.schemas import BUILD as BUILD_SCHEMA

if TYPE_CHECKING:
    from polyarch.attest.keys import SigningKey
    from polyarch.config import Container
    from polyarch.platforms import System
    from polyarch.ui import ConsoleProgress
    from polyarch.workflows.build import BuildResult
    from polyarch.workflows.push_images import PushedImage
    from polyarch.workflows.resolve import Session
    from polyarch.workflows.stamp import BuildSummary
    from polyarch.workflows.targets import Target

    Pusher = Callable[[BuildResult], list[PushedImage]]
    """Pushes one build by digest (``--push``)."""


def register(commands: Commands) -> None:
    p = commands.add("build", cmd_build, "build a container's images and index")
    p.add_argument("name", metavar="NAME", nargs="*", help="containers of containers.toml")
    p.add_argument("--all", action="store_true", help="build every container of containers.toml")
    add_system_options(p, several=True)
    add_out_options(p)
    add_lock_options(p)
    add_sign_key_option(p)
    p.add_argument(
        "--push",
        metavar="REF",
        help="push each system image by digest, untagged, to REF (host/path; {name} = the "
        "container's name), with its SBOMs and provenance; tags come from manifest --assemble",
    )
    p.add_argument(
        "--no-evidence", action="store_true", help="with --push: attach no SBOMs or provenance"
    )
    add_registry_options(p, jobs_help="parallel blob uploads")
    p.add_argument(
        "--json", action="store_true", help=f"machine-readable output (schema {BUILD_SCHEMA})"
    )


def cmd_build(args: argparse.Namespace, progress: ConsoleProgress) -> int:
    from polyarch.reference import check_tag

    sign_key = sign_key_of(args)
    if not args.push and (args.username or args.password_stdin or args.no_evidence):
        raise UsageError("--username, --password-stdin and --no-evidence are for --push")
    jobs = jobs_of(args)
    session = session_of(args, progress)
    # Every container's systems and push target before any work: a mistake fails in a second.
    work = [(c, systems_of(args, c)) for c in containers_of(args, session.config)]
    push = _pusher(args, progress, session, [c.name for c, _ in work], jobs) if args.push else None
    check_tag(args.tag)
    done: list[tuple[BuildSummary, list[PushedImage]]] = []
    try:
        for container, systems in work:
            summary, pushed = build_one(args, session, container, systems, sign_key, push)
            done.append((summary, pushed))
            if not args.json:
                print_build(summary)
                print_pushed(pushed)
    finally:
        if args.json:
            print(json.dumps(build_json(done), indent=2, sort_keys=True))
    return 0


def build_one(
    args: argparse.Namespace,
    session: Session,
    container: Container,
    systems: Sequence[System],
    sign_key: SigningKey | None,
    push: Pusher | None,
) -> tuple[BuildSummary, list[PushedImage]]:
    """Build one container as ``args`` say (``--out``, ``--tag``): from its stamp when it
    is unchanged and nothing is signed or pushed, else in full (then pushed if asked)."""
    out = Path(args.out)
    if push is None and sign_key is None:
        # A warm build that would change nothing: answered from its stamp, without
        # loading the code that resolves and builds (workflows/stamp.py).
        from polyarch.workflows.stamp import unchanged_build

        summary = unchanged_build(session, container, systems, out_dir=out, tag=args.tag)
        if summary is not None:
            return summary, []
    from polyarch.workflows.build import build_container

    result = build_container(
        session, container, systems, out_dir=out, tag=args.tag, sign_key=sign_key
    )
    return result.summary(), push(result) if push is not None else []


def _pusher(
    args: argparse.Namespace,
    progress: ConsoleProgress,
    session: Session,
    names: Sequence[str],
    jobs: int,
) -> Pusher:
    """What pushes each build by digest (the registry's code loads for --push only)."""
    from polyarch.cache import REGISTRY_RECORDS_DIR
    from polyarch.registry.client import RegistryAccess
    from polyarch.workflows.push_images import push_build

    targets = _targets(args, progress, names)
    access = RegistryAccess(insecure=args.insecure, ca_bundle=ca_bundle_of(args))

    def push(result: BuildResult) -> list[PushedImage]:
        return push_build(
            result,
            targets[result.container.name],
            access=access,
            jobs=jobs,
            record_dir=session.cache.root / REGISTRY_RECORDS_DIR,
            evidence=not args.no_evidence,
            progress=progress,
        )

    return push


def _targets(
    args: argparse.Namespace, progress: ConsoleProgress, names: Sequence[str]
) -> dict[str, Target]:
    from polyarch.workflows.push_images import repository_for
    from polyarch.workflows.targets import push_targets

    password = password_of(args)
    return {
        name: push_targets(
            None,
            to=repository_for(args.push, name),
            username=args.username,
            password_stdin=password,
            progress=progress,
        )[0]
        for name in names
    }


def print_build(result: BuildSummary) -> None:
    """The table every building command ends with."""
    from polyarch.ui import human_size, print_table

    rows = [
        [
            "index",
            result.index_digest,
            "",
            human_size(sum(i.size for i in result.images)),
            human_size(sum(i.uncompressed for i in result.images)),
        ]
    ]
    for i in result.images:
        rows.append(
            [
                i.system,
                i.digest,
                str(i.layers),
                human_size(i.size),
                human_size(i.uncompressed),
            ]
        )
    print_table(
        f"{result.container} {result.version} → {result.path}",
        ["system", "digest", "layers", "compressed", "uncompressed"],
        rows,
    )


def print_pushed(pushed: Sequence[PushedImage]) -> None:
    from polyarch.ui import human_size, print_table

    rows = [
        [
            p.system.name,
            f"{p.repository}@{p.digest}",
            f"{p.result.blobs_uploaded if p.result else 0}",
            f"{p.result.blobs_skipped if p.result else 0}",
            human_size(p.result.bytes_uploaded if p.result else 0),
            " ".join(p.attached) or "-",
        ]
        for p in pushed
    ]
    if rows:
        print_table(
            "pushed by digest (untagged)",
            ["system", "reference", "uploaded", "skipped", "sent", "evidence"],
            rows,
        )


def build_json(done: Sequence[tuple[BuildSummary, Sequence[PushedImage]]]) -> dict[str, Any]:
    """The ``--json`` object (schema ``polyarch.build/v1``, docs/JSON.md)."""
    from polyarch.platforms import parse_system

    containers = []
    for result, pushed in done:
        by_system: dict[str, PushedImage] = {p.system.name: p for p in pushed}
        images = []
        for i in result.images:
            p = by_system.get(i.system)
            images.append(
                {
                    "system": i.system,
                    "platform": parse_system(i.system).oci_platform,
                    "digest": i.digest,
                    "size": i.size,
                    "layers": i.layers,
                    "version": i.version,
                    "push": _push_json(p) if p is not None else None,
                }
            )
        containers.append(
            {
                "container": result.container,
                "path": result.path,
                "index": result.index_digest,
                "images": images,
            }
        )
    return {"schema": BUILD_SCHEMA, "containers": containers}


def _push_json(p: PushedImage) -> dict[str, Any]:
    r = p.result
    return {
        "repository": p.repository,
        "reference": f"{p.repository}@{p.digest}",
        "blobs_uploaded": r.blobs_uploaded if r else 0,
        "blobs_skipped": r.blobs_skipped if r else 0,
        "blobs_mounted": r.blobs_mounted if r else 0,
        "bytes_uploaded": r.bytes_uploaded if r else 0,
        "seconds": round(p.seconds, 3),
        "attached": list(p.attached),
    }
