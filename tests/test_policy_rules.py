"""Every policy at its boundary, on both sides, over small hand-written resources.

test_policy.py runs the pack over the stacks the real program registers; here each case is one
resource (or a few, for stack policies) through the same in-process engine (tools/policy_check.py),
so that a policy loosened by one condition (a wider exemption, an absent field that passes, a limit
off by one) fails a named case. Expected messages are written out in full.
"""

from __future__ import annotations

import pytest

from tools import policy_check
from tools.mockrun import Recorded

CLUSTER = "gcp:container/cluster:Cluster"
NODE_POOL = "gcp:container/nodePool:NodePool"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
DAEMONSET = "kubernetes:apps/v1:DaemonSet"
SERVICE = "kubernetes:core/v1:Service"
IMAGE = "us-central1-docker.pkg.dev/sdgke-dev/sd-gke/webui@sha256:" + "0123456789abcdef" * 4


def resource(type_: str, inputs: dict, name: str = "r", protect: bool = False) -> Recorded:
    return Recorded(urn=f"urn:pulumi:dev::sd-gke::{type_}::{name}", type=type_, name=name, parent=None,
                    provider=None, custom=True, inputs=inputs, protect=protect)


def violations(policy: str, *resources: Recorded, config: dict | None = None) -> list[str]:
    """The messages `policy` reports for these resources, with its schema defaults unless `config` sets it."""
    pack_config = {policy: config} if config else {}
    return [v.message for v in policy_check.evaluate(None, pack_config, list(resources)) if v.policy == policy]


def check(policy: str, type_: str, inputs: dict, config: dict | None = None, protect: bool = False) -> list[str]:
    return violations(policy, resource(type_, inputs, protect=protect), config=config)


def gpu_pool(**changes) -> dict:
    """A compliant GPU node pool; `changes` replace top-level keys or (a.b=...) nested ones."""
    pool = {
        "autoscaling": {"totalMinNodeCount": 0, "totalMaxNodeCount": 2, "locationPolicy": "ANY"},
        "nodeConfig": {
            "guestAccelerators": [{"type": "nvidia-l4", "count": 1}],
            "gcfsConfig": {"enabled": True},
            "spot": True,
            "serviceAccount": "sd-nodes@sdgke-dev.iam.gserviceaccount.com",
            "workloadMetadataConfig": {"mode": "GKE_METADATA"},
            "shieldedInstanceConfig": {"enableSecureBoot": True},
        },
    }
    for path, value in changes.items():
        *parents, key = path.split("__")
        target = pool
        for p in parents:
            target = target[p]
        if value is DROP:
            target.pop(key)
        else:
            target[key] = value
    return pool


DROP = object()


def workload(containers: list[dict], *, name: str = "webui", namespace: str = "sd", volumes: list | None = None,
             init: list[dict] | None = None, labels: dict | None = None) -> dict:
    pod = {"containers": containers, "volumes": volumes or []}
    if init:
        pod["initContainers"] = init
    return {"metadata": {"name": name, "namespace": namespace},
            "spec": {"template": {"metadata": {"labels": labels or {"app": name}}, "spec": pod}}}


def container(**fields) -> dict:
    return {"name": "c", "image": IMAGE, "resources": {"limits": {"memory": "1Gi"}},
            "startupProbe": {"exec": {}}, "readinessProbe": {"exec": {}}, **fields}


