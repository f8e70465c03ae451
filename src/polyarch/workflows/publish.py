"""publish: one annotated index over a container's systems (or any image files), pushed.

``polyarch manifest NAME`` builds every system of NAME (a warm build only
re-reads the cache), then writes ``OUT/NAME/manifest/``: an OCI layout holding
the build's index with the publish annotations added (revision, source,
version, licenses). That layout is what is pushed, so the digest printed is
the digest pushed. Its blobs are hard links into ``OUT/NAME/oci/``.

``polyarch manifest --image-file ...`` writes the same kind of layout from
image files polyarch did not build (``index_from_image_files``).

Where a push goes: ``--to REF``; else every enabled registry of the container;
else, with no registry configured, GitHub mode (``ghcr.io/<owner>/<NAME>``).
Credentials are resolved before anything is built or sent, so a missing
``$VAR`` fails fast; they live in memory only and are never printed.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from polyarch import cmd
from polyarch.config import Container
from polyarch.determinism import Digest, canonical_json, rfc3339, sha256_digest, source_date_epoch
from polyarch.errors import ConfigError, ImageError, PolyarchError, UsageError
from polyarch.files import link_or_copy
from polyarch.image.archive import publish_outputs, read_oci_layout
from polyarch.image.oci import (
    ANNOTATION_CREATED,
    ANNOTATION_DESCRIPTION,
    ANNOTATION_REF_NAME,
    ANNOTATION_TITLE,
    ANNOTATION_VERSION,
)
from polyarch.platforms import SYSTEMS
from polyarch.progress import NULL_PROGRESS, Progress
from polyarch.registry import (
    Credentials,
    Format,
    PushResult,
    Reference,
    github_target,
    index_from_image_files,
    parse_reference,
    push_layout,
    resolve_credentials,
    tags_from_env,
    version_from_env,
)
from polyarch.workflows.build import DEFAULT_TAG, BuildResult, build_container
from polyarch.workflows.resolve import Session

ANNOTATION_REVISION = "org.opencontainers.image.revision"
ANNOTATION_SOURCE = "org.opencontainers.image.source"
ANNOTATION_LICENSES = "org.opencontainers.image.licenses"
MANIFEST_DIR = "manifest"
"""``OUT/NAME/manifest/``: the layout ``polyarch manifest`` writes and pushes."""
IMAGE_FILES_NAME = "manifest"
"""The NAME of ``OUT/NAME/manifest/`` for ``--image-file`` without ``--to``."""
GITHUB = "github"
TO = "--to"


@dataclass(frozen=True, slots=True)
class Target:
    """One place a push goes: a repository (no tag) and the credentials for it."""

    name: str
    """The registry's name in containers.toml, ``--to`` or ``github``."""
    reference: Reference
    credentials: Credentials | None = field(default=None, compare=False)
    """Never printed: Credentials hides its secret in repr."""

    @property
    def repository(self) -> str:
        """``registry/repository``, as the user reads it."""
        return self.reference.name

    def ref_with_tag(self, tag: str) -> str:
        """What ``push_layout`` takes; keeps ``http://`` when the user asked for it."""
        scheme = "http://" if self.reference.plain_http else ""
        return f"{scheme}{self.reference.name}:{tag}"


@dataclass(frozen=True, slots=True)
class IndexLayout:
    """The layout that is (or would be) pushed: its index digest, platforms, annotations."""

    layout: Path
    digest: Digest
    platforms: tuple[str, ...]
    annotations: tuple[tuple[str, str], ...]
    build: BuildResult | None = None
    """The build it was made from (``polyarch manifest NAME`` without ``--no-build``)."""


@dataclass(frozen=True, slots=True)
class Published:
    """One finished push: where, what the registry got, and how long it took."""

    target: Target
    result: PushResult
    seconds: float


# -- tags and targets --------------------------------------------------------------------


