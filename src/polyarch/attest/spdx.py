"""An image inventory as an SPDX 2.3 JSON document (validated by spdx-tools in the tests).

The image is the described package (its manifest digest as checksum and
purl), CONTAINS the operating system and every .deb, and each .deb DEPENDS_ON
what its Depends/Pre-Depends resolve to. The archives the packages came from
are annotations of the operating-system package (URL, suite, InRelease
SHA256). Nothing random: the namespace is derived from the image, ``created``
is SOURCE_DATE_EPOCH.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from polyarch.attest.inventory import ImageInventory, InventoryPackage
from polyarch.attest.names import SPDX_NAMESPACE_BASE
from polyarch.determinism import canonical_json, rfc3339

SPDX_VERSION = "SPDX-2.3"
NOASSERTION = "NOASSERTION"
_ID_CHARS = re.compile(r"[^A-Za-z0-9.-]")
# What spdx-tools accepts as a downloadLocation: a DNS name with a letter TLD.
# A mirror on 127.0.0.1 or an IP address is left as NOASSERTION (the provenance has it).
_DOWNLOAD_URL = re.compile(
    r"^https?://[a-z0-9]+([-.][a-z0-9]+)*\.[a-z]{2,5}(:[0-9]{1,5})?(/.*)?$", re.IGNORECASE
)


def spdx_id(kind: str, name: str) -> str:
    """``SPDXRef-KIND-NAME``, other characters than SPDX allows as ``-XX`` (upper-case hex).

    Debian package names are lower-case, so an escape cannot meet a literal
    ``-2B``: the mapping is one-to-one.
    """
    escaped = _ID_CHARS.sub(lambda m: "".join(f"-{b:02X}" for b in m.group().encode()), name)
    return f"SPDXRef-{kind}-{escaped}"


def spdx_document(inventory: ImageInventory) -> dict[str, Any]:
    """The SPDX 2.3 document (a JSON-ready dict) of one image."""
    image_id = spdx_id("Image", inventory.container)
    os_id = spdx_id("OperatingSystem", inventory.os.id)
    packages = [_image_package(inventory, image_id), _os_package(inventory, os_id)]
    relationships = [_relation("SPDXRef-DOCUMENT", "DESCRIBES", image_id)]
    relationships.append(_relation(image_id, "CONTAINS", os_id))
    licenses: dict[str, str] = {}
    for p in inventory.packages:
        package_id = spdx_id("Package-deb", p.name)
        packages.append(_deb_package(p, package_id))
        relationships.append(_relation(image_id, "CONTAINS", package_id))
        relationships += [
            _relation(package_id, "DEPENDS_ON", spdx_id("Package-deb", target))
            for target in p.depends_on
        ]
        licenses.update(p.license_texts)
    document: dict[str, Any] = {
        "spdxVersion": SPDX_VERSION,
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{inventory.container}-{inventory.system.name}",
        "creationInfo": {
            "created": rfc3339(inventory.created),
            "creators": [f"Tool: {inventory.tool}-{inventory.tool_version}"],
        },
        "packages": packages,
        "relationships": relationships,
    }
    if licenses:
        document["hasExtractedLicensingInfos"] = [
            {"licenseId": ref, "extractedText": text} for ref, text in sorted(licenses.items())
        ]
    document["documentNamespace"] = _namespace(inventory, document)
    return document


def _namespace(inventory: ImageInventory, body: dict[str, Any]) -> str:
    """Unique per image and the same on every rebuild: named by the image digest.

    The copy inside an image cannot know the digest; it is named by its own content.
    """
    base = f"{SPDX_NAMESPACE_BASE}/{inventory.container}/{inventory.system.name}"
    if inventory.digest is not None:
        return f"{base}/{inventory.digest.replace(':', '-')}"
    return f"{base}/content-sha256-{hashlib.sha256(canonical_json(body)).hexdigest()}"


def _relation(a: str, kind: str, b: str) -> dict[str, str]:
    return {"spdxElementId": a, "relationshipType": kind, "relatedSpdxElement": b}


def _unasserted() -> dict[str, Any]:
    return {
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": False,
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": NOASSERTION,
        "copyrightText": NOASSERTION,
        "supplier": NOASSERTION,
    }


def _purl_ref(purl: str) -> dict[str, str]:
    return {
        "referenceCategory": "PACKAGE-MANAGER",
        "referenceType": "purl",
        "referenceLocator": purl,
    }


def _image_package(inventory: ImageInventory, image_id: str) -> dict[str, Any]:
    package: dict[str, Any] = {
        **_unasserted(),
        "SPDXID": image_id,
        "name": inventory.container,
        "versionInfo": inventory.digest or inventory.version,
        "primaryPackagePurpose": "CONTAINER",
        "externalRefs": [_purl_ref(inventory.image_purl)],
    }
    if inventory.digest is not None:
        hex_digest = inventory.digest.removeprefix("sha256:")
        package["checksums"] = [{"algorithm": "SHA256", "checksumValue": hex_digest}]
    return package


def _os_package(inventory: ImageInventory, os_id: str) -> dict[str, Any]:
    os = inventory.os
    package: dict[str, Any] = {
        **_unasserted(),
        "SPDXID": os_id,
        "name": os.id,
        "primaryPackagePurpose": "OPERATING_SYSTEM",
        "supplier": "Organization: Debian" if os.id == "debian" else NOASSERTION,
    }
    if os.version:
        package["versionInfo"] = os.version
    if inventory.sources:
        package["annotations"] = [
            {
                "annotationDate": rfc3339(inventory.created),
                "annotationType": "OTHER",
                "annotator": f"Tool: {inventory.tool}-{inventory.tool_version}",
                "comment": source_comment(
                    s.url, s.suite, s.codename, s.release_file, s.release_sha256
                ),
            }
            for s in inventory.sources
        ]
    return package


def source_comment(
    url: str, suite: str, codename: str, release_file: str | None, sha256: str | None
) -> str:
    """How an archive source reads in SPDX: ``debian-archive URL suite=S codename=C [FILE-sha256=H]``."""
    text = f"debian-archive {url} suite={suite} codename={codename}"
    if release_file and sha256:
        text += f" {release_file}-sha256={sha256}"
    return text


def supplier(maintainer: str) -> str:
    """Debian's ``Name <email>`` as SPDX's ``Organization: Name (email)``.

    The Maintainer field does not say whether it is a person or a team; most
    are teams, and apko and syft write Organization too.
    """
    match = re.fullmatch(r"(.*?)\s*<([^<>]*)>\s*", maintainer)
    if match and match.group(1):
        return f"Organization: {match.group(1)} ({match.group(2)})"
    return f"Organization: {maintainer}" if maintainer else NOASSERTION


def _deb_package(p: InventoryPackage, package_id: str) -> dict[str, Any]:
    f = p.facts
    return {
        **_unasserted(),
        "SPDXID": package_id,
        "name": f.name,
        "versionInfo": f.version,
        "primaryPackagePurpose": "APPLICATION" if p.root else "LIBRARY",
        "supplier": supplier(f.maintainer),
        "sourceInfo": f"built from source package {f.source} {f.source_version}",
        "downloadLocation": p.url if p.url and _DOWNLOAD_URL.match(p.url) else NOASSERTION,
        "licenseDeclared": p.license or NOASSERTION,
        "checksums": [{"algorithm": "SHA256", "checksumValue": p.sha256}],
        "externalRefs": [_purl_ref(p.purl)],
    }
