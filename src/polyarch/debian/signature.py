"""OpenPGP signatures of an archive's Release: InRelease (clear-signed) or Release + Release.gpg.

Verified in-process with Sequoia-PGP (pysequoia), so building needs no gpgv
and runs wherever the wheel does (Linux, macOS, Windows). Only the text the
verifier returns as signed is parsed, never the raw download.

``pysequoia.verify`` alone accepts a message when *one* signature verifies; apt
is stricter, and so is polyarch (docs/MACOS.md, "Signatures and keys"):

- InRelease must be exactly one clear-signed message: nothing before it,
  nothing after its signature (apt refuses both; Sequoia ignores them).
- A signature counts only if its key has not expired or been revoked *now*
  (gpgv reports EXPKEYSIG, and apt counts that signature as worthless).
- A bad signature by a key of the keyring is fatal even when another one is
  good (apt: any BADSIG by a known key fails the file).
- Signatures by keys outside the keyring are ignored when a good one exists:
  archives sign with several keys and a keyring may hold only some (as apt).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pysequoia
from pysequoia.packet import Packet, PacketPile, Tag

from polyarch.debian.keys import check_pinned_keyring
from polyarch.debian.sources import Source
from polyarch.errors import ConfigError, SignatureError

BEGIN = b"-----BEGIN PGP SIGNED MESSAGE-----"
SIG_BEGIN = b"-----BEGIN PGP SIGNATURE-----"
SIG_END = b"-----END PGP SIGNATURE-----"

_ALTERED = "the mirror or a proxy serves altered files; try another mirror"


@dataclass(frozen=True, slots=True)
class Keyring:
    """The certificates of a keyring file, and when each of their keys stops being usable.

    Which keys a certificate holds is read when the file is loaded (packet
    parsing, no cryptography); when a key expires, and whether its
    certificate is revoked, is worked out the first time a signature by one
    of its keys is judged (that verifies the certificate's self-signatures,
    a few milliseconds each for Debian's 4096-bit keys), and then kept.
    """

    path: Path
    certs: tuple[pysequoia.Cert, ...]
    owners: dict[str, int]
    """Fingerprint of every primary key and subkey → the position of its certificate."""
    packets: tuple[tuple[Packet, ...] | None, ...]
    """Each certificate's packets as the file has them (None: read from the certificate)."""
    _lifetimes: dict[int, tuple[dict[str, datetime | None], bool]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def usable(self, fingerprint: str, now: datetime) -> bool:
        """The key is in the keyring, not revoked, and not expired at ``now``."""
        if fingerprint not in self.owners:
            return False
        expiry, revoked = self._lifetime(self.owners[fingerprint])
        until = expiry.get(fingerprint)
        return not revoked and (until is None or until > now)

    def _lifetime(self, position: int) -> tuple[dict[str, datetime | None], bool]:
        with self._lock:
            found = self._lifetimes.get(position)
            if found is None:
                cert = self.certs[position]
                packets = self.packets[position]
                if packets is None:
                    packets = tuple(PacketPile.from_bytes(bytes(cert)))
                found = _key_expiry(cert, packets), cert.is_revoked
                self._lifetimes[position] = found
            return found


_KEYRINGS: dict[tuple[str, int, int, int, int, int], Keyring] = {}
_KEYRINGS_LOCK = threading.Lock()


def load_keyring(path: Path) -> Keyring:
    """Read a binary or ASCII-armoured keyring (one or many certificates); ConfigError if unusable.

    Read once per process while the file stays the same (same inode, size,
    mtime and ctime): every source of a build shares the Debian keyring.
    """
    hint = "point keyring in containers.toml at a .gpg or .asc keyring file"
    try:
        with path.open("rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read keyring {path}: {exc.strerror}", hint=hint) from None
    stamp = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    with _KEYRINGS_LOCK:
        keyring = _KEYRINGS.get(stamp)
        if keyring is None:
            keyring = _read_keyring(path, data, hint)
            _KEYRINGS[stamp] = keyring
    return keyring


def _read_keyring(path: Path, data: bytes, hint: str) -> Keyring:
    try:
        certs = tuple(pysequoia.Cert.split_bytes(data))
    except (RuntimeError, ValueError):
        certs = ()
    if not certs:
        raise ConfigError(f"keyring {path} holds no OpenPGP certificate", hint=hint)
    check_pinned_keyring(path, [c.fingerprint for c in certs])
    packets = _packets_per_cert(data, certs)
    owners: dict[str, int] = {}
    for position, cert in enumerate(certs):
        listed = packets[position]
        if listed is None:
            listed = tuple(PacketPile.from_bytes(bytes(cert)))
        for packet in listed:
            if packet.tag in (Tag.PublicKey, Tag.PublicSubkey) and packet.fingerprint:
                owners.setdefault(packet.fingerprint, position)
    return Keyring(path, certs, owners, packets)


def _packets_per_cert(
    data: bytes, certs: Sequence[pysequoia.Cert]
) -> tuple[tuple[Packet, ...] | None, ...]:
    """Each certificate's packets straight from a binary keyring, when it lists them plainly.

    Serialising a certificate (``bytes(cert)``) verifies its self-signatures,
    ~6 ms per Debian key; a binary keyring (what Debian ships) already holds
    the packets in certificate order. An armoured keyring, or one whose
    certificates Sequoia merged or reordered, is read certificate by
    certificate instead (None).
    """
    unknown: tuple[None, ...] = (None,) * len(certs)
    if data.lstrip()[:5] == b"-----":
        return unknown
    try:
        pile = list(PacketPile.from_bytes(data))
    except (RuntimeError, ValueError):
        return unknown
    groups: list[list[Packet]] = []
    for packet in pile:
        if packet.tag == Tag.PublicKey:
            groups.append([])
        if groups:
            groups[-1].append(packet)
    if [g[0].fingerprint for g in groups] != [c.fingerprint for c in certs]:
        return unknown
    return tuple(tuple(g) for g in groups)


def _key_expiry(cert: pysequoia.Cert, packets: Iterable[Packet]) -> dict[str, datetime | None]:
    """Each key of ``cert`` → its expiry, from its newest self-signature; capped by the primary's."""
    primary = cert.fingerprint
    out: dict[str, datetime | None] = {}
    newest: dict[str, datetime] = {}
    current: str | None = None
    created: datetime | None = None
    for packet in packets:
        if packet.tag in (Tag.PublicKey, Tag.PublicSubkey):
            current, created = packet.fingerprint, packet.key_created
            if current is not None:
                out[current] = None
        elif packet.tag == Tag.Signature and current is not None and created is not None:
            made = packet.signature_created
            # Only the key owner's own (self-)signatures set a key's lifetime.
            if packet.issuer_fingerprint != primary or made is None:
                continue
            if current in newest and newest[current] > made:
                continue
            newest[current] = made
            period = packet.key_validity_period
            out[current] = created + period if period else None
    limit = cert.expiration  # the primary key's expiry bounds its subkeys too
    if limit is not None:
        out = {
            fpr: limit if until is None or until > limit else until for fpr, until in out.items()
        }
    return out


def verify_inrelease(source: Source, data: bytes, *, now: datetime | None = None) -> str:
    """The signed text of a clear-signed InRelease, after the checks in the module doc."""
    location = f"{source.url}/dists/{source.suite}/InRelease"
    _check_framing(data, location)
    keyring = load_keyring(source.keyring)
    signatures = _signatures(data[data.index(SIG_BEGIN) :], location)
    try:
        result = pysequoia.verify(bytes=data, store=_store(keyring))
        good, text = [v.signing_key for v in result.valid_sigs], result.bytes or b""
    except RuntimeError:  # no signature verified; _judge says which way it failed
        good, text = [], b""
    _judge(good, signatures, keyring, location, now or datetime.now(UTC))
    # gpg and dak leave the last line break out of the signed text; Sequoia keeps it.
    return _text(text if text.endswith(b"\n") else text + b"\n")


def verify_detached(
    source: Source, release: bytes, signature: bytes, *, now: datetime | None = None
) -> str:
    """The text of ``Release`` after ``Release.gpg`` passed the checks in the module doc."""
    location = f"{source.url}/dists/{source.suite}/Release.gpg"
    keyring = load_keyring(source.keyring)
    signatures = _signatures(signature, location)
    # pysequoia's Sig keeps only the first signature of a file: verify each on its own.
    good: list[str] = []
    for packet in signatures:
        sig = pysequoia.Sig.from_bytes(bytes(packet.packet))
        try:
            result = pysequoia.verify(bytes=release, store=_store(keyring), signature=sig)
        except RuntimeError:
            continue
        good += [v.signing_key for v in result.valid_sigs]
    _judge(good, signatures, keyring, location, now or datetime.now(UTC))
    return _text(release)


@dataclass(frozen=True, slots=True)
class _Signature:
    packet: Packet
    issuer: str | None
    """Issuer fingerprint, or key ID when the signature names only that (lowercase hex)."""


def _signatures(armoured: bytes, location: str) -> list[_Signature]:
    try:
        packets = [p for p in PacketPile.from_bytes(armoured) if p.tag == Tag.Signature]
    except (RuntimeError, ValueError):
        packets = []
    if not packets:
        what = location.rsplit("/", 1)[1]
        raise SignatureError(
            f"{location} holds no OpenPGP signature",
            hint=f"check that [repository] url points at a Debian archive ({what} is unsigned)",
        )
    return [_Signature(p, p.issuer_fingerprint or p.issuer_key_id) for p in packets]


def _known(issuer: str | None, keyring: Keyring) -> str | None:
    """The fingerprint of the keyring's key that ``issuer`` (fingerprint or key ID) names."""
    if issuer is None:
        return None
    if issuer in keyring.owners:
        return issuer
    return next((fpr for fpr in keyring.owners if fpr.endswith(issuer) and len(issuer) == 16), None)


def _judge(
    good: Sequence[str],
    signatures: Sequence[_Signature],
    keyring: Keyring,
    location: str,
    now: datetime,
) -> None:
    """Apply apt's rules to what verified (``good`` signing keys) and what was there."""
    what = location.rsplit("/", 1)[1]
    known = [fpr for s in signatures if (fpr := _known(s.issuer, keyring)) is not None]
    bad = sorted(set(known) - set(good))
    if bad:
        raise SignatureError(
            f"{location}: {what} was modified after signing (bad signature by key {bad[0]})",
            hint=_ALTERED,
        )
    if not known:
        raise SignatureError(
            f"{location} is not signed by a key in {keyring.path}",
            hint="set [repository] keyring in containers.toml to the archive's keyring",
        )
    if not any(keyring.usable(fpr, now) for fpr in good):
        raise SignatureError(
            f"{location} is signed only by expired or revoked keys ({', '.join(sorted(set(good)))})",
            hint=f"update the keyring {keyring.path} (apt-get install debian-archive-keyring, "
            "or a newer polyarch), or set [repository] keyring",
        )


def _check_framing(data: bytes, location: str) -> None:
    """Exactly one clear-signed message, nothing before or after it (as apt demands)."""
    lines = [line.rstrip(b"\r") for line in data.split(b"\n")]
    if not lines or lines[0] != BEGIN:
        if BEGIN not in lines:
            raise SignatureError(
                f"{location} holds no OpenPGP signature",
                hint="check that [repository] url points at a Debian archive",
            )
        raise SignatureError(f"{location} has data before its signed message", hint=_ALTERED)
    counts = [lines.count(marker) for marker in (BEGIN, SIG_BEGIN, SIG_END)]
    if counts != [1, 1, 1]:
        raise SignatureError(f"{location} is not a single signed message", hint=_ALTERED)
    end = lines.index(SIG_END)
    if lines.index(SIG_BEGIN) > end or any(line.strip() for line in lines[end + 1 :]):
        raise SignatureError(f"{location} has data after its signature", hint=_ALTERED)


def _store(keyring: Keyring) -> Callable[[list[str]], list[pysequoia.Cert]]:
    # Sequoia asks for the certs of the issuers it sees; it picks the matching ones itself.
    return lambda _issuers: list(keyring.certs)


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")
