"""polyarch manifest --assemble (the options and handler), plan, and ci github: docs/SCALE.md.

Only what building the parser needs is imported at the top (see ``polyarch.cli``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyarch.cli._common import (
    Commands,
    add_lock_options,
    ca_bundle_of,
    containers_of,
    load,
    password_of,
    session_of,
)
from polyarch.cli.engine import add_engine_option
from polyarch.errors import UsageError
from polyarch.schemas import ASSEMBLE as ASSEMBLE_SCHEMA
from polyarch.schemas import PLAN as PLAN_SCHEMA
from polyarch.workflows.ci_github import WorkflowOptions

if TYPE_CHECKING:
    from polyarch.config import Container
    from polyarch.ui import ConsoleProgress
    from polyarch.workflows.assemble import Assembled
    from polyarch.workflows.plan import Plan
    from polyarch.workflows.push_images import PushedImage
    from polyarch.workflows.targets import Target


def register(commands: Commands) -> None:
    p = commands.add(
        "plan",
        cmd_plan,
        "split containers × systems into shards for a CI matrix",
    )
    p.add_argument("name", metavar="NAME", nargs="*", help="containers of containers.toml")
    p.add_argument("--all", action="store_true", help="every container of containers.toml")
    p.add_argument(
        "--systems", metavar="S,S", help="only these systems (default: each container's own)"
    )
    p.add_argument(
        "--shards", type=int, metavar="N", help="how many shards (default, or 0: one per system)"
    )
    p.add_argument(
        "--cache",
        metavar="REF",
        help="count the layers this shared cache lists as cached (reads manifests only)",
    )
    p.add_argument(
        "--runner",
        metavar="SYSTEM=LABEL",
        action="append",
        default=[],
        help="the CI runner label of a system's shards (default: GitHub's hosted ones); repeat",
    )
    p.add_argument("--insecure", action="store_true", help="allow plain HTTP and unverified TLS")
    p.add_argument("--ca-bundle", metavar="FILE", help="CA certificates to trust for the registry")
    add_lock_options(p)
    p.add_argument(
        "--json", action="store_true", help=f"machine-readable output (schema {PLAN_SCHEMA})"
    )
    register_ci(commands)


def register_ci(commands: Commands) -> None:
    ci = commands.add("ci", cmd_ci, "write the CI configuration of a distributed build")
    sub = ci.add_subparsers(title="ci commands", metavar="COMMAND")
    p = sub.add_parser(
        "github",
        help="write .github/workflows/polyarch.yml: plan, build shards, assemble, rebuild on schedule",
        description="write .github/workflows/polyarch.yml: plan, build shards, assemble, "
        "rebuild on schedule",
        parents=[commands.common],
    )
    p.set_defaults(handler=cmd_ci_github)
    defaults = WorkflowOptions()
    p.add_argument("--shards", type=int, metavar="N", help="shards (default: one per system)")
    p.add_argument(
        "--schedule",
        metavar="CRON",
        default=defaults.schedule,
        help="when to look for "
        f"packages with newer versions and rebuild (UTC; default: {defaults.schedule!r})",
    )
    p.add_argument("--branch", default=defaults.branch, help="pushes to it publish (default: main)")
    p.add_argument("--python", default=defaults.python, help="Python on the runners")
    p.add_argument(
        "--install",
        metavar="SPEC",
        default=defaults.install,
        help=f"what pip installs (default: {defaults.install})",
    )
    p.add_argument("--cache-tag", default=defaults.cache_tag, help="the shared cache's tag")
    p.add_argument("--force", action="store_true", help="replace a workflow that differs")


def cmd_ci(args: argparse.Namespace, progress: ConsoleProgress) -> int:
    raise UsageError("which CI?", hint="polyarch ci github")


def cmd_ci_github(args: argparse.Namespace, progress: ConsoleProgress) -> int:
    from polyarch.workflows.ci_github import write_workflow

    config = load(args)
    options = WorkflowOptions(
        shards=args.shards,
        schedule=args.schedule,
        branch=args.branch,
        python=args.python,
        install=args.install,
        cache_tag=args.cache_tag,
    )
    path = write_workflow(config.directory, options, force=args.force)
    print(f"wrote {path}: commit it, and let the workflow push packages (docs/SCALE.md)")
    return 0


def cmd_plan(args: argparse.Namespace, progress: ConsoleProgress) -> int:
    from polyarch.cache import Kind
    from polyarch.errors import RegistryError
    from polyarch.lock import lock_path
    from polyarch.platforms import parse_system
    from polyarch.registry.client import RegistryAccess
    from polyarch.workflows.cache_transfer import family_listing
    from polyarch.workflows.plan import lock_digest, make_plan, plan_json, plan_units

    session = session_of(args, progress)
    containers = containers_of(args, session.config)
    systems = (
        [parse_system(n.strip()) for n in args.systems.split(",") if n.strip()]
        if args.systems
        else None
    )
    runners: dict[str, str] = {}
    for text in args.runner:
        system, _, label = text.partition("=")
        if not label:
            raise UsageError(f"--runner {text!r}: expected SYSTEM=LABEL")
        runners[parse_system(system).name] = label
    listed: set[str] = set()
    if args.cache:
        access = RegistryAccess(insecure=args.insecure, ca_bundle=ca_bundle_of(args))
        try:
            listing = family_listing(args.cache, access=access)
        except RegistryError as exc:
            # The plan is an estimate: a cache it cannot read makes it rougher, not wrong.
            progress.warn(f"planning as if {args.cache} were empty: {exc}")
            listing = {}
        listed = {key for kind, key in listing if kind == Kind.LAYERS}
    units = plan_units(session, containers, systems, cached_keys=listed)
    locked = args.locked or args.offline
    plan = make_plan(
        units,
        args.shards,
        runners=runners,
        lock_sha256=lock_digest(lock_path(session.config)) if locked else None,
        cache=args.cache,
        cache_layers=len(listed),
    )
    if args.json:
        print(json.dumps(plan_json(plan), indent=2, sort_keys=True))
    else:
        print_plan(plan)
    return 0


def print_plan(plan: Plan) -> None:
    from polyarch.ui import human_size, print_table

    rows = [
        [
            s.id,
            " ".join(x.name for x in s.systems),
            s.runner + (" (qemu)" if s.emulate else ""),
            str(len(s.containers)),
            human_size(s.cost),
            " ".join(s.containers),
        ]
        for s in plan.shards
    ]
    print_table(
        f"{len(plan.shards)} shards (cost: estimated bytes of work)",
        ["shard", "systems", "runner", "containers", "cost", "names"],
        rows,
    )


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
    p.add_argument(
        "--test",
        action="store_true",
        help="with --assemble: pull each index for the native system and run its smoke test",
    )
    add_engine_option(p)


def cmd_assemble(args: argparse.Namespace, progress: ConsoleProgress) -> int:
    from polyarch.registry.client import RegistryAccess
    from polyarch.workflows.assemble import assemble_index, images_for
    from polyarch.workflows.publish import publish_tags
    from polyarch.workflows.push_images import NAME_FIELD, read_pushed
    from polyarch.workflows.targets import push_targets

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
    if args.test:
        _test_assembled(args, progress, {c.name: c for c, _t, _g in work}, done)
    return 0


def _test_assembled(
    args: argparse.Namespace,
    progress: ConsoleProgress,
    containers: dict[str, Container],
    done: Sequence[Assembled],
) -> None:
    from polyarch.engine import detect_engine
    from polyarch.kernel import locate_kernel
    from polyarch.ui import print_table
    from polyarch.workflows.smoke_test import raise_for_failures, test_published

    engine = detect_engine(args.engine)
    kernel = locate_kernel(engine)
    progress.info(f"testing the assembled indexes in {engine.describe()} on {kernel.native.name}")
    reports = [test_published(engine, containers[a.container], a.reference, kernel) for a in done]
    rows = [
        [r.container, r.reference, "passed" if r.passed else "FAILED", f"{r.seconds:.1f}s"]
        for r in reports
    ]
    if not args.json:
        print_table(
            f"pulled and tested ({kernel.native.name})",
            ["container", "image", "test", "time"],
            rows,
        )
    raise_for_failures(reports)


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
    from polyarch.determinism import DIGEST_PATTERN, Digest
    from polyarch.platforms import parse_system
    from polyarch.workflows.push_images import PushedImage

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
    from polyarch.ui import print_table

    print_table("would assemble", ["container", "repository", "tags"], rows)


def print_assembled(done: Sequence[Assembled]) -> None:
    from polyarch.ui import human_size, print_table

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
