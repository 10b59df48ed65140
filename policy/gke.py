"""The cluster and its node pools: Image Streaming, the autoscaling profile, GPU pools, identity, hardening, prod."""

from __future__ import annotations

from resources import CLUSTER, COMPUTE_CLASS_LABEL, DEFAULT_COMPUTE_SA, NODE_POOL, configured, get, is_gpu_pool


def image_streaming(args, report):
    if is_gpu_pool(args.props) and get(args.props, "nodeConfig", "gcfsConfig", "enabled") is not True:
        report("GPU node pool without Image Streaming: set nodeConfig.gcfsConfig.enabled = true.")


def autoscaling_profile(args, report):
    profile = get(args.props, "clusterAutoscaling", "autoscalingProfile")
    if profile != "OPTIMIZE_UTILIZATION":
        report(f"clusterAutoscaling.autoscalingProfile is {profile!r}; sd-gke needs OPTIMIZE_UTILIZATION "
               "so idle GPU nodes go away quickly.")


GPU_POOL_CONFIG = {
    "maxGpuNodes": {"type": "integer", "minimum": 1, "default": 10},
    "production": {"type": "boolean", "default": False},
}


def gpu_autoscaling(args, report):
    if not is_gpu_pool(args.props):
        return
    autoscaling = args.props.get("autoscaling")
    if not autoscaling:
        report("GPU node pool without autoscaling.")
        return
    maximum = autoscaling.get("totalMaxNodeCount", autoscaling.get("maxNodeCount"))
    minimum = autoscaling.get("totalMinNodeCount", autoscaling.get("minNodeCount"))
    limit = configured(args, "maxGpuNodes")
    if maximum is None:
        report("GPU node pool autoscaling has no maximum: set totalMaxNodeCount.")
    elif maximum > limit:
        report(f"GPU node pool may grow to {maximum} nodes; this stack allows at most {limit} (maxGpuNodes).")
    if not configured(args, "production") and minimum not in (0, None):
        report(f"GPU node pool keeps {minimum} node(s) running; outside prod it must scale from 0.")


GPU_TYPES_CONFIG = {"allowedGpuTypes": {"type": "array", "items": {"type": "string"},
                                        "default": ["nvidia-l4", "nvidia-tesla-t4"]}}


def gpu_types(args, report):
    allowed = configured(args, "allowedGpuTypes")
    for accelerator in get(args.props, "nodeConfig", "guestAccelerators") or []:
        if accelerator.get("type") not in allowed:
            report(f"GPU type {accelerator.get('type')!r} is not allowed here; allowed: {', '.join(allowed)}.")


SPOT_CONFIG = {"requireSpot": {"type": "boolean", "default": False}}


def gpu_spot(args, report):
    """An on-demand pool that serves a ComputeClass is the fallback for when Spot is gone: the class
    scales it up only then, and moves pods back to Spot when it can (components/compute_class.py)."""
    if is_gpu_pool(args.props) and configured(args, "requireSpot") and \
            get(args.props, "nodeConfig", "spot") is not True and \
            not get(args.props, "nodeConfig", "labels", COMPUTE_CLASS_LABEL):
        report("This stack requires Spot GPU nodes: set nodeConfig.spot = true.")


def boot_disk_images(props: dict) -> list[str]:
    return [d.get("diskImage") for d in get(props, "nodeConfig", "secondaryBootDisks") or []]


def secondary_boot_disks(args, report):
    """Secondary boot disks need Image Streaming and Container-Optimized OS, and the runtime is data
    (https://cloud.google.com/kubernetes-engine/docs/how-to/data-container-image-preloading)."""
    disks = get(args.props, "nodeConfig", "secondaryBootDisks") or []
    if not disks:
        return
    if get(args.props, "nodeConfig", "gcfsConfig", "enabled") is not True:
        report("Node pool with secondary boot disks but without Image Streaming: GKE requires "
               "nodeConfig.gcfsConfig.enabled = true for them.")
    image_type = get(args.props, "nodeConfig", "imageType")
    if image_type is not None and not str(image_type).upper().startswith("COS"):
        report(f"Node pool with secondary boot disks on image type {image_type}: they need Container-Optimized OS.")
    for disk in disks:
        if disk.get("mode") not in (None, "", "MODE_UNSPECIFIED"):
            report(f"Secondary boot disk {disk.get('diskImage')} in mode {disk.get('mode')}: the runtime is data, "
                   "which GKE mounts only without a mode.")


