"""Debian machine-readable copyright files (DEP-5) → SPDX license expressions.

``debian_licenses`` (the image's ``licenses`` annotation) maps only the
``Files: *`` paragraph and gives None for anything it does not know: no
statement is better than a wrong one. ``declared_license`` (SBOMs) covers the
whole package and names what SPDX does not list as ``LicenseRef-`` with its text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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


# --- the declared licence of a whole package (SBOMs) -----------------------------------

# More Debian short names for SBOMs; each value is on the SPDX licence list.
_MORE_SPDX = {
    "gpl-1": "GPL-1.0-only",
    "gpl-1+": "GPL-1.0-or-later",
    "lgpl-2": "LGPL-2.0-only",
    "lgpl-2+": "LGPL-2.0-or-later",
    "gfdl-1.2": "GFDL-1.2-only",
    "gfdl-1.2+": "GFDL-1.2-or-later",
    "gfdl-1.3": "GFDL-1.3-only",
    "gfdl-1.3+": "GFDL-1.3-or-later",
    "gfdl-niv-1.3": "GFDL-1.3-no-invariants-only",
    "gfdl-niv-1.3+": "GFDL-1.3-no-invariants-or-later",
    "bsd-4-clause": "BSD-4-Clause",
    "bsd-4-clause-uc": "BSD-4-Clause-UC",
    "x11": "X11",
    "fsfap": "FSFAP",
    "fsful": "FSFUL",
    "fsfullr": "FSFULLR",
    "cc-by-3.0": "CC-BY-3.0",
    "cc-by-4.0": "CC-BY-4.0",
    "cc-by-sa-3.0": "CC-BY-SA-3.0",
    "cc-by-sa-4.0": "CC-BY-SA-4.0",
    "mpl-1.1": "MPL-1.1",
    "openssl": "OpenSSL",
    "curl": "curl",
    "libpng": "Libpng",
    "ijg": "IJG",
    "ofl-1.1": "OFL-1.1",
    "wtfpl": "WTFPL",
    "psf-2": "PSF-2.0",
    "zpl-2.1": "ZPL-2.1",
    "bzip2-1.0.6": "bzip2-1.0.6",
}
# DEP-5 ``LICENSE with NAME exception`` → SPDX exception identifiers.
_EXCEPTIONS = {
    "bison": "Bison-exception-2.2",
    "libtool": "Libtool-exception",
    "classpath": "Classpath-exception-2.0",
    "font": "Font-exception-2.0",
    "gcc-exception-3.1": "GCC-exception-3.1",
}
_REF_CHARS = re.compile(r"[^A-Za-z0-9.-]")
MAX_LICENSE_TEXT = 16 * 1024
"""Longer licence texts are cut: the SBOM points at the copyright file for the rest."""


@dataclass(frozen=True, slots=True)
class DeclaredLicense:
    """A package's licence as an SPDX expression, and the text of each ``LicenseRef-`` in it."""

    expression: str
    texts: tuple[tuple[str, str], ...]
    """(``LicenseRef-...`` id, its text), sorted by id."""


def license_ref(package: str, name: str) -> str:
    """``LicenseRef-PACKAGE--NAME``; other characters than SPDX allows become ``-XX`` (hex).

    Scoped by package: two copyright files may give one short name (``public-domain``)
    different texts, and one SPDX document can hold only one text per id.
    """
    return f"LicenseRef-{_escape(package)}--{_escape(name)}"


def _escape(text: str) -> str:
    return _REF_CHARS.sub(lambda m: "".join(f"-{b:02X}" for b in m.group().encode()), text)


def declared_license(copyright_text: str, package: str) -> DeclaredLicense | None:
    """The licence of a whole package from its machine-readable copyright file.

    Every ``Files`` paragraph's licence counts (they are joined with AND, each
    distinct one once), because the binary package holds files of each. A
    short name SPDX does not list becomes ``LicenseRef-PACKAGE--NAME`` with the
    text of the copyright file's stand-alone paragraph (or a pointer to the
    file). None when the file is not machine-readable.
    """
    if not copyright_text.startswith("Format:"):
        return None
    standalone: dict[str, str] = {}
    terms: list[str] = []
    refs: dict[str, str] = {}
    for paragraph in re.split(r"\n[ \t]*\n", copyright_text):
        fields = _paragraph_fields(paragraph)
        license_field = fields.get("license")
        if license_field is None:
            continue
        first, _, body = license_field.partition("\n")
        name = " ".join(first.split())
        if "files" not in fields:
            if body.strip():
                standalone[name.lower()] = _license_text(body)
            continue
        if name:
            term = _term(name, package, refs)
            # ``A and B`` adds A and B: each distinct licence is named once.
            for part in [term] if " OR " in term else term.split(" AND "):
                if part not in terms:
                    terms.append(part)
    if not terms:
        return None
    expression = " AND ".join(f"({t})" if " OR " in t and len(terms) > 1 else t for t in terms)
    texts = {
        ref: standalone.get(name.lower())
        or f"See /usr/share/doc/{package}/copyright (license {name!r})"
        for ref, name in refs.items()
    }
    return DeclaredLicense(expression, tuple(sorted(texts.items())))


def _paragraph_fields(paragraph: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = ""
    for line in paragraph.splitlines():
        if line[:1] in (" ", "\t"):
            if key:
                fields[key] += "\n" + line
            continue
        name, sep, value = line.partition(":")
        if sep and re.fullmatch(r"[A-Za-z-]+", name):
            key = name.lower()
            fields[key] = value.strip()
    return fields


def _license_text(body: str) -> str:
    lines = [line.strip() for line in body.splitlines()]
    text = "\n".join("" if line == "." else line for line in lines).strip()
    if len(text) > MAX_LICENSE_TEXT:
        text = text[:MAX_LICENSE_TEXT] + "\n[cut; the copyright file has the rest]"
    return text


def _term(name: str, package: str, refs: dict[str, str]) -> str:
    """One ``License:`` short-name expression as SPDX, unknown names as LicenseRefs."""
    words = name.replace(",", " ").split()
    out: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word.lower() in ("or", "and") and out and out[-1] not in ("OR", "AND"):
            out.append(word.upper())
            i += 1
            continue
        # LICENSE [with NAME... exception]
        end = i + 1
        exception: str | None = None
        if end < len(words) and words[end].lower() == "with":
            stop = next(
                (j for j in range(end + 1, len(words)) if words[j].lower() == "exception"), None
            )
            if stop is not None:
                exception = " ".join(words[end + 1 : stop])
                end = stop + 1
        out.append(_one_license(word, exception, package, refs))
        i = end
    operators = out[1::2]
    if len(out) % 2 == 0 or any(op not in ("OR", "AND") for op in operators):
        # Not LICENSE (op LICENSE)*, e.g. "ISC and/or LGPL-2.1+": one unknown name as written.
        return _one_license(name, None, package, refs)
    return " ".join(out)


def _one_license(word: str, exception: str | None, package: str, refs: dict[str, str]) -> str:
    spdx = _SPDX.get(word.lower()) or _MORE_SPDX.get(word.lower())
    if spdx is not None and exception is None:
        return spdx
    if spdx is not None and exception is not None:
        known = _EXCEPTIONS.get(exception.lower())
        if known is not None:
            return f"{spdx} WITH {known}"
    name = word if exception is None else f"{word} with {exception} exception"
    ref = license_ref(package, name)
    refs[ref] = word if exception is None else name
    return ref
