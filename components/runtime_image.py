"""RuntimeDiskImage: the sd-runtime disk image for the current recipe, bake script and base image.

The image's identity is the hash of the recipe, the bake script and the base image digest
(components/runtime_identity.py); it names the image `sd-runtime-<hash12>` and labels it, so the Pulumi
resource is replaced exactly when that hash changes and a re-run after a crash adopts an image it
already made. The image is a dynamic resource whose provider bakes it on a throwaway builder VM and
retires it without breaking nodes that still use it (components/runtime_bake/).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pulumi

from components.iam import service_account_with_roles
from components.recipe import BAKE_SCRIPT, RecipeError, image_name, load_recipe
from components.runtime_bake.compute import Pacing  # noqa: F401 - importable here for stacks made before the split
from components.runtime_bake.provider import BakedImage, RuntimeImageProvider  # noqa: F401 - likewise
from components.runtime_identity import runtime_identity
from components.runtime_layout import IMAGE_FAMILY

# The state of an image made before the provider moved to components/runtime_bake/ holds the provider
# pickled by reference as components.runtime_image.RuntimeImageProvider, with its Pacing. The engine
# unpickles that stored copy to read and delete the image (Delete and Read call get_provider(props) on the
# state: https://github.com/pulumi/pulumi/blob/v3.272.0/sdk/python/lib/pulumi/dynamic/__main__.py, the SDK
# locked here), and the diff ignores the provider, so the stored copy stays until the image is replaced:
# both names stay importable here.

BUILDER_ROLES = ("roles/artifactregistry.reader", "roles/logging.logWriter")


@dataclass
class RuntimeDiskImageArgs:
    project: str
    zone: str
    """Where the builder VM runs."""
    recipe_path: Path
    base_image: pulumi.Input[str]
    """The base image by digest: REGION-docker.pkg.dev/P/R/sd-base@sha256:..."""
    subnetwork: pulumi.Input[str]
    """The builder has no external IP: this subnet needs Cloud NAT and Private Google Access."""
    base_python: str
    """The base image's Python minor: the recipe must name the same one (the venv links to it)."""
    machine_type: str
    disk_size_gb: int
    timeout_minutes: int
    node_zones: list[str] = field(default_factory=list)
    """Zones where nodes make disks from the image; deletion looks there for disks still using it.
    Empty: the builder zone only."""
    compute_endpoint: str | None = None
    """Tests point the provider at a fake Compute API; None is the real one."""


class RuntimeDiskImage(pulumi.ComponentResource):
    """The sd-runtime disk image for the current recipe, bake script and base image."""

    def __init__(self, name: str, args: RuntimeDiskImageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sdgke:runtime_image:RuntimeDiskImage", name, None, opts)
        try:
            recipe = load_recipe(args.recipe_path)
        except RecipeError as err:
            raise pulumi.RunError(str(err)) from None
        if recipe.python != args.base_python:
            raise pulumi.RunError(
                f"{args.recipe_path.name}: python {recipe.python!r} is not allowed; expected {args.base_python!r}, "
                "the Python of images/base/Dockerfile (the baked venv links to that interpreter)"
            )
        bake_script = BAKE_SCRIPT.read_bytes()
        identity = pulumi.Output.from_input(args.base_image).apply(
            lambda ref: runtime_identity(recipe, bake_script, ref))
        child = pulumi.ResourceOptions(parent=self)

        self.service_account, roles = service_account_with_roles(
            f"{name}-builder", args.project, "sd-gke runtime image builder VM", BUILDER_ROLES, child,
        )
        self.image = BakedImage(
            f"{name}-image",
            {
                "project": args.project,
                "zone": args.zone,
                "node_zones": list(args.node_zones),
                "image_name": identity.apply(image_name),
                "family": IMAGE_FAMILY,
                "identity_hash": identity,
                "recipe_json": recipe.canonical_json(),
                "bake_script": bake_script.decode(),
                "base_image": args.base_image,
                "subnetwork": args.subnetwork,
                "machine_type": args.machine_type,
                "disk_size_gb": args.disk_size_gb,
                "timeout_seconds": args.timeout_minutes * 60,
                "service_account_email": self.service_account.email,
                "compute_endpoint": args.compute_endpoint,
            },
            pulumi.ResourceOptions(parent=self, depends_on=roles),
        )
        # Read back from the image resource, so whatever uses them waits until the image exists.
        self.self_link: pulumi.Output[str] = self.image.self_link
        self.image_name: pulumi.Output[str] = self.image.image_name
        self.size_gb: pulumi.Output[int] = self.image.size_gb
        self.identity_hash: pulumi.Output[str] = self.image.identity_hash
        self.hash12: pulumi.Output[str] = self.image.identity_hash.apply(lambda h: h[:12])
        self.register_outputs({
            "self_link": self.self_link,
            "image_name": self.image_name,
            "size_gb": self.size_gb,
            "identity_hash": self.identity_hash,
            "hash12": self.hash12,
        })
