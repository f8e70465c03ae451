"""The names of the JSON documents the scale-out commands print (docs/JSON.md), in one place.

The CLI renders them, and one is read back: ``manifest --assemble --digests``
reads what ``build --push --json`` printed on each shard. A document changes
its name when a field is removed or renamed; fields are only ever added under
one name.
"""

from __future__ import annotations

from typing import Final

BUILD: Final = "polyarch.build/v1"
PLAN: Final = "polyarch.plan/v1"
ASSEMBLE: Final = "polyarch.assemble/v1"
CACHE_PUSH: Final = "polyarch.cache-push/v1"
CACHE_PULL: Final = "polyarch.cache-pull/v1"
