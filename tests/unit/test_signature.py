"""Release signatures verified in-process (pysequoia), with apt's rules on top.

Signatures come from two independent implementations: gpg (debrepo's TestKey,
as Debian's archive software makes them) and Sequoia (pgpkeys.SequoiaKey, for
several signatures on one file, bad signatures by known keys and expiring keys).
gpgv is hidden from PATH in every test here: building must not need it.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pysequoia
import pytest
from debrepo import TestKey
from pgpkeys import SequoiaKey, clearsign_by, detach_sign_by, keyring_of
from pysequoia.packet import PacketPile

from polyarch.config import RepositoryConfig
from polyarch.debian import sources
from polyarch.debian.keys import (
    BUNDLED_KEYRING,
    BUNDLED_SHA256,
    PINNED_FINGERPRINTS,
    check_pinned_keyring,
)
from polyarch.debian.signature import (
    _key_expiry,
    load_keyring,
    verify_detached,
    verify_inrelease,
)
from polyarch.debian.sources import Source, find_source
from polyarch.errors import ConfigError, SignatureError

RELEASE = b"Origin: polyarch-test\nSuite: bookworm\nCodename: bookworm\nSHA256:\n"
HOST_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


@pytest.fixture(autouse=True)
def no_gpgv(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty PATH: no gpgv (nor gpg) for polyarch to call."""
    monkeypatch.setenv("PATH", str(tmp_path_factory.mktemp("empty-path")))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SequoiaKey]:
    directory = tmp_path_factory.mktemp("sequoia")
    return {name: SequoiaKey(directory, name) for name in ("archive", "release", "stranger")}


def source(keyring: Path) -> Source:
    return Source(url="http://127.0.0.1:9", suite="bookworm", components=("main",), keyring=keyring)


def trusted(tmp_path: Path, *keys: SequoiaKey) -> Source:
    return source(keyring_of(tmp_path / "trusted.gpg", keys))


# --- InRelease -----------------------------------------------------------------------------


def test_gpg_clearsigned_inrelease_verifies_without_gpgv(test_key: TestKey) -> None:
    text = verify_inrelease(source(test_key.keyring), test_key.clearsign(RELEASE))
    assert text == RELEASE.decode()


def test_tampered_gpg_clearsigned_inrelease_is_refused_without_gpgv(test_key: TestKey) -> None:
    signed = test_key.clearsign(RELEASE).replace(b"Suite: bookworm", b"Suite: bookwork")
    with pytest.raises(SignatureError, match="InRelease was modified after signing") as caught:
        verify_inrelease(source(test_key.keyring), signed)
    assert caught.value.exit_code == 11


def test_several_signatures_of_which_only_some_keys_are_known_are_accepted(
    keys: dict[str, SequoiaKey], tmp_path: Path
) -> None:
    signed = clearsign_by(RELEASE, [keys["stranger"], keys["archive"], keys["release"]])
    assert verify_inrelease(trusted(tmp_path, keys["archive"]), signed) == RELEASE.decode()


def test_a_bad_signature_by_a_known_key_is_refused_beside_a_good_one(
    keys: dict[str, SequoiaKey], tmp_path: Path
) -> None:
    signed = clearsign_by(RELEASE, [keys["archive"]], bad=[keys["release"]])
    # plain pysequoia accepts this: one signature verifies
    everyone = [keys["archive"].cert, keys["release"].cert]
    assert pysequoia.verify(bytes=signed, store=lambda _: everyone).valid_sigs
    with pytest.raises(SignatureError, match="modified after signing") as caught:
        verify_inrelease(trusted(tmp_path, keys["archive"], keys["release"]), signed)
    assert keys["release"].signing_fingerprint in str(caught.value)


def test_a_bad_signature_by_an_unknown_key_is_ignored(
    keys: dict[str, SequoiaKey], tmp_path: Path
) -> None:
    signed = clearsign_by(RELEASE, [keys["archive"]], bad=[keys["stranger"]])
    assert verify_inrelease(trusted(tmp_path, keys["archive"]), signed) == RELEASE.decode()


