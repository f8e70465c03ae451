"""What a registry's answers say: its error bodies and its authentication challenges.

Error bodies follow the OCI distribution spec (``{"errors": [{"code", "message"}]}``);
challenges are ``WWW-Authenticate`` headers (RFC 7235) naming the token realm.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx

_CHALLENGE_PARAM = re.compile(r'([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


@dataclass(frozen=True, slots=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` header."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)


def parse_challenge(header: str) -> Challenge:
    """``Bearer realm="…",service="…",scope="…"`` → Challenge("bearer", {…})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
        for m in _CHALLENGE_PARAM.finditer(rest)
    }
    return Challenge(scheme.lower(), params)


def registry_message(response: httpx.Response) -> str:
    """The registry's own words for an error response, short."""
    try:
        errors = response.json().get("errors") or []
        parts = [f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors]
        text = "; ".join(p for p in parts if p)
    except (ValueError, AttributeError):
        text = ""
    return text or f"HTTP {response.status_code} {response.reason_phrase}".strip()


def error_codes(response: httpx.Response) -> set[str]:
    """The ``code`` of each error in a registry's error body (distribution spec)."""
    try:
        errors = response.json().get("errors") or []
        return {str(e.get("code")) for e in errors if isinstance(e, dict)}
    except (ValueError, AttributeError):
        return set()
