"""polyarch manifest: the multi-arch index of a container (or of image files), pushed."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyarch.cache import REGISTRY_RECORDS_DIR
from polyarch.cli._common import (
    Commands,
    add_out_option,
    add_registry_options,
    ca_bundle_of,
    cache_of,
    jobs_of,
    password_of,
    session_of,
)
from polyarch.cli.attest import add_sign_key_option, sign_key_of
from polyarch.cli.scale import add_assemble_options, cmd_assemble
from polyarch.errors import UsageError
from polyarch.outputs import Outputs

if TYPE_CHECKING:
    from polyarch.config import Container
    from polyarch.ui import ConsoleProgress
    from polyarch.workflows.publish import (
        IndexLayout,
        Published,
    )
    from polyarch.workflows.targets import Target


MANIFEST_SCHEMA = "polyarch.manifest/v1"


def register(commands: Commands) -> None:
    p = commands.add(
        "manifest",
        cmd_manifest,
        "make the multi-arch index (or of image files), push it",
    )
    p.add_argument("name", metavar="NAME", nargs="?", help="container of containers.toml")
    p.add_argument(
        "--image-file",
        metavar="FILE",
        action="append",
        default=[],
        help="instead of NAME: an image (docker-archive, gz or not, OCI archive or layout); repeat",
    )
    p.add_argument("--push", action="store_true", help="push the index to the registries")
    p.add_argument(
        "--to", metavar="REF", help="push to this repository only (host/path; {name} = NAME)"
    )
    add_assemble_options(p)
    add_out_option(p)
    p.add_argument(
        "--no-build",
        action="store_true",
        help="use OUT/NAME/oci as built, instead of building every system first",
    )
    p.add_argument(
        "--tag", metavar="T", action="append", default=[], help="extra tag to push; repeat"
    )
    p.add_argument(
        "--version", help="release version: tags V, MAJOR.MINOR, MAJOR (default: $VERSION)"
    )
    p.add_argument("--branch", help="branch: tags it, and latest on the default branch")
    p.add_argument("--format", choices=("oci", "docker"), default="oci", help="media types")
    add_sign_key_option(p)
    p.add_argument(
        "--no-evidence",
        action="store_true",
        help="push without attaching the SBOMs, provenance and signatures",
    )
    add_registry_options(p, jobs_help="parallel blob uploads")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print where --push would go and with which tags; build and send nothing",
    )
    p.add_argument(
        "--json", action="store_true", help=f"machine-readable output (schema {MANIFEST_SCHEMA})"
    )


def cmd_manifest(args: argparse.Namespace, progress: ConsoleProgress) -> int:
    if args.assemble:
        return cmd_assemble(args, progress)
    if args.all or args.digests or args.digest or args.test:
        raise UsageError("--all, --digests, --digest and --test are for --assemble")
    from polyarch.reference import parse_reference
    from polyarch.workflows.publish import (
        container_index,
        image_files_dest,
        image_files_index,
        publish_version,
    )

    image_files = [Path(f) for f in args.image_file]
    _check_usage(args, image_files)
    jobs = jobs_of(args)
    sign_key = sign_key_of(args)
    session = session_of(args, progress) if args.name else None
    container = session.config.container(args.name) if session else None
    version = publish_version(args.version)
    targets, tags = _targets_and_tags(args, container, progress)
    if args.dry_run:
        print_plan(targets, tags, args.json)
        return 0

    out = Path(args.out)
    if container is not None and session is not None:
        index = container_index(
            session,
            container,
            out_dir=out,
            version=version,
            build=not args.no_build,
            sign_key=sign_key,
        )
    else:
        title = parse_reference(args.to).repository.rsplit("/", 1)[-1] if args.to else None
        index = image_files_index(
            image_files, image_files_dest(out, args.to), title=title, version=version
        )
    if not args.json:
        print_index(index)
    _push_everywhere(args, progress, index, targets, tags, jobs)
    return 0


def _targets_and_tags(
    args: argparse.Namespace, container: Container | None, progress: ConsoleProgress
) -> tuple[list[Target], list[str]]:
    """Where ``manifest --push``/``--dry-run`` pushes, and the tags: worked out before
    building, so a missing $VAR or a bad --to fails in a second, not after a build."""
    if not (args.push or args.dry_run):
        return [], []
    from polyarch.registry.tags import ALL_AUTO_TAGS
    from polyarch.workflows.publish import publish_tags
    from polyarch.workflows.targets import push_targets

    targets = push_targets(
        container,
        to=args.to.replace("{name}", container.name) if args.to and container else args.to,
        username=args.username,
        password_stdin=password_of(args),
        progress=progress,
    )
    explicit = [*(container.tags if container else ()), *args.tag]
    auto = container.options.auto_tags if container else ALL_AUTO_TAGS
    return targets, publish_tags(explicit, version=args.version, branch=args.branch, auto=auto)


def _check_usage(args: argparse.Namespace, image_files: Sequence[Path]) -> None:
    if bool(args.name) == bool(image_files):
        raise UsageError(
            "give a container NAME or --image-file, not both and not neither",
            hint="polyarch manifest fd, or polyarch manifest --image-file a.tar --image-file b.tar",
        )
    if args.no_build and image_files:
        raise UsageError("--no-build is for a container NAME, not --image-file")
    if args.sign_key and image_files:
        raise UsageError(
            "--sign-key is for a container NAME: polyarch has no SBOM of image files it did not build"
        )
    if not (args.push or args.dry_run) and (args.password_stdin or args.username):
        raise UsageError("--username and --password-stdin are for --push")


def _push_everywhere(
    args: argparse.Namespace,
    progress: ConsoleProgress,
    index: IndexLayout,
    targets: Sequence[Target],
    tags: Sequence[str],
    jobs: int,
) -> None:
    """Push ``index`` to each target; print what was pushed, also when a later push fails."""
    from polyarch.registry.client import RegistryAccess
    from polyarch.workflows.publish import push_index

    published: list[Published] = []
    record_dir = cache_of(args).root / REGISTRY_RECORDS_DIR
    evidence = _evidence_dir(args, progress, index)
    try:
        for target in targets:
            published.append(
                push_index(
                    index,
                    target,
                    tags,
                    format=args.format,
                    access=RegistryAccess(insecure=args.insecure, ca_bundle=ca_bundle_of(args)),
                    jobs=jobs,
                    record_dir=record_dir,
                    progress=progress,
                    evidence=evidence,
                )
            )
    finally:
        if args.json:
            print(json.dumps(manifest_json(index, tags, published), indent=2, sort_keys=True))
        elif published:
            print_pushes(published)
            print_attached(published)


def _evidence_dir(
    args: argparse.Namespace, progress: ConsoleProgress, index: IndexLayout
) -> Path | None:
    """``OUT/NAME/sbom`` to attach, or None: image files, --no-evidence, --format docker."""
    if args.no_evidence or not args.name:
        return None
    if args.format == "docker":
        progress.warn(
            "SBOMs and provenance not attached: --format docker re-encodes the manifests, "
            "so they are not the digests the evidence names"
        )
        return None
    return Outputs(Path(args.out), args.name).sbom


def print_attached(published: Sequence[Published]) -> None:
    from polyarch.ui import print_table

    rows = [
        [
            target_label(p.target),
            a.system.name,
            a.subject.digest,
            " ".join(
                t.rpartition(".")[2] if "." in t else "(referrers index)" for t in a.result.tags
            ),
            "referrers API" if a.result.referrers_api else "tags",
        ]
        for p in published
        for a in p.attached
    ]
    if rows:
        print_table("attached", ["registry", "system", "subject", "artifacts", "found by"], rows)


def target_label(target: Target) -> str:
    """What tables and ``--json`` call a target: the registry's table name, ``--to`` or ``github``."""
    from polyarch.workflows.targets import TargetKind

    if target.kind is TargetKind.EXPLICIT:
        return "--to"
    return target.name


