"""polyarch keygen · sign · verify: keys, signatures and checking an image's evidence.

Also ``--sign-key`` for ``build`` and ``manifest``. cryptography is imported
only by the commands that sign or verify.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyarch.cli._common import (
    Commands,
    add_out_option,
    ca_bundle_of,
    password_of,
)
from polyarch.errors import UsageError
from polyarch.outputs import Outputs

if TYPE_CHECKING:
    from polyarch.ui import ConsoleProgress


if TYPE_CHECKING:
    from polyarch.attest.keys import SigningKey
    from polyarch.workflows.verify import VerifyReport

VERIFY_SCHEMA = "polyarch.verify/v1"
PASSWORD_ENV = "POLYARCH_KEY_PASSWORD"


def register(commands: Commands) -> None:
    p = commands.add("keygen", cmd_keygen, "make a signing key pair (PREFIX.key, PREFIX.pub)")
    p.add_argument(
        "--type", choices=("ecdsa-p256", "ed25519"), default="ecdsa-p256", help="key type"
    )
    p.add_argument(
        "--out",
        metavar="PREFIX",
        default="polyarch",
        help=f"file name prefix (default: polyarch); ${PASSWORD_ENV} encrypts the private key",
    )

    p = commands.add("sign", cmd_sign, "sign the SBOMs and provenance of a build")
    p.add_argument("target", metavar="NAME_OR_DIR", help="container NAME (in --out) or OUT/NAME")
    p.add_argument("--key", metavar="KEY", required=True, help="private key (PEM)")
    add_out_option(p)

    p = commands.add("verify", cmd_verify, "check an image's signatures, subjects and SBOMs")
    p.add_argument(
        "target", metavar="REF_OR_DIR", help="registry reference, container NAME or OUT/NAME"
    )
    p.add_argument(
        "--key", metavar="PUB", action="append", required=True, help="trusted public key; repeat"
    )
    add_out_option(p)
    p.add_argument("--insecure", action="store_true", help="allow plain HTTP and unverified TLS")
    p.add_argument("--ca-bundle", metavar="FILE", help="CA certificates to trust for the registry")
    p.add_argument("--username", metavar="U", help="registry user (with --password-stdin)")
    p.add_argument(
        "--password-stdin", action="store_true", help="read the password or token from stdin"
    )
    p.add_argument(
        "--json", action="store_true", help=f"machine-readable output (schema {VERIFY_SCHEMA})"
    )


def add_sign_key_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sign-key",
        metavar="KEY",
        help=f"sign the SBOMs and provenance with this private key (PEM; ${PASSWORD_ENV})",
    )


def sign_key_of(args: argparse.Namespace) -> SigningKey | None:
    """The --sign-key, read before any work starts (a wrong password fails at once)."""
    if not getattr(args, "sign_key", None):
        return None
    from polyarch.attest.keys import load_signing_key

    return load_signing_key(Path(args.sign_key))


def cmd_keygen(args: argparse.Namespace, progress: ConsoleProgress) -> int:
    from polyarch.attest.keys import write_key_pair
    from polyarch.ui import print_table

    made = write_key_pair(Path(args.out), args.type)
    rows = [
        [
            "private key",
            str(made.private),
            "0600, " + ("encrypted" if made.encrypted else "not encrypted"),
        ],
        ["public key", str(made.public), "give it to whoever verifies"],
        ["key id", made.keyid, made.kind],
    ]
    print_table("key pair", ["", "file", ""], rows)
    return 0


def _outputs_dir(target: str, out: str) -> Path | None:
    """OUT/NAME for a container name, else the directory itself; None if neither exists."""
    if "/" not in target and target not in (".", ".."):
        candidate = Outputs(Path(out), target).root
        if candidate.is_dir():
            return candidate
    path = Path(target)
    return path if path.is_dir() else None


def cmd_sign(args: argparse.Namespace, progress: ConsoleProgress) -> int:
    from polyarch.attest.keys import load_signing_key
    from polyarch.ui import print_table
    from polyarch.workflows.signing import sign_outputs

    key = load_signing_key(Path(args.key))
    directory = _outputs_dir(args.target, args.out)
    if directory is None:
        raise UsageError(
            f"no build of {args.target!r} (looked in {args.out}/ and for a directory)",
            hint=f"run polyarch build {args.target} first, or pass OUT/NAME",
        )
    result = sign_outputs(directory, key)
    rows = [[str(path)] for path in result.written]
    print_table(f"signed with key {result.keyid[:16]}", ["envelope"], rows)
    return 0


def cmd_verify(args: argparse.Namespace, progress: ConsoleProgress) -> int:
    from polyarch.attest.keys import load_public_key
    from polyarch.registry.client import RegistryAccess
    from polyarch.registry.credentials import resolve_credentials
    from polyarch.workflows.verify import verify_outputs, verify_registry

    keys = [load_public_key(Path(k)) for k in args.key]
    directory = _outputs_dir(args.target, args.out)
    if directory is not None:
        if args.username or args.password_stdin:
            raise UsageError("--username and --password-stdin are for a registry reference")
        report = verify_outputs(directory, keys)
    else:
        from polyarch.reference import parse_reference

        reference = parse_reference(args.target)
        if args.password_stdin and not args.username:
            raise UsageError("--password-stdin needs --username")
        credentials = resolve_credentials(
            reference.registry,
            username=args.username if args.password_stdin else None,
            password_stdin=password_of(args),
        )
        access = RegistryAccess(credentials, insecure=args.insecure, ca_bundle=ca_bundle_of(args))
        report = verify_registry(args.target, keys, access=access)
    if args.json:
        print(json.dumps(verify_json(report), indent=2, sort_keys=True))
    else:
        print_report(report)
    report.raise_for_problems()
    return 0


def print_report(report: VerifyReport) -> None:
    from polyarch.ui import print_table

    rows = [
        [
            v.label,
            v.digest,
            str(v.packages),
            ", ".join(k[:16] for k in v.signed_by if k) or "-",
            "ok" if v.ok else f"{len(v.problems)} problem(s)",
        ]
        for v in report.images
    ]
    print_table(
        f"verify {report.source}", ["image", "digest", "packages", "signed by", "result"], rows
    )
    for v in report.images:
        for problem in v.problems:
            print(f"{v.label}: {problem}")


def verify_json(report: VerifyReport) -> dict[str, Any]:
    """The ``--json`` object (schema ``polyarch.verify/v1``, see docs/SUPPLY-CHAIN.md)."""
    return {
        "schema": VERIFY_SCHEMA,
        "source": report.source,
        "ok": report.ok,
        "images": [
            {
                "image": v.label,
                "digest": v.digest,
                "packages": v.packages,
                "signed_by": list(v.signed_by),
                "ok": v.ok,
                "problems": list(v.problems),
            }
            for v in report.images
        ],
    }
