"""The GPU node pool of one runtime: blue/green runtime upgrades without a person on the nodes.

A runtime disk is created per node from one runtime image; a node that holds runtime A cannot serve
runtime B without detaching a disk the WebUI may be reading. So a GPU node never changes runtime:
the pool carries the runtime hash as the node label `sd-gke/runtime`, and a new hash replaces the
pool. Pulumi replaces create-before-delete by default ("to minimize downtime, Pulumi creates new
instances of resources before deleting old ones",
https://www.pulumi.com/docs/iac/concepts/options/deletebeforereplace/), and re-runs the provider's
Check without the old inputs for a replacement, so the new pool gets a fresh auto-generated name
and both pools exist side by side (pulumi/pulumi@1a16857a44f16e46a9dce29f184c511062a70f80:
pkg/resource/deploy/step_generator.go, "If we are going to perform a replacement, we need to
recompute the default values"). The order of one `pulumi up` with a new recipe:
  1. the new runtime image is baked (this pool's label reads its hash, so the pool waits for it);
  2. the new pool is created (empty when it scales from zero);
  3. the disk attacher and the WebUI, which select the label read back from this pool, are updated:
     the WebUI's rolling update surges one pod onto the new pool (the autoscaler adds a node for
     it) and removes an old pod only once a new one is ready;
  4. the old pool is deleted last, after its dependents moved: GKE drains its nodes ("GKE drains
     all the nodes in the node pool", https://cloud.google.com/kubernetes-engine/docs/how-to/node-pools#deleting_a_node_pool)
     and the old runtime disks go with their nodes (autoDelete).

With `runtime.delivery: secondaryBootDisk` GKE itself gives every node of the pool a disk made from the
runtime image, in data mode (no `mode`: the enum's other value, CONTAINER_IMAGE_CACHE, is for container
images), created "in parallel with the node provisioning process" and deleted with the node, and mounts
it at secondary_boot_disk_path(image)
(https://cloud.google.com/kubernetes-engine/docs/how-to/data-container-image-preloading). The image must be
in the pool's project (it is: the bake makes it there) and hold a file system GKE mounts: the bake's
`mkfs.ext4` of the whole device (images/runtime/builder-startup.sh) is what GKE's own data disk builder
does (GoogleCloudPlatform/ai-on-gke@0808213391a6604cd80e5519e032fc32cd3816da:
gke-disk-image-builder/script/startup.sh, "Set ext4 as the file system"). Nothing lifts a startup taint
in that mode, so the pool carries none; the WebUI's init check refuses a node without the runtime.

With `gpuPool.onDemandFallback` there are two pools per runtime, Spot and on-demand, both scaling from
zero, both labelled and tainted for the ComputeClass that orders them (components/compute_class.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

from components.cluster import Cluster, per_zone
from components.compute_class import COMPUTE_CLASS_LABEL, COMPUTE_CLASS_TAINT
from components.config import GpuPoolConfig
from components.runtime_layout import (
    GPU_NODE_LABEL,
    GPU_TAINT,
    RUNTIME_DELIVERY_LABEL,
    RUNTIME_NODE_LABEL,
    STARTUP_TAINT,
    secondary_boot_disk_path,
)
from components.webui import RuntimeVolume

REPLACED_ON = ["nodeConfig.labels", "nodeConfig.secondaryBootDisks"]
"""The runtime label changes only with the runtime: GKE could relabel nodes in place, but a node
keeps the runtime disk it has, so a new label must mean new nodes. A new secondary boot disk image
needs a new pool as well (data-container-image-preloading: the image is set at pool creation)."""


@dataclass
class GpuPoolArgs:
    cluster: Cluster
    config: GpuPoolConfig
    region: str
    zones: tuple[str, ...]
    runtime_hash12: pulumi.Input[str]
    """The runtime this pool's nodes are for (the runtime image's hash12)."""
    runtime_image: pulumi.Input[str] | None = None
    """With it, GKE puts this image on every node as a secondary boot disk: `projects/P/global/images/NAME`."""


class GpuPool(pulumi.ComponentResource):
    """GPU node pools of one runtime that scale from zero: one, or Spot and on-demand for a ComputeClass."""

    def __init__(self, name: str, args: GpuPoolArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sdgke:gpu_pool:GpuPool", name, None, opts)
        gpu = args.config
        self.delivery = "daemonset" if args.runtime_image is None else "secondaryBootDisk"
        self.compute_class = gpu.on_demand_fallback
        """Whether the pools serve a ComputeClass (Spot first, on demand when Spot is gone)."""
        self.workload_taints = [COMPUTE_CLASS_TAINT] if self.compute_class else []
        self.taints = [*([STARTUP_TAINT] if args.runtime_image is None else []), *self.workload_taints]
        """Taints the pools declare; GKE adds GPU_TAINT itself. The WebUI tolerates all but the startup
        taint, which the disk attacher lifts once the runtime is mounted."""
        # The on-demand fallback keeps no node of its own: it is there for when Spot is gone.
        capacity = [("gpu", gpu.spot, gpu.min_nodes)] + ([("gpu-on-demand", False, 0)] if self.compute_class else [])
        self.pools = [self._pool(f"{name}-{role}", spot, min_nodes, args) for role, spot, min_nodes in capacity]
        """In priority order: the ComputeClass lists them so."""
        self.pool = self.pools[0]
        self.max_nodes = gpu.max_nodes * len(self.pools)
        """The most GPU nodes the pools hold together (each pool scales to gpuPool.maxNodes)."""
        self.runtime_hash12: pulumi.Output[str] = self.pool.node_config.apply(
            lambda node_config: node_config.labels[RUNTIME_NODE_LABEL]
        )
        """The runtime label as the pool reports it: whoever selects on it waits for this pool."""
        self.node_selector = {GPU_NODE_LABEL: gpu.accelerator_type, RUNTIME_NODE_LABEL: self.runtime_hash12,
                              RUNTIME_DELIVERY_LABEL: self.delivery}
        self.tolerations = [GPU_TAINT, *self.taints]
        self.workload_tolerations = [GPU_TAINT, *self.workload_taints]
        self.runtime_volume: RuntimeVolume | None = None
        """The runtime as the pool's own secondary boot disk delivers it; None when a DaemonSet does."""
        if args.runtime_image is not None:
            image = self.pool.node_config.apply(lambda node_config: node_config.secondary_boot_disks[0].disk_image)
            self.runtime_volume = RuntimeVolume(
                source={"host_path": k8s.core.v1.HostPathVolumeSourceArgs(
                    path=image.apply(secondary_boot_disk_path), type="Directory")},
                hash12=self.runtime_hash12,
            )
        self.register_outputs({"names": [p.name for p in self.pools], "runtimeHash": self.runtime_hash12})

    def _pool(self, resource_name: str, spot: bool, min_nodes: int, args: GpuPoolArgs) -> gcp.container.NodePool:
        gpu = args.config
        labels = {"sd-gke/pool": "gpu", RUNTIME_NODE_LABEL: args.runtime_hash12, RUNTIME_DELIVERY_LABEL: self.delivery}
        if self.compute_class:
            labels[COMPUTE_CLASS_LABEL] = COMPUTE_CLASS_TAINT["value"]
        return gcp.container.NodePool(
            resource_name,
            cluster=args.cluster.cluster.id,
            location=args.region,
            node_locations=list(args.zones),
            initial_node_count=per_zone(min_nodes, len(args.zones)),
            autoscaling=gcp.container.NodePoolAutoscalingArgs(
                total_min_node_count=min_nodes,
                total_max_node_count=gpu.max_nodes,
                location_policy=gpu.location_policy,
            ),
            management=gcp.container.NodePoolManagementArgs(auto_repair=True, auto_upgrade=True),
            # Pulumi deletes this pool after the WebUI's rollout to its successor; should that rollout
            # not be awaited, the drain must still not take WebUI pods faster than their PodDisruptionBudget
            # allows (container.v1 NodeDrainConfig.respectPdbDuringNodePoolDeletion, in the discovery document).
            node_drain_configs=[gcp.container.NodePoolNodeDrainConfigArgs(respect_pdb_during_node_pool_deletion=True)],
            upgrade_settings=gcp.container.NodePoolUpgradeSettingsArgs(
                strategy="SURGE", max_surge=1, max_unavailable=0
            ),
            node_config=gcp.container.NodePoolNodeConfigArgs(
                machine_type=gpu.machine_type,
                spot=spot,
                disk_type=gpu.disk_type,
                disk_size_gb=gpu.disk_size_gb,
                guest_accelerators=[
                    gcp.container.NodePoolNodeConfigGuestAcceleratorArgs(
                        type=gpu.accelerator_type,
                        count=gpu.accelerator_count,
                        gpu_driver_installation_config=gcp.container.NodePoolNodeConfigGuestAcceleratorGpuDriverInstallationConfigArgs(
                            gpu_driver_version=gpu.gpu_driver_version
                        ),
                    )
                ],
                labels=labels,
                secondary_boot_disks=[gcp.container.NodePoolNodeConfigSecondaryBootDiskArgs(disk_image=args.runtime_image)]
                if args.runtime_image is not None else None,
                taints=[
                    gcp.container.NodePoolNodeConfigTaintArgs(
                        key=t["key"], value=t["value"], effect=_taint_effect(t["effect"])
                    )
                    for t in self.taints
                ],
                **args.cluster.node_basics,
            ),
            opts=pulumi.ResourceOptions(parent=self, replace_on_changes=REPLACED_ON),
        )


def _taint_effect(effect: str) -> str:
    """Kubernetes spells NoSchedule; the GKE API spells NO_SCHEDULE."""
    return {"NoSchedule": "NO_SCHEDULE", "PreferNoSchedule": "PREFER_NO_SCHEDULE", "NoExecute": "NO_EXECUTE"}[effect]
