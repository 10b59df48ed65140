"""Where the baked runtime lives, shared by the bake, the node agent, the WebUI pod and the node pool.

These names are a contract between parts that never import each other at run time (the bake runs
on a builder VM, the agent in its own image), so tests check every part against this module.
"""

RUNTIME_ROOT = "/runtime"
"""Where the bake writes the runtime and where SD pods mount it: the venv remembers this path."""
HOST_MOUNT_PATH = "/mnt/disks/sd-runtime"
"""Where the disk attacher mounts the runtime disk on each GPU node."""
HOST_MOUNT_PARENT = "/mnt/disks"
SECONDARY_BOOT_DISK_PARENT = "/mnt/disks/gke-secondary-disks"
"""Where GKE mounts a node pool's data-mode secondary boot disks on each node, one directory per disk image,
`gke-<IMAGE_NAME>-disk`, as the Pod's hostPath in the data preloading guide uses it
(https://cloud.google.com/kubernetes-engine/docs/how-to/data-container-image-preloading, "Preload data": hostPath
/mnt/disks/gke-secondary-disks/gke-DISK_IMAGE_NAME-disk). The same rule in code: a node provisioner that mimics
GKE writes `SECONDARY_BOOT_DISKS: /mnt/disks/gke-secondary-disks/gke-<image>-disk` into kube-env
(cloudpilot-ai/karpenter-provider-gcp@6e5a811fc64a90f24382a277bd9ede1a77e98cd5:
pkg/providers/instance/secondary_disks.go, secondaryBootDiskImageDeviceName)."""
DEVICE_NAME = "sd-runtime"
"""deviceName of the runtime disk on the instance: /dev/disk/by-id/google-sd-runtime."""
MANIFEST = f"{RUNTIME_ROOT}/MANIFEST.json"
READY_MARKER = ".sd-runtime-ready"
VENV_PYTHON = f"{RUNTIME_ROOT}/venv/bin/python"
WEBUI_DIR = f"{RUNTIME_ROOT}/webui"

IMAGE_FAMILY = "sd-runtime"
HASH_LABEL = "sdgke-runtime-hash"

# The cluster autoscaler must leave this taint out of the GPU pool's node template, or a pending SD pod
# (which does not tolerate it) never triggers a scale-up from zero. Upstream treats two key prefixes
# alike, the older "ignore-taint.cluster-autoscaler.kubernetes.io/" and the newer "startup-taint.":
# kubernetes/autoscaler cluster-autoscaler/utils/taints/taints.go NewTaintConfig, "startupTaintPrefixes
# = append(..., IgnoreTaintPrefix, StartupTaintPrefix)"; FAQ.md "How does Cluster Autoscaler treat nodes
# with status/startup/ignore taints?" ("Ignore taints are now deprecated and treated as startup taints").
# GKE runs its own build and documents neither prefix (cloud.google.com/kubernetes-engine/docs: node-taints,
# cluster-autoscaler); the one reported working on GKE, where the autoscaler's flags are out of reach, is
# ignore-taint (cilium/cilium#19241, #20183: Cilium's agent-not-ready taint for scale-from-zero on GKE).
# So: ignore-taint, honoured by old and current upstream versions alike and by GKE in the field.
STARTUP_TAINT_KEY = "ignore-taint.cluster-autoscaler.kubernetes.io/sd-runtime"
STARTUP_TAINT = {"key": STARTUP_TAINT_KEY, "value": "pending", "effect": "NoSchedule"}
"""GPU nodes of the daemonset delivery start with this taint; the disk attacher removes it once the runtime
is mounted, and again whenever GKE puts the pool's taints back on a ready node (see images/attacher/attacher/server.py)."""
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
"""GKE adds this taint to every GPU node by itself."""
GPU_NODE_LABEL = "cloud.google.com/gke-accelerator"
RUNTIME_NODE_LABEL = "sd-gke/runtime"
RUNTIME_DELIVERY_LABEL = "sd-gke/runtime-delivery"
"""Node label naming how the runtime reached a GPU node (runtime.delivery): its pool sets it and the WebUI
selects on it, so after a switch of delivery a WebUI pod never lands on a node of the other mode, whose
runtime sits at another host path."""
"""Node label naming the runtime (hash12) a GPU node is for: its pool sets it, the disk attacher and
the WebUI select on it, so a runtime's pods only ever land on nodes of that runtime's pool."""


def secondary_boot_disk_path(image: str) -> str:
    """The host path of a data-mode secondary boot disk made from `image` (a name or any path ending in it)."""
    return f"{SECONDARY_BOOT_DISK_PARENT}/gke-{image.rsplit('/', 1)[-1]}-disk"
