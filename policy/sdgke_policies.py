"""sd-gke's policies: what every preview of every stack must satisfy.

Kept apart from the pack's __main__.py because constructing a PolicyPack starts a server; tests
import this module and call each policy's `validate` over the resources the real program registers.
Properties are Pulumi wire names (camelCase). During a preview some values are still unknown
(they arrive as None): a policy only judges what it can see.
"""

from __future__ import annotations

from collections.abc import Callable

from gke import (
    GPU_POOL_CONFIG,
    GPU_TYPES_CONFIG,
    SPOT_CONFIG,
    autoscaling_profile,
    deletion_protection,
    gpu_autoscaling,
    gpu_spot,
    gpu_types,
    image_streaming,
    node_service_account,
    prod_control_plane_private,
    secondary_boot_disks,
    shielded_private,
    spot_location_policy,
    workload_identity,
)
from iam import custom_role_scope, no_broad_roles
from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from resources import (
    BUCKET,
    CLUSTER,
    CUSTOM_ROLE,
    HELM_RELEASE,
    NODE_POOL,
    POD_TYPES,
    PROD_CONFIG,
    PROJECT_IAM,
    SCALED_OBJECT,
    SUBSCRIPTION,
)
from rollout import AWAIT_CONFIG, gpu_pods_do_not_block_up
from scaling import gpu_deployments_demand_scaled, keda_no_data_is_zero, scaler_fits_pool
from stack import (
    alerts_page_the_channel,
    exactly_one_cluster,
    prod_alerts_page_someone,
    public_service_needs_auth,
    runtime_paths_agree,
    runtime_selection_agrees,
)
from storage import dead_letter_policy, private_expiring_bucket
from way_in import only_the_gateway_reaches_the_webui, public_gateway_tls_and_auth
from workloads import (
    helm_releases_pinned,
    host_paths,
    images_by_digest,
    long_drain_keeps_its_node,
    memory_limits,
    pod_security_admission,
    privileged_only_in_attacher,
    probes,
)


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


