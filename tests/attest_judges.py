"""Independent judges of polyarch's supply-chain evidence, and readers that do not use polyarch.

- ``spdx_problems``: spdx-tools (the SPDX project's own Python tools) parses and validates;
- ``cyclonedx_problems``: cyclonedx-python-lib's JSON schema validator (CycloneDX 1.6),
  plus its model's reference check;
- ``provenance_problems``: in-toto-attestation's protobuf definitions of Statement v1
  and SLSA Provenance v1;
- ``sslib_verify``: securesystemslib's DSSE implementation;
- ``image_status``: each image's ``status.d`` read straight from a docker-archive.
"""

from __future__ import annotations

import copy
import io
import json
import tarfile
from pathlib import Path
from typing import Any


def spdx_problems(document: dict[str, Any]) -> list[str]:
    from spdx_tools.spdx.parser.error import SPDXParsingError
    from spdx_tools.spdx.parser.jsonlikedict.json_like_dict_parser import JsonLikeDictParser
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    try:
        parsed = JsonLikeDictParser().parse(copy.deepcopy(document))
    except SPDXParsingError as exc:
        return list(exc.get_messages())
    return [m.validation_message for m in validate_full_spdx_document(parsed)]


def cyclonedx_problems(text: str) -> list[str]:
    from cyclonedx.model.bom import Bom
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text, all_errors=True)
    if errors is not None:
        return [str(e.data.message) for e in errors]  # type: ignore[attr-defined]
    Bom.from_json(json.loads(text)).validate()  # type: ignore[attr-defined]
    return []


def provenance_problems(document: dict[str, Any]) -> list[str]:
    from google.protobuf import json_format
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement

    try:
        pb = json_format.ParseDict(document, statement_pb2.Statement())
        Statement.copy_from_pb(pb).validate()
        json_format.ParseDict(document["predicate"], provenance_pb2.Provenance())
    except (json_format.ParseError, ValueError, KeyError) as exc:
        return [str(exc)]
    return []


def sslib_verify(envelope: bytes, public_pem: bytes, keyid: str) -> dict[str, Any]:
    """The statement in ``envelope`` if securesystemslib verifies it with the key; raises if not."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey

    key = SSlibKey.from_crypto(load_pem_public_key(public_pem), keyid=keyid)  # type: ignore[arg-type]
    parsed = Envelope.from_dict(json.loads(envelope))
    parsed.verify([key], 1)
    statement: dict[str, Any] = json.loads(parsed.payload)
    return statement


def image_status(archive: Path) -> set[tuple[str, str, str]]:
    """(name, version, arch) of every ``var/lib/dpkg/status.d`` file in a docker-archive."""
    found: dict[str, tuple[str, str, str]] = {}
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        for layer in manifest[0]["Layers"]:
            data = outer.extractfile(layer).read()  # type: ignore[union-attr]
            with tarfile.open(fileobj=io.BytesIO(data)) as inner:
                for member in inner:
                    name = member.name.removeprefix("./")
                    if name.startswith("var/lib/dpkg/status.d/") and member.isfile():
                        text = inner.extractfile(member).read().decode()  # type: ignore[union-attr]
                        fields = dict(
                            line.split(": ", 1) for line in text.splitlines() if ": " in line
                        )
                        found[name] = (fields["Package"], fields["Version"], fields["Architecture"])
    return set(found.values())


def spdx_debs(document: dict[str, Any]) -> dict[tuple[str, str, str], str]:
    """(name, version, arch) → SHA256 of every .deb package of an SPDX document."""
    from packageurl import PackageURL

    found = {}
    for package in document["packages"]:
        for ref in package.get("externalRefs", []):
            purl = PackageURL.from_string(ref["referenceLocator"])
            if purl.type == "deb":
                checksum = package["checksums"][0]["checksumValue"]
                found[(purl.name, str(purl.version), purl.qualifiers["arch"])] = checksum
    return found


def cdx_debs(document: dict[str, Any]) -> dict[tuple[str, str, str], str]:
    from packageurl import PackageURL

    found = {}
    for component in document["components"]:
        purl = PackageURL.from_string(component["purl"]) if "purl" in component else None
        if purl is not None and purl.type == "deb":
            key = (purl.name, str(purl.version), purl.qualifiers["arch"])
            found[key] = component["hashes"][0]["content"]
    return found
