"""The runtime image's identity: the recipe, the bake script and the digest of the base image it is baked in."""

from __future__ import annotations

import re

import pulumi

from components.recipe import Recipe, recipe_hash


def base_image_digest(ref: str) -> str:
    """The digest of an image reference by digest (REPO@sha256:HEX); anything else is an error."""
    repository, at, digest = ref.partition("@")
    if not at or not repository or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise pulumi.RunError(f"runtime image: base_image {ref!r} is not allowed; expected a reference by digest, "
                              "REGION-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE@sha256:<64 hex digits>")
    return digest


def runtime_identity(recipe: Recipe, bake_script: bytes, base_image: str) -> str:
    """The image's identity: recipe, bake script and the digest of the base image it is baked in.

    The bake recomputes it on the builder and refuses to bake under another, so it covers exactly
    what the bake can see; the builder's startup script (plumbing around the bake) is not part of it.
    """
    return recipe_hash(recipe, bake_script, base_image_digest(base_image))