def publish_tags(
    explicit: Sequence[str],
    *,
    version: str | None = None,
    branch: str | None = None,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """Explicit tags, then flocken's automatic tags; ``latest`` when nothing names any tag.

    Version and branch come from the arguments, else the CI variables
    (``tags_from_env``). A push outside CI with no tag at all still needs one,
    and ``latest`` is what ``docker push`` would use.
    """
    tags = tags_from_env(
        os.environ if env is None else env, explicit=explicit, version=version, branch=branch
    )
    return tags or [DEFAULT_TAG]


def publish_version(version: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The version to annotate: ``--version``, else VERSION or the CI's git tag, else None."""
    if version:
        return version
    return version_from_env(os.environ if env is None else env)


def _repository_ref(text: str, where: str) -> Reference:
    ref = parse_reference(text)
    if ref.tag or ref.digest:
        raise UsageError(
            f"{where} {text!r} names a tag or digest",
            hint="give the repository only; tags come from tags, --tag, --version and --branch",
        )
    return ref


def push_targets(
    container: Container | None,
    *,
    to: str | None = None,
    username: str | None = None,
    password_stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    docker_config: Path | None = None,
    progress: Progress = NULL_PROGRESS,
) -> list[Target]:
    """Where ``--push`` goes, with credentials resolved now (``$VAR`` read from ``env``).

    ``to`` overrides everything for one run. Otherwise the container's enabled
    registries (``{name}`` in ``repo`` is the container's name); with none
    configured, GitHub mode when GITHUB_TOKEN, GITHUB_ACTOR and GITHUB_REPOSITORY
    are set: ``ghcr.io/<owner>/<NAME>`` (``ghcr.io/<owner>/<repo>`` for image files).
    """
    source = os.environ if env is None else env
    if to is not None:
        ref = _repository_ref(to, "--to")
        return [
            Target(
                TO, ref, _credentials(ref, username, None, password_stdin, source, docker_config)
            )
        ]
    if container is not None and container.registries:
        return _configured_targets(
            container, username, password_stdin, source, docker_config, progress
        )
    if source.get("GITHUB_TOKEN"):
        # GitHub mode; github_target names whichever of ACTOR and REPOSITORY is missing.
        repository, credentials = github_target(source)
        if container is not None:
            owner = repository.split("/")[1]
            repository = f"ghcr.io/{owner}/{container.name}"
        return [Target(GITHUB, _repository_ref(repository, "GitHub mode"), credentials)]
    if container is None:
        raise UsageError("nowhere to push the images", hint="pass --to REF")
    raise UsageError(
        f"nowhere to push {container.name}",
        hint=(
            f'add [containers.{container.name}.registries.NAME] repo = "host/path" to '
            "containers.toml, pass --to REF, or run in GitHub Actions with GITHUB_TOKEN set"
        ),
    )


def _configured_targets(
    container: Container,
    username: str | None,
    password_stdin: bytes | None,
    env: Mapping[str, str],
    docker_config: Path | None,
    progress: Progress,
) -> list[Target]:
    enabled = [r for r in container.registries if r.enable]
    for r in container.registries:
        if not r.enable:
            progress.info(f"registry {r.name}: enable = false, skipped")
    if not enabled:
        raise UsageError(
            f"every registry of {container.name} has enable = false",
            hint="enable one in containers.toml, or pass --to REF",
        )
    if password_stdin is not None and len(enabled) > 1:
        raise UsageError(
            "--password-stdin with several registries: it is unclear whose password it is",
            hint='push to one with --to REF, or put password = "$VAR" in each registry',
        )
    targets = []
    for r in enabled:
        try:
            ref = _repository_ref(r.repo.replace("{name}", container.name), "repo")
        except UsageError as exc:
            raise ConfigError(
                f"containers.{container.name}.registries.{r.name}: {exc.message}", hint=exc.hint
            ) from None
        credentials = _credentials(
            ref, username or r.username, r.password, password_stdin, env, docker_config
        )
        targets.append(Target(r.name, ref, credentials))
    return targets


def _credentials(
    ref: Reference,
    username: str | None,
    password: str | None,
    password_stdin: bytes | None,
    env: Mapping[str, str],
    docker_config: Path | None,
) -> Credentials | None:
    if password_stdin is not None and username is None:
        raise UsageError(
            f"--password-stdin for {ref.registry} needs a user name",
            hint="pass --username, or set username in the registry's table",
        )
    return resolve_credentials(
        ref.registry,
        username=username if (password is not None or password_stdin is not None) else None,
        password=password,
        password_stdin=password_stdin,
        docker_config=docker_config,
        env=env,
    )


# -- annotations ---------------------------------------------------------------------------


def git_revision(directory: Path) -> str | None:
    """The commit checked out in ``directory``'s git repository, or None outside one."""
    return _git(directory, "rev-parse", "--verify", "HEAD")


def git_source(directory: Path, env: Mapping[str, str] | None = None) -> str | None:
    """A browsable URL of ``directory``'s repository: the ``origin`` remote, else GitHub's env.

    ``git@host:owner/repo.git`` becomes ``https://host/owner/repo``; user names
    and tokens embedded in a remote URL are dropped, never published.
    """
    remote = _git(directory, "remote", "get-url", "origin")
    if remote:
        return public_url(remote)
    source = os.environ if env is None else env
    server, repository = source.get("GITHUB_SERVER_URL"), source.get("GITHUB_REPOSITORY")
    if server and repository:
        return f"{server.rstrip('/')}/{repository}"
    return None


_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?([^:/]+):(?!//)(.+)$")
_URL = re.compile(r"^(?:[a-z+]+)://(?:[^@/]*@)?([^/]+)(/.*)?$")


def public_url(remote: str) -> str | None:
    """A git remote as an https URL without credentials; None for local paths."""
    remote = remote.strip()
    if match := _URL.match(remote):
        host, path = match.group(1), match.group(2) or ""
    elif (match := _SCP_LIKE.match(remote)) and not remote.startswith(("/", ".")):
        host, path = match.group(1), "/" + match.group(2)
    else:
        return None
    if remote.startswith("file:"):
        return None
    path = path.removesuffix("/").removesuffix(".git")
    return f"https://{host}{path}"


def _git(directory: Path, *args: str) -> str | None:
    try:
        result = cmd.run(["git", "-C", str(directory), *args], timeout=30)
    except (PolyarchError, OSError):
        return None  # no git, or not a repository: the annotation is simply absent
    if result.returncode != 0:
        return None
    value = result.stdout.decode("utf-8", "replace").strip()
    return value or None


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


def image_licenses(layout_path: Path, package: str) -> str | None:
    """Licenses of ``package`` from its copyright file inside the image (first system's).

    The layer is found by the config's history (``polyarch: PKG ...``), so only
    that one layer is read. None when the package, its layer or its
    copyright file cannot be found, or the file names no known license.
    """
    layout = read_oci_layout(layout_path)
    if len(layout.entries) != 1:
        return None
    tag = layout.entries[0].annotation(ANNOTATION_REF_NAME) or DEFAULT_TAG
    image = layout.images(tag)[0]
    try:
        history = json.loads(image.config_bytes).get("history", [])
    except ValueError:
        return None
    layered = [h for h in history if isinstance(h, dict) and not h.get("empty_layer")]
    if len(layered) != len(image.layers):
        return None
    wanted = f"usr/share/doc/{package}/copyright"
    for entry, layer in zip(layered, image.layers, strict=True):
        created_by = str(entry.get("created_by", ""))
        if not created_by.startswith("polyarch:") or package not in created_by.split()[1:]:
            continue
        try:
            with tarfile.open(layout.blob_path(layer.digest), mode="r|*") as tar:
                for member in tar:
                    if member.isfile() and member.name.removeprefix("./") == wanted:
                        data = tar.extractfile(member)
                        if data is not None:
                            return debian_licenses(data.read(1 << 20).decode("utf-8", "replace"))
        except (OSError, tarfile.TarError):
            return None
    return None


def publish_annotations(
    directory: Path,
    *,
    version: str | None,
    title: str | None = None,
    description: str | None = None,
    licenses: str | None = None,
    created: str | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The ``org.opencontainers.image.*`` annotations a published index gets.

    revision and source come from the git repository holding ``directory``
    (absent outside one); ``created`` defaults to SOURCE_DATE_EPOCH's time.
    """
    annotations = {ANNOTATION_CREATED: created or rfc3339(source_date_epoch())}
    for key, value in (
        (ANNOTATION_TITLE, title),
        (ANNOTATION_DESCRIPTION, description),
        (ANNOTATION_VERSION, version),
        (ANNOTATION_LICENSES, licenses),
        (ANNOTATION_REVISION, git_revision(directory)),
        (ANNOTATION_SOURCE, git_source(directory, env)),
    ):
        if value:
            annotations[key] = value
    return annotations


# -- layouts --------------------------------------------------------------------------------


def annotate_layout(
    source: Path, dest: Path, annotations: Mapping[str, str], *, tag: str = DEFAULT_TAG
) -> Digest:
    """Write at ``dest`` a layout of ``source``'s one index with ``annotations`` merged in.

    Only the index blob is new; every other blob is a hard link to ``source``'s
    (a copy where linking fails). The layout is made beside ``dest`` and swapped
    into place, replacing what was there (``publish_outputs``). Returns the new index digest.
    """
    layout = read_oci_layout(source)
    if len(layout.entries) != 1:
        raise ImageError(
            f"{source} holds {len(layout.entries)} images, expected one index",
            hint="rebuild it with polyarch build",
        )
    entry = layout.entries[0]
    document = json.loads(layout.read_blob(entry))
    if not isinstance(document, dict) or "manifests" not in document:
        raise ImageError(f"{source} does not hold an image index", hint="rebuild it")
    document["annotations"] = {**document.get("annotations", {}), **annotations}
    index = canonical_json(document)
    digest = sha256_digest(index)
    top = {
        "schemaVersion": 2,
        "mediaType": entry.media_type,
        "manifests": [
            {
                "mediaType": entry.media_type,
                "digest": digest,
                "size": len(index),
                "annotations": {ANNOTATION_REF_NAME: tag},
            }
        ],
    }

    def write(work: Path) -> None:
        blobs = work / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        for blob in (source / "blobs" / "sha256").iterdir():
            if blob.name != entry.digest.removeprefix("sha256:"):
                link_or_copy(blob, blobs / blob.name)
        (blobs / digest.removeprefix("sha256:")).write_bytes(index)
        (work / "oci-layout").write_bytes((source / "oci-layout").read_bytes())
        (work / "index.json").write_bytes(canonical_json(top))

    publish_outputs(dest.parent, dest.name, write)
    return digest


def _describe(layout_path: Path, digest: Digest, build: BuildResult | None) -> IndexLayout:
    layout = read_oci_layout(layout_path)
    tag = layout.tags[0] if layout.tags else DEFAULT_TAG
    platforms = tuple(str(i.platform) for i in layout.images(tag) if i.platform is not None)
    document = json.loads(layout.read_blob(layout.entries[0]))
    annotations = tuple(sorted(document.get("annotations", {}).items()))
    return IndexLayout(layout_path, digest, platforms, annotations, build)


def container_index(
    session: Session,
    container: Container,
    *,
    out_dir: Path,
    version: str | None = None,
    build: bool = True,
    env: Mapping[str, str] | None = None,
) -> IndexLayout:
    """Build ``container`` for all its systems, then write ``OUT/NAME/manifest/``, annotated.

    With ``build=False`` the existing ``OUT/NAME/oci/`` is used, and must hold
    exactly the container's systems. The annotated version is ``version``
    (from ``publish_version``), else the tool package's Debian version.
    """
    built: BuildResult | None = None
    source = out_dir / container.name / "oci"
    if build:
        built = build_container(session, container, container.systems, out_dir=out_dir)
    else:
        _check_built_systems(source, container)
    licenses = image_licenses(source, container.package)
    annotations = publish_annotations(
        session.config.directory,
        version=version,
        title=container.name,
        description=container.description,
        licenses=licenses,
        env=env,
    )
    # The build's index already carries created and the Debian version; keep those
    # unless this publish names its own version.
    annotations.pop(ANNOTATION_CREATED)
    dest = out_dir / container.name / MANIFEST_DIR
    digest = annotate_layout(source, dest, annotations)
    return _describe(dest, digest, built)


def _check_built_systems(source: Path, container: Container) -> None:
    layout = read_oci_layout(source)
    tag = layout.tags[0] if layout.tags else DEFAULT_TAG
    have = {i.system for i in layout.images(tag)}
    want = set(container.systems)
    if have != want:
        names = ", ".join(s.name for s in SYSTEMS if s in have) or "none"
        raise ImageError(
            f"{source} holds {names}, not every system of {container.name}",
            hint=f"run polyarch build {container.name} --all-systems, or drop --no-build",
        )


def image_files_index(
    paths: Sequence[Path],
    dest: Path,
    *,
    title: str | None = None,
    version: str | None = None,
    env: Mapping[str, str] | None = None,
) -> IndexLayout:
    """An annotated index over image files (one platform each) written as layout ``dest``."""
    annotations = publish_annotations(Path.cwd(), version=version, title=title, env=env)
    digest = index_from_image_files(list(paths), dest, DEFAULT_TAG, annotations=annotations)
    return _describe(dest, digest, None)


def image_files_dest(out_dir: Path, to: str | None) -> Path:
    """``OUT/<last component of --to>/manifest``, or ``OUT/manifest/manifest`` without --to."""
    name = _repository_ref(to, "--to").repository.rsplit("/", 1)[-1] if to else IMAGE_FILES_NAME
    return out_dir / name / MANIFEST_DIR


# -- pushing ----------------------------------------------------------------------------------


def push_index(
    index: IndexLayout,
    target: Target,
    tags: Sequence[str],
    *,
    format: Format = "oci",
    insecure: bool = False,
    ca_bundle: Path | None = None,
    jobs: int = 8,
    record_dir: Path | None = None,
    progress: Progress = NULL_PROGRESS,
) -> Published:
    """Push ``index`` to ``target`` under ``tags`` (the first by the index PUT, the rest as tags)."""
    if not tags:
        raise UsageError("no tag to push", hint="pass --tag")
    start = time.perf_counter()
    try:
        result = push_layout(
            index.layout,
            target.ref_with_tag(tags[0]),
            tags=tags,
            credentials=target.credentials,
            insecure=insecure,
            format=format,
            ca_bundle=ca_bundle,
            jobs=jobs,
            record_dir=record_dir,
            progress=progress,
        )
    except PolyarchError as exc:
        if target.name in (TO, GITHUB):
            raise
        # Name the registry table, so a user with several knows which one to fix.
        raise type(exc)(f"registry {target.name}: {exc.message}", hint=exc.hint) from exc
    return Published(target, result, time.perf_counter() - start)