POLICIES: list[ResourceValidationPolicy | StackValidationPolicy] = [
    _validation("gke-image-streaming-on-gpu-pools", "Every GPU node pool streams images (gcfsConfig).",
                (NODE_POOL,), image_streaming),
    _validation("gke-autoscaling-profile", "The cluster autoscaler optimizes utilization.",
                (CLUSTER,), autoscaling_profile),
    _validation("gke-gpu-pool-autoscaling", "GPU pools autoscale with a bounded maximum, and from 0 outside prod.",
                (NODE_POOL,), gpu_autoscaling, config=GPU_POOL_CONFIG),
    _validation("gke-gpu-types-allowed", "GPU pools use only the allowed GPU types.",
                (NODE_POOL,), gpu_types, config=GPU_TYPES_CONFIG),
    _validation("gke-gpu-spot", "Where the stack requires it, GPU pools run on Spot VMs.",
                (NODE_POOL,), gpu_spot, config=SPOT_CONFIG),
    _validation("gke-secondary-boot-disks-supported", "Secondary boot disks: Image Streaming, COS, data mode.",
                (NODE_POOL,), secondary_boot_disks),
    _validation("gke-workload-identity", "Workload Identity on the cluster and the GKE metadata server on nodes.",
                (CLUSTER, NODE_POOL), workload_identity),
    _validation("gke-no-default-compute-sa", "Nodes never run as the default compute service account.",
                (CLUSTER, NODE_POOL), node_service_account),
    _validation("gke-shielded-private-nodes", "Nodes are shielded (Secure Boot) and private.",
                (CLUSTER, NODE_POOL), shielded_private),
    _validation("gke-deletion-protection-in-prod", "Production clusters are deletion-protected and protected.",
                (CLUSTER,), deletion_protection, config=PROD_CONFIG),
    _validation("gke-prod-control-plane-private",
                "Production's IP endpoint is private; the DNS-based endpoint (IAM) is the way in.",
                (CLUSTER,), prod_control_plane_private, config=PROD_CONFIG),
    _validation("k8s-images-from-artifact-registry-by-digest", "Containers run Artifact Registry images by digest.",
                POD_TYPES, images_by_digest),
    _validation("k8s-privileged-only-disk-attacher", "Only the disk attacher runs privileged.",
                POD_TYPES, privileged_only_in_attacher),
    _validation("k8s-hostpath-runtime-only", "hostPath only in the disk attacher, and the WebUI's runtime read-only.",
                POD_TYPES, host_paths),
    _validation("storage-private-expiring", "Buckets are private (uniform access, public access prevented) and expire objects.",
                (BUCKET,), private_expiring_bucket),
    _validation("pubsub-dead-letter", "Job subscriptions dead-letter what fails every attempt.",
                (SUBSCRIPTION,), dead_letter_policy),
    _validation("iam-no-broad-roles", "No owner, editor, compute.admin or other admin grants.",
                PROJECT_IAM + ("gcp:serviceaccount/iAMMember:IAMMember",), no_broad_roles),
    _validation("iam-custom-roles-exact", "Custom roles list exact permissions, no wildcards or IAM admin.",
                (CUSTOM_ROLE,), custom_role_scope),
    _stack_validation("stack-exactly-one-cluster", "A stack declares exactly one GKE cluster.", exactly_one_cluster),
    _stack_validation("stack-alerts-page-the-channel",
                      "Every alert policy pages the stack's notification channel, when it has one.",
                      alerts_page_the_channel),
    _stack_validation("stack-prod-alerts-page-someone", "Production's alert policies page a notification channel.",
                      prod_alerts_page_someone, config=PROD_CONFIG),
    _stack_validation("stack-runtime-paths-agree", "The WebUI mounts the runtime from where the disk attacher mounts it.",
                      runtime_paths_agree),
    _stack_validation("stack-runtime-selection-agrees",
                      "The disk attacher, the WebUI and a GPU pool agree on the runtime (node label).",
                      runtime_selection_agrees),
    _stack_validation("stack-public-service-requires-auth", "A public Service only fronts pods that require API auth.",
                      public_service_needs_auth),
    _stack_validation("k8s-pod-security-admission", "Every pod template passes the Pod Security level its namespace enforces.",
                      pod_security_admission),
    _stack_validation("k8s-gpu-pods-do-not-block-up",
                      "`pulumi up` does not wait on GPU capacity: GPU workloads skip the await or wait out the cold start.",
                      gpu_pods_do_not_block_up, config=AWAIT_CONFIG),
    _stack_validation("k8s-gpu-deployments-demand-scaled",
                      "A GPU Deployment is scaled on demand by a ScaledObject, or pinned with a reason.",
                      gpu_deployments_demand_scaled),
    _stack_validation("keda-scaler-fits-gpu-pool", "A ScaledObject's maximum fits the GPUs the GPU pools can hold.",
                      scaler_fits_pool),
    _validation("keda-no-data-is-zero", "A trigger that reads Cloud Monitoring counts no data as zero.",
                (SCALED_OBJECT,), keda_no_data_is_zero),
    _stack_validation("gateway-public-requires-tls-and-auth",
                      "A public Gateway serves HTTPS only, with a certificate, and IAP on every backend.",
                      public_gateway_tls_and_auth),
    _stack_validation("k8s-only-the-gateway-reaches-the-webui",
                      "From outside the VPC, the WebUI and the request queue are reached through the stack's Gateway only.",
                      only_the_gateway_reaches_the_webui),
    _validation("k8s-long-drain-keeps-its-node",
                "A pod that drains longer than the cluster autoscaler waits is not evicted for scale-down.",
                POD_TYPES, long_drain_keeps_its_node),
    _validation("helm-releases-pinned", "Helm releases pin an exact chart version from an https repository.",
                (HELM_RELEASE,), helm_releases_pinned),
    _validation("k8s-deployment-probes", "Deployments have startup and readiness probes.",
                POD_TYPES, probes, level=EnforcementLevel.ADVISORY),
    _validation("k8s-memory-limits", "Every container has a memory limit.",
                POD_TYPES, memory_limits, level=EnforcementLevel.ADVISORY),
    _validation("gke-spot-location-policy-any", "Spot GPU pools use locationPolicy ANY.",
                (NODE_POOL,), spot_location_policy, level=EnforcementLevel.ADVISORY),
]
