"""Signing keys: ECDSA P-256 or Ed25519 pairs in PEM, made, read and used with ``cryptography``.

Private keys are PKCS#8 PEM files, encrypted when ``POLYARCH_KEY_PASSWORD``
is set (``polyarch keygen`` uses it to encrypt, ``--sign-key`` to decrypt),
written 0600 and never printed or put in a message. Public keys are
SubjectPublicKeyInfo PEM. A key's id is the SHA256 of its DER
SubjectPublicKeyInfo: anyone can compute it from the public PEM, and DSSE
envelopes carry it as the (unauthenticated) hint of which key signed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from polyarch.errors import KeyFileError
from polyarch.files import atomic_write

KeyType = Literal["ecdsa-p256", "ed25519"]
KEY_TYPES: tuple[KeyType, ...] = ("ecdsa-p256", "ed25519")
PASSWORD_ENV = "POLYARCH_KEY_PASSWORD"
PRIVATE_SUFFIX = ".key"
PUBLIC_SUFFIX = ".pub"

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKeyObject = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


def key_id(public: PublicKeyObject) -> str:
    """SHA256 (hex) of the key's DER SubjectPublicKeyInfo."""
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def _kind_of(key: PrivateKey | PublicKeyObject) -> KeyType:
    return (
        "ed25519"
        if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey)
        else "ecdsa-p256"
    )


@dataclass(frozen=True)
class SigningKey:
    """A private key ready to sign; ``repr`` shows the id only."""

    key: PrivateKey
    keyid: str
    kind: KeyType

    def __repr__(self) -> str:
        return f"SigningKey({self.kind}, {self.keyid[:16]})"

    def sign(self, message: bytes) -> bytes:
        """ECDSA: a DER signature over SHA-256 (as cosign and securesystemslib); Ed25519: raw."""
        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            return self.key.sign(message, ec.ECDSA(hashes.SHA256()))
        return self.key.sign(message)

    @property
    def public(self) -> PublicKey:
        return PublicKey(self.key.public_key(), self.keyid, self.kind, "(the signing key)")


@dataclass(frozen=True)
class PublicKey:
    """A public key and where it came from (for messages)."""

    key: PublicKeyObject
    keyid: str
    kind: KeyType
    label: str

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            if isinstance(self.key, ec.EllipticCurvePublicKey):
                self.key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
            else:
                self.key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def pem(self) -> bytes:
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def generate_key(kind: KeyType) -> PrivateKey:
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


@dataclass(frozen=True, slots=True)
class KeyPairFiles:
    private: Path
    public: Path
    keyid: str
    kind: KeyType
    encrypted: bool


def write_key_pair(
    prefix: Path, kind: KeyType, *, environ: Mapping[str, str] | None = None
) -> KeyPairFiles:
    """Make a key pair: ``PREFIX.key`` (0600, encrypted with $POLYARCH_KEY_PASSWORD if set)
    and ``PREFIX.pub``. Existing files are never overwritten."""
    private_path = prefix.with_name(prefix.name + PRIVATE_SUFFIX)
    public_path = prefix.with_name(prefix.name + PUBLIC_SUFFIX)
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise KeyFileError(
                f"{path} already exists", hint="remove it, or choose another name with --out"
            )
    if not private_path.parent.is_dir():
        raise KeyFileError(f"{private_path.parent}: no such directory")
    password = (os.environ if environ is None else environ).get(PASSWORD_ENV, "").encode()
    key = generate_key(kind)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    public = key.public_key()
    try:
        # Written 0600 from the first byte (a temp file, renamed into place).
        atomic_write(private_path, private_pem, mode=0o600)
        atomic_write(
            public_path,
            public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
    except OSError as exc:
        raise KeyFileError(f"cannot write {prefix}.*: {exc.strerror}") from exc
    return KeyPairFiles(private_path, public_path, key_id(public), kind, bool(password))


def load_signing_key(path: Path, *, environ: Mapping[str, str] | None = None) -> SigningKey:
    """The private key in PEM file ``path``; ``$POLYARCH_KEY_PASSWORD`` decrypts it."""
    data = _read(path)
    password = (os.environ if environ is None else environ).get(PASSWORD_ENV) or None
    try:
        key = serialization.load_pem_private_key(
            data, password.encode() if password is not None else None
        )
    except TypeError:
        # cryptography: "Password was not given but private key is encrypted" (or the reverse).
        if password is None:
            raise KeyFileError(
                f"{path} is encrypted", hint=f"set {PASSWORD_ENV} to its password"
            ) from None
        key = _load_unencrypted(path, data)
    except ValueError:
        if b"PUBLIC KEY" in data and b"PRIVATE KEY" not in data:
            raise KeyFileError(
                f"{path} is a public key", hint="sign with the private key (.key)"
            ) from None
        hint = f"check {PASSWORD_ENV}" if password else "give a PKCS#8 PEM private key"
        raise KeyFileError(
            f"{path}: cannot read the private key (wrong password?)", hint=hint
        ) from None
    except UnsupportedAlgorithm:
        raise KeyFileError(f"{path}: unsupported key", hint=_TYPES_HINT) from None
    return _signing_key(path, key)


def _load_unencrypted(path: Path, data: bytes) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, None)
    except (TypeError, ValueError, UnsupportedAlgorithm):
        raise KeyFileError(f"{path}: cannot read the private key", hint=_TYPES_HINT) from None
    return _supported(path, key)


_TYPES_HINT = "polyarch signs with ECDSA P-256 or Ed25519 keys; `polyarch keygen` makes one"


def _supported(path: Path, key: object) -> PrivateKey:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise KeyFileError(f"{path}: not an ECDSA P-256 or Ed25519 key", hint=_TYPES_HINT)


def _signing_key(path: Path, key: object) -> SigningKey:
    supported = _supported(path, key)
    return SigningKey(supported, key_id(supported.public_key()), _kind_of(supported))


def load_public_key(path: Path) -> PublicKey:
    """The public key in PEM file ``path`` (SubjectPublicKeyInfo)."""
    data = _read(path)
    if b"PRIVATE KEY" in data:
        raise KeyFileError(
            f"{path} holds a private key",
            hint="verify with the public key (.pub); keep the other secret",
        )
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(f"{path}: not a PEM public key", hint=_TYPES_HINT) from None
    if isinstance(key, ed25519.Ed25519PublicKey) or (
        isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)
    ):
        return PublicKey(key, key_id(key), _kind_of(key), str(path))
    raise KeyFileError(f"{path}: not an ECDSA P-256 or Ed25519 key", hint=_TYPES_HINT)


def _read(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror}") from exc
    if len(data) > 64 * 1024:
        raise KeyFileError(f"{path} is too large for a PEM key")
    return data
