"""Spot first, on demand when Spot is gone: a GKE custom ComputeClass over the GPU pools of one runtime.

A ComputeClass orders node configurations; the cluster autoscaler scales up the first one it can get
and falls back to the next ("Fallback compute priorities ... If the most preferred configuration is
unavailable, GKE automatically chooses the next configuration in the hierarchy",
https://cloud.google.com/kubernetes-engine/docs/concepts/about-custom-compute-classes, GKE Standard
1.30.3-gke.1451000 and later). Its priorities here name this runtime's own pools, Spot then on demand
(`nodepools`: "preference of specific, preexisting nodepools"), rather than letting GKE create pools: the
pools carry the runtime label and, in secondaryBootDisk delivery, the runtime image, and the cluster runs
no node auto-provisioning ("ComputeClasses work with both manually created and auto-created node pools",
https://cloud.google.com/kubernetes-engine/docs/best-practices/computeclasses).
`activeMigration.optimizeRulePriority` moves the WebUI back to Spot when Spot returns ("whether workloads
affected by given ComputeClass should be migrated to nodepool defined by higher priority rule, if
possible"); each move is a node drain the WebUI's PodDisruptionBudget paces.

Manually created pools serve a ComputeClass only when they carry its node label and taint,
`cloud.google.com/compute-class=<name>` and `cloud.google.com/compute-class=<name>:NoSchedule`
(https://cloud.google.com/kubernetes-engine/docs/concepts/about-custom-compute-classes, node pools you
create); pods select it with that label (https://cloud.google.com/kubernetes-engine/docs/reference/crds/computeclass).

Every field is checked against the CRD's schema (tests/schemas/computeclass_v1.json, its source in
tests/schemas/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.labels import k8s_labels

COMPUTE_CLASS_LABEL = "cloud.google.com/compute-class"
NAME = "sd-gpu"
COMPUTE_CLASS_TAINT = {"key": COMPUTE_CLASS_LABEL, "value": NAME, "effect": "NoSchedule"}
"""What a pool of the class carries, and what its pods tolerate."""


@dataclass
class GpuComputeClassArgs:
    environment: str
    pool_names: list[pulumi.Input[str]]
    """The GPU pools in priority order: Spot first, then on demand."""


class GpuComputeClass(pulumi.ComponentResource):
    """The ComputeClass the WebUI selects: each pool a priority, back to the first when it can."""

    def __init__(self, name: str, args: GpuComputeClassArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sdgke:compute_class:GpuComputeClass", name, None, opts)
        self.compute_class = k8s.apiextensions.CustomResource(
            f"{name}-compute-class",
            api_version="cloud.google.com/v1",
            kind="ComputeClass",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=NAME, labels=k8s_labels("gpu-capacity", args.environment)),
            spec={
                "description": "sd-gke GPU nodes: Spot first, on demand when Spot is gone.",
                "priorities": [{"nodepools": [pool]} for pool in args.pool_names],
                "activeMigration": {"optimizeRulePriority": True},
                "nodePoolAutoCreation": {"enabled": False},
                # None of the pools can take the pod: wait, rather than scale up something else.
                "whenUnsatisfiable": "DoNotScaleUp",
            },
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.node_selector = {COMPUTE_CLASS_LABEL: self.compute_class.metadata["name"]}
        """What a pod of the class selects; read back from the object, so the pod waits for it."""
        self.register_outputs({"name": self.compute_class.metadata["name"]})
