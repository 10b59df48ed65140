"""Check that what is mounted is the runtime this node was configured for."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from attacher import names


class RuntimeRefused(Exception):
    """The mounted runtime is not the expected one (or not finished): never untaint for it."""


@dataclass(frozen=True)
class VerifiedRuntime:
    recipe_hash: str


def verify_runtime(mount_path: str, expected_hash12: str) -> VerifiedRuntime:
    """MANIFEST.json's `recipe_hash` (the full hash) must start with the configured hash12, and the
    ready marker the bake writes last must be there (its absence means an unfinished bake)."""
    manifest_path = os.path.join(mount_path, names.MANIFEST_FILE)
    try:
        with open(manifest_path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except FileNotFoundError:
        raise RuntimeRefused(f"{manifest_path} is missing: this disk is not an sd-gke runtime") from None
    except (OSError, ValueError) as exc:
        raise RuntimeRefused(f"{manifest_path} is unreadable: {exc}") from None
    recipe_hash = manifest.get("recipe_hash") if isinstance(manifest, dict) else None
    if not isinstance(recipe_hash, str) or not recipe_hash:
        raise RuntimeRefused(f"{manifest_path} has no recipe_hash string")
    if recipe_hash[:12] != expected_hash12:
        raise RuntimeRefused(
            f"wrong runtime: {manifest_path} recipe_hash={recipe_hash} does not start with "
            f"SDGKE_RUNTIME_HASH={expected_hash12}; refusing it and keeping the startup taint"
        )
    marker = os.path.join(mount_path, names.READY_MARKER)
    if not os.path.exists(marker):
        raise RuntimeRefused(f"{marker} is missing: the bake of this runtime did not finish")
    return VerifiedRuntime(recipe_hash=recipe_hash)