def test_each_policy_tells_the_operator_what_it_guards():
    """`pulumi preview` prints the description next to each violation."""
    assert {p.name: p.description for p in policy_check.policies()} == {
    "gke-image-streaming-on-gpu-pools": "Every GPU node pool streams images (gcfsConfig).",
    "gke-autoscaling-profile": "The cluster autoscaler optimizes utilization.",
    "gke-gpu-pool-autoscaling": "GPU pools autoscale with a bounded maximum, and from 0 outside prod.",
    "gke-gpu-types-allowed": "GPU pools use only the allowed GPU types.",
    "gke-gpu-spot": "Where the stack requires it, GPU pools run on Spot VMs.",
    "gke-secondary-boot-disks-supported": "Secondary boot disks: Image Streaming, COS, data mode.",
    "gke-workload-identity": "Workload Identity on the cluster and the GKE metadata server on nodes.",
    "gke-no-default-compute-sa": "Nodes never run as the default compute service account.",
    "gke-shielded-private-nodes": "Nodes are shielded (Secure Boot) and private.",
    "gke-deletion-protection-in-prod": "Production clusters are deletion-protected and protected.",
    "gke-prod-control-plane-private": "Production's IP endpoint is private; the DNS-based endpoint (IAM) is the way in.",
    "k8s-images-from-artifact-registry-by-digest": "Containers run Artifact Registry images by digest.",
    "k8s-privileged-only-disk-attacher": "Only the disk attacher runs privileged.",
    "k8s-hostpath-runtime-only": "hostPath only in the disk attacher, and the WebUI's runtime read-only.",
    "storage-private-expiring": "Buckets are private (uniform access, public access prevented) and expire objects.",
    "pubsub-dead-letter": "Job subscriptions dead-letter what fails every attempt.",
    "iam-no-broad-roles": "No owner, editor, compute.admin or other admin grants.",
    "iam-custom-roles-exact": "Custom roles list exact permissions, no wildcards or IAM admin.",
    "stack-exactly-one-cluster": "A stack declares exactly one GKE cluster.",
    "stack-alerts-page-the-channel": "Every alert policy pages the stack's notification channel, when it has one.",
    "stack-prod-alerts-page-someone": "Production's alert policies page a notification channel.",
    "stack-runtime-paths-agree": "The WebUI mounts the runtime from where the disk attacher mounts it.",
    "stack-runtime-selection-agrees":
        "The disk attacher, the WebUI and a GPU pool agree on the runtime (node label).",
    "stack-public-service-requires-auth": "A public Service only fronts pods that require API auth.",
    "k8s-pod-security-admission": "Every pod template passes the Pod Security level its namespace enforces.",
    "k8s-gpu-pods-do-not-block-up":
        "`pulumi up` does not wait on GPU capacity: GPU workloads skip the await or wait out the cold start.",
    "k8s-gpu-deployments-demand-scaled":
        "A GPU Deployment is scaled on demand by a ScaledObject, or pinned with a reason.",
    "keda-scaler-fits-gpu-pool": "A ScaledObject's maximum fits the GPUs the GPU pools can hold.",
    "keda-no-data-is-zero": "A trigger that reads Cloud Monitoring counts no data as zero.",
    "gateway-public-requires-tls-and-auth":
        "A public Gateway serves HTTPS only, with a certificate, and IAP on every backend.",
    "k8s-only-the-gateway-reaches-the-webui":
        "From outside the VPC, the WebUI and the request queue are reached through the stack's Gateway only.",
    "k8s-long-drain-keeps-its-node":
        "A pod that drains longer than the cluster autoscaler waits is not evicted for scale-down.",
    "helm-releases-pinned": "Helm releases pin an exact chart version from an https repository.",
    "k8s-deployment-probes": "Deployments have startup and readiness probes.",
    "k8s-memory-limits": "Every container has a memory limit.",
    "gke-spot-location-policy-any": "Spot GPU pools use locationPolicy ANY.",
    }


# --- GPU node pools ----------------------------------------------------------------------------

def test_a_compliant_gpu_pool_passes_every_policy():
    found = policy_check.evaluate(None, {}, [resource(NODE_POOL, gpu_pool())])
    assert [str(v) for v in found if not v.policy.startswith("stack-")] == []


@pytest.mark.parametrize("gcfs", [{"enabled": False}, {}, DROP])
def test_a_gpu_pool_without_image_streaming_enabled_is_refused(gcfs):
    assert check("gke-image-streaming-on-gpu-pools", NODE_POOL, gpu_pool(nodeConfig__gcfsConfig=gcfs)) == [
        "GPU node pool without Image Streaming: set nodeConfig.gcfsConfig.enabled = true."]


@pytest.mark.parametrize("accelerators", [[], DROP])
def test_a_pool_without_gpus_needs_no_image_streaming(accelerators):
    pool = gpu_pool(nodeConfig__guestAccelerators=accelerators, nodeConfig__gcfsConfig=DROP)
    assert check("gke-image-streaming-on-gpu-pools", NODE_POOL, pool) == []


@pytest.mark.parametrize("maximum", [1, 10])
def test_a_gpu_pool_up_to_the_default_ten_nodes_passes(maximum):
    pool = gpu_pool(autoscaling={"totalMinNodeCount": 0, "totalMaxNodeCount": maximum})
    assert check("gke-gpu-pool-autoscaling", NODE_POOL, pool) == []


def test_a_gpu_pool_of_eleven_nodes_exceeds_the_default_limit():
    pool = gpu_pool(autoscaling={"totalMinNodeCount": 0, "totalMaxNodeCount": 11})
    assert check("gke-gpu-pool-autoscaling", NODE_POOL, pool) == [
        "GPU node pool may grow to 11 nodes; this stack allows at most 10 (maxGpuNodes)."]


@pytest.mark.parametrize(("maximum", "found"), [
    (4, []), (5, ["GPU node pool may grow to 5 nodes; this stack allows at most 4 (maxGpuNodes)."])])
def test_max_gpu_nodes_from_config_is_inclusive(maximum, found):
    pool = gpu_pool(autoscaling={"totalMinNodeCount": 0, "totalMaxNodeCount": maximum})
    assert check("gke-gpu-pool-autoscaling", NODE_POOL, pool, config={"maxGpuNodes": 4}) == found


@pytest.mark.parametrize(("maximum", "found"), [
    (10, []), (11, ["GPU node pool may grow to 11 nodes; this stack allows at most 10 (maxGpuNodes)."])])
def test_a_per_zone_max_node_count_is_judged_when_there_is_no_total(maximum, found):
    pool = gpu_pool(autoscaling={"minNodeCount": 0, "maxNodeCount": maximum})
    assert check("gke-gpu-pool-autoscaling", NODE_POOL, pool) == found


def test_the_total_maximum_wins_over_the_per_zone_one():
    pool = gpu_pool(autoscaling={"totalMinNodeCount": 0, "totalMaxNodeCount": 3, "maxNodeCount": 50})
    assert check("gke-gpu-pool-autoscaling", NODE_POOL, pool) == []


