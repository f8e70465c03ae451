"""load: put a built image into docker or podman under a name, without disturbing other names.

Images come from ``polyarch build``'s outputs: ``OUT/NAME/SYSTEM.tar``, or the
OCI layout (``load_from_layout``, for manifest-test). The engine is only a
runner: nothing here builds.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from polyarch.config import Container
from polyarch.engine import Engine
from polyarch.errors import ImageError
from polyarch.image.docker_archive import embedded_tags, image_id_of, write_docker_archive
from polyarch.image.layout_reader import image_from_layout, read_oci_layout
from polyarch.image.loadable import write_loadable_archive
from polyarch.image.merged import merge_layers
from polyarch.outputs import Outputs
from polyarch.platforms import System
from polyarch.reference import DEFAULT_TAG, check_tag


def load_image(
    engine: Engine,
    container: Container,
    system: System,
    *,
    out_dir: Path,
    tag: str = DEFAULT_TAG,
    merge_layers: bool = False,
) -> str:
    """Load ``system``'s docker-archive into ``engine`` as ``NAME:TAG``; return that reference.

    The engine is handed the layers uncompressed (``image.loadable``);
    ``merge_layers`` loads the image as one layer (``image.merged``): what an
    engine on vfs storage loads fastest. The outputs keep their layers.
    """
    check_tag(tag)  # before the engine loads anything under a name it would then refuse
    archive = Outputs(out_dir, container.name).archive(system)
    if not archive.is_file():
        raise ImageError(
            f"{container.name} has no {system.name} image in {out_dir}",
            hint=f"build it: polyarch build {container.name} --system {system.name}",
        )
    if merge_layers:
        return load_from_layout(engine, container, system, out_dir=out_dir, tag=tag, merge=True)
    return _load_as(engine, archive, system, f"{container.name}:{tag}")


def _already_loaded(engine: Engine, archive: Path, reference: str) -> bool:
    """True if ``reference`` already names the archive's image (same config, so same layers).

    A warm ``polyarch all`` then loads nothing: one inspect instead of a load.
    """
    found = engine.image_id(reference)
    return found is not None and found.removeprefix("sha256:") == image_id_of(archive)


def _load_as(
    engine: Engine, archive: Path, system: System, reference: str, *, plain: bool = False
) -> str:
    """Load ``archive`` as ``reference``; with its layers uncompressed (``image.loadable``)
    unless they are already (``plain``) or the engine is reached over a network."""
    if _already_loaded(engine, archive, reference):
        return reference
    if plain or engine.over_network():  # on the wire, bytes cost more than the engine's gunzip
        loaded = engine.load(archive)
    else:
        with tempfile.TemporaryDirectory(prefix="polyarch-load-") as tmp:
            unpacked = Path(tmp) / f"{system.name}.tar"
            write_loadable_archive(archive, system, unpacked, Path(tmp))
            loaded = engine.load(unpacked)
    if loaded != reference and loaded != f"localhost/{reference}":
        engine.tag(loaded, reference)
    return reference


def load_foreign(
    engine: Engine, container: Container, system: System, *, out_dir: Path, tag: str
) -> str:
    """Load a foreign image as ``NAME:TAG-SYSTEM``; every other name keeps its image.

    Loading a docker-archive moves the names written inside it (``NAME:TAG`` of
    the build) to the loaded image; they are put back where they were.
    """
    check_tag(f"{tag}-{system.name}")
    archive = Outputs(out_dir, container.name).archive(system)
    reference = f"{container.name}:{tag}-{system.name}"
    if archive.is_file() and _already_loaded(engine, archive, reference):
        return reference
    protected = {*embedded_tags(archive), f"{container.name}:{tag}"}
    previous = {ref: engine.image_id(ref) for ref in sorted(protected)}
    reference = load_image(engine, container, system, out_dir=out_dir, tag=f"{tag}-{system.name}")
    for ref, image_id in previous.items():
        if image_id is not None:
            engine.tag(image_id, ref)
        else:
            engine.untag(ref)
    return reference


def load_from_layout(
    engine: Engine,
    container: Container,
    system: System,
    *,
    out_dir: Path,
    tag: str = DEFAULT_TAG,
    merge: bool = False,
) -> str:
    """Load ``system``'s image out of the OCI layout (the index), as ``NAME:TAG``.

    ``merge``: as one layer (``image.merged``).
    """
    check_tag(tag)
    layout = read_oci_layout(Outputs(out_dir, container.name).layout)
    image = image_from_layout(layout, tag, system)
    with tempfile.TemporaryDirectory(prefix="polyarch-load-") as tmp:
        if merge:
            image = merge_layers(image, Path(tmp))
        archive = Path(tmp) / f"{system.name}.tar"
        write_docker_archive(archive, image, repo_tags=[f"{container.name}:{tag}"])
        return _load_as(engine, archive, system, f"{container.name}:{tag}", plain=merge)
