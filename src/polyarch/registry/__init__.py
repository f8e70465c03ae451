"""Registries: references, credentials, automatic tags, reading image files, and pushing."""

from polyarch.image.oci import Platform
from polyarch.registry.client import RegistryClient
from polyarch.registry.credentials import Credentials, github_target, resolve_credentials
from polyarch.registry.imports import (
    ImportedImage,
    ImportedLayer,
    index_from_image_files,
    read_image_file,
    read_images,
)
from polyarch.registry.layout import Format, PushPlan, convert_plan, read_layout
from polyarch.registry.push import PushResult, push_layout
from polyarch.registry.reference import Reference, parse_reference
from polyarch.registry.tags import automatic_tags, sanitise_tag, tags_from_env, version_from_env

__all__ = [
    "Credentials",
    "Format",
    "ImportedImage",
    "ImportedLayer",
    "Platform",
    "PushPlan",
    "PushResult",
    "Reference",
    "RegistryClient",
    "automatic_tags",
    "convert_plan",
    "github_target",
    "index_from_image_files",
    "parse_reference",
    "push_layout",
    "read_image_file",
    "read_images",
    "read_layout",
    "resolve_credentials",
    "sanitise_tag",
    "tags_from_env",
    "version_from_env",
]
