"""OpenPGP keys made in-process with pysequoia, for signatures gpg makes awkward.

``SequoiaKey`` has the interface of debrepo's gpg ``TestKey`` (``keyring``,
``clearsign``, ``detach_sign``), so a ``TestRepo`` can be signed by either.
``clearsign_by`` and ``detach_sign_by`` put several signatures on one text,
as Debian's archive does, including deliberately bad ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pysequoia
from pysequoia.packet import PacketPile

SIG_BEGIN = b"-----BEGIN PGP SIGNATURE-----"


class SequoiaKey:
    """A signing key; its public certificate is written to ``dir/NAME.gpg``."""

    def __init__(
        self, directory: Path, name: str = "sequoia", *, validity_seconds: int | None = None
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.tsk = pysequoia.Tsk.generate(
            f"{name} <{name}@example.invalid>", validity_seconds=validity_seconds
        )
        self.cert = self.tsk.extract_certificate()
        self.keyring = directory / f"{name}.gpg"
        self.keyring.write_bytes(bytes(self.cert))

    @property
    def signing_fingerprint(self) -> str:
        """The fingerprint of the subkey that signs (what a signature's issuer names)."""
        detached = pysequoia.sign(self.tsk.signer(), b"x", mode=pysequoia.SignatureMode.DETACHED)
        issuer = pysequoia.Sig.from_bytes(detached).issuer_fingerprint
        assert issuer is not None
        return issuer

    def clearsign(self, text: bytes) -> bytes:
        return pysequoia.sign(self.tsk.signer(), text, mode=pysequoia.SignatureMode.CLEAR)

    def detach_sign(self, data: bytes) -> bytes:
        return pysequoia.sign(self.tsk.signer(), data, mode=pysequoia.SignatureMode.DETACHED)

    def signature_packets(self, data: bytes) -> bytes:
        """Binary signature packet(s) over ``data``."""
        return pysequoia.sign(
            self.tsk.signer(), data, mode=pysequoia.SignatureMode.DETACHED, armor=False
        )


def keyring_of(path: Path, keys: Sequence[SequoiaKey]) -> Path:
    """One keyring file holding the certificates of ``keys``."""
    path.write_bytes(b"".join(bytes(k.cert) for k in keys))
    return path


def _armoured_signature(packets: bytes) -> bytes:
    return pysequoia.armor(packets, pysequoia.ArmorKind.Signature).encode()


def clearsign_by(text: bytes, good: Sequence[SequoiaKey], bad: Sequence[SequoiaKey] = ()) -> bytes:
    """A clear-signed ``text`` carrying one signature per key: ``good`` ones over ``text``,
    ``bad`` ones over other text (so they fail, as a forged or corrupted signature would)."""
    first = good[0].clearsign(text)
    head = first[: first.index(SIG_BEGIN)]
    signed = [k.clearsign(text) for k in good] + [
        k.clearsign(b"not the signed text\n") for k in bad
    ]
    packets = b"".join(_packets(message[message.index(SIG_BEGIN) :]) for message in signed)
    return head + _armoured_signature(packets)


def detach_sign_by(
    data: bytes, good: Sequence[SequoiaKey], bad: Sequence[SequoiaKey] = ()
) -> bytes:
    """An armoured Release.gpg with one signature per key (``bad`` ones over other bytes)."""
    packets = b"".join(k.signature_packets(data) for k in good)
    packets += b"".join(k.signature_packets(b"not the release\n") for k in bad)
    return _armoured_signature(packets)


def _packets(armoured: bytes) -> bytes:
    return b"".join(bytes(p) for p in PacketPile.from_bytes(armoured))


__all__ = ["SequoiaKey", "clearsign_by", "detach_sign_by", "keyring_of"]
