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
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from components.cluster import Cluster, per_zone
from components.config import GpuPoolConfig
from components.runtime_layout import GPU_NODE_LABEL, GPU_TAINT, RUNTIME_NODE_LABEL, STARTUP_TAINT

REPLACED_ON = ["nodeConfig.labels"]
"""The runtime label changes only with the runtime: GKE could relabel nodes in place, but a node
keeps the runtime disk it has, so a new label must mean new nodes."""


@dataclass
class GpuPoolArgs:
    cluster: Cluster
    config: GpuPoolConfig
    region: str
    zones: tuple[str, ...]
    runtime_hash12: pulumi.Input[str]
    """The runtime this pool's nodes are for (the runtime image's hash12)."""


class GpuPool(pulumi.ComponentResource):
    """A GPU node pool that scales from zero, labelled with the runtime its nodes serve."""

    def __init__(self, name: str, args: GpuPoolArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sdgke:gpu_pool:GpuPool", name, None, opts)
        gpu = args.config
        self.taints = [STARTUP_TAINT]
        """Taints the pool declares; GKE adds GPU_TAINT itself. Pods that run here tolerate both."""
        self.pool = gcp.container.NodePool(
            f"{name}-gpu",
            cluster=args.cluster.cluster.id,
            location=args.region,
            node_locations=list(args.zones),
            initial_node_count=per_zone(gpu.min_nodes, len(args.zones)),
            autoscaling=gcp.container.NodePoolAutoscalingArgs(
                total_min_node_count=gpu.min_nodes,
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
                spot=gpu.spot,
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
                labels={"sd-gke/pool": "gpu", RUNTIME_NODE_LABEL: args.runtime_hash12},
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
        self.runtime_hash12: pulumi.Output[str] = self.pool.node_config.apply(
            lambda node_config: node_config.labels[RUNTIME_NODE_LABEL]
        )
        """The runtime label as the pool reports it: whoever selects on it waits for this pool."""
        self.node_selector = {GPU_NODE_LABEL: gpu.accelerator_type, RUNTIME_NODE_LABEL: self.runtime_hash12}
        self.tolerations = [GPU_TAINT, *self.taints]
        self.register_outputs({"name": self.pool.name, "runtimeHash": self.runtime_hash12})


def _taint_effect(effect: str) -> str:
    """Kubernetes spells NoSchedule; the GKE API spells NO_SCHEDULE."""
    return {"NoSchedule": "NO_SCHEDULE", "PreferNoSchedule": "PREFER_NO_SCHEDULE", "NoExecute": "NO_EXECUTE"}[effect]
