"""The slim CUDA-less base image: the SD pod's container and the environment the runtime is baked in.

PyTorch wheels carry their own CUDA libraries and GKE mounts the driver, so the image holds only
Python and the system libraries WebUI loads. Pods and the bake both use it by digest, so the
venv on the runtime disk always meets the Python it was built with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pulumi

from components.registry import Registry, digest_ref, pushed_image

CONTEXT = Path(__file__).resolve().parent.parent / "images" / "base"


def python_version(dockerfile: str) -> str:
    """The Python minor the image installs, read from its `io.sd-gke.python` label."""
    match = re.search(r'io\.sd-gke\.python="(3\.\d+)"', dockerfile)
    if not match:
        raise ValueError('images/base/Dockerfile: no io.sd-gke.python="3.X" label; the bake needs it')
    return match.group(1)


@dataclass
class BaseImageArgs:
    registry: Registry


class BaseImage(pulumi.ComponentResource):
    """Builds images/base and pushes it; exposes the digest reference and the Python version."""

    def __init__(self, name: str, args: BaseImageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sdgke:base_image:BaseImage", name, None, opts)
        self.python_version = python_version((CONTEXT / "Dockerfile").read_text())
        self.image = pushed_image(f"{name}-image", "sd-base", CONTEXT, args.registry, self)
        self.ref = digest_ref(self.image)
        self.digest = self.image.digest
        self.register_outputs({"ref": self.ref, "pythonVersion": self.python_version})