@pytest.mark.parametrize("autoscaling", [{}, DROP])
def test_a_gpu_pool_without_autoscaling_is_refused(autoscaling):
    assert check("gke-gpu-pool-autoscaling", NODE_POOL, gpu_pool(autoscaling=autoscaling)) == [
        "GPU node pool without autoscaling."]


def test_a_gpu_pool_autoscaling_without_a_maximum_is_refused():
    assert check("gke-gpu-pool-autoscaling", NODE_POOL, gpu_pool(autoscaling={"totalMinNodeCount": 0})) == [
        "GPU node pool autoscaling has no maximum: set totalMaxNodeCount."]


@pytest.mark.parametrize("key", ["totalMinNodeCount", "minNodeCount"])
def test_outside_prod_a_gpu_pool_minimum_of_one_is_refused(key):
    pool = gpu_pool(autoscaling={key: 1, "totalMaxNodeCount": 2})
    assert check("gke-gpu-pool-autoscaling", NODE_POOL, pool) == [
        "GPU node pool keeps 1 node(s) running; outside prod it must scale from 0."]


def test_a_gpu_pool_with_no_minimum_scales_from_zero():
    assert check("gke-gpu-pool-autoscaling", NODE_POOL, gpu_pool(autoscaling={"totalMaxNodeCount": 2})) == []


def test_in_prod_a_gpu_pool_may_keep_a_node():
    pool = gpu_pool(autoscaling={"totalMinNodeCount": 1, "totalMaxNodeCount": 2})
    assert check("gke-gpu-pool-autoscaling", NODE_POOL, pool, config={"production": True}) == []


def test_a_pool_without_gpus_is_not_held_to_gpu_autoscaling():
    assert check("gke-gpu-pool-autoscaling", NODE_POOL, gpu_pool(nodeConfig__guestAccelerators=[], autoscaling=DROP)) == []


def test_gpu_pool_policy_config_schema():
    schemas = {p.name: p.config_schema.properties for p in policy_check.policies() if p.config_schema}
    assert schemas == {
        "gke-gpu-pool-autoscaling": {"maxGpuNodes": {"type": "integer", "minimum": 1, "default": 10},
                                     "production": {"type": "boolean", "default": False}},
        "gke-gpu-types-allowed": {"allowedGpuTypes": {"type": "array", "items": {"type": "string"},
                                                      "default": ["nvidia-l4", "nvidia-tesla-t4"]}},
        "gke-gpu-spot": {"requireSpot": {"type": "boolean", "default": False}},
        "gke-deletion-protection-in-prod": {"production": {"type": "boolean", "default": False}},
        "gke-prod-control-plane-private": {"production": {"type": "boolean", "default": False}},
        "stack-prod-alerts-page-someone": {"production": {"type": "boolean", "default": False}},
        "k8s-gpu-pods-do-not-block-up": {"gpuColdStartSeconds": {"type": "integer", "minimum": 60, "default": 1800}},
    }


@pytest.mark.parametrize("gpu", ["nvidia-l4", "nvidia-tesla-t4"])
def test_l4_and_t4_gpus_are_allowed_by_default(gpu):
    pool = gpu_pool(nodeConfig__guestAccelerators=[{"type": gpu, "count": 1}])
    assert check("gke-gpu-types-allowed", NODE_POOL, pool) == []


def test_any_other_gpu_is_refused_by_default_naming_the_allowed_ones():
    pool = gpu_pool(nodeConfig__guestAccelerators=[{"type": "nvidia-l4", "count": 1}, {"type": "nvidia-tesla-a100"}])
    assert check("gke-gpu-types-allowed", NODE_POOL, pool) == [
        "GPU type 'nvidia-tesla-a100' is not allowed here; allowed: nvidia-l4, nvidia-tesla-t4."]


def test_without_require_spot_an_on_demand_gpu_pool_passes():
    assert check("gke-gpu-spot", NODE_POOL, gpu_pool(nodeConfig__spot=False)) == []


@pytest.mark.parametrize("spot", [False, DROP])
def test_with_require_spot_a_gpu_pool_not_set_to_spot_is_refused(spot):
    assert check("gke-gpu-spot", NODE_POOL, gpu_pool(nodeConfig__spot=spot), config={"requireSpot": True}) == [
        "This stack requires Spot GPU nodes: set nodeConfig.spot = true."]


def test_with_require_spot_a_spot_gpu_pool_passes():
    assert check("gke-gpu-spot", NODE_POOL, gpu_pool(), config={"requireSpot": True}) == []


def test_require_spot_leaves_pools_without_gpus_alone():
    pool = gpu_pool(nodeConfig__guestAccelerators=[], nodeConfig__spot=False)
    assert check("gke-gpu-spot", NODE_POOL, pool, config={"requireSpot": True}) == []


@pytest.mark.parametrize("policy", ["BALANCED", DROP])
def test_a_spot_gpu_pool_without_location_policy_any_is_warned(policy):
    pool = gpu_pool(autoscaling__locationPolicy=policy)
    assert check("gke-spot-location-policy-any", NODE_POOL, pool) == [
        "Spot GPU pool with locationPolicy other than ANY: scale-ups wait on zones without capacity."]


