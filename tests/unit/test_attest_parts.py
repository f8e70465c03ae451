"""The pieces of the supply-chain evidence on their own: licences, purls, status.d, DSSE."""

from __future__ import annotations

import glob
import io
import tarfile
from pathlib import Path

import pytest
from attest_judges import spdx_problems
from hypothesis import given
from hypothesis import strategies as st
from packageurl import PackageURL

from polyarch.attest.dsse import check_signatures, pae, parse_envelope, sign_envelope
from polyarch.attest.inventory import parse_deb_purl, purl
from polyarch.attest.keys import load_public_key, load_signing_key, write_key_pair
from polyarch.attest.status import installed_packages
from polyarch.debian.copyright import declared_license

DEP5 = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"


def test_declared_licence_joins_every_files_paragraph_and_keeps_unknown_names_with_text() -> None:
    text = (
        DEP5
        + "Files: *\nLicense: GPL-2+ or LGPL-3+\n\nFiles: a/*\nLicense: GPL-3+ with Bison exception\n\n"
        "Files: b/*\nLicense: Expat and BSD-3-clause\n\nFiles: c/*\nLicense: MIT/X11\n\n"
        "License: MIT/X11\n Permission is hereby granted.\n"
    )
    declared = declared_license(text, "libfoo+")
    assert declared is not None
    assert declared.expression == (
        "(GPL-2.0-or-later OR LGPL-3.0-or-later) AND GPL-3.0-or-later WITH Bison-exception-2.2"
        " AND MIT AND BSD-3-Clause AND LicenseRef-libfoo-2B--MIT-2FX11"
    )
    assert declared.texts == (("LicenseRef-libfoo-2B--MIT-2FX11", "Permission is hereby granted."),)
    assert declared_license("This is not DEP-5.\n", "x") is None


def test_the_licence_of_every_copyright_file_on_this_host_is_valid_spdx() -> None:
    """Hundreds of real Debian copyright files; spdx-tools judges each expression."""
    packages = []
    for path in sorted(glob.glob("/usr/share/doc/*/copyright")):
        name = Path(path).parent.name
        declared = declared_license(Path(path).read_text(errors="replace"), name)
        if declared is None:
            continue
        packages.append(
            {
                "SPDXID": f"SPDXRef-P{len(packages)}",
                "name": name,
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": False,
                "licenseDeclared": declared.expression,
            }
        )
        refs = dict(declared.texts)
        packages[-1]["_refs"] = refs
    if len(packages) < 20:
        pytest.skip("too few machine-readable copyright files on this host")
    texts: dict[str, str] = {}
    for p in packages:
        texts.update(p.pop("_refs"))
    document = {
        "spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT",
        "name": "host", "documentNamespace": "https://polyarch.invalid/spdx/test/host",
        "creationInfo": {"created": "1970-01-01T00:00:00Z", "creators": ["Tool: test"]},
        "packages": packages,
        "relationships": [
            {"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
             "relatedSpdxElement": p["SPDXID"]} for p in packages
        ],
        "hasExtractedLicensingInfos": [
            {"licenseId": k, "extractedText": v} for k, v in sorted(texts.items())
        ],
    }  # fmt: skip
    assert spdx_problems(document) == []


names = st.from_regex(r"[a-z0-9][a-z0-9+.-]{1,20}", fullmatch=True)
versions = st.from_regex(r"([0-9]:)?[0-9][A-Za-z0-9.+~-]{0,15}", fullmatch=True)


@given(names, versions, st.sampled_from(["amd64", "arm64", "all"]))
def test_purls_are_written_as_packageurl_python_writes_them_and_read_back(
    name: str, version: str, arch: str
) -> None:
    qualifiers = {"arch": arch, "distro": "debian-12"}
    text = purl("deb", "debian", name, version, qualifiers)
    assert text == PackageURL("deb", "debian", name, version, qualifiers).to_string()
    assert parse_deb_purl(text) == (name, version, arch)


def layer(*members: tuple[str, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def stanza(name: str, version: str = "1.0") -> bytes:
    return f"Package: {name}\nStatus: install ok installed\nVersion: {version}\nArchitecture: amd64\n".encode()


def test_status_d_is_read_as_the_layers_leave_it_whiteouts_included() -> None:
    d = "var/lib/dpkg/status.d"
    layers = [
        layer((d, None), (f"{d}/a", stanza("a")), (f"{d}/b", stanza("b")), (f"{d}/c", stanza("c"))),
        layer((f"{d}/b", stanza("b", "2.0")), (f"{d}/.wh.c", b"")),
        layer(("./" + f"{d}/d", stanza("d"))),
    ]
    found = installed_packages([lambda data=data: io.BytesIO(data) for data in layers])
    assert {k: (v.name, v.version) for k, v in found.items()} == {
        "a": ("a", "1.0"),
        "b": ("b", "2.0"),
        "d": ("d", "1.0"),
    }
    opaque = [*layers, layer((f"{d}/.wh..wh..opq", b""), (f"{d}/e", stanza("e")))]
    found = installed_packages([lambda data=data: io.BytesIO(data) for data in opaque])
    assert set(found) == {"e"}


def test_pae_and_envelopes_follow_the_dsse_spec(tmp_path: Path) -> None:
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )  # the example of the DSSE protocol document
    made = write_key_pair(tmp_path / "k", "ed25519", environ={})
    key = load_signing_key(made.private, environ={})
    envelope = parse_envelope(sign_envelope(b"{}", key).to_json())
    public = load_public_key(made.public)
    assert check_signatures(envelope, [public]).keyid == made.keyid
    forged = parse_envelope(sign_envelope(b"{}", key).to_json().replace(b"e30=", b"e30K"))
    assert check_signatures(forged, [public]).reason.startswith("its signature does not verify")
    with pytest.raises(ValueError, match="base64"):
        parse_envelope(b'{"payload": "%%%", "payloadType": "x", "signatures": [{"sig": "AA=="}]}')


def test_one_reading_of_control_data_for_the_identity_check_and_the_sbom() -> None:
    """A field given twice keeps its first value wherever control data is read, so a
    hostile package cannot pass the identity check as one package and enter the SBOM and
    status.d as another; continuation lines are joined."""
    from polyarch.attest import facts, status
    from polyarch.debian import identity

    control = "Package: curl\nVersion: 1\nPackage: evil\nDescription: a\n tool\n .\n"
    assert identity.control_fields(control) == {
        "package": "curl",
        "version": "1",
        "description": "a\ntool\n.",
    }
    assert facts.control_fields is identity.control_fields is status.control_fields
