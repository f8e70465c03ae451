"""OpenPGP signatures of an archive's Release: InRelease (clear-signed) or Release + Release.gpg.

Verified with ``gpgv`` against the configured keyring. Only the text gpgv
returns as signed is parsed, never the raw download: anything outside the
signature (or a second, unsigned block) cannot smuggle fields in.
"""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

from polyarch import cmd
from polyarch.debian.sources import Source
from polyarch.errors import ConfigError, SignatureError


def _dearmor(data: bytes) -> bytes:
    """The binary packets of ASCII-armoured OpenPGP data (all blocks, concatenated)."""
    out = bytearray()
    state = "outside"
    body: list[bytes] = []
    for raw in data.splitlines():
        line = raw.strip()
        if line.startswith(b"-----BEGIN PGP"):
            state, body = "headers", []
        elif line.startswith(b"-----END PGP"):
            out += base64.b64decode(b"".join(body), validate=True)
            state = "outside"
        elif state == "headers" and line and b":" in line:
            continue  # an armour header such as "Comment: ..."
        elif state in ("headers", "body"):
            if state == "body" and line.startswith(b"="):
                continue  # CRC24 checksum line
            state = "body"
            body.append(line)
    return bytes(out)


def _binary_keyring(keyring: Path, workdir: Path) -> Path:
    """gpgv reads only binary keyrings; an armoured ``.asc`` one is decoded first."""
    data = keyring.read_bytes()
    if not data.lstrip().startswith(b"-----BEGIN PGP"):
        return keyring.resolve()
    out = workdir / "keyring.gpg"
    try:
        out.write_bytes(_dearmor(data))
    except ValueError as exc:
        raise ConfigError(
            f"keyring {keyring} is not a valid OpenPGP keyring",
            hint="point [repository] keyring at a .gpg or .asc keyring file",
        ) from exc
    return out


def _gpgv(
    source: Source, what: str, signed: Path, detached_data: Path | None, workdir: Path
) -> None:
    """Run gpgv; raise SignatureError unless a key of the keyring made a good signature."""
    keyring = _binary_keyring(source.keyring, workdir)
    home = workdir / "home"
    home.mkdir(mode=0o700)
    argv: list[str | Path] = ["gpgv", "--homedir", home, "--keyring", keyring, "--status-fd", "1"]
    if detached_data is None:
        argv += ["--output", workdir / "signed.txt", signed]
    else:
        argv += [signed, detached_data]
    result = cmd.run(argv, timeout=120)
    keywords = [
        line.split()[1]
        for line in result.stdout.decode(errors="replace").splitlines()
        if line.startswith("[GNUPG:] ") and len(line.split()) > 1
    ]
    status = set(keywords)
    location = f"{source.url}/dists/{source.suite}/{what}"
    if "BADSIG" in status:
        raise SignatureError(
            f"{location}: {what} was modified after signing (bad signature)",
            hint="the mirror or a proxy serves altered files; try another mirror",
        )
    if status & {"ERROR", "FAILURE"} or keywords.count("PLAINTEXT") > 1:
        # e.g. a second signed message appended: gpgv verifies only the first,
        # and which text it returned would be guesswork. apt refuses it too.
        raise SignatureError(
            f"{location} is not a single signed message",
            hint="the mirror or a proxy serves altered files; try another mirror",
        )
    if "VALIDSIG" in status and "GOODSIG" in status:
        # Other signatures by keys we do not hold (ERRSIG) are allowed, as in apt:
        # archives sign with several keys and a keyring may hold only some.
        return
    if status & {"NO_PUBKEY", "ERRSIG"}:
        raise SignatureError(
            f"{location} is not signed by a key in {source.keyring}",
            hint="set [repository] keyring in containers.toml to the archive's keyring",
        )
    if status & {"EXPKEYSIG", "REVKEYSIG"}:
        raise SignatureError(
            f"{location} is signed by an expired or revoked key",
            hint="update the keyring (apt-get install debian-archive-keyring) or [repository] keyring",
        )
    if "NODATA" in status:
        raise SignatureError(
            f"{location} holds no OpenPGP signature",
            hint="check that [repository] url points at a Debian archive",
        )
    stderr = result.stderr.decode(errors="replace").strip().splitlines()
    raise SignatureError(
        f"{location}: gpgv could not verify it: {stderr[-1] if stderr else 'no output'}",
        hint=f"check that {source.keyring} is a keyring gpgv can read",
    )


def verify_inrelease(source: Source, data: bytes) -> str:
    """The signed text of a clear-signed InRelease, after gpgv accepted it."""
    with tempfile.TemporaryDirectory(prefix="polyarch-gpgv-") as tmp:
        work = Path(tmp)
        (work / "InRelease").write_bytes(data)
        _gpgv(source, "InRelease", work / "InRelease", None, work)
        return (work / "signed.txt").read_bytes().decode("utf-8", errors="replace")


def verify_detached(source: Source, release: bytes, signature: bytes) -> str:
    """The text of ``Release`` after gpgv accepted ``Release.gpg`` for it."""
    with tempfile.TemporaryDirectory(prefix="polyarch-gpgv-") as tmp:
        work = Path(tmp)
        (work / "Release").write_bytes(release)
        (work / "Release.gpg").write_bytes(signature)
        _gpgv(source, "Release.gpg", work / "Release.gpg", work / "Release", work)
        return release.decode("utf-8", errors="replace")