@pytest.mark.parametrize("changes", [{"nodeConfig__spot": False}, {"nodeConfig__guestAccelerators": []}])
def test_on_demand_or_cpu_pools_may_balance_across_zones(changes):
    pool = gpu_pool(autoscaling__locationPolicy="BALANCED", **changes)
    assert check("gke-spot-location-policy-any", NODE_POOL, pool) == []


# --- cluster and node identity -----------------------------------------------------------------

def cluster(**fields) -> dict:
    return {"clusterAutoscaling": {"autoscalingProfile": "OPTIMIZE_UTILIZATION"},
            "workloadIdentityConfig": {"workloadPool": "sdgke-dev.svc.id.goog"},
            "privateClusterConfig": {"enablePrivateNodes": True},
            "removeDefaultNodePool": True,
            "nodeConfig": {"serviceAccount": "sd-nodes@sdgke-dev.iam.gserviceaccount.com"},
            "deletionProtection": True, **fields}


def test_a_compliant_cluster_passes_every_policy():
    found = policy_check.evaluate(None, {}, [resource(CLUSTER, cluster())])
    assert [str(v) for v in found] == []


def test_the_autoscaling_profile_must_optimize_utilization():
    assert check("gke-autoscaling-profile", CLUSTER, cluster(clusterAutoscaling={"autoscalingProfile": "BALANCED"})) == [
        "clusterAutoscaling.autoscalingProfile is 'BALANCED'; sd-gke needs OPTIMIZE_UTILIZATION so idle GPU nodes "
        "go away quickly."]


def test_an_unset_autoscaling_profile_is_refused():
    assert check("gke-autoscaling-profile", CLUSTER, cluster(clusterAutoscaling={})) == [
        "clusterAutoscaling.autoscalingProfile is None; sd-gke needs OPTIMIZE_UTILIZATION so idle GPU nodes "
        "go away quickly."]


@pytest.mark.parametrize("config", [{"workloadPool": ""}, {}])
def test_a_cluster_without_a_workload_pool_is_refused(config):
    assert check("gke-workload-identity", CLUSTER, cluster(workloadIdentityConfig=config)) == [
        "Workload Identity is off: set workloadIdentityConfig.workloadPool = PROJECT.svc.id.goog."]


@pytest.mark.parametrize("mode", ["GCE_METADATA", DROP])
def test_a_node_pool_without_the_gke_metadata_server_is_refused(mode):
    assert check("gke-workload-identity", NODE_POOL, gpu_pool(nodeConfig__workloadMetadataConfig__mode=mode)) == [
        "Node pool does not run the GKE metadata server (workloadMetadataConfig.mode = GKE_METADATA)."]


@pytest.mark.parametrize("account", ["default", "123456789012-compute@developer.gserviceaccount.com"])
def test_a_node_pool_running_as_the_default_compute_account_is_refused(account):
    assert check("gke-no-default-compute-sa", NODE_POOL, gpu_pool(nodeConfig__serviceAccount=account)) == [
        f"Nodes run as the default compute service account ({account}); use a dedicated one."]


def test_an_empty_service_account_is_refused_as_unset():
    assert check("gke-no-default-compute-sa", NODE_POOL, gpu_pool(nodeConfig__serviceAccount="")) == [
        "Nodes run as the default compute service account (unset); use a dedicated one."]


@pytest.mark.parametrize("account", ["defaults", "sd-compute@developer.gserviceaccount.com",
                                     "x123-compute@developer.gserviceaccount.com"])
def test_accounts_that_only_resemble_the_default_one_pass(account):
    assert check("gke-no-default-compute-sa", NODE_POOL, gpu_pool(nodeConfig__serviceAccount=account)) == []


def test_a_node_pool_without_a_service_account_is_refused():
    assert check("gke-no-default-compute-sa", NODE_POOL, gpu_pool(nodeConfig__serviceAccount=DROP)) == [
        "Node pool sets no service account, so GKE uses the default compute service account."]


def test_a_cluster_keeping_no_default_pool_must_still_name_an_account():
    assert check("gke-no-default-compute-sa", CLUSTER, cluster(nodeConfig={})) == [
        "Nodes run as the default compute service account (default); use a dedicated one."]


def test_a_cluster_with_its_default_pool_is_judged_by_its_pools():
    assert check("gke-no-default-compute-sa", CLUSTER, cluster(nodeConfig={}, removeDefaultNodePool=False)) == []


def test_shielded_nodes_switched_off_are_refused():
    assert check("gke-shielded-private-nodes", CLUSTER, cluster(enableShieldedNodes=False)) == [
        "Shielded GKE nodes are off."]


def test_shielded_nodes_left_unset_take_the_gke_default_of_on():
    assert check("gke-shielded-private-nodes", CLUSTER, cluster()) == []


@pytest.mark.parametrize("private", [{"enablePrivateNodes": False}, {}])
def test_a_cluster_without_private_nodes_is_refused(private):
    assert check("gke-shielded-private-nodes", CLUSTER, cluster(privateClusterConfig=private)) == [
        "Nodes have public IPs: set privateClusterConfig.enablePrivateNodes = true."]


