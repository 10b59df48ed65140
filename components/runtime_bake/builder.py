"""The throwaway builder VM the runtime disk image is baked on, and the bake's inputs it is made from.

Container-Optimized OS, no external IP, its own service account, a blank data disk; its startup script
(images/runtime/builder-startup.sh) formats and mounts the disk, pulls the base image by digest (retried
while the builder's new IAM grant propagates), runs `bake.py` in it with the disk at /runtime and its
temporary files on that disk, and publishes each step in the guest attributes `sd-bake/`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.config import FIXED_DISK_TYPE
from components.runtime_identity import base_image_digest
from components.runtime_layout import RUNTIME_ROOT

BUILDER_IMAGE = "projects/cos-cloud/global/images/family/cos-stable"
BUILDER_BOOT_DISK_GB = 30
"""Explicit, since a boot disk defaults to its image's size (compute.v1 AttachedDiskInitializeParams.diskSizeGb:
"the default size is the size of the sourceImage"), 10 GB for COS images. Docker keeps the pulled base
image on the boot disk (/var/lib/docker, on COS's stateful partition:
https://cloud.google.com/container-optimized-os/docs/concepts/disks-and-filesystem), compressed layers
and extracted ones during the pull; the bake's own files and temporary files go to the data disk."""
STARTUP_SCRIPT = Path(__file__).resolve().parent.parent.parent / "images" / "runtime" / "builder-startup.sh"
BAKE_STATE_DIR = ".bake"
"""bake.py's STATE, under the runtime root: the bake's temporary files go there, on the data disk (the
torch wheels alone are gigabytes, too much for the container's /tmp on the boot disk). bake.py makes it
before its first step and leaves it out of the manifest's sizes."""
BUILDER_DEVICE = "sd-runtime-build"
"""deviceName of the blank disk on the builder: /dev/disk/by-id/google-sd-runtime-build."""
BUILDER_LABEL = "sdgke-builder"
"""Label (value hash12) on the builder VM and its disks, so leftovers are found whatever their names."""
GUEST_NAMESPACE = "sd-bake"
"""The guest attributes namespace the builder publishes its progress in."""


@dataclass(frozen=True)
class BakeSpec:
    """The dynamic resource's inputs, typed (numbers arrive as floats from the engine)."""

    project: str
    zone: str
    node_zones: tuple[str, ...]
    image_name: str
    family: str
    identity_hash: str
    recipe_json: str
    bake_script: str
    base_image: str
    subnetwork: str
    machine_type: str
    disk_size_gb: int
    timeout_seconds: float
    service_account_email: str
    compute_endpoint: str | None

    @classmethod
    def from_props(cls, props: dict[str, Any]) -> BakeSpec:
        return cls(
            project=props["project"], zone=props["zone"], node_zones=tuple(props.get("node_zones") or ()),
            image_name=props["image_name"], family=props["family"], identity_hash=props["identity_hash"],
            recipe_json=props["recipe_json"], bake_script=props["bake_script"], base_image=props["base_image"],
            subnetwork=props["subnetwork"], machine_type=props["machine_type"],
            disk_size_gb=int(props["disk_size_gb"]), timeout_seconds=float(props["timeout_seconds"]),
            service_account_email=props["service_account_email"], compute_endpoint=props.get("compute_endpoint"),
        )

    @property
    def hash12(self) -> str:
        return self.identity_hash[:12]

    @property
    def builder(self) -> str:
        """The builder VM's name, also its boot disk's; deterministic so a later run finds leftovers."""
        return f"sd-runtime-build-{self.hash12}"

    @property
    def data_disk(self) -> str:
        return f"{self.builder}-data"

    @property
    def disk_zones(self) -> tuple[str, ...]:
        """Where disks made from the image may be: the node zones and the builder's."""
        return tuple(dict.fromkeys((*self.node_zones, self.zone)))


def builder_metadata(spec: BakeSpec) -> dict[str, str]:
    """The builder's metadata: its startup script (images/runtime/builder-startup.sh, unchanged), the bake
    script and recipe, and the settings the startup script reads as sd-bake-* attributes."""
    return {
        "enable-guest-attributes": "TRUE",
        "google-logging-enabled": "true",
        "startup-script": STARTUP_SCRIPT.read_text(),
        "sd-bake-script": spec.bake_script,
        "sd-bake-recipe": spec.recipe_json,
        "sd-bake-namespace": GUEST_NAMESPACE,
        "sd-bake-image": spec.base_image,
        "sd-bake-digest": base_image_digest(spec.base_image),
        "sd-bake-python": "python" + json.loads(spec.recipe_json)["python"],
        "sd-bake-expected-hash": spec.identity_hash,
        "sd-bake-runtime": RUNTIME_ROOT,
        "sd-bake-state-dir": BAKE_STATE_DIR,
    }


def builder_instance(compute_v1: Any, spec: BakeSpec) -> Any:
    """The builder VM: COS, no external IP, the builder service account, a blank data disk, the bake script."""
    labels = {BUILDER_LABEL: spec.hash12, "managed-by": "pulumi"}
    disk_type = f"zones/{spec.zone}/diskTypes/{FIXED_DISK_TYPE}"
    return compute_v1.Instance(
        name=spec.builder,
        machine_type=f"zones/{spec.zone}/machineTypes/{spec.machine_type}",
        labels=labels,
        disks=[
            compute_v1.AttachedDisk(
                boot=True, auto_delete=True,
                initialize_params=compute_v1.AttachedDiskInitializeParams(
                    disk_name=spec.builder, source_image=BUILDER_IMAGE, disk_size_gb=BUILDER_BOOT_DISK_GB,
                    disk_type=disk_type, labels=labels),
            ),
            compute_v1.AttachedDisk(
                device_name=BUILDER_DEVICE, auto_delete=True,
                initialize_params=compute_v1.AttachedDiskInitializeParams(
                    disk_name=spec.data_disk, disk_size_gb=spec.disk_size_gb, disk_type=disk_type, labels=labels),
            ),
        ],
        network_interfaces=[compute_v1.NetworkInterface(subnetwork=spec.subnetwork)],
        service_accounts=[compute_v1.ServiceAccount(
            email=spec.service_account_email, scopes=["https://www.googleapis.com/auth/cloud-platform"])],
        shielded_instance_config=compute_v1.ShieldedInstanceConfig(
            enable_secure_boot=True, enable_vtpm=True, enable_integrity_monitoring=True),
        metadata=compute_v1.Metadata(items=[compute_v1.Items(key=k, value=v) for k, v in builder_metadata(spec).items()]),
    )
