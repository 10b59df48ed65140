"""What the policies read: resource types, the project's names and paths, and helpers over Pulumi's wire properties."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

CLUSTER = "gcp:container/cluster:Cluster"
NODE_POOL = "gcp:container/nodePool:NodePool"
PROJECT_IAM = ("gcp:projects/iAMMember:IAMMember", "gcp:projects/iAMBinding:IAMBinding")
CUSTOM_ROLE = "gcp:projects/iAMCustomRole:IAMCustomRole"
BUCKET = "gcp:storage/bucket:Bucket"
SUBSCRIPTION = "gcp:pubsub/subscription:Subscription"
SERVICE = "kubernetes:core/v1:Service"
ALERT_POLICY = "gcp:monitoring/alertPolicy:AlertPolicy"
NOTIFICATION_CHANNEL = "gcp:monitoring/notificationChannel:NotificationChannel"
WORKLOADS = {
    "kubernetes:apps/v1:Deployment": ("spec", "template", "spec"),
    "kubernetes:apps/v1:DaemonSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:StatefulSet": ("spec", "template", "spec"),
    "kubernetes:batch/v1:Job": ("spec", "template", "spec"),
    "kubernetes:batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "kubernetes:core/v1:Pod": ("spec",),
}
RUNTIME_HOST_PATH = "/mnt/disks/sd-runtime"
BOOT_DISK_HOST_PATH = re.compile(r"^/mnt/disks/gke-secondary-disks/gke-sd-runtime-[0-9a-f]{12}-disk$")
"""Where GKE mounts a pool's runtime image as a data-mode secondary boot disk (components/runtime_layout.py)."""
COMPUTE_CLASS_LABEL = "cloud.google.com/compute-class"
RUNTIME_NODE_LABEL = "sd-gke/runtime"
ATTACHER = ("sd-system", "disk-attacher")
WEBUI_NAME = "webui"
AR_DIGEST = re.compile(r"^[a-z0-9-]+-docker\.pkg\.dev/[^/]+/[^/]+/[^@:]+@sha256:[0-9a-f]{64}$")
FORBIDDEN_ROLES = ("roles/owner", "roles/editor", "roles/compute.admin", "roles/container.admin",
                   "roles/iam.serviceAccountAdmin", "roles/resourcemanager.projectIamAdmin")
DEFAULT_COMPUTE_SA = re.compile(r"^(default|\d+-compute@developer\.gserviceaccount\.com)$")


def get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def is_gpu_pool(props: dict) -> bool:
    return bool(get(props, "nodeConfig", "guestAccelerators"))


def pod_spec(resource_type: str, props: dict) -> dict | None:
    path = WORKLOADS.get(resource_type)
    return get(props, *path) if path else None


def containers(pod: dict) -> Iterable[dict]:
    yield from pod.get("initContainers") or []
    yield from pod.get("containers") or []


def workload_of(props: dict) -> tuple[str | None, str | None]:
    meta = props.get("metadata") or {}
    return meta.get("namespace"), meta.get("name")


def configured(args, key: str) -> Any:
    """A policy's config value. Its schema's default is already in it: the engine fills every default in before the
    pack is configured (pulumi/pulumi pkg/resource/analyzer/config.go, ReconcilePolicyPackConfig), as
    tools/policy_check does, and every key read here has one (tests/test_policy_rules.py pins the schemas)."""
    return args.get_config()[key]


PROD_CONFIG = {"production": {"type": "boolean", "default": False}}



NAMESPACE = "kubernetes:core/v1:Namespace"



DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SCALED_OBJECT = "kubernetes:keda.sh/v1alpha1:ScaledObject"
GATEWAY = "kubernetes:gateway.networking.k8s.io/v1:Gateway"
HTTP_ROUTE = "kubernetes:gateway.networking.k8s.io/v1:HTTPRoute"
BACKEND_POLICY = "kubernetes:networking.gke.io/v1:GCPBackendPolicy"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"


POD_TYPES = tuple(WORKLOADS)