@pytest.mark.parametrize("secure_boot", [False, DROP])
def test_a_node_pool_without_secure_boot_is_refused(secure_boot):
    pool = gpu_pool(nodeConfig__shieldedInstanceConfig__enableSecureBoot=secure_boot)
    assert check("gke-shielded-private-nodes", NODE_POOL, pool) == [
        "Node pool without Secure Boot (nodeConfig.shieldedInstanceConfig.enableSecureBoot)."]


def test_a_protected_production_cluster_passes():
    assert check("gke-deletion-protection-in-prod", CLUSTER, cluster(), config={"production": True}, protect=True) == []


@pytest.mark.parametrize("protection", [False, DROP])
def test_a_production_cluster_without_deletion_protection_is_refused(protection):
    inputs = cluster()
    if protection is DROP:
        inputs.pop("deletionProtection")
    else:
        inputs["deletionProtection"] = protection
    assert check("gke-deletion-protection-in-prod", CLUSTER, inputs, config={"production": True}, protect=True) == [
        "Production cluster without deletionProtection."]


def test_a_production_cluster_not_protected_in_pulumi_is_refused():
    assert check("gke-deletion-protection-in-prod", CLUSTER, cluster(), config={"production": True}) == [
        "Production cluster is not `protect`ed in Pulumi."]


def test_outside_production_an_unprotected_cluster_passes():
    assert check("gke-deletion-protection-in-prod", CLUSTER, cluster(deletionProtection=False)) == []


# --- Kubernetes workloads ----------------------------------------------------------------------

@pytest.mark.parametrize("image", [
    "us-central1-docker.pkg.dev/p/r/webui@sha256:" + "0" * 63,
    "us-central1-docker.pkg.dev/p/r/webui@sha256:" + "A" * 64,
    "us-central1-docker.pkg.dev/p/r/webui:v1@sha256:" + "0" * 64,
    "us-central1-docker.pkg.dev/p/r/webui:v1",
    "docker.io/library/python@sha256:" + "0" * 64,
    "docker.pkg.dev/p/r/webui@sha256:" + "0" * 64,
    "us-central1-docker.pkg.dev/p/webui@sha256:" + "0" * 64,
])
def test_an_image_not_from_artifact_registry_by_digest_is_refused(image):
    found = check("k8s-images-from-artifact-registry-by-digest", DEPLOYMENT, workload([container(image=image)]))
    assert found == [f"Container 'c' runs {image!r}: images must come from Artifact Registry (REGION-docker.pkg.dev) "
                     "pinned by @sha256 digest."]


def test_an_artifact_registry_image_by_digest_passes():
    assert check("k8s-images-from-artifact-registry-by-digest", DEPLOYMENT, workload([container()])) == []


def test_init_containers_are_held_to_the_same_image_rule():
    inputs = workload([container()], init=[container(name="init", image="busybox")])
    assert check("k8s-images-from-artifact-registry-by-digest", DEPLOYMENT, inputs) == [
        "Container 'init' runs 'busybox': images must come from Artifact Registry (REGION-docker.pkg.dev) pinned by "
        "@sha256 digest."]


def test_an_image_still_unknown_in_a_preview_is_not_judged():
    assert check("k8s-images-from-artifact-registry-by-digest", DEPLOYMENT, workload([container(image=None)])) == []


POD = {"containers": [container(image="busybox")]}


@pytest.mark.parametrize(("type_", "inputs"), [
    (DEPLOYMENT, {"spec": {"template": {"spec": POD}}}),
    (DAEMONSET, {"spec": {"template": {"spec": POD}}}),
    ("kubernetes:apps/v1:StatefulSet", {"spec": {"template": {"spec": POD}}}),
    ("kubernetes:batch/v1:Job", {"spec": {"template": {"spec": POD}}}),
    ("kubernetes:batch/v1:CronJob", {"spec": {"jobTemplate": {"spec": {"template": {"spec": POD}}}}}),
    ("kubernetes:core/v1:Pod", {"spec": POD}),
])
def test_every_kind_of_workload_is_held_to_the_image_rule(type_, inputs):
    assert check("k8s-images-from-artifact-registry-by-digest", type_, inputs) == [
        "Container 'c' runs 'busybox': images must come from Artifact Registry (REGION-docker.pkg.dev) pinned by "
        "@sha256 digest."]


def test_objects_that_run_no_pods_are_not_judged_as_workloads():
    assert check("k8s-images-from-artifact-registry-by-digest", "kubernetes:core/v1:ConfigMap", {"spec": POD}) == []


@pytest.mark.parametrize("security", [{"privileged": True}, {"allowPrivilegeEscalation": True}])
def test_a_privileged_container_outside_the_disk_attacher_is_refused(security):
    inputs = workload([container(securityContext=security)])
    assert check("k8s-privileged-only-disk-attacher", DEPLOYMENT, inputs) == [
        "Container 'c' is privileged; only the disk attacher may be."]


def test_a_privileged_init_container_is_refused_too():
    inputs = workload([container()], init=[container(name="init", securityContext={"privileged": True})])
    assert check("k8s-privileged-only-disk-attacher", DEPLOYMENT, inputs) == [
        "Container 'init' is privileged; only the disk attacher may be."]