def print_index(index: IndexLayout) -> None:
    from polyarch.ui import print_table

    annotations = dict(index.annotations)
    rows = [["index", index.digest], ["platforms", ", ".join(index.platforms)]]
    rows += [
        [k.removeprefix("org.opencontainers.image."), v] for k, v in sorted(annotations.items())
    ]
    print_table(f"index → {index.layout}", ["", "value"], rows)


def print_pushes(published: Sequence[Published]) -> None:
    from polyarch.ui import human_size, print_table

    rows = [
        [
            target_label(p.target),
            p.result.reference,
            " ".join(p.result.tags),
            str(p.result.blobs_uploaded),
            str(p.result.blobs_skipped),
            str(p.result.blobs_mounted),
            human_size(p.result.bytes_uploaded),
            f"{p.seconds:.2f} s",
        ]
        for p in published
    ]
    print_table(
        "pushed",
        ["registry", "reference", "tags", "uploaded", "skipped", "mounted", "sent", "time"],
        rows,
    )


def print_plan(targets: Sequence[Target], tags: Sequence[str], as_json: bool) -> None:
    """--dry-run: where the push would go. Shows user names, never secrets."""
    from polyarch.ui import print_table

    if as_json:
        value = {
            "schema": MANIFEST_SCHEMA,
            "dry_run": True,
            "tags": list(tags),
            "targets": [
                {
                    "registry": target_label(t),
                    "repository": t.repository,
                    "username": t.credentials.username if t.credentials else None,
                }
                for t in targets
            ],
        }
        print(json.dumps(value, indent=2, sort_keys=True))
        return
    rows = [
        [
            target_label(t),
            t.repository,
            t.credentials.username if t.credentials else "(anonymous)",
        ]
        for t in targets
    ]
    print_table(f"would push tags: {' '.join(tags)}", ["registry", "repository", "user"], rows)


def manifest_json(
    index: IndexLayout, tags: Sequence[str], published: Sequence[Published]
) -> dict[str, Any]:
    """The ``--json`` object (schema ``polyarch.manifest/v1``, see docs/PUBLISH.md)."""
    return {
        "schema": MANIFEST_SCHEMA,
        "layout": str(index.layout),
        "digest": index.digest,
        "platforms": list(index.platforms),
        "annotations": dict(index.annotations),
        "tags": list(tags),
        "pushes": [
            {
                "registry": target_label(p.target),
                "repository": p.target.repository,
                "reference": p.result.reference,
                "digest": p.result.digest,
                "media_type": p.result.media_type,
                "tags": list(p.result.tags),
                "blobs_uploaded": p.result.blobs_uploaded,
                "blobs_skipped": p.result.blobs_skipped,
                "blobs_mounted": p.result.blobs_mounted,
                "bytes_uploaded": p.result.bytes_uploaded,
                "manifests_pushed": p.result.manifests_pushed,
                "requests": p.result.requests,
                "retries": p.result.retries,
                "seconds": round(p.seconds, 3),
                "attached": [
                    {
                        "system": a.system.name,
                        "subject": a.subject.digest,
                        "artifacts": list(a.result.artifacts),
                        "tags": list(a.result.tags),
                        "referrers_api": a.result.referrers_api,
                    }
                    for a in p.attached
                ],
            }
            for p in published
        ],
    }
