"""DSSE envelopes (github.com/secure-systems-lab/dsse): sign and check in-toto statements.

The signature covers PAE(payloadType, payload), never the bare payload. Each
signature carries the signer's key id (``keys.key_id``) as a hint; it is not
trusted: every given key is tried, and the hint only makes the message
precise when none fits. securesystemslib verifies these envelopes in the tests.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from polyarch import media_types
from polyarch.determinism import pretty_json

if TYPE_CHECKING:  # cryptography is imported only where keys are read
    from polyarch.attest.keys import PublicKey, SigningKey


PAYLOAD_TYPE = media_types.IN_TOTO_JSON
MAX_SIGNATURES = 16


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: ``DSSEv1 LEN TYPE LEN PAYLOAD`` (byte lengths)."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


@dataclass(frozen=True, slots=True)
class Signature:
    keyid: str
    sig: bytes


@dataclass(frozen=True, slots=True)
class Envelope:
    payload: bytes
    payload_type: str
    signatures: tuple[Signature, ...]

    def to_json(self) -> bytes:
        """The envelope as a file: standard base64, as securesystemslib and cosign write it."""
        return pretty_json(
            {
                "payload": base64.standard_b64encode(self.payload).decode(),
                "payloadType": self.payload_type,
                "signatures": [
                    {"keyid": s.keyid, "sig": base64.standard_b64encode(s.sig).decode()}
                    for s in self.signatures
                ],
            }
        )


def sign_envelope(payload: bytes, key: SigningKey, payload_type: str = PAYLOAD_TYPE) -> Envelope:
    """``payload`` in an envelope signed by ``key``."""
    signature = Signature(key.keyid, key.sign(pae(payload_type, payload)))
    return Envelope(payload, payload_type, (signature,))


def parse_envelope(data: bytes) -> Envelope:
    """Read an envelope; ValueError saying what is wrong with it."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("is not JSON") from None
    if not isinstance(document, dict):
        raise ValueError("is not a DSSE envelope")
    payload_type = document.get("payloadType")
    raw_signatures = document.get("signatures")
    if not isinstance(payload_type, str) or not isinstance(raw_signatures, list):
        raise ValueError("is not a DSSE envelope (payloadType, signatures)")
    if not raw_signatures or len(raw_signatures) > MAX_SIGNATURES:
        raise ValueError(f"has {len(raw_signatures)} signatures")
    signatures = []
    for item in raw_signatures:
        if not isinstance(item, dict):
            raise ValueError("has a malformed signature")
        signatures.append(Signature(str(item.get("keyid", "")), _b64(item.get("sig"))))
    return Envelope(_b64(document.get("payload")), payload_type, tuple(signatures))


def _b64(value: object) -> bytes:
    if not isinstance(value, str):
        raise ValueError("lacks a base64 payload or signature")
    try:
        # DSSE allows both alphabets; securesystemslib reads both too.
        return base64.b64decode(value.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("holds invalid base64") from None


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """The outcome of checking an envelope's signatures against the trusted keys."""

    keyid: str | None
    """The id of the trusted key that verified a signature; None if none did."""
    reason: str
    """Why none did (empty when one did)."""

    @property
    def ok(self) -> bool:
        return self.keyid is not None


def check_signatures(envelope: Envelope, keys: Sequence[PublicKey]) -> SignatureCheck:
    """Accept the envelope if any trusted key verifies any of its signatures."""
    message = pae(envelope.payload_type, envelope.payload)
    trusted = {k.keyid for k in keys}
    for signature in envelope.signatures:
        for key in keys:
            if key.verify(signature.sig, message):
                return SignatureCheck(key.keyid, "")
    hints = [s.keyid for s in envelope.signatures]
    if any(h in trusted for h in hints):
        return SignatureCheck(
            None, "its signature does not verify: the statement was changed after signing"
        )
    named = ", ".join(_short(h) for h in hints if h) or "no key id"
    return SignatureCheck(
        None,
        f"signed by another key ({named}), not by {', '.join(_short(k) for k in sorted(trusted))}",
    )


def _short(keyid: str) -> str:
    return keyid[:16]