def test_a_container_that_forbids_escalation_passes():
    inputs = workload([container(securityContext={"privileged": False, "allowPrivilegeEscalation": False})])
    assert check("k8s-privileged-only-disk-attacher", DEPLOYMENT, inputs) == []


def test_the_disk_attacher_daemonset_may_be_privileged():
    inputs = workload([container(securityContext={"privileged": True})], name="disk-attacher", namespace="sd-system")
    assert check("k8s-privileged-only-disk-attacher", DAEMONSET, inputs) == []


@pytest.mark.parametrize(("type_", "name", "namespace"), [
    (DAEMONSET, "disk-attacher", "default"),
    (DAEMONSET, "disk-attacher-2", "sd-system"),
    (DEPLOYMENT, "disk-attacher", "sd-system"),
])
def test_a_near_miss_of_the_disk_attacher_may_not_be_privileged(type_, name, namespace):
    inputs = workload([container(securityContext={"privileged": True})], name=name, namespace=namespace)
    assert check("k8s-privileged-only-disk-attacher", type_, inputs) == [
        "Container 'c' is privileged; only the disk attacher may be."]


RUNTIME_VOLUME = {"name": "runtime", "hostPath": {"path": "/mnt/disks/sd-runtime"}}


def webui(read_only=True, volumes=None) -> dict:
    mount = {"name": "runtime", "mountPath": "/runtime"}
    if read_only is not DROP:
        mount["readOnly"] = read_only
    return workload([container(volumeMounts=[mount])], volumes=volumes or [RUNTIME_VOLUME])


def test_the_webui_may_mount_the_runtime_read_only():
    assert check("k8s-hostpath-runtime-only", DEPLOYMENT, webui()) == []


@pytest.mark.parametrize("read_only", [False, DROP])
def test_the_webui_may_not_mount_the_runtime_read_write(read_only):
    assert check("k8s-hostpath-runtime-only", DEPLOYMENT, webui(read_only)) == [
        "Container 'c' mounts the runtime read-write; mount it readOnly."]


def test_the_webui_may_mount_the_runtime_from_its_secondary_boot_disk():
    volumes = [{"name": "runtime", "hostPath": {"path": "/mnt/disks/gke-secondary-disks/gke-sd-runtime-0123456789ab-disk"}}]
    assert check("k8s-hostpath-runtime-only", DEPLOYMENT, webui(volumes=volumes)) == []


@pytest.mark.parametrize("path", [
    "/mnt/disks",
    "/mnt/disks/gke-secondary-disks/gke-sd-runtime-0123456789a-disk",
    "/mnt/disks/gke-secondary-disks/gke-sd-runtime-0123456789abc-disk",
    "/mnt/disks/gke-secondary-disks/gke-sd-runtime-0123456789AB-disk",
    "/mnt/disks/gke-secondary-disks/gke-other-0123456789ab-disk",
    "/mnt/disks/gke-secondary-disks/gke-sd-runtime-0123456789ab-disk/..",
    "/mnt/disks/gke-secondary-disks/gke-sd-runtime-0123456789ab-disk\n",
])
def test_the_webui_may_take_no_other_host_path(path):
    volumes = [{"name": "runtime", "hostPath": {"path": path}}]
    assert check("k8s-hostpath-runtime-only", DEPLOYMENT, webui(volumes=volumes)) == [
        f"WebUI hostPath {path!r}: only the runtime (/mnt/disks/sd-runtime) may come from the host, or the runtime's "
        "secondary boot disk (^/mnt/disks/gke-secondary-disks/gke-sd-runtime-[0-9a-f]{12}-disk$)."]


def test_other_workloads_may_take_no_host_path():
    inputs = workload([container()], name="webui-2", volumes=[RUNTIME_VOLUME, {"name": "tmp", "emptyDir": {}}])
    assert check("k8s-hostpath-runtime-only", DEPLOYMENT, inputs) == [
        "hostPath volumes ['runtime'] outside the disk attacher and the WebUI."]


def test_the_disk_attacher_may_take_host_paths():
    inputs = workload([container()], name="disk-attacher", namespace="sd-system",
                      volumes=[{"name": "dev", "hostPath": {"path": "/dev"}}])
    assert check("k8s-hostpath-runtime-only", DAEMONSET, inputs) == []


@pytest.mark.parametrize(("type_", "name", "namespace"), [
    (DAEMONSET, "node-exporter", "sd-system"),
    (DAEMONSET, "disk-attacher", "default"),
    (DEPLOYMENT, "disk-attacher", "sd-system"),
])
def test_a_near_miss_of_the_disk_attacher_may_take_no_host_path(type_, name, namespace):
    inputs = workload([container()], name=name, namespace=namespace, volumes=[{"name": "dev", "hostPath": {"path": "/dev"}}])
    assert check("k8s-hostpath-runtime-only", type_, inputs) == [
        "hostPath volumes ['dev'] outside the disk attacher and the WebUI."]


def test_a_workload_without_host_paths_passes():
    inputs = workload([container()], name="other", volumes=[{"name": "tmp", "emptyDir": {}}])
    assert check("k8s-hostpath-runtime-only", DEPLOYMENT, inputs) == []


