"""Where the baked runtime lives, shared by the bake, the node agent, the WebUI pod and the node pool.

These names are a contract between parts that never import each other at run time (the bake runs
on a builder VM, the agent in its own image), so tests check every part against this module.
"""

RUNTIME_ROOT = "/runtime"
"""Where the bake writes the runtime and where SD pods mount it: the venv remembers this path."""
HOST_MOUNT_PATH = "/mnt/disks/sd-runtime"
"""Where the disk attacher mounts the runtime disk on each GPU node."""
HOST_MOUNT_PARENT = "/mnt/disks"
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
"""GPU nodes start with this taint; the disk attacher removes it once the runtime is mounted, and
again whenever GKE puts the pool's taints back on a ready node (see images/attacher/attacher/server.py)."""
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
"""GKE adds this taint to every GPU node by itself."""
GPU_NODE_LABEL = "cloud.google.com/gke-accelerator"
