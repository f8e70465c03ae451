"""Where a container's outputs live under ``--out``, and writing them in one step.

Outputs of ``polyarch build NAME`` (``write_build_outputs``)::

    OUT/NAME/oci/          OCI image layout; index.json -> the image index (tag in ref.name)
    OUT/NAME/SYSTEM.tar    docker-archive of one system's image (docker load, podman load)
    OUT/NAME/manifest/     the annotated layout ``polyarch manifest`` pushes
    OUT/NAME/sbom/         per system: SYSTEM.spdx.json, SYSTEM.cdx.json, SYSTEM.provenance.json,
                           and when signed SYSTEM.{spdx,cdx,provenance}.dsse.json (SUPPLY-CHAIN.md)

``OUT/NAME`` always holds exactly the result of the last successful build: a
build of only ``--system S`` replaces the whole directory, so it then holds
``S.tar`` and an index over S alone. Keeping the other systems' tarballs would
make ``oci/`` and the tarballs disagree about what was built, and would keep
images whose packages no longer match the lock.

A rebuild whose outputs would be identical writes nothing: the existing
``OUT/NAME`` is compared byte for byte with what would be written (never by
timestamps), so a file edited, added or removed by hand is still replaced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from polyarch.attest.names import EvidenceKind
from polyarch.errors import ImageError

if TYPE_CHECKING:
    from polyarch.checked import CheckedFiles
    from polyarch.image.oci import Image
    from polyarch.platforms import System

DEFAULT_OUT = "result"
LAYOUT_DIR = "oci"
MANIFEST_DIR = "manifest"
SBOM_DIR = "sbom"


@dataclass(frozen=True, slots=True)
class Outputs:
    """The output paths of one container (or of ``--image-file`` named ``name``)."""

    out_dir: Path
    name: str

    def __post_init__(self) -> None:
        name = self.name
        if not name or name.startswith(".") or "/" in name or "\0" in name:
            raise ImageError(
                f"{name!r} cannot name an output directory", hint="use a container name"
            )

    @property
    def root(self) -> Path:
        """``OUT/NAME``."""
        return self.out_dir / self.name

    @property
    def layout(self) -> Path:
        """``OUT/NAME/oci``: the build's OCI layout."""
        return self.root / LAYOUT_DIR

    @property
    def manifest(self) -> Path:
        """``OUT/NAME/manifest``: the annotated layout that ``polyarch manifest`` pushes."""
        return self.root / MANIFEST_DIR

    def archive(self, system: System) -> Path:
        """``OUT/NAME/SYSTEM.tar``: the docker-archive of one system's image."""
        return self.root / archive_name(system)

    @property
    def sbom(self) -> Path:
        """``OUT/NAME/sbom``: SBOMs, provenance and signed statements of each system image."""
        return self.root / SBOM_DIR

    def evidence(self, system: System, kind: EvidenceKind, *, signed: bool = False) -> Path:
        """``OUT/NAME/sbom/SYSTEM.KIND.json`` (``SYSTEM.KIND.dsse.json`` when ``signed``)."""
        return self.sbom / evidence_name(system, kind, signed=signed)


def archive_name(system: System) -> str:
    return f"{system.name}.tar"


def evidence_name(system: System, kind: EvidenceKind, *, signed: bool = False) -> str:
    return f"{system.name}.{kind}{'.dsse' if signed else ''}.json"


def write_build_outputs(
    outputs: Outputs,
    images: Sequence[Image],
    index: bytes,
    *,
    tag: str,
    repo_tags: Sequence[str],
    mtime: int | None = None,
    evidence: Mapping[str, bytes] | None = None,
    checked: CheckedFiles | None = None,
) -> Path:
    """Publish ``OUT/NAME/oci/``, one ``OUT/NAME/SYSTEM.tar`` per image and ``evidence``
    (file name → bytes, in ``OUT/NAME/sbom/``); return ``OUT/NAME``.

    Nothing is written when ``OUT/NAME`` already holds exactly these files
    (large ones hashed, unless ``checked`` knows them unchanged since they were).
    """
    # Imported here, not at the top: the CLI reads DEFAULT_OUT while it starts.
    from polyarch.files import replace_directory
    from polyarch.image.docker_archive import write_docker_archive
    from polyarch.image.layout import write_oci_layout

    def fill(staging: Path) -> None:
        write_oci_layout(staging / LAYOUT_DIR, images, index, tag=tag)
        for image in images:
            write_docker_archive(
                staging / archive_name(image.system), image, repo_tags=repo_tags, mtime=mtime
            )
        if evidence:
            (staging / SBOM_DIR).mkdir()
            for name, data in sorted(evidence.items()):
                (staging / SBOM_DIR / name).write_bytes(data)

    if _unchanged(
        outputs.root,
        images,
        index,
        tag=tag,
        repo_tags=repo_tags,
        mtime=mtime,
        evidence=evidence,
        checked=checked,
    ):
        return outputs.root
    return replace_directory(outputs.root, fill)


def _unchanged(
    root: Path,
    images: Sequence[Image],
    index: bytes,
    *,
    tag: str,
    repo_tags: Sequence[str],
    mtime: int | None,
    evidence: Mapping[str, bytes] | None,
    checked: CheckedFiles | None,
) -> bool:
    """Whether ``root`` already holds exactly the outputs ``write_build_outputs`` would write."""
    # Imported here, as in write_build_outputs.
    from concurrent.futures import ThreadPoolExecutor
    from functools import partial

    from polyarch.files import same_content
    from polyarch.image.docker_archive import docker_archive_matches
    from polyarch.image.layout import layout_matches

    try:
        names = {p.name for p in root.iterdir()}
        sbom = {p.name for p in (root / SBOM_DIR).iterdir()} if evidence else set()
    except OSError:
        return False
    expected = {LAYOUT_DIR, *(archive_name(image.system) for image in images)}
    if names != (expected | {SBOM_DIR} if evidence else expected):
        return False
    if evidence and not (
        sbom == evidence.keys()
        and all(same_content(root / SBOM_DIR / n, data) for n, data in evidence.items())
    ):
        return False
    checks = [partial(layout_matches, root / LAYOUT_DIR, images, index, tag=tag, checked=checked)]
    checks += [
        partial(
            docker_archive_matches,
            root / archive_name(image.system),
            image,
            repo_tags=repo_tags,
            mtime=mtime,
            checked=checked,
        )
        for image in images
    ]
    # Mostly SHA-256 of the layer blobs, which releases the GIL: the files side by side.
    with ThreadPoolExecutor(max_workers=len(checks)) as pool:
        return all(pool.map(lambda check: check(), checks))