@pytest.mark.parametrize(("missing", "message"), [
    (("startupProbe",), "Container 'c' has no startupProbe."),
    (("readinessProbe",), "Container 'c' has no readinessProbe."),
    (("startupProbe", "readinessProbe"), "Container 'c' has no startupProbe or readinessProbe."),
])
def test_a_deployment_container_without_probes_is_warned(missing, message):
    c = container()
    for probe in missing:
        c.pop(probe)
    assert check("k8s-deployment-probes", DEPLOYMENT, workload([c])) == [message]


def test_daemonsets_need_no_probes():
    c = container()
    c.pop("startupProbe")
    assert check("k8s-deployment-probes", DAEMONSET, workload([c])) == []


@pytest.mark.parametrize("resources", [{}, {"limits": {"cpu": "1"}}])
def test_a_container_without_a_memory_limit_is_warned(resources):
    inputs = workload([container()], init=[container(name="init", resources=resources)])
    assert check("k8s-memory-limits", DEPLOYMENT, inputs) == ["Container 'init' has no memory limit."]


# --- IAM -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["roles/owner", "roles/editor", "roles/compute.admin", "roles/container.admin",
                                  "roles/iam.serviceAccountAdmin", "roles/resourcemanager.projectIamAdmin"])
@pytest.mark.parametrize("type_", ["gcp:projects/iAMMember:IAMMember", "gcp:projects/iAMBinding:IAMBinding",
                                   "gcp:serviceaccount/iAMMember:IAMMember"])
def test_broad_roles_are_refused(type_, role):
    assert check("iam-no-broad-roles", type_, {"role": role, "member": "serviceAccount:x"}) == [
        f"Grant of {role}: sd-gke grants only the roles and custom roles its parts need."]


@pytest.mark.parametrize("role", ["roles/compute.viewer", "roles/logging.logWriter", "roles/owners"])
def test_narrow_roles_pass(role):
    assert check("iam-no-broad-roles", "gcp:projects/iAMMember:IAMMember", {"role": role}) == []


@pytest.mark.parametrize("permission", ["compute.disks.*", "*", "resourcemanager.projects.setIamPolicy"])
def test_a_custom_role_with_a_wildcard_or_iam_admin_is_refused(permission):
    inputs = {"permissions": ["compute.disks.get", permission]}
    assert check("iam-custom-roles-exact", "gcp:projects/iAMCustomRole:IAMCustomRole", inputs) == [
        f"Custom role holds {permission!r}: list exact permissions, never wildcards or IAM admin."]


def test_a_custom_role_of_exact_permissions_passes():
    inputs = {"permissions": ["compute.disks.create", "compute.disks.setLabels", "compute.instances.attachDisk"]}
    assert check("iam-custom-roles-exact", "gcp:projects/iAMCustomRole:IAMCustomRole", inputs) == []


# --- whole stack ---------------------------------------------------------------------------------

@pytest.mark.parametrize("count", [0, 2])
def test_a_stack_needs_exactly_one_cluster(count):
    clusters = [resource(CLUSTER, cluster(), name=f"c{i}") for i in range(count)]
    assert violations("stack-exactly-one-cluster", *clusters) == [
        f"A stack holds exactly one GKE cluster; this one declares {count}."]


def test_a_stack_of_one_cluster_passes():
    assert violations("stack-exactly-one-cluster", resource(CLUSTER, cluster())) == []


def attacher(path: str) -> Recorded:
    inputs = workload([container(env=[{"name": "OTHER", "value": "/x"}, {"name": "SDGKE_MOUNT_PATH", "value": path}])],
                      name="disk-attacher", namespace="sd-system")
    return resource(DAEMONSET, inputs, name="attacher")


def test_the_webui_mounts_the_runtime_from_where_the_attacher_mounts_it():
    assert violations("stack-runtime-paths-agree", attacher("/mnt/disks/sd-runtime"), resource(DEPLOYMENT, webui())) == []


def test_a_webui_runtime_path_other_than_the_attachers_is_refused():
    assert violations("stack-runtime-paths-agree", attacher("/mnt/disks/other"), resource(DEPLOYMENT, webui())) == [
        "The WebUI mounts the runtime from ['/mnt/disks/sd-runtime'] but the disk attacher mounts it at "
        "['/mnt/disks/other']."]


def test_a_webui_runtime_without_an_attacher_is_refused():
    assert violations("stack-runtime-paths-agree", resource(DEPLOYMENT, webui())) == [
        "The WebUI mounts the runtime from ['/mnt/disks/sd-runtime'] but the disk attacher mounts it at nothing."]


def test_every_webui_runtime_path_must_be_the_attachers():
    stray = resource("kubernetes:core/v1:Pod", {"metadata": {"name": "webui", "namespace": "debug"}, "spec": {
        "containers": [container()], "volumes": [{"name": "runtime", "hostPath": {"path": "/mnt/disks/other"}}]}},
        name="stray")
    assert violations("stack-runtime-paths-agree", stray, attacher("/mnt/disks/sd-runtime"),
                      resource(DEPLOYMENT, webui())) == [
        "The WebUI mounts the runtime from ['/mnt/disks/other', '/mnt/disks/sd-runtime'] but the disk attacher "
        "mounts it at ['/mnt/disks/sd-runtime']."]


