"""polyarch cache info|verify|prune|push|pull, and polyarch lock."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from polyarch.cache import Kind
from polyarch.cli._common import (
    Commands,
    Handler,
    add_registry_options,
    ca_bundle_of,
    cache_of,
    jobs_of,
    load,
    password_of,
    session_of,
)
from polyarch.errors import CacheError, UsageError
from polyarch.schemas import CACHE_PULL, CACHE_PUSH

if TYPE_CHECKING:
    from polyarch.cache import Cache
    from polyarch.registry.client import RegistryAccess
    from polyarch.registry.credentials import Credentials
    from polyarch.ui import ConsoleProgress
    from polyarch.workflows.cache_needs import Needs
    from polyarch.workflows.cache_transfer import CachePullResult, CachePushResult


def register(commands: Commands) -> None:
    p = commands.add("lock", cmd_lock, "write containers.lock: every container's packages")
    p.add_argument(
        "--update",
        metavar="NAME",
        nargs="?",
        const=True,
        default=False,
        help="re-resolve NAME (without NAME: every container) even if its entry is current",
    )

    cache = commands.add("cache", cmd_cache, "inspect, check, prune and share the local cache")
    sub = cache.add_subparsers(title="cache commands", metavar="COMMAND")

    def add(name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        q: argparse.ArgumentParser = sub.add_parser(
            name, help=help, description=help, parents=[commands.common]
        )
        q.set_defaults(handler=handler)
        return q

    add("info", cmd_cache_info, "entries and sizes per kind")
    q = add(
        "verify",
        cmd_cache_verify,
        "check every entry (hashes, record schemas, checksums); report, or --repair delete, bad ones",
    )
    q.add_argument("--repair", action="store_true", help="delete bad entries")
    q = add(
        "prune",
        cmd_cache_prune,
        "remove crash leftovers, and with --older-than entries no build used for that long",
    )
    q.add_argument(
        "--older-than", metavar="DURATION", help="e.g. 30d, 12h, 2w: remove entries unused as long"
    )
    _register_transfer(add)


def _register_transfer(add: Callable[[str, Handler, str], argparse.ArgumentParser]) -> None:
    """cache push and cache pull."""
    for name, handler, help in (
        (
            "push",
            cmd_cache_push,
            "upload the cache's layers, .debs and indexes to REF as OCI artifacts",
        ),
        ("pull", cmd_cache_pull, "fill the cache from what `cache push` uploaded to REF"),
    ):
        q = add(name, handler, help)
        q.add_argument("ref", metavar="REF", help="host[:port]/repository[:tag]")
        q.add_argument(
            "--kind",
            action="append",
            choices=[kind.value for kind in Kind],
            help="only this kind of entry; repeat (default: all)",
        )
        add_registry_options(q, jobs_help="parallel transfers")
        q.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "push":
            q.add_argument(
                "--compact",
                action="store_true",
                help="fold every artifact of REF's family into one, then delete the others",
            )
        else:
            add_pull_for_options(q)


def cmd_cache(args: argparse.Namespace, progress: ConsoleProgress) -> int:
    raise UsageError("which cache command?", hint="info, verify, prune, push or pull")


def cmd_lock(args: argparse.Namespace, progress: ConsoleProgress) -> int:
    from polyarch.lock import lock_path, write_lock
    from polyarch.ui import print_table
    from polyarch.workflows.resolve import lock_containers

    session = session_of(args, progress)
    config = session.config
    update: set[str] | bool = args.update
    if isinstance(args.update, str):
        update = {config.container(args.update).name}
    lock, updates = lock_containers(session, config.containers, update=update)
    path = lock_path(config)
    write_lock(path, lock)
    rows = [[u.name, u.action, "\n".join(u.changes)] for u in updates]
    print_table(f"{path}", ["container", "lock", "changes"], rows)
    return 0


def cmd_cache_info(args: argparse.Namespace, progress: ConsoleProgress) -> int:

    from polyarch.ui import human_size, print_table
    from polyarch.workflows.cache import cache_info

    info = cache_info(cache_of(args))
    rows = [[k.kind, str(k.entries), human_size(k.bytes)] for k in info.kinds]
    if info.temp_files:
        rows.append(["(temporary)", str(info.temp_files), human_size(info.temp_bytes)])
    rows.append(["total", "", human_size(info.bytes)])
    print_table(str(info.root), ["kind", "entries", "size"], rows)
    return 0


def cmd_cache_verify(args: argparse.Namespace, progress: ConsoleProgress) -> int:

    from polyarch.ui import print_table
    from polyarch.workflows.cache import verify_cache

    cache = cache_of(args)
    report = verify_cache(cache, repair=args.repair, progress=progress)
    checked = ", ".join(f"{n} {kind}" for kind, n in report.checked.items())
    if report.ok:
        print(f"{cache.root}: all entries intact ({checked})")
        return 0
    rows = [[p.kind, p.key[:16], p.reason] for p in report.problems]
    print_table(
        f"{cache.root}: {len(report.problems)} bad entries", ["kind", "key", "problem"], rows
    )
    if report.repaired:
        print("removed them; the next build fetches or rebuilds what it needs")
        return 0
    raise CacheError(
        f"{len(report.problems)} cache entries are damaged",
        hint="run `polyarch cache verify --repair` to delete them",
    )


def cmd_cache_prune(args: argparse.Namespace, progress: ConsoleProgress) -> int:

    from polyarch.ui import human_size, print_table
    from polyarch.workflows.cache import parse_duration, prune_cache

    older_than = parse_duration(args.older_than) if args.older_than else None
    report = prune_cache(cache_of(args), older_than=older_than)
    rows = [[k.kind, str(k.entries), human_size(k.bytes)] for k in report.removed.values()]
    rows.append(["(temporary)", str(report.temp_files), human_size(report.temp_bytes)])
    print_table(f"removed {human_size(report.bytes)}", ["kind", "entries", "size"], rows)
    return 0


def _kinds(args: argparse.Namespace) -> tuple[Kind, ...]:
    return tuple(Kind(k) for k in args.kind) if args.kind else tuple(Kind)


def _access(args: argparse.Namespace) -> RegistryAccess:
    from polyarch.registry.client import RegistryAccess

    return RegistryAccess(_credentials(args), insecure=args.insecure, ca_bundle=ca_bundle_of(args))


def _credentials(args: argparse.Namespace) -> Credentials | None:

    from polyarch.reference import parse_reference
    from polyarch.registry.credentials import resolve_credentials

    if args.password_stdin and not args.username:
        raise UsageError("--password-stdin needs --username")
    return resolve_credentials(
        parse_reference(args.ref).api_host, username=args.username, password_stdin=password_of(args)
    )


def add_pull_for_options(q: argparse.ArgumentParser) -> None:
    q.add_argument(
        "--for",
        dest="for_names",
        metavar="NAME",
        nargs="+",
        help="only what building these containers needs (from containers.lock): their "
        "layers, the blobs and package facts those need, and .debs only of missing layers",
    )
    q.add_argument(
        "--system",
        metavar="S",
        action="append",
        help="with --for: only these systems; repeat or separate with commas",
    )
    q.add_argument(
        "--missing-ok",
        action="store_true",
        help="no cache at REF yet (a first run) is not an error: pull nothing",
    )


def cmd_cache_push(args: argparse.Namespace, progress: ConsoleProgress) -> int:
    from polyarch.ui import human_size
    from polyarch.workflows.cache_transfer import push_cache

    result = push_cache(
        cache_of(args),
        args.ref,
        kinds=_kinds(args),
        access=_access(args),
        jobs=jobs_of(args),
        compact=args.compact,
        progress=progress,
    )
    push = result.push
    if args.json:
        print(json.dumps(cache_push_json(args.ref, result), indent=2, sort_keys=True))
        return 0
    entries = ", ".join(f"{n} {kind}" for kind, n in result.entries.items())
    if push is None:
        print(f"nothing to push: {args.ref} lists every entry already ({result.listed_before})")
        return 0
    print(f"pushed {push.reference} as {result.tag} ({entries})")
    print(
        f"{push.blobs_uploaded} blobs uploaded ({human_size(push.bytes_uploaded)}), "
        f"{push.blobs_skipped} already there"
        + (f"; {result.deleted} older artifacts deleted" if args.compact else "")
    )
    return 0


def cmd_cache_pull(args: argparse.Namespace, progress: ConsoleProgress) -> int:
    from polyarch.ui import human_size
    from polyarch.workflows.cache_transfer import pull_cache

    cache = cache_of(args, progress)
    if args.system and not args.for_names:
        raise UsageError("--system is for --for NAME...")
    want = _needs(args, cache, progress) if args.for_names else None
    result = pull_cache(
        cache,
        args.ref,
        kinds=_kinds(args),
        access=_access(args),
        jobs=jobs_of(args),
        want=want,
        missing_ok=args.missing_ok,
        progress=progress,
    )
    if args.json:
        print(json.dumps(cache_pull_json(result), indent=2, sort_keys=True))
        return 0
    if result.members == 0:
        print(f"no cache at {args.ref} yet: nothing pulled")
        return 0
    print(f"pulled {result.reference} ({result.members} artifacts) into {cache.root}")
    print(
        f"{result.downloaded} entries downloaded ({human_size(result.bytes)}), "
        f"{result.present} already there"
    )
    return 0


def _needs(args: argparse.Namespace, cache: Cache, progress: ConsoleProgress) -> Needs:
    from polyarch.lock import lock_path, read_lock
    from polyarch.platforms import parse_system
    from polyarch.workflows.cache_needs import needs_of
    from polyarch.workflows.resolve import Session

    config = load(args)
    session = Session(config=config, cache=cache, progress=progress)
    session.lock = read_lock(lock_path(config))
    containers = [config.container(name) for name in dict.fromkeys(args.for_names)]
    systems = (
        [parse_system(n.strip()) for t in args.system for n in t.split(",") if n.strip()]
        if args.system
        else None
    )
    return needs_of(session, containers, systems)


def cache_push_json(ref: str, result: CachePushResult) -> dict[str, Any]:
    """``cache push --json`` (schema ``CACHE_PUSH``, docs/JSON.md)."""
    push = result.push
    return {
        "schema": CACHE_PUSH,
        "reference": ref,
        "pushed": push is not None,
        "tag": result.tag,
        "digest": push.digest if push else None,
        "entries": {str(k): n for k, n in result.entries.items()},
        "listed_before": result.listed_before,
        "skipped": result.skipped,
        "deleted": result.deleted,
        "blobs_uploaded": push.blobs_uploaded if push else 0,
        "blobs_skipped": push.blobs_skipped if push else 0,
        "bytes_uploaded": push.bytes_uploaded if push else 0,
    }


def cache_pull_json(result: CachePullResult) -> dict[str, Any]:
    """``cache pull --json`` (schema ``CACHE_PULL``, docs/JSON.md)."""
    return {
        "schema": CACHE_PULL,
        "reference": result.reference,
        "members": result.members,
        "entries": result.entries,
        "downloaded": result.downloaded,
        "present": result.present,
        "bytes": result.bytes,
        "per_kind": {str(k): n for k, n in result.per_kind.items()},
    }
