"""Debian's archive keys, shipped with polyarch for hosts without /usr/share/keyrings (macOS).

The file is byte-for-byte ``/usr/share/keyrings/debian-archive-keyring.gpg``
of Debian's ``debian-archive-keyring`` package (version in ``BUNDLED_FROM``).
It is used only when neither containers.toml (``keyring``) nor the host's apt
sources (``Signed-By``) nor the host's own Debian keyring name one. Its
certificates are pinned here: a keyring at that path holding any other
certificate is refused, so a changed file is an error, never a silent new
trust root. Why this is safe, and when to update it: docs/MACOS.md,
"Signatures and keys".
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from polyarch.errors import ConfigError

BUNDLED_KEYRING = Path(__file__).resolve().parent.parent / "data" / "debian-archive-keyring.gpg"
BUNDLED_FROM = "debian-archive-keyring 2023.3+deb12u2"
BUNDLED_SHA256 = "506b815cbb32d9b6066b4a2aa524071e071761e7e7f68c3ac74f3061ba852017"

PINNED_FINGERPRINTS: dict[str, str] = {
    "1f89983e0081fde018f3cc9673a4f27b8dd47936": "Debian Archive Automatic Signing Key (11/bullseye)",
    "ac530d520f2f3269f5e98313a48449044aad5c5d": "Debian Security Archive Automatic Signing Key (11/bullseye)",
    "a4285295fc7b1a81600062a9605c66f00d6c9793": "Debian Stable Release Key (11/bullseye)",
    "4d64fec119c2029067d6e791f8d2585b8783d481": "Debian Stable Release Key (12/bookworm)",
    "b8b80b5b623eab6ad8775c45b7c5d7d6350947f8": "Debian Archive Automatic Signing Key (12/bookworm)",
    "05ab90340c0c5e797f44a8c8254cf3b5aec0a8f0": "Debian Security Archive Automatic Signing Key (12/bookworm)",
    "04b54c3cdca79751b16bc6b5225629df75b188bd": "Debian Archive Automatic Signing Key (13/trixie)",
    "5e04a1e3223a19a20706e20f9904613d4cce68c6": "Debian Security Archive Automatic Signing Key (13/trixie)",
    "41587f7db8c774bccf131416762f67a0b2c39de4": "Debian Stable Release Key (13/trixie)",
}
"""Primary-key fingerprints of the bundled certificates → their user ID."""


def check_pinned_keyring(path: Path, fingerprints: Iterable[str]) -> None:
    """ConfigError unless the bundled keyring holds exactly the pinned certificates."""
    if path.resolve() != BUNDLED_KEYRING:
        return  # a keyring the user or the host chose: theirs to vouch for
    found = set(fingerprints)
    if found != set(PINNED_FINGERPRINTS):
        extra = sorted(found - set(PINNED_FINGERPRINTS))
        missing = sorted(set(PINNED_FINGERPRINTS) - found)
        raise ConfigError(
            f"the Debian keyring shipped with polyarch ({path}) is not the pinned one "
            f"(unexpected: {', '.join(extra) or 'none'}; missing: {', '.join(missing) or 'none'})",
            hint="reinstall polyarch (pip install --force-reinstall polyarch), "
            "or set keyring in containers.toml",
        )