def service(type_: str, selector: dict | None = None) -> Recorded:
    return resource(SERVICE, {"metadata": {"name": "webui"}, "spec": {"type": type_, "selector": selector or {"app": "webui"}}},
                    name="svc")


def webui_serving(*args: str) -> Recorded:
    return resource(DEPLOYMENT, workload([container(args=["--listen", *args])]))


@pytest.mark.parametrize("type_", ["LoadBalancer", "NodePort"])
def test_a_public_service_in_front_of_a_webui_without_auth_is_refused(type_):
    assert violations("stack-public-service-requires-auth", service(type_), webui_serving()) == [
        "Service 'webui' is public but 'webui' runs without --api-auth."]


def test_a_public_service_in_front_of_a_webui_with_auth_passes():
    assert violations("stack-public-service-requires-auth", service("LoadBalancer"),
                      webui_serving("--api-auth", "user:pass")) == []


@pytest.mark.parametrize("svc", [service("ClusterIP"), service("LoadBalancer", {"app": "other"})])
def test_a_private_service_or_one_selecting_other_pods_may_front_a_webui_without_auth(svc):
    assert violations("stack-public-service-requires-auth", svc, webui_serving()) == []


# --- a backlog trigger with no data (issue 18, item 3) --------------------------------------------

SCALED_OBJECT = "kubernetes:keda.sh/v1alpha1:ScaledObject"
PROMQL = "https://monitoring.googleapis.com/v1/projects/p/location/global/prometheus"


def scaled_object(trigger_type: str, **metadata: str) -> dict:
    return {"metadata": {"name": "webui", "namespace": "sd-webui"},
            "spec": {"scaleTargetRef": {"name": "webui"}, "triggers": [{"type": trigger_type, "metadata": metadata}]}}


@pytest.mark.parametrize("trigger_type", ["gcp-pubsub", "gcp-stackdriver", "gcp-cloudtasks"])
def test_a_cloud_monitoring_trigger_without_value_if_null_is_refused(trigger_type):
    assert check("keda-no-data-is-zero", SCALED_OBJECT, scaled_object(trigger_type, value="5")) == [
        f"ScaledObject sd-webui/webui: its {trigger_type} trigger has valueIfNull None; set valueIfNull: \"0\", "
        "or an idle subscription is an error that holds the GPU pods."]


def test_a_value_if_null_other_than_zero_is_refused():
    assert check("keda-no-data-is-zero", SCALED_OBJECT, scaled_object("gcp-pubsub", valueIfNull="1")) != []


@pytest.mark.parametrize("value", ["0", "0.0"])
def test_a_cloud_monitoring_trigger_reading_no_data_as_zero_passes(value):
    assert check("keda-no-data-is-zero", SCALED_OBJECT, scaled_object("gcp-pubsub", valueIfNull=value)) == []


@pytest.mark.parametrize("ignore", [None, "false", "0"])
def test_a_prometheus_trigger_on_cloud_monitoring_must_ignore_null_values(ignore):
    metadata = {"serverAddress": PROMQL, "query": "q", "threshold": "5"}
    if ignore is not None:
        metadata["ignoreNullValues"] = ignore
    assert check("keda-no-data-is-zero", SCALED_OBJECT, scaled_object("prometheus", **metadata)) == [
        f"ScaledObject sd-webui/webui: its prometheus trigger on Cloud Monitoring has ignoreNullValues {ignore!r}; "
        "set ignoreNullValues: \"true\", or a query with no data is an error that holds the GPU pods."]


def test_a_prometheus_trigger_on_cloud_monitoring_ignoring_null_values_passes():
    assert check("keda-no-data-is-zero", SCALED_OBJECT, scaled_object(
        "prometheus", serverAddress=PROMQL, query="q", threshold="5", ignoreNullValues="true")) == []


def test_triggers_that_do_not_read_cloud_monitoring_are_not_judged():
    assert check("keda-no-data-is-zero", SCALED_OBJECT, scaled_object("external-push", scalerAddress="s:9090")) == []


HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
KEDA_CHART = {"chart": "keda", "version": "2.18.3", "repositoryOpts": {"repo": "https://kedacore.github.io/charts"}}


def test_a_helm_release_of_an_exact_version_from_https_passes():
    assert check("helm-releases-pinned", HELM_RELEASE, KEDA_CHART) == []


def test_a_helm_release_of_a_version_range_is_refused():
    assert check("helm-releases-pinned", HELM_RELEASE, {**KEDA_CHART, "version": "2.x"}) == [
        "Helm release 'keda' has version '2.x': pin an exact chart version (X.Y.Z)."]


def test_a_helm_release_from_a_plain_http_repository_is_refused():
    release = {**KEDA_CHART, "repositoryOpts": {"repo": "http://kedacore.github.io/charts"}}
    assert check("helm-releases-pinned", HELM_RELEASE, release) == [
        "Helm release 'keda' comes from 'http://kedacore.github.io/charts': use an https chart repository."]