def test_signed_only_by_keys_outside_the_keyring_is_refused(
    keys: dict[str, SequoiaKey], tmp_path: Path
) -> None:
    signed = clearsign_by(RELEASE, [keys["stranger"]])
    keyring = keyring_of(tmp_path / "k.gpg", [keys["archive"]])
    with pytest.raises(SignatureError, match=f"not signed by a key in {keyring}"):
        verify_inrelease(source(keyring), signed)


def test_a_key_that_has_expired_since_signing_is_refused(tmp_path: Path) -> None:
    # Sequoia back-dates keys by 60 s: 62 s is the shortest validity that can still sign.
    short = SequoiaKey(tmp_path, "short", validity_seconds=62)
    signed = short.clearsign(RELEASE)
    keyring = source(short.keyring)
    assert verify_inrelease(keyring, signed) == RELEASE.decode()  # still valid now
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    with pytest.raises(SignatureError, match="signed only by expired or revoked keys"):
        verify_inrelease(keyring, signed, now=tomorrow)


def test_an_expired_signature_beside_a_valid_one_is_accepted(
    keys: dict[str, SequoiaKey], tmp_path: Path
) -> None:
    short = SequoiaKey(tmp_path, "short", validity_seconds=62)
    signed = clearsign_by(RELEASE, [short, keys["archive"]])
    both = trusted(tmp_path, short, keys["archive"])
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    assert verify_inrelease(both, signed, now=tomorrow) == RELEASE.decode()


def test_an_armoured_keyring_refuses_an_expired_key_too(tmp_path: Path) -> None:
    # Armoured keyrings take the other way to each key's packets (bytes of the certificate).
    short = SequoiaKey(tmp_path, "short", validity_seconds=62)
    armoured = tmp_path / "short.asc"
    armoured.write_text(str(short.cert))
    signed = short.clearsign(RELEASE)
    assert verify_inrelease(source(armoured), signed) == RELEASE.decode()
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    with pytest.raises(SignatureError, match="signed only by expired or revoked keys"):
        verify_inrelease(source(armoured), signed, now=tomorrow)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s, k: b"Architectures: evil\n\n" + s, "has data before its signed message"),
        (lambda s, k: s + b"Suite: evil\n", "has data after its signature"),
        (lambda s, k: s + k.clearsign(b"Suite: evil\n"), "not a single signed message"),
        (lambda s, k: RELEASE, "holds no OpenPGP signature"),
    ],
    ids=["junk-before", "junk-after", "two-messages", "unsigned"],
)
def test_inrelease_that_is_not_exactly_one_signed_message_is_refused(
    keys: dict[str, SequoiaKey], tmp_path: Path, edit: object, message: str
) -> None:
    key = keys["archive"]
    signed = edit(key.clearsign(RELEASE), key)  # type: ignore[operator]
    with pytest.raises(SignatureError, match=message):
        verify_inrelease(source(key.keyring), signed)


def test_trailing_blank_lines_after_the_signature_are_accepted(
    keys: dict[str, SequoiaKey],
) -> None:
    key = keys["archive"]
    signed = key.clearsign(RELEASE) + b"\n\n"
    assert verify_inrelease(source(key.keyring), signed) == RELEASE.decode()


# --- Release + Release.gpg -------------------------------------------------------------------


def test_detached_signatures_each_verified_only_some_known(
    keys: dict[str, SequoiaKey], tmp_path: Path
) -> None:
    # pysequoia's Sig keeps only the first signature; the stranger's comes first here.
    signature = detach_sign_by(RELEASE, [keys["stranger"], keys["archive"]])
    assert verify_detached(trusted(tmp_path, keys["archive"]), RELEASE, signature) == (
        RELEASE.decode()
    )


def test_detached_bad_signature_by_a_known_key_is_refused(
    keys: dict[str, SequoiaKey], tmp_path: Path
) -> None:
    signature = detach_sign_by(RELEASE, [keys["archive"]], bad=[keys["release"]])
    both = trusted(tmp_path, keys["archive"], keys["release"])
    with pytest.raises(SignatureError, match=r"Release\.gpg was modified after signing"):
        verify_detached(both, RELEASE, signature)


def test_gpg_detached_signature_of_a_changed_release_is_refused(test_key: TestKey) -> None:
    signature = test_key.detach_sign(RELEASE)
    assert verify_detached(source(test_key.keyring), RELEASE, signature) == RELEASE.decode()
    with pytest.raises(SignatureError, match="modified after signing"):
        verify_detached(source(test_key.keyring), RELEASE + b"Suite: evil\n", signature)


