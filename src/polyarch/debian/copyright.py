"""Debian machine-readable copyright files (DEP-5) → SPDX license expressions.

Only the common licenses are mapped; anything else gives None, because no
license statement is better than a wrong one.
"""

from __future__ import annotations

import re

# Debian copyright-format short names → SPDX identifiers (the common ones only).
_SPDX = {
    "expat": "MIT",
    "mit": "MIT",
    "apache-2.0": "Apache-2.0",
    "isc": "ISC",
    "zlib": "Zlib",
    "mpl-2.0": "MPL-2.0",
    "unlicense": "Unlicense",
    "cc0-1.0": "CC0-1.0",
    "bsd-2-clause": "BSD-2-Clause",
    "bsd-3-clause": "BSD-3-Clause",
    "artistic-2.0": "Artistic-2.0",
    "bsl-1.0": "BSL-1.0",
    "0bsd": "0BSD",
}
for _gpl in ("GPL-2", "GPL-3", "LGPL-2.1", "LGPL-3", "AGPL-3"):
    _spdx = _gpl + (".0" if _gpl.count(".") == 0 else "")
    _SPDX[_gpl.lower()] = f"{_spdx}-only"
    _SPDX[_gpl.lower() + "+"] = f"{_spdx}-or-later"


def debian_licenses(copyright_text: str) -> str | None:
    """The SPDX expression of the ``Files: *`` paragraph of a machine-readable copyright file.

    ``MIT or Apache-2.0`` → ``MIT OR Apache-2.0``, ``GPL-3+`` →
    ``GPL-3.0-or-later``. None when the file is not machine-readable or names a
    license (or an exception, or a comma) this table does not know: no
    annotation is better than a wrong one.
    """
    if not copyright_text.startswith("Format:"):
        return None
    for paragraph in re.split(r"\n\s*\n", copyright_text):
        fields = dict(
            (m.group(1).lower(), m.group(2).strip())
            for m in re.finditer(r"^([A-Za-z-]+):[ \t]*(.*)$", paragraph, re.MULTILINE)
        )
        if fields.get("files", "").split() == ["*"] and fields.get("license"):
            return _spdx_expression(fields["license"])
    return None


def _spdx_expression(text: str) -> str | None:
    out: list[str] = []
    for i, word in enumerate(text.split()):
        if i % 2 == 1:
            if word.lower() not in ("or", "and"):
                return None
            out.append(word.upper())
        else:
            spdx = _SPDX.get(word.lower())
            if spdx is None:
                return None
            out.append(spdx)
    return " ".join(out) if out and len(out) % 2 == 1 else None