def workload_identity(args, report):
    if args.resource_type == CLUSTER:
        if not get(args.props, "workloadIdentityConfig", "workloadPool"):
            report("Workload Identity is off: set workloadIdentityConfig.workloadPool = PROJECT.svc.id.goog.")
    elif get(args.props, "nodeConfig", "workloadMetadataConfig", "mode") != "GKE_METADATA":
        report("Node pool does not run the GKE metadata server (workloadMetadataConfig.mode = GKE_METADATA).")


def node_service_account(args, report):
    sa = get(args.props, "nodeConfig", "serviceAccount")
    if args.resource_type == CLUSTER and args.props.get("removeDefaultNodePool") and sa is None:
        sa = "default"
    if sa is not None and (not sa or DEFAULT_COMPUTE_SA.match(sa)):
        report(f"Nodes run as the default compute service account ({sa or 'unset'}); use a dedicated one.")
    if sa is None and args.resource_type == NODE_POOL:
        report("Node pool sets no service account, so GKE uses the default compute service account.")


def shielded_private(args, report):
    if args.resource_type == CLUSTER:
        if args.props.get("enableShieldedNodes") is False:
            report("Shielded GKE nodes are off.")
        if get(args.props, "privateClusterConfig", "enablePrivateNodes") is not True:
            report("Nodes have public IPs: set privateClusterConfig.enablePrivateNodes = true.")
    elif get(args.props, "nodeConfig", "shieldedInstanceConfig", "enableSecureBoot") is not True:
        report("Node pool without Secure Boot (nodeConfig.shieldedInstanceConfig.enableSecureBoot).")


def deletion_protection(args, report):
    if not configured(args, "production"):
        return
    if args.props.get("deletionProtection") is not True:
        report("Production cluster without deletionProtection.")
    if not args.opts.protect:
        report("Production cluster is not `protect`ed in Pulumi.")


def prod_control_plane_private(args, report):
    """Prod's API server answers outside the VPC only through the DNS-based endpoint, where IAM
    (`container.clusters.connect`) authorizes every caller before RBAC; its IP endpoint is private
    (https://cloud.google.com/kubernetes-engine/docs/concepts/network-isolation: "Use only the DNS-based endpoint
    to access your control plane"). container.v1: PrivateClusterConfig.enablePrivateEndpoint, or no IP endpoint
    at all (ControlPlaneEndpointsConfig.IPEndpointsConfig.enabled false)."""
    if not configured(args, "production"):
        return
    endpoints = args.props.get("controlPlaneEndpointsConfig") or {}
    if get(args.props, "privateClusterConfig", "enablePrivateEndpoint") is not True and \
            get(endpoints, "ipEndpointsConfig", "enabled") is not False:
        report("Production cluster's IP endpoint is public: set privateClusterConfig.enablePrivateEndpoint = true "
               "and reach the API server through the DNS-based endpoint.")
    if get(endpoints, "dnsEndpointConfig", "allowExternalTraffic") is not True:
        report("Production cluster without the DNS-based endpoint: set controlPlaneEndpointsConfig.dnsEndpointConfig."
               "allowExternalTraffic = true, or nothing outside the VPC (the deploy workflow included) reaches it.")


def spot_location_policy(args, report):
    if is_gpu_pool(args.props) and get(args.props, "nodeConfig", "spot") is True and \
            get(args.props, "autoscaling", "locationPolicy") != "ANY":
        report("Spot GPU pool with locationPolicy other than ANY: scale-ups wait on zones without capacity.")