# --- keyrings ------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "what"), [(b"", "empty"), (b"not a key\n", "garbage")])
def test_a_keyring_without_certificates_is_a_config_error(
    tmp_path: Path, data: bytes, what: str
) -> None:
    path = tmp_path / f"{what}.gpg"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match="holds no OpenPGP certificate") as caught:
        load_keyring(path)
    assert caught.value.exit_code == 3


def test_armoured_keyring_with_several_blocks_is_read(
    keys: dict[str, SequoiaKey], tmp_path: Path
) -> None:
    path = tmp_path / "keys.asc"
    path.write_text(str(keys["archive"].cert) + str(keys["release"].cert))
    assert {c.fingerprint for c in load_keyring(path).certs} == {
        keys["archive"].cert.fingerprint,
        keys["release"].cert.fingerprint,
    }


def test_a_keyring_is_read_once_while_its_file_is_unchanged(
    keys: dict[str, SequoiaKey], tmp_path: Path
) -> None:
    path = keyring_of(tmp_path / "k.gpg", [keys["archive"]])
    first = load_keyring(path)
    assert load_keyring(path) is first
    keyring_of(path, [keys["archive"], keys["release"]])  # rewritten: read again
    assert {c.fingerprint for c in load_keyring(path).certs} == {
        keys["archive"].cert.fingerprint,
        keys["release"].cert.fingerprint,
    }


@pytest.mark.parametrize("path", [BUNDLED_KEYRING, HOST_KEYRING], ids=["shipped", "host"])
def test_key_lifetimes_from_the_file_match_those_from_each_certificate(path: Path) -> None:
    # A binary keyring's packets are read straight from the file (no serialisation, which
    # verifies every self-signature): it must give what each certificate's own bytes give.
    if not path.is_file():
        pytest.skip(f"no {path}")
    keyring = load_keyring(path)
    assert all(p is not None for p in keyring.packets)
    for cert, packets in zip(keyring.certs, keyring.packets, strict=True):
        assert packets is not None
        from_cert = tuple(PacketPile.from_bytes(bytes(cert)))
        assert _key_expiry(cert, packets) == _key_expiry(cert, from_cert)
        assert {p.fingerprint for p in packets if p.fingerprint} == {
            p.fingerprint for p in from_cert if p.fingerprint
        }


def test_the_shipped_debian_keyring_is_the_pinned_one() -> None:
    assert hashlib.sha256(BUNDLED_KEYRING.read_bytes()).hexdigest() == BUNDLED_SHA256
    keyring = load_keyring(BUNDLED_KEYRING)
    assert {c.fingerprint for c in keyring.certs} == set(PINNED_FINGERPRINTS)
    for cert in keyring.certs:
        assert str(cert.user_ids[0]).startswith(PINNED_FINGERPRINTS[cert.fingerprint])


@pytest.mark.skipif(not HOST_KEYRING.is_file(), reason="needs Debian's debian-archive-keyring")
def test_the_host_debian_keyring_holds_every_pinned_key() -> None:
    host = {c.fingerprint for c in load_keyring(HOST_KEYRING).certs}
    assert set(PINNED_FINGERPRINTS) <= host


def test_a_changed_shipped_keyring_is_refused(keys: dict[str, SequoiaKey]) -> None:
    with pytest.raises(ConfigError, match="is not the pinned one") as caught:
        check_pinned_keyring(
            BUNDLED_KEYRING, [*PINNED_FINGERPRINTS, keys["stranger"].cert.fingerprint]
        )
    assert keys["stranger"].cert.fingerprint in str(caught.value)
    check_pinned_keyring(
        keys["stranger"].keyring, ["anything"]
    )  # other keyrings: the user's choice


def test_a_host_without_debian_keyring_uses_the_shipped_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "DEFAULT_KEYRING", tmp_path / "absent.gpg")
    found = find_source(
        RepositoryConfig(url="http://127.0.0.1:9/debian"), apt_dir=tmp_path / "no-apt"
    )
    assert found.keyring == BUNDLED_KEYRING
