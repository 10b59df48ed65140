"""sd-gke's policies: what every preview of every stack must satisfy.

Kept apart from the pack's __main__.py because constructing a PolicyPack starts a server; tests
import this module and call each policy's `validate` over the resources the real program registers.
Properties are Pulumi wire names (camelCase). During a preview some values are still unknown
(they arrive as None): a policy only judges what it can see.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import pod_security
from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

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


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _is_gpu_pool(props: dict) -> bool:
    return bool(_get(props, "nodeConfig", "guestAccelerators"))


def _pod_spec(resource_type: str, props: dict) -> dict | None:
    path = WORKLOADS.get(resource_type)
    return _get(props, *path) if path else None


def _containers(pod: dict) -> Iterable[dict]:
    yield from pod.get("initContainers") or []
    yield from pod.get("containers") or []


def _identity(props: dict) -> tuple[str | None, str | None]:
    meta = props.get("metadata") or {}
    return meta.get("namespace"), meta.get("name")


def _validation(name: str, description: str, resource_types: tuple[str, ...] | None,
                check: Callable[[ResourceValidationArgs, ReportViolation], None],
                level: EnforcementLevel = EnforcementLevel.MANDATORY,
                config: dict[str, dict] | None = None) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        if resource_types is None or args.resource_type in resource_types:
            check(args, report)

    return ResourceValidationPolicy(
        name=name, description=description, validate=validate, enforcement_level=level,
        config_schema=PolicyConfigSchema(properties=config) if config else None,
    )


def _stack_validation(name: str, description: str, check: Callable[[StackValidationArgs, ReportViolation], None],
                      config: dict[str, dict] | None = None) -> StackValidationPolicy:
    """A mandatory policy over the whole stack (cross-resource rules)."""
    return StackValidationPolicy(
        name=name, description=description, validate=check, enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=PolicyConfigSchema(properties=config) if config else None,
    )


def _config(args, key: str, schema: dict[str, dict]) -> Any:
    cfg = args.get_config() or {}
    return cfg.get(key, schema[key].get("default"))


# --- GKE ------------------------------------------------------------------------------------

def _image_streaming(args, report):
    if _is_gpu_pool(args.props) and _get(args.props, "nodeConfig", "gcfsConfig", "enabled") is not True:
        report("GPU node pool without Image Streaming: set nodeConfig.gcfsConfig.enabled = true.")


def _autoscaling_profile(args, report):
    profile = _get(args.props, "clusterAutoscaling", "autoscalingProfile")
    if profile != "OPTIMIZE_UTILIZATION":
        report(f"clusterAutoscaling.autoscalingProfile is {profile!r}; sd-gke needs OPTIMIZE_UTILIZATION "
               "so idle GPU nodes go away quickly.")


GPU_POOL_CONFIG = {
    "maxGpuNodes": {"type": "integer", "minimum": 1, "default": 10},
    "production": {"type": "boolean", "default": False},
}


def _gpu_autoscaling(args, report):
    if not _is_gpu_pool(args.props):
        return
    autoscaling = args.props.get("autoscaling")
    if not autoscaling:
        report("GPU node pool without autoscaling.")
        return
    maximum = autoscaling.get("totalMaxNodeCount", autoscaling.get("maxNodeCount"))
    minimum = autoscaling.get("totalMinNodeCount", autoscaling.get("minNodeCount", 0))
    limit = _config(args, "maxGpuNodes", GPU_POOL_CONFIG)
    if maximum is None:
        report("GPU node pool autoscaling has no maximum: set totalMaxNodeCount.")
    elif maximum > limit:
        report(f"GPU node pool may grow to {maximum} nodes; this stack allows at most {limit} (maxGpuNodes).")
    if not _config(args, "production", GPU_POOL_CONFIG) and minimum not in (0, None):
        report(f"GPU node pool keeps {minimum} node(s) running; outside prod it must scale from 0.")


GPU_TYPES_CONFIG = {"allowedGpuTypes": {"type": "array", "items": {"type": "string"},
                                        "default": ["nvidia-l4", "nvidia-tesla-t4"]}}


def _gpu_types(args, report):
    allowed = _config(args, "allowedGpuTypes", GPU_TYPES_CONFIG)
    for accelerator in _get(args.props, "nodeConfig", "guestAccelerators") or []:
        if accelerator.get("type") not in allowed:
            report(f"GPU type {accelerator.get('type')!r} is not allowed here; allowed: {', '.join(allowed)}.")


SPOT_CONFIG = {"requireSpot": {"type": "boolean", "default": False}}


def _gpu_spot(args, report):
    """An on-demand pool that serves a ComputeClass is the fallback for when Spot is gone: the class
    scales it up only then, and moves pods back to Spot when it can (components/compute_class.py)."""
    if _is_gpu_pool(args.props) and _config(args, "requireSpot", SPOT_CONFIG) and \
            _get(args.props, "nodeConfig", "spot") is not True and \
            not _get(args.props, "nodeConfig", "labels", COMPUTE_CLASS_LABEL):
        report("This stack requires Spot GPU nodes: set nodeConfig.spot = true.")


def _boot_disk_images(props: dict) -> list[str]:
    return [d.get("diskImage") for d in _get(props, "nodeConfig", "secondaryBootDisks") or []]


def _secondary_boot_disks(args, report):
    """Secondary boot disks need Image Streaming and Container-Optimized OS, and the runtime is data
    (https://cloud.google.com/kubernetes-engine/docs/how-to/data-container-image-preloading)."""
    disks = _get(args.props, "nodeConfig", "secondaryBootDisks") or []
    if not disks:
        return
    if _get(args.props, "nodeConfig", "gcfsConfig", "enabled") is not True:
        report("Node pool with secondary boot disks but without Image Streaming: GKE requires "
               "nodeConfig.gcfsConfig.enabled = true for them.")
    image_type = _get(args.props, "nodeConfig", "imageType")
    if image_type is not None and not str(image_type).upper().startswith("COS"):
        report(f"Node pool with secondary boot disks on image type {image_type}: they need Container-Optimized OS.")
    for disk in disks:
        if disk.get("mode") not in (None, "", "MODE_UNSPECIFIED"):
            report(f"Secondary boot disk {disk.get('diskImage')} in mode {disk.get('mode')}: the runtime is data, "
                   "which GKE mounts only without a mode.")


def _workload_identity(args, report):
    if args.resource_type == CLUSTER:
        if not _get(args.props, "workloadIdentityConfig", "workloadPool"):
            report("Workload Identity is off: set workloadIdentityConfig.workloadPool = PROJECT.svc.id.goog.")
    elif _get(args.props, "nodeConfig", "workloadMetadataConfig", "mode") != "GKE_METADATA":
        report("Node pool does not run the GKE metadata server (workloadMetadataConfig.mode = GKE_METADATA).")


def _node_service_account(args, report):
    sa = _get(args.props, "nodeConfig", "serviceAccount")
    if args.resource_type == CLUSTER and args.props.get("removeDefaultNodePool") and sa is None:
        sa = "default"
    if sa is not None and (not sa or DEFAULT_COMPUTE_SA.match(sa)):
        report(f"Nodes run as the default compute service account ({sa or 'unset'}); use a dedicated one.")
    if sa is None and args.resource_type == NODE_POOL:
        report("Node pool sets no service account, so GKE uses the default compute service account.")


def _shielded_private(args, report):
    if args.resource_type == CLUSTER:
        if args.props.get("enableShieldedNodes") is False:
            report("Shielded GKE nodes are off.")
        if _get(args.props, "privateClusterConfig", "enablePrivateNodes") is not True:
            report("Nodes have public IPs: set privateClusterConfig.enablePrivateNodes = true.")
    elif _get(args.props, "nodeConfig", "shieldedInstanceConfig", "enableSecureBoot") is not True:
        report("Node pool without Secure Boot (nodeConfig.shieldedInstanceConfig.enableSecureBoot).")


PROD_CONFIG = {"production": {"type": "boolean", "default": False}}


def _deletion_protection(args, report):
    if not _config(args, "production", PROD_CONFIG):
        return
    if args.props.get("deletionProtection") is not True:
        report("Production cluster without deletionProtection.")
    if not args.opts.protect:
        report("Production cluster is not `protect`ed in Pulumi.")


def _prod_control_plane_private(args, report):
    """Prod's API server answers outside the VPC only through the DNS-based endpoint, where IAM
    (`container.clusters.connect`) authorizes every caller before RBAC; its IP endpoint is private
    (https://cloud.google.com/kubernetes-engine/docs/concepts/network-isolation: "Use only the DNS-based endpoint
    to access your control plane"). container.v1: PrivateClusterConfig.enablePrivateEndpoint, or no IP endpoint
    at all (ControlPlaneEndpointsConfig.IPEndpointsConfig.enabled false)."""
    if not _config(args, "production", PROD_CONFIG):
        return
    endpoints = args.props.get("controlPlaneEndpointsConfig") or {}
    if _get(args.props, "privateClusterConfig", "enablePrivateEndpoint") is not True and \
            _get(endpoints, "ipEndpointsConfig", "enabled") is not False:
        report("Production cluster's IP endpoint is public: set privateClusterConfig.enablePrivateEndpoint = true "
               "and reach the API server through the DNS-based endpoint.")
    if _get(endpoints, "dnsEndpointConfig", "allowExternalTraffic") is not True:
        report("Production cluster without the DNS-based endpoint: set controlPlaneEndpointsConfig.dnsEndpointConfig."
               "allowExternalTraffic = true, or nothing outside the VPC (the deploy workflow included) reaches it.")


# --- Kubernetes -----------------------------------------------------------------------------

def _images_by_digest(args, report):
    pod = _pod_spec(args.resource_type, args.props)
    for container in _containers(pod or {}):
        image = container.get("image")
        if isinstance(image, str) and not AR_DIGEST.match(image):
            report(f"Container {container.get('name')!r} runs {image!r}: images must come from Artifact "
                   "Registry (REGION-docker.pkg.dev) pinned by @sha256 digest.")


def _privileged_only_in_attacher(args, report):
    pod = _pod_spec(args.resource_type, args.props)
    if pod is None or (args.resource_type == "kubernetes:apps/v1:DaemonSet" and _identity(args.props) == ATTACHER):
        return
    for container in _containers(pod):
        sc = container.get("securityContext") or {}
        if sc.get("privileged") or sc.get("allowPrivilegeEscalation") is True:
            report(f"Container {container.get('name')!r} is privileged; only the disk attacher may be.")


def _host_paths(args, report):
    pod = _pod_spec(args.resource_type, args.props)
    if pod is None or (args.resource_type == "kubernetes:apps/v1:DaemonSet" and _identity(args.props) == ATTACHER):
        return
    host_volumes = {v["name"]: v["hostPath"].get("path") for v in pod.get("volumes") or [] if v.get("hostPath")}
    if not host_volumes:
        return
    if _identity(args.props)[1] != WEBUI_NAME:
        report(f"hostPath volumes {sorted(host_volumes)} outside the disk attacher and the WebUI.")
        return
    for name, path in host_volumes.items():
        if path != RUNTIME_HOST_PATH and not (isinstance(path, str) and BOOT_DISK_HOST_PATH.fullmatch(path)):
            report(f"WebUI hostPath {path!r}: only the runtime ({RUNTIME_HOST_PATH}) may come from the host, "
                   f"or the runtime's secondary boot disk ({BOOT_DISK_HOST_PATH.pattern}).")
        for container in _containers(pod):
            for mount in container.get("volumeMounts") or []:
                if mount.get("name") == name and mount.get("readOnly") is not True:
                    report(f"Container {container.get('name')!r} mounts the runtime read-write; mount it readOnly.")


# --- IAM ------------------------------------------------------------------------------------

def _no_broad_roles(args, report):
    role = args.props.get("role")
    if role in FORBIDDEN_ROLES:
        report(f"Grant of {role}: sd-gke grants only the roles and custom roles its parts need.")


def _custom_role_scope(args, report):
    for permission in args.props.get("permissions") or []:
        if "*" in permission or permission.endswith(".setIamPolicy"):
            report(f"Custom role holds {permission!r}: list exact permissions, never wildcards or IAM admin.")


# --- stack ----------------------------------------------------------------------------------

def _exactly_one_cluster(args: StackValidationArgs, report):
    clusters = [r for r in args.resources if r.resource_type == CLUSTER]
    if len(clusters) != 1:
        report(f"A stack holds exactly one GKE cluster; this one declares {len(clusters)}.")


def _alerts_page_the_channel(args: StackValidationArgs, report):
    """With a notification channel in the stack, an alert that pages nobody is an alert nobody sees."""
    if not any(r.resource_type == NOTIFICATION_CHANNEL for r in args.resources):
        return
    for r in args.resources:  # an unknown list (preview) arrives as None: only a known empty one is judged
        if r.resource_type == ALERT_POLICY and ("notificationChannels" not in r.props or r.props["notificationChannels"] == []):
            report(f"Alert policy {r.name} ({r.props.get('displayName')}) pages no notification channel, though the "
                   "stack has one (observability.notificationEmail).")


def _prod_alerts_page_someone(args: StackValidationArgs, report):
    """Prod's alerts page someone: alert policies without a notification channel open incidents nobody is told of.
    A stack without alert policies (no observability) has nothing to page."""
    if not _config(args, "production", PROD_CONFIG):
        return
    alerts = [r for r in args.resources if r.resource_type == ALERT_POLICY]
    if alerts and not any(r.resource_type == NOTIFICATION_CHANNEL for r in args.resources):
        report(f"Production stack with {len(alerts)} alert policies and no notification channel: they would page "
               "nobody. Set observability.notificationEmail (`pulumi config set --path "
               "'sd-gke:observability.notificationEmail' <your-oncall-address> --stack prod`).")


def _runtime_paths_agree(args: StackValidationArgs, report):
    """The WebUI's runtime hostPath is the very path the disk attacher mounts the disk at or, where the GPU
    pools carry the runtime as a secondary boot disk, the path GKE mounts that disk at."""
    attacher_paths, webui_paths = set(), set()
    boot_disk_paths = {f"/mnt/disks/gke-secondary-disks/gke-{image.rsplit('/', 1)[-1]}-disk"
                       for r in args.resources if r.resource_type == NODE_POOL and _is_gpu_pool(r.props)
                       for image in _boot_disk_images(r.props) if image}
    for r in args.resources:
        pod = _pod_spec(r.resource_type, r.props)
        if pod is None:
            continue
        identity = _identity(r.props)
        if identity == ATTACHER:
            for container in _containers(pod):
                for env in container.get("env") or []:
                    if env.get("name") == "SDGKE_MOUNT_PATH":
                        attacher_paths.add(env.get("value"))
        elif identity[1] == WEBUI_NAME:
            webui_paths |= {v["hostPath"].get("path") for v in pod.get("volumes") or [] if v.get("hostPath")}
    if boot_disk_paths and attacher_paths:
        report("The GPU pools carry the runtime as a secondary boot disk and a disk attacher mounts it too: "
               "choose one delivery (runtime.delivery).")
    expected, source = (boot_disk_paths, "GKE mounts the pools' secondary boot disk") if boot_disk_paths else \
        (attacher_paths, "the disk attacher mounts it")
    if webui_paths and webui_paths != expected:
        report(f"The WebUI mounts the runtime from {sorted(webui_paths)} but {source} at "
               f"{sorted(expected) or 'nothing'}.")


def _runtime_selection_agrees(args: StackValidationArgs, report):
    """The runtime the agent mounts is the runtime label of a GPU pool, and the only one the agent and
    the WebUI select: an agent on a node of another runtime finds that runtime's disk, refuses it and
    stays unready (the DaemonSet rollout never ends); a WebUI pod there runs the other runtime."""
    agent_hashes, webui_selected, agent_selected = set(), set(), set()
    pool_hashes = {_get(r.props, "nodeConfig", "labels", RUNTIME_NODE_LABEL)
                   for r in args.resources if r.resource_type == NODE_POOL and _is_gpu_pool(r.props)}
    for r in args.resources:
        pod = _pod_spec(r.resource_type, r.props)
        if pod is None:
            continue
        if _identity(r.props) == ATTACHER:
            agent_hashes |= {e.get("value") for c in _containers(pod) for e in c.get("env") or []
                             if e.get("name") == "SDGKE_RUNTIME_HASH"}
            terms = _get(pod, "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution",
                         "nodeSelectorTerms") or [{}]
            per_term = [{tuple(x.get("values") or ()) for x in t.get("matchExpressions") or []
                         if x.get("key") == RUNTIME_NODE_LABEL and x.get("operator") == "In"} for t in terms]
            agent_selected = set.intersection(*per_term)
        elif _identity(r.props)[1] == WEBUI_NAME:
            webui_selected.add((pod.get("nodeSelector") or {}).get(RUNTIME_NODE_LABEL, ""))
    for r in args.resources:
        if r.resource_type == NODE_POOL and _is_gpu_pool(r.props):
            label = _get(r.props, "nodeConfig", "labels", RUNTIME_NODE_LABEL)
            for image in _boot_disk_images(r.props):
                if label and image and not image.endswith(f"sd-runtime-{label}"):
                    report(f"A GPU pool labelled {RUNTIME_NODE_LABEL}={label} carries the runtime image {image}: "
                           "its nodes would hold another runtime than their label says.")
    known = {h for h in agent_hashes if h}
    if len(known) != 1:
        return  # unknown in this preview, or no agent: nothing to judge
    (runtime,) = known
    if None not in pool_hashes and runtime not in pool_hashes:
        report(f"No GPU node pool is labelled {RUNTIME_NODE_LABEL}={runtime}, the runtime the disk attacher mounts "
               f"(pools: {sorted(h or 'unlabelled' for h in pool_hashes)}).")
    if (runtime,) not in agent_selected:
        report(f"The disk attacher does not require {RUNTIME_NODE_LABEL} In [{runtime}] in its node affinity: on a node of "
               "another runtime it would find that runtime's disk, refuse it and stay unready.")
    for selected in webui_selected - {None, runtime}:
        report(f"The WebUI selects {RUNTIME_NODE_LABEL}={selected or '(nothing)'} but the disk attacher mounts runtime "
               f"{runtime}: its pods would run another runtime or never be scheduled.")


def _public_service_needs_auth(args: StackValidationArgs, report):
    workloads = [r for r in args.resources if _pod_spec(r.resource_type, r.props) is not None]
    for svc in (r for r in args.resources if r.resource_type == SERVICE):
        if _get(svc.props, "spec", "type") not in ("LoadBalancer", "NodePort"):
            continue
        selector = _get(svc.props, "spec", "selector") or {}
        for w in workloads:
            labels = _get(w.props, *WORKLOADS[w.resource_type][:-1], "metadata", "labels") or {}
            if selector and all(labels.get(k) == v for k, v in selector.items()):
                pod = _pod_spec(w.resource_type, w.props)
                if not any("--api-auth" in (c.get("args") or []) for c in _containers(pod)):
                    report(f"Service {_identity(svc.props)[1]!r} is public but {_identity(w.props)[1]!r} "
                           "runs without --api-auth.", svc.urn)


# --- Pod Security admission -----------------------------------------------------------------

NAMESPACE = "kubernetes:core/v1:Namespace"


def _pod_security_admission(args: StackValidationArgs, report):
    """Each pod template against the Pod Security level its namespace enforces (policy/pod_security.py):
    admission refuses the pods, not the Deployment, so a breach would only show as a rollout that never
    gets a pod. A namespace the stack does not declare has the cluster default (privileged)."""
    labels = {_get(r.props, "metadata", "name"): _get(r.props, "metadata", "labels")
              for r in args.resources if r.resource_type == NAMESPACE}
    for r in args.resources:
        pod = _pod_spec(r.resource_type, r.props)
        namespace, name = _identity(r.props)
        if pod is None or namespace is None:
            continue
        level, problem = pod_security.enforce_level(labels.get(namespace))
        if problem:
            report(f"Namespace {namespace!r}: {problem}.", r.urn)
        meta = _get(r.props, *WORKLOADS[r.resource_type][:-1], "metadata") or {}
        for v in pod_security.violations(meta, pod, level):
            report(f"{r.resource_type.rsplit(':', 1)[-1]} {namespace}/{name}: namespace {namespace!r} enforces Pod "
                   f"Security {level!r}, which refuses its pods: {v.message} ({v.check}).", r.urn)


# --- what `pulumi up` waits for -------------------------------------------------------------

AWAIT_CONFIG = {"gpuColdStartSeconds": {"type": "integer", "minimum": 60, "default": 1800}}
"""From zero GPU nodes to a warm pod: scale-up, node boot, GPU driver, runtime disk, and the WebUI's
15-minute startup window; and Spot capacity may not be there at all."""
DEFAULT_AWAIT_SECONDS = 600
"""pulumi-kubernetes waits 10 minutes for a Deployment, StatefulSet or Service to be ready
(provider/pkg/await/deployment.go DefaultDeploymentTimeoutMins, service.go DefaultServiceTimeoutMins)."""


def _gpu_pods(pod: dict) -> bool:
    return any("nvidia.com/gpu" in {**(_get(c, "resources", "requests") or {}), **(_get(c, "resources", "limits") or {})}
               for c in _containers(pod))


def _await_seconds(r) -> float | None:
    """How long `up` waits for r's readiness on create or update, the shorter; None if it does not wait.
    customTimeouts come first, then pulumi.com/timeoutSeconds (provider/pkg/metadata/overrides.go
    TimeoutDuration); skipAwait or a waitFor condition replace the readiness await."""
    annotations = _get(r.props, "metadata", "annotations") or {}
    if annotations.get("pulumi.com/skipAwait") == "true" or "pulumi.com/waitFor" in annotations:
        return None
    annotated = annotations.get("pulumi.com/timeoutSeconds")
    fallback = float(annotated) if annotated and annotated.isdigit() else DEFAULT_AWAIT_SECONDS
    timeouts = r.opts.custom_timeouts if r.opts else None
    return min((getattr(timeouts, f"{op}_seconds", 0) or fallback) for op in ("create", "update"))


def _gpu_pods_do_not_block_up(args: StackValidationArgs, report):
    """`up` finishes without waiting on GPU capacity: a workload with GPU pods, and a Service in front of
    them, either skip the readiness await or wait at least the GPU cold start."""
    budget = _config(args, "gpuColdStartSeconds", AWAIT_CONFIG)
    gpu = [r for r in args.resources if _gpu_pods(_pod_spec(r.resource_type, r.props) or {})]
    fronts = []
    for svc in (r for r in args.resources if r.resource_type == SERVICE):
        selector = _get(svc.props, "spec", "selector") or {}
        if selector and any(all((_get(w.props, *WORKLOADS[w.resource_type][:-1], "metadata", "labels") or {}).get(k) == v
                                for k, v in selector.items()) for w in gpu):
            fronts.append(svc)
    for r in gpu + fronts:
        seconds = _await_seconds(r)
        if seconds is not None and seconds < budget:
            report(f"{r.resource_type.rsplit(':', 1)[-1]} {_identity(r.props)[1]!r} waits for GPU pods for up to "
                   f"{seconds:.0f}s, less than their cold start ({budget}s): `up` would fail while GPU capacity "
                   "comes up. Annotate it pulumi.com/skipAwait: \"true\" or give it customTimeouts of at least "
                   "the cold start.", r.urn)


# --- demand-driven scaling and the way in ----------------------------------------------------

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SCALED_OBJECT = "kubernetes:keda.sh/v1alpha1:ScaledObject"
GATEWAY = "kubernetes:gateway.networking.k8s.io/v1:Gateway"
HTTP_ROUTE = "kubernetes:gateway.networking.k8s.io/v1:HTTPRoute"
BACKEND_POLICY = "kubernetes:networking.gke.io/v1:GCPBackendPolicy"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
PINNED_ANNOTATION = "sd-gke/replicas-pinned"
"""A GPU Deployment that is not demand-scaled says why its replica count is fixed, in this annotation."""
EXACT_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
INTERNAL_GATEWAY_CLASSES = ("gke-l7-rilb", "gke-l7-rilb-mc", "gke-l7-cross-regional-internal-managed-mc")
"""Internal Application Load Balancers: reachable from the VPC only
(https://cloud.google.com/kubernetes-engine/docs/how-to/gatewayclass-capabilities). Every other class is public."""
CERTIFICATE_ANNOTATIONS = ("networking.gke.io/certmap",)
PRE_SHARED_CERTS = "networking.gke.io/pre-shared-certs"


def _scale_targets(resources) -> set[tuple[str | None, str | None]]:
    return {(_identity(r.props)[0], _get(r.props, "spec", "scaleTargetRef", "name"))
            for r in resources if r.resource_type == SCALED_OBJECT
            and (_get(r.props, "spec", "scaleTargetRef", "kind") or "Deployment") == "Deployment"}


def _gpu_deployments_demand_scaled(args: StackValidationArgs, report):
    """A GPU Deployment is either scaled on demand (a ScaledObject targets it, and it sets no `replicas` to
    fight the autoscaler over) or pinned on purpose (`replicas` plus an annotation that says why)."""
    targets = _scale_targets(args.resources)
    for r in args.resources:
        if r.resource_type != DEPLOYMENT or not _gpu_pods(_pod_spec(r.resource_type, r.props) or {}):
            continue
        namespace, name = _identity(r.props)
        replicas = _get(r.props, "spec", "replicas")
        pinned = (_get(r.props, "metadata", "annotations") or {}).get(PINNED_ANNOTATION)
        if (namespace, name) in targets:
            if replicas is not None:
                report(f"Deployment {namespace}/{name} is demand-scaled but sets replicas: {replicas}; every apply "
                       "would reset what the autoscaler chose. Drop spec.replicas.", r.urn)
        elif replicas is None or not pinned:
            report(f"GPU Deployment {namespace}/{name} is neither demand-scaled (no ScaledObject targets it) nor "
                   f"pinned (spec.replicas and a {PINNED_ANNOTATION} annotation saying why): a GPU node would run "
                   "whether or not anyone asks for it.", r.urn)


def _pool_gpus(pool: dict) -> int | None:
    autoscaling = pool.get("autoscaling") or {}
    nodes = autoscaling.get("totalMaxNodeCount")
    if nodes is None and autoscaling.get("maxNodeCount") is not None:
        nodes = autoscaling["maxNodeCount"] * max(len(pool.get("nodeLocations") or []), 1)
    if nodes is None:
        return None
    return nodes * sum(a.get("count") or 0 for a in _get(pool, "nodeConfig", "guestAccelerators") or [])


def _pod_gpus(pod: dict) -> int:
    return sum(int(_get(c, "resources", "limits", "nvidia.com/gpu") or _get(c, "resources", "requests", "nvidia.com/gpu") or 0)
               for c in pod.get("containers") or [])


def _scaler_fits_pool(args: StackValidationArgs, report):
    """A ScaledObject never asks for more GPU pods than the GPU pools can hold: beyond that, pods only wait."""
    pools = [_pool_gpus(r.props) for r in args.resources if r.resource_type == NODE_POOL and _is_gpu_pool(r.props)]
    if not pools or any(p is None for p in pools):
        return
    gpus = sum(pools)
    deployments = {_identity(r.props): r for r in args.resources if r.resource_type == DEPLOYMENT}
    for so in (r for r in args.resources if r.resource_type == SCALED_OBJECT):
        namespace, _ = _identity(so.props)
        target = deployments.get((namespace, _get(so.props, "spec", "scaleTargetRef", "name")))
        per_pod = _pod_gpus(_pod_spec(DEPLOYMENT, target.props) or {}) if target else 0
        maximum = _get(so.props, "spec", "maxReplicaCount")
        if not per_pod or maximum is None:
            continue
        if maximum * per_pod > gpus:
            report(f"ScaledObject {namespace}/{_identity(so.props)[1]} may ask for {maximum} pods of {per_pod} GPU(s); "
                   f"the GPU pools hold {gpus} GPU(s) at most.", so.urn)


CLOUD_MONITORING_SCALERS = ("gcp-pubsub", "gcp-stackdriver", "gcp-cloudtasks")
"""KEDA's scalers that ask Cloud Monitoring and fail when no series comes back unless `valueIfNull` is set
(kedacore/keda@v2.20.2 pkg/scalers/gcp/gcp_stackdriver_client.go GetMetrics, QueryMetrics)."""
CLOUD_MONITORING_PROMQL = "https://monitoring.googleapis.com/"
GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")
"""What Go's strconv.ParseBool reads as true, as KEDA parses `ignoreNullValues`."""


def _is_zero(value: Any) -> bool:
    try:
        return float(value) == 0
    except (TypeError, ValueError):
        return False


def _keda_no_data_is_zero(args, report):
    """A trigger that reads Cloud Monitoring counts "no data" (an idle or new subscription) as 0. An error
    instead keeps KEDA from scaling to zero and the HPA from scaling down (kedacore/keda@v2.20.2
    pkg/scaling/executor/scale_scaledobjects.go RequestScale; kubernetes/kubernetes#99514): a GPU node held
    for as long as the queue stays idle. The prometheus scaler's own switch is `ignoreNullValues`
    (pkg/scalers/prometheus_scaler.go ExecutePromQuery), said explicitly rather than left to its default."""
    namespace, name = _identity(args.props)
    for trigger in _get(args.props, "spec", "triggers") or []:
        kind = _get(trigger, "type")
        if kind in CLOUD_MONITORING_SCALERS and not _is_zero(_get(trigger, "metadata", "valueIfNull")):
            report(f"ScaledObject {namespace}/{name}: its {kind} trigger has valueIfNull "
                   f"{_get(trigger, 'metadata', 'valueIfNull')!r}; set valueIfNull: \"0\", or an idle subscription is "
                   "an error that holds the GPU pods.")
        elif kind == "prometheus" and str(_get(trigger, "metadata", "serverAddress")).startswith(CLOUD_MONITORING_PROMQL) \
                and _get(trigger, "metadata", "ignoreNullValues") not in GO_TRUE:
            report(f"ScaledObject {namespace}/{name}: its prometheus trigger on Cloud Monitoring has ignoreNullValues "
                   f"{_get(trigger, 'metadata', 'ignoreNullValues')!r}; set ignoreNullValues: \"true\", or a query "
                   "with no data is an error that holds the GPU pods.")


def _public_gateway_tls_and_auth(args: StackValidationArgs, report):
    """A public Gateway listens on HTTPS only, with a certificate, and every backend behind it requires IAP."""
    routes = [r for r in args.resources if r.resource_type == HTTP_ROUTE]
    policies = {(_identity(r.props)[0], _get(r.props, "spec", "targetRef", "name")): r
                for r in args.resources if r.resource_type == BACKEND_POLICY}
    for gw in (r for r in args.resources if r.resource_type == GATEWAY):
        if _get(gw.props, "spec", "gatewayClassName") in INTERNAL_GATEWAY_CLASSES:
            continue
        namespace, name = _identity(gw.props)
        annotations = _get(gw.props, "metadata", "annotations") or {}
        for listener in _get(gw.props, "spec", "listeners") or []:
            if listener.get("protocol") != "HTTPS":
                report(f"Public Gateway {namespace}/{name} has a {listener.get('protocol')} listener "
                       f"{listener.get('name')!r}: a public endpoint serves HTTPS only.", gw.urn)
                continue
            tls = listener.get("tls") or {}
            if not (any(annotations.get(a) for a in CERTIFICATE_ANNOTATIONS) or tls.get("certificateRefs")
                    or (tls.get("options") or {}).get(PRE_SHARED_CERTS)):
                report(f"Public Gateway {namespace}/{name}: HTTPS listener {listener.get('name')!r} has no certificate "
                       "(networking.gke.io/certmap, tls.certificateRefs or pre-shared-certs).", gw.urn)
        for route in routes:
            route_ns = _identity(route.props)[0]
            parents = _get(route.props, "spec", "parentRefs") or []
            if not any(p.get("name") == name and (p.get("namespace") or route_ns) == namespace for p in parents):
                continue
            for rule in _get(route.props, "spec", "rules") or []:
                for ref in rule.get("backendRefs") or []:
                    backend_ns = ref.get("namespace") or route_ns
                    policy = policies.get((backend_ns, ref.get("name")))
                    if _get(policy.props if policy else {}, "spec", "default", "iap", "enabled") is not True:
                        report(f"Public Gateway {namespace}/{name} reaches Service {backend_ns}/{ref.get('name')} "
                               "without authentication: enable IAP in its GCPBackendPolicy.", route.urn)


PROTECTED_NAMESPACES = {"sd-webui": "the WebUI", "request-queue": "the request queue"}
"""Where the WebUI and the request queue (the front) run (components/webui.py, components/request_queue.py NAMESPACE):
every pod there is reached from outside the VPC only through the public Gateway, whose TLS and IAP the
gateway-public-requires-tls-and-auth policy checks."""
PROTECTED_APPS = ("webui", "request-queue")
"""Their pods' `app.kubernetes.io/name` (components/labels.py): a copy of them in another namespace is theirs too."""
APP_LABEL = "app.kubernetes.io/name"
INGRESS = re.compile(r"^kubernetes:(networking\.k8s\.io|extensions)/v[^:]+:Ingress$")
ROUTE = re.compile(r"^kubernetes:gateway\.networking\.k8s\.io/v[^:]+:(HTTP|GRPC|TLS|TCP|UDP)Route$")
ANY_GATEWAY = re.compile(r"^kubernetes:gateway\.networking\.k8s\.io/v[^:]+:Gateway$")


def _namespace(props: dict) -> str:
    """An object without a namespace lands in `default`."""
    return _identity(props)[0] or "default"


def _pod_labels(r) -> dict:
    return _get(r.props, *WORKLOADS[r.resource_type][:-1], "metadata", "labels") or {}


def _whose(r) -> str | None:
    """Whose pods r runs, if they are the WebUI's or the request queue's."""
    if _namespace(r.props) in PROTECTED_NAMESPACES:
        return PROTECTED_NAMESPACES[_namespace(r.props)]
    app = _pod_labels(r).get(APP_LABEL)
    return PROTECTED_NAMESPACES["sd-webui" if app == "webui" else "request-queue"] if app in PROTECTED_APPS else None


def _protected_services(resources) -> dict[tuple[str, str], str]:
    """(namespace, name) of every Service in front of those pods -> whose pods they are. A Service in their
    namespace counts whatever it selects: a selector-less one takes hand-written endpoints."""
    workloads = [r for r in resources if _pod_spec(r.resource_type, r.props) is not None and _whose(r)]
    found = {}
    for svc in (r for r in resources if r.resource_type == SERVICE):
        key = (_namespace(svc.props), _identity(svc.props)[1])
        selector = _get(svc.props, "spec", "selector") or {}
        if key[0] in PROTECTED_NAMESPACES:
            found[key] = PROTECTED_NAMESPACES[key[0]]
        for w in workloads:
            if selector and _namespace(w.props) == key[0] and all(_pod_labels(w).get(k) == v for k, v in selector.items()):
                found[key] = _whose(w)
    return found


def _owner(protected: dict[tuple[str, str], str], namespace: str, service: str | None) -> str | None:
    """Whose pods a Service reached by (namespace, name) fronts: any Service in their namespaces is theirs."""
    return protected.get((namespace, service)) or PROTECTED_NAMESPACES.get(namespace)


def _ingress_backends(ingress: dict) -> set[str]:
    spec = ingress.get("spec") or {}
    backends = [spec.get("defaultBackend"), spec.get("backend")]
    backends += [p.get("backend") for rule in spec.get("rules") or [] for p in _get(rule, "http", "paths") or []]
    return {_get(b, "service", "name") or _get(b, "serviceName") for b in backends if b} - {None}


def _exposed_service(r, protected, report) -> None:
    namespace, name = _namespace(r.props), _identity(r.props)[1]
    if (namespace, name) not in protected:
        return
    service_type, external_ips = _get(r.props, "spec", "type"), _get(r.props, "spec", "externalIPs")
    exposed = [f"type {service_type}"] if service_type in ("LoadBalancer", "NodePort") else []
    exposed += [f"externalIPs {external_ips}"] if external_ips else []
    if exposed:
        report(f"Service {namespace}/{name} ({', '.join(exposed)}) lets traffic from outside the VPC reach "
               f"{protected[(namespace, name)]}'s pods around the Gateway's TLS and IAP: make it a ClusterIP Service "
               "without externalIPs.", r.urn)


def _ingress(r, protected, report) -> None:
    namespace, name = _namespace(r.props), _identity(r.props)[1]
    owners = sorted({o for s in _ingress_backends(r.props) if (o := _owner(protected, namespace, s))}
                    | ({PROTECTED_NAMESPACES[namespace]} if namespace in PROTECTED_NAMESPACES else set()))
    if owners:
        report(f"Ingress {namespace}/{name} routes to {' and '.join(owners)} in namespace {namespace}: the Gateway is "
               "the only way in from outside the VPC; delete the Ingress.", r.urn)


def _route(r, protected, gateways, report) -> None:
    namespace, name = _namespace(r.props), _identity(r.props)[1]
    owners = sorted({o for rule in _get(r.props, "spec", "rules") or [] for ref in rule.get("backendRefs") or []
                     if (o := _owner(protected, ref.get("namespace") or namespace, ref.get("name")))})
    foreign = sorted(f"{p.get('kind') or 'Gateway'} {p.get('namespace') or namespace}/{p.get('name')}"
                     for p in _get(r.props, "spec", "parentRefs") or []
                     if (p.get("kind") or "Gateway") != "Gateway"
                     or (p.get("namespace") or namespace, p.get("name")) not in gateways)
    if owners and foreign:
        report(f"{r.resource_type.rsplit(':', 1)[-1]} {namespace}/{name} attaches {' and '.join(owners)} to "
               f"{', '.join(foreign)}, which this stack does not declare, so no policy checks its TLS and IAP: attach "
               "it to the stack's Gateway only.", r.urn)


def _host_network_or_ports(r, report) -> None:
    owner = _whose(r)
    if owner is None:
        return
    pod, kind = _pod_spec(r.resource_type, r.props), r.resource_type.rsplit(":", 1)[-1]
    namespace, name = _namespace(r.props), _identity(r.props)[1]
    if pod.get("hostNetwork"):
        report(f"{kind} {namespace}/{name} runs {owner}'s pods with hostNetwork, answering on the node's address "
               "around the Gateway: drop hostNetwork.", r.urn)
    for container in _containers(pod):
        ports = sorted(p["hostPort"] for p in container.get("ports") or [] if p.get("hostPort"))
        if ports:
            report(f"{kind} {namespace}/{name}: container {container.get('name')!r} of {owner}'s pods takes hostPort "
                   f"{', '.join(map(str, ports))}, answering on the node's address around the Gateway: drop it.", r.urn)


def _only_the_gateway_reaches_the_webui(args: StackValidationArgs, report):
    """From outside the VPC, the WebUI's and the request queue's pods are reached through the stack's Gateway
    only, never around its TLS and IAP: no Service of type LoadBalancer or NodePort or with externalIPs in front
    of them (https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types,
    #external-ips), no Ingress (GKE's default Ingress class is an external Application Load Balancer:
    https://cloud.google.com/kubernetes-engine/docs/concepts/ingress), no route attached to a Gateway the stack
    does not declare, and no hostNetwork or hostPort on their pods (either answers on the node's own address:
    https://kubernetes.io/docs/concepts/configuration/overview/#services)."""
    protected = _protected_services(args.resources)
    gateways = {(_namespace(r.props), _identity(r.props)[1]) for r in args.resources if ANY_GATEWAY.match(r.resource_type)}
    for r in args.resources:
        if r.resource_type == SERVICE:
            _exposed_service(r, protected, report)
        elif INGRESS.match(r.resource_type):
            _ingress(r, protected, report)
        elif ROUTE.match(r.resource_type):
            _route(r, protected, gateways, report)
        elif _pod_spec(r.resource_type, r.props) is not None:
            _host_network_or_ports(r, report)


def _helm_releases_pinned(args, report):
    """Helm releases install exactly the chart version whose CRDs the tests checked, from an https repository.
    Their images are the charts' own (public ghcr.io/kedacore images tagged with the chart's appVersion):
    k8s-images-from-artifact-registry-by-digest covers the pod specs sd-gke writes, not a chart's."""
    version = args.props.get("version")
    if not isinstance(version, str) or not EXACT_VERSION.match(version):
        report(f"Helm release {args.props.get('chart')!r} has version {version!r}: pin an exact chart version (X.Y.Z).")
    repo = _get(args.props, "repositoryOpts", "repo")
    if not isinstance(repo, str) or not repo.startswith("https://"):
        report(f"Helm release {args.props.get('chart')!r} comes from {repo!r}: use an https chart repository.")


CA_MAX_GRACEFUL_TERMINATION_SECONDS = 600
"""How long the cluster autoscaler waits for a pod's graceful termination when it empties a node
(`max-graceful-termination-sec`, default 600: kubernetes/autoscaler cluster-autoscaler/FAQ.md, "What are the
parameters to CA?"); a longer drain is cut. Pods annotated safe-to-evict "false" keep their node (same FAQ,
"What types of pods can prevent CA from removing a node?")."""
SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"


def _long_drain_keeps_its_node(args, report):
    """A pod that may need longer than the autoscaler's wait to drain (the request queue holds requests for the
    whole client budget) is never evicted for a scale-down; rollouts still honour its grace period."""
    pod = _pod_spec(args.resource_type, args.props)
    grace = (pod or {}).get("terminationGracePeriodSeconds")
    if not isinstance(grace, int) or grace <= CA_MAX_GRACEFUL_TERMINATION_SECONDS:
        return
    annotations = _get(args.props, *WORKLOADS[args.resource_type][:-1], "metadata", "annotations") or {}
    if annotations.get(SAFE_TO_EVICT) != "false":
        namespace, name = _identity(args.props)
        report(f"{args.resource_type.rsplit(':', 1)[-1]} {namespace}/{name} may take {grace}s to drain, longer than the "
               f"cluster autoscaler waits when it empties a node ({CA_MAX_GRACEFUL_TERMINATION_SECONDS}s, "
               f"max-graceful-termination-sec): annotate its pods {SAFE_TO_EVICT}: \"false\".")


# --- advisory -------------------------------------------------------------------------------

def _probes(args, report):
    pod = _pod_spec(args.resource_type, args.props)
    if args.resource_type != "kubernetes:apps/v1:Deployment" or pod is None:
        return
    for container in pod.get("containers") or []:
        missing = [p for p in ("startupProbe", "readinessProbe") if not container.get(p)]
        if missing:
            report(f"Container {container.get('name')!r} has no {' or '.join(missing)}.")


def _memory_limits(args, report):
    for container in _containers(_pod_spec(args.resource_type, args.props) or {}):
        if not _get(container, "resources", "limits", "memory"):
            report(f"Container {container.get('name')!r} has no memory limit.")


def _spot_location_policy(args, report):
    if _is_gpu_pool(args.props) and _get(args.props, "nodeConfig", "spot") is True and \
            _get(args.props, "autoscaling", "locationPolicy") != "ANY":
        report("Spot GPU pool with locationPolicy other than ANY: scale-ups wait on zones without capacity.")


POD_TYPES = tuple(WORKLOADS)
# --- Storage and Pub/Sub ---------------------------------------------------------------------

def _private_expiring_bucket(args, report):
    """Results are users' images: never public, one access model (IAM), and they expire
    (https://cloud.google.com/storage/docs/public-access-prevention, .../uniform-bucket-level-access)."""
    if args.props.get("uniformBucketLevelAccess") is not True:
        report("Bucket without uniform bucket-level access: set uniformBucketLevelAccess = true.")
    if args.props.get("publicAccessPrevention") != "enforced":
        report("Bucket without public access prevention: set publicAccessPrevention = \"enforced\".")
    rules = args.props.get("lifecycleRules") or []
    if not any(_get(r, "action", "type") == "Delete" and _get(r, "condition", "age") for r in rules):
        report("Bucket keeps objects forever: add a lifecycle rule that deletes them after an age.")


def _dead_letter_policy(args, report):
    """A subscription that redelivers forever holds a poison job forever; the dead-letter topic's own
    subscription (nothing redelivers there) is named after it, `*-dead-letter`."""
    if str(args.props.get("name", "")).endswith("dead-letter"):
        return
    if not _get(args.props, "deadLetterPolicy", "deadLetterTopic"):
        report(f"Subscription {args.props.get('name')!r} has no dead-letter policy: a job failing every attempt "
               "would be redelivered until it expires.")


POLICIES: list[ResourceValidationPolicy | StackValidationPolicy] = [
    _validation("gke-image-streaming-on-gpu-pools", "Every GPU node pool streams images (gcfsConfig).",
                (NODE_POOL,), _image_streaming),
    _validation("gke-autoscaling-profile", "The cluster autoscaler optimizes utilization.",
                (CLUSTER,), _autoscaling_profile),
    _validation("gke-gpu-pool-autoscaling", "GPU pools autoscale with a bounded maximum, and from 0 outside prod.",
                (NODE_POOL,), _gpu_autoscaling, config=GPU_POOL_CONFIG),
    _validation("gke-gpu-types-allowed", "GPU pools use only the allowed GPU types.",
                (NODE_POOL,), _gpu_types, config=GPU_TYPES_CONFIG),
    _validation("gke-gpu-spot", "Where the stack requires it, GPU pools run on Spot VMs.",
                (NODE_POOL,), _gpu_spot, config=SPOT_CONFIG),
    _validation("gke-secondary-boot-disks-supported", "Secondary boot disks: Image Streaming, COS, data mode.",
                (NODE_POOL,), _secondary_boot_disks),
    _validation("gke-workload-identity", "Workload Identity on the cluster and the GKE metadata server on nodes.",
                (CLUSTER, NODE_POOL), _workload_identity),
    _validation("gke-no-default-compute-sa", "Nodes never run as the default compute service account.",
                (CLUSTER, NODE_POOL), _node_service_account),
    _validation("gke-shielded-private-nodes", "Nodes are shielded (Secure Boot) and private.",
                (CLUSTER, NODE_POOL), _shielded_private),
    _validation("gke-deletion-protection-in-prod", "Production clusters are deletion-protected and protected.",
                (CLUSTER,), _deletion_protection, config=PROD_CONFIG),
    _validation("gke-prod-control-plane-private",
                "Production's IP endpoint is private; the DNS-based endpoint (IAM) is the way in.",
                (CLUSTER,), _prod_control_plane_private, config=PROD_CONFIG),
    _validation("k8s-images-from-artifact-registry-by-digest", "Containers run Artifact Registry images by digest.",
                POD_TYPES, _images_by_digest),
    _validation("k8s-privileged-only-disk-attacher", "Only the disk attacher runs privileged.",
                POD_TYPES, _privileged_only_in_attacher),
    _validation("k8s-hostpath-runtime-only", "hostPath only in the disk attacher, and the WebUI's runtime read-only.",
                POD_TYPES, _host_paths),
    _validation("storage-private-expiring", "Buckets are private (uniform access, public access prevented) and expire objects.",
                (BUCKET,), _private_expiring_bucket),
    _validation("pubsub-dead-letter", "Job subscriptions dead-letter what fails every attempt.",
                (SUBSCRIPTION,), _dead_letter_policy),
    _validation("iam-no-broad-roles", "No owner, editor, compute.admin or other admin grants.",
                PROJECT_IAM + ("gcp:serviceaccount/iAMMember:IAMMember",), _no_broad_roles),
    _validation("iam-custom-roles-exact", "Custom roles list exact permissions, no wildcards or IAM admin.",
                (CUSTOM_ROLE,), _custom_role_scope),
    _stack_validation("stack-exactly-one-cluster", "A stack declares exactly one GKE cluster.", _exactly_one_cluster),
    _stack_validation("stack-alerts-page-the-channel",
                      "Every alert policy pages the stack's notification channel, when it has one.",
                      _alerts_page_the_channel),
    _stack_validation("stack-prod-alerts-page-someone", "Production's alert policies page a notification channel.",
                      _prod_alerts_page_someone, config=PROD_CONFIG),
    _stack_validation("stack-runtime-paths-agree", "The WebUI mounts the runtime from where the disk attacher mounts it.",
                      _runtime_paths_agree),
    _stack_validation("stack-runtime-selection-agrees",
                      "The disk attacher, the WebUI and a GPU pool agree on the runtime (node label).",
                      _runtime_selection_agrees),
    _stack_validation("stack-public-service-requires-auth", "A public Service only fronts pods that require API auth.",
                      _public_service_needs_auth),
    _stack_validation("k8s-pod-security-admission", "Every pod template passes the Pod Security level its namespace enforces.",
                      _pod_security_admission),
    _stack_validation("k8s-gpu-pods-do-not-block-up",
                      "`pulumi up` does not wait on GPU capacity: GPU workloads skip the await or wait out the cold start.",
                      _gpu_pods_do_not_block_up, config=AWAIT_CONFIG),
    _stack_validation("k8s-gpu-deployments-demand-scaled",
                      "A GPU Deployment is scaled on demand by a ScaledObject, or pinned with a reason.",
                      _gpu_deployments_demand_scaled),
    _stack_validation("keda-scaler-fits-gpu-pool", "A ScaledObject's maximum fits the GPUs the GPU pools can hold.",
                      _scaler_fits_pool),
    _validation("keda-no-data-is-zero", "A trigger that reads Cloud Monitoring counts no data as zero.",
                (SCALED_OBJECT,), _keda_no_data_is_zero),
    _stack_validation("gateway-public-requires-tls-and-auth",
                      "A public Gateway serves HTTPS only, with a certificate, and IAP on every backend.",
                      _public_gateway_tls_and_auth),
    _stack_validation("k8s-only-the-gateway-reaches-the-webui",
                      "From outside the VPC, the WebUI and the request queue are reached through the stack's Gateway only.",
                      _only_the_gateway_reaches_the_webui),
    _validation("k8s-long-drain-keeps-its-node",
                "A pod that drains longer than the cluster autoscaler waits is not evicted for scale-down.",
                POD_TYPES, _long_drain_keeps_its_node),
    _validation("helm-releases-pinned", "Helm releases pin an exact chart version from an https repository.",
                (HELM_RELEASE,), _helm_releases_pinned),
    _validation("k8s-deployment-probes", "Deployments have startup and readiness probes.",
                POD_TYPES, _probes, level=EnforcementLevel.ADVISORY),
    _validation("k8s-memory-limits", "Every container has a memory limit.",
                POD_TYPES, _memory_limits, level=EnforcementLevel.ADVISORY),
    _validation("gke-spot-location-policy-any", "Spot GPU pools use locationPolicy ANY.",
                (NODE_POOL,), _spot_location_policy, level=EnforcementLevel.ADVISORY),
]
