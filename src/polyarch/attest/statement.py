"""in-toto Statement v1: what a subject (an image, by digest) is claimed to be.

The SBOMs travel as statements too (predicate = the SPDX document or the
CycloneDX BOM, as cosign's ``attest --type spdxjson`` does), so one DSSE
signature covers "this SBOM describes exactly this image".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from polyarch.attest.names import STATEMENT_TYPE
from polyarch.determinism import Digest

_HEX64 = re.compile(r"[0-9a-f]{64}")


def statement(
    subject_name: str, digest: Digest, predicate_type: str, predicate: dict[str, Any]
) -> dict[str, Any]:
    """A statement about one subject, named for people and identified by ``digest``."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject_name, "digest": {"sha256": digest.removeprefix("sha256:")}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    }


@dataclass(frozen=True, slots=True)
class Statement:
    """A parsed statement: its subjects' sha256 digests, predicate type and predicate."""

    subjects: tuple[tuple[str, Digest], ...]
    predicate_type: str
    predicate: dict[str, Any]
    raw: dict[str, Any]
    """The whole statement as decoded."""

    @property
    def digests(self) -> tuple[Digest, ...]:
        return tuple(d for _name, d in self.subjects)


def parse_statement(data: bytes) -> Statement:
    """Read an in-toto v1 statement; ValueError saying what is wrong with it."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("is not JSON") from None
    if not isinstance(document, dict) or document.get("_type") != STATEMENT_TYPE:
        raise ValueError(f"is not an in-toto statement ({STATEMENT_TYPE})")
    subjects: list[tuple[str, Digest]] = []
    raw_subjects = document.get("subject")
    if not isinstance(raw_subjects, list) or not raw_subjects:
        raise ValueError("names no subject")
    for subject in raw_subjects:
        digest = subject.get("digest") if isinstance(subject, dict) else None
        sha256 = digest.get("sha256") if isinstance(digest, dict) else None
        if not isinstance(sha256, str) or not _HEX64.fullmatch(sha256):
            raise ValueError("has a subject without a sha256 digest")
        subjects.append((str(subject.get("name", "")), Digest(f"sha256:{sha256}")))
    predicate_type = document.get("predicateType")
    predicate = document.get("predicate")
    if not isinstance(predicate_type, str) or not isinstance(predicate, dict):
        raise ValueError("has no predicateType or no predicate object")
    return Statement(tuple(subjects), predicate_type, predicate, document)
