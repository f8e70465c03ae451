"""An image inventory as a CycloneDX 1.6 JSON BOM (validated against its schema in the tests).

The image is ``metadata.component`` (type ``container``); the operating system
and every .deb are components, with ``dependencies`` from the closure. Deb
packages have no first-class "source package" field in CycloneDX: it is a
``polyarch:deb:source`` property. The serial number is a UUIDv5 of the BOM's
own content, so a rebuild gives the same bytes (CycloneDX asks for a new
serial per BOM; reproducibility asks for the opposite, and wins here).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

from polyarch.attest.inventory import ImageInventory, InventoryPackage
from polyarch.attest.names import URI_BASE
from polyarch.determinism import canonical_json, rfc3339

SPEC_VERSION = "1.6"
# What the schema's idn-email format accepts without surprises; anything else is left out.
_EMAIL = re.compile(r"^[^@\s<>()]+@[^@\s<>()]+\.[^@\s<>()]+$")


def cyclonedx_bom(inventory: ImageInventory) -> dict[str, Any]:
    """The CycloneDX 1.6 BOM (a JSON-ready dict) of one image."""
    image_ref = inventory.image_purl
    os_ref = f"os:{inventory.os.id}@{inventory.os.version or inventory.os.codename or ''}"
    components = [_os_component(inventory, os_ref)]
    components += [_deb_component(p) for p in inventory.packages]
    refs = {p.name: p.purl for p in inventory.packages}
    dependencies = [
        {"ref": image_ref, "dependsOn": [os_ref, *(p.purl for p in inventory.packages)]},
        {"ref": os_ref, "dependsOn": []},
    ]
    dependencies += [
        {"ref": p.purl, "dependsOn": [refs[name] for name in p.depends_on]}
        for p in inventory.packages
    ]
    image: dict[str, Any] = {
        "type": "container",
        "bom-ref": image_ref,
        "name": inventory.container,
        "version": inventory.digest or inventory.version,
        "purl": image_ref,
    }
    if inventory.digest is not None:
        image["hashes"] = [_sha256(inventory.digest.removeprefix("sha256:"))]
    bom: dict[str, Any] = {
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "version": 1,
        "metadata": {
            "timestamp": rfc3339(inventory.created),
            "tools": {
                "components": [
                    {
                        "type": "application",
                        "name": inventory.tool,
                        "version": inventory.tool_version,
                    }
                ]
            },
            "component": image,
            "properties": [{"name": "polyarch:system", "value": inventory.system.name}],
        },
        "components": components,
        "dependencies": dependencies,
    }
    content = hashlib.sha256(canonical_json(bom)).hexdigest()
    serial = uuid.uuid5(uuid.NAMESPACE_URL, f"{URI_BASE}/cdx/sha256-{content}")
    return {**bom, "serialNumber": serial.urn}


def _sha256(hex_digest: str) -> dict[str, str]:
    return {"alg": "SHA-256", "content": hex_digest}


def _os_component(inventory: ImageInventory, ref: str) -> dict[str, Any]:
    os = inventory.os
    component: dict[str, Any] = {"type": "operating-system", "bom-ref": ref, "name": os.id}
    if os.version:
        component["version"] = os.version
    if os.id == "debian":
        component["supplier"] = {"name": "Debian"}
    references = []
    for s in inventory.sources:
        reference: dict[str, Any] = {
            "type": "distribution",
            "url": s.release_url or s.url,
            "comment": f"Debian archive {s.url}, suite {s.suite}, codename {s.codename}",
        }
        if s.release_sha256:
            reference["hashes"] = [_sha256(s.release_sha256)]
        references.append(reference)
    if references:
        component["externalReferences"] = references
    return component


def _supplier(maintainer: str) -> dict[str, Any] | None:
    match = re.fullmatch(r"(.*?)\s*<([^<>]*)>\s*", maintainer)
    if not match:
        return {"name": maintainer} if maintainer else None
    supplier: dict[str, Any] = {"name": match.group(1) or match.group(2)}
    if _EMAIL.match(match.group(2)):
        supplier["contact"] = [{"email": match.group(2)}]
    return supplier


def _deb_component(p: InventoryPackage) -> dict[str, Any]:
    f = p.facts
    component: dict[str, Any] = {
        "type": "application" if p.root else "library",
        "bom-ref": p.purl,
        "name": f.name,
        "version": f.version,
        "purl": p.purl,
        "hashes": [_sha256(p.sha256)],
        "properties": [
            {"name": "polyarch:deb:architecture", "value": f.architecture},
            {"name": "polyarch:deb:source", "value": f.source},
            {"name": "polyarch:deb:source-version", "value": f.source_version},
        ],
    }
    supplier = _supplier(f.maintainer)
    if supplier is not None:
        component["supplier"] = supplier
    if p.license:
        component["licenses"] = [{"expression": p.license}]
    if p.url:
        component["externalReferences"] = [{"type": "distribution", "url": p.url}]
    return component
