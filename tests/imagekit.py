"""Small hand-made layers for the OCI and archive tests (no packages needed)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from polyarch.determinism import TAR_FORMAT, gzip_bytes, normalise_tarinfo, sha256_digest
from polyarch.image.layers import Layer


def make_layer(directory: Path, files: dict[str, bytes], packages: tuple[str, ...]) -> Layer:
    """A deterministic gzip layer holding ``files`` (and their parent dirs), stored in ``directory``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=TAR_FORMAT) as tar:
        for name in sorted({str(Path(n).parent) for n in files} - {"."}):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(normalise_tarinfo(info, 0))
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(normalise_tarinfo(info, 0), io.BytesIO(data))
    raw = buffer.getvalue()
    blob = gzip_bytes(raw)
    digest = sha256_digest(blob)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / digest.removeprefix("sha256:")
    path.write_bytes(blob)
    return Layer(digest, sha256_digest(raw), len(blob), len(raw), path, packages)
