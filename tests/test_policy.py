"""The policy pack, run in-process over the resources the real program registers.

Each policy passes on the recorded dev and prod stacks and fails on a copy of them mutated the way
a careless change would.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

import pytest

from tools import policy_check
from tools.mockrun import Recorded, Run

CLUSTER = "gcp:container/cluster:Cluster"
NODE_POOL = "gcp:container/nodePool:NodePool"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
DAEMONSET = "kubernetes:apps/v1:DaemonSet"


def mutate(run: Run, type_: str, name: str | None, change: Callable[[dict], None], **options) -> list[Recorded]:
    """The run's resources with one resource's inputs (and options) changed on a deep copy."""
    target = run.one(type_, name)
    out = []
    for r in run.resources:
        if r is target:
            r = dataclasses.replace(r, inputs=copy.deepcopy(r.inputs), **options)
            change(r.inputs)
        out.append(r)
    return out


def violations_of(run: Run, policy: str, resources=None, config=None) -> list[str]:
    found = policy_check.evaluate(run, config, resources)
    return [v.message for v in found if v.policy == policy]


def pod(inputs: dict) -> dict:
    return inputs["spec"]["template"]["spec"]


def webui_container(inputs: dict) -> dict:
    return pod(inputs)["containers"][0]


def test_stacks_have_no_mandatory_violation(run):
    assert [str(v) for v in policy_check.mandatory(policy_check.evaluate(run))] == []


def test_stacks_have_no_advisory_violation_either(run):
    assert [str(v) for v in policy_check.evaluate(run)] == []


def _set(path: str, value):
    def change(d: dict) -> None:
        keys = path.split(".")
        for k in keys[:-1]:
            d = d[int(k)] if isinstance(d, list) else d.setdefault(k, {})
        if isinstance(d, list):
            d[int(keys[-1])] = value
        else:
            d[keys[-1]] = value
    return change


def _drop(path: str):
    def change(d: dict) -> None:
        keys = path.split(".")
        for k in keys[:-1]:
            d = d[k]
        d.pop(keys[-1])
    return change


def _webui_hostpath_rw(d):
    for m in webui_container(d)["volumeMounts"]:
        if m["name"] == "runtime":
            m["readOnly"] = False


def _webui_extra_hostpath(d):
    pod(d)["volumes"].append({"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}})


def _webui_privileged(d):
    webui_container(d)["securityContext"]["privileged"] = True


def _webui_image_by_tag(d):
    webui_container(d)["image"] = "us-central1-docker.pkg.dev/p/r/sd-base:latest"


def _webui_docker_hub(d):
    webui_container(d)["image"] = "docker.io/library/python@sha256:" + "a" * 64


def _attacher_mount_path(d):
    for e in pod(d)["containers"][0]["env"]:
        if e["name"] == "SDGKE_MOUNT_PATH":
            e["value"] = "/mnt/disks/elsewhere"


def _webui_no_probes(d):
    webui_container(d).pop("startupProbe")


def _no_memory_limit(d):
    webui_container(d)["resources"]["limits"].pop("memory")


def _backlog_trigger_errs_on_no_data(d):
    next(t for t in d["spec"]["triggers"] if t["type"] == "prometheus")["metadata"].pop("ignoreNullValues")


NON_COMPLIANT = [
    ("gke-image-streaming-on-gpu-pools", NODE_POOL, "sd-gpu", _set("nodeConfig.gcfsConfig.enabled", False),
     "GPU node pool without Image Streaming"),
    ("gke-autoscaling-profile", CLUSTER, None, _set("clusterAutoscaling.autoscalingProfile", "BALANCED"),
     "sd-gke needs OPTIMIZE_UTILIZATION"),
    ("gke-gpu-pool-autoscaling", NODE_POOL, "sd-gpu", _drop("autoscaling"), "GPU node pool without autoscaling"),
    ("gke-gpu-pool-autoscaling", NODE_POOL, "sd-gpu", _drop("autoscaling.totalMaxNodeCount"), "has no maximum"),
    ("gke-gpu-pool-autoscaling", NODE_POOL, "sd-gpu", _set("autoscaling.totalMaxNodeCount", 50), "may grow to 50"),
    ("gke-gpu-types-allowed", NODE_POOL, "sd-gpu", _set("nodeConfig.guestAccelerators.0.type", "nvidia-h100-80gb"),
     "GPU type 'nvidia-h100-80gb' is not allowed"),
    ("gke-workload-identity", CLUSTER, None, _drop("workloadIdentityConfig"), "Workload Identity is off"),
    ("gke-workload-identity", NODE_POOL, "sd-gpu", _set("nodeConfig.workloadMetadataConfig.mode", "GCE_METADATA"),
     "GKE metadata server"),
    ("gke-no-default-compute-sa", NODE_POOL, "sd-gpu", _drop("nodeConfig.serviceAccount"),
     "default compute service account"),
    ("gke-no-default-compute-sa", NODE_POOL, "sd-system",
     _set("nodeConfig.serviceAccount", "123456789-compute@developer.gserviceaccount.com"), "default compute"),
    ("gke-shielded-private-nodes", CLUSTER, None, _set("privateClusterConfig.enablePrivateNodes", False),
     "Nodes have public IPs"),
    ("gke-shielded-private-nodes", CLUSTER, None, _set("enableShieldedNodes", False), "Shielded GKE nodes are off"),
    ("gke-shielded-private-nodes", NODE_POOL, "sd-gpu",
     _set("nodeConfig.shieldedInstanceConfig.enableSecureBoot", False), "without Secure Boot"),
    ("k8s-images-from-artifact-registry-by-digest", DEPLOYMENT, "webui-deployment", _webui_image_by_tag,
     "pinned by @sha256 digest"),
    ("k8s-images-from-artifact-registry-by-digest", DEPLOYMENT, "webui-deployment", _webui_docker_hub,
     "must come from Artifact Registry"),
    ("k8s-privileged-only-disk-attacher", DEPLOYMENT, "webui-deployment", _webui_privileged,
     "only the disk attacher may be"),
    ("k8s-hostpath-runtime-only", DEPLOYMENT, "webui-deployment", _webui_hostpath_rw, "mounts the runtime read-write"),
    ("k8s-hostpath-runtime-only", DEPLOYMENT, "webui-deployment", _webui_extra_hostpath,
     "only the runtime (/mnt/disks/sd-runtime) may come from the host"),
    ("iam-no-broad-roles", "gcp:projects/iAMMember:IAMMember", "sd-nodes-logging-logWriter",
     _set("role", "roles/compute.admin"), "Grant of roles/compute.admin"),
    ("iam-no-broad-roles", "gcp:projects/iAMMember:IAMMember", "runtime-disk-agent-role-binding",
     _set("role", "roles/editor"), "Grant of roles/editor"),
    ("iam-custom-roles-exact", "gcp:projects/iAMCustomRole:IAMCustomRole", "runtime-disk-agent-role",
     _set("permissions", ["compute.disks.*"]), "never wildcards"),
    ("stack-runtime-paths-agree", DAEMONSET, "runtime-disk-daemonset", _attacher_mount_path,
     "but the disk attacher mounts it at ['/mnt/disks/elsewhere']"),
    ("gke-secondary-boot-disks-supported", NODE_POOL, "sd-gpu",
     _set("nodeConfig.secondaryBootDisks", [{"diskImage": "global/images/x", "mode": "CONTAINER_IMAGE_CACHE"}]),
     "which GKE mounts only without a mode"),
    ("k8s-deployment-probes", DEPLOYMENT, "webui-deployment", _webui_no_probes, "has no startupProbe"),
    ("storage-private-expiring", "gcp:storage/bucket:Bucket", "jobs-results", _set("publicAccessPrevention", "inherited"),
     "without public access prevention"),
    ("storage-private-expiring", "gcp:storage/bucket:Bucket", "jobs-results", _drop("lifecycleRules"),
     "keeps objects forever"),
    ("pubsub-dead-letter", "gcp:pubsub/subscription:Subscription", "jobs-subscription", _drop("deadLetterPolicy"),
     "has no dead-letter policy"),
    ("k8s-memory-limits", DEPLOYMENT, "webui-deployment", _no_memory_limit, "has no memory limit"),
    ("keda-no-data-is-zero", "kubernetes:keda.sh/v1alpha1:ScaledObject", "autoscaling-scaled-object",
     _backlog_trigger_errs_on_no_data, "has ignoreNullValues None"),
]


@pytest.mark.parametrize("policy, type_, name, change, message", NON_COMPLIANT,
                         ids=[f"{p}-{i}" for i, (p, *_rest) in enumerate(NON_COMPLIANT)])
def test_policy_reports_a_non_compliant_change(runs, policy, type_, name, change, message):
    run = runs["dev"]
    assert violations_of(run, policy) == [], "compliant as recorded"
    found = violations_of(run, policy, mutate(run, type_, name, change))
    assert len(found) == 1 and message in found[0], found


def test_prod_cluster_without_deletion_protection_is_refused(runs):
    run = runs["prod"]
    assert violations_of(run, "gke-deletion-protection-in-prod") == []
    found = violations_of(run, "gke-deletion-protection-in-prod", mutate(run, CLUSTER, None, _set("deletionProtection", False)))
    assert found == ["Production cluster without deletionProtection."]


PUBLIC_IP_ENDPOINT = ("Production cluster's IP endpoint is public: set privateClusterConfig.enablePrivateEndpoint = true "
                      "and reach the API server through the DNS-based endpoint.")
NO_DNS_ENDPOINT = ("Production cluster without the DNS-based endpoint: set controlPlaneEndpointsConfig.dnsEndpointConfig."
                   "allowExternalTraffic = true, or nothing outside the VPC (the deploy workflow included) reaches it.")


@pytest.mark.parametrize(("change", "message"), [
    (_set("privateClusterConfig.enablePrivateEndpoint", False), PUBLIC_IP_ENDPOINT),
    (_set("controlPlaneEndpointsConfig.dnsEndpointConfig", {"allowExternalTraffic": False}), NO_DNS_ENDPOINT),
    (_set("controlPlaneEndpointsConfig.dnsEndpointConfig", {}), NO_DNS_ENDPOINT),
], ids=["public-ip-endpoint", "dns-endpoint-closed", "dns-endpoint-unset"])
def test_prod_cluster_reachable_other_than_by_the_dns_endpoint_is_refused(runs, change, message):
    run = runs["prod"]
    assert violations_of(run, "gke-prod-control-plane-private") == []
    assert violations_of(run, "gke-prod-control-plane-private", mutate(run, CLUSTER, None, change)) == [message]


def test_prod_cluster_without_ip_endpoints_at_all_passes(runs):
    run = runs["prod"]

    def dns_only(d):
        d["privateClusterConfig"]["enablePrivateEndpoint"] = False
        d["controlPlaneEndpointsConfig"]["ipEndpointsConfig"] = {"enabled": False}

    assert violations_of(run, "gke-prod-control-plane-private", mutate(run, CLUSTER, None, dns_only)) == []


def test_outside_prod_the_ip_endpoint_may_be_public(runs):
    run = runs["dev"]
    assert run.one(CLUSTER).inputs["privateClusterConfig"]["enablePrivateEndpoint"] is False
    assert violations_of(run, "gke-prod-control-plane-private") == []


def test_prod_cluster_without_protect_is_refused(runs):
    run = runs["prod"]
    found = violations_of(run, "gke-deletion-protection-in-prod", mutate(run, CLUSTER, None, lambda d: None, protect=False))
    assert found == ["Production cluster is not `protect`ed in Pulumi."]


def test_gpu_pool_outside_prod_must_scale_from_zero(runs):
    run = runs["dev"]
    warm = mutate(run, NODE_POOL, "sd-gpu", _set("autoscaling.totalMinNodeCount", 1))
    found = violations_of(run, "gke-gpu-pool-autoscaling", warm)
    assert found == ["GPU node pool keeps 1 node(s) running; outside prod it must scale from 0."]


def test_prod_may_keep_warm_gpu_nodes(runs):
    run = runs["prod"]
    warm = mutate(run, NODE_POOL, "sd-gpu", _set("autoscaling.totalMinNodeCount", 1))
    assert violations_of(run, "gke-gpu-pool-autoscaling", warm) == []


def test_spot_is_required_where_the_stack_config_says_so(runs):
    run = runs["prod"]
    assert violations_of(run, "gke-gpu-spot") == []
    config = {**policy_check.stack_config("prod"), "gke-gpu-spot": {"requireSpot": True}}
    found = violations_of(run, "gke-gpu-spot", config=config)
    assert found == ["This stack requires Spot GPU nodes: set nodeConfig.spot = true."]


def test_max_gpu_nodes_comes_from_policy_config(runs):
    run = runs["prod"]
    config = {**policy_check.stack_config("prod"), "gke-gpu-pool-autoscaling": {"maxGpuNodes": 4, "production": True}}
    assert violations_of(run, "gke-gpu-pool-autoscaling", config=config) == [
        "GPU node pool may grow to 10 nodes; this stack allows at most 4 (maxGpuNodes)."
    ]


def test_allowed_gpu_types_come_from_policy_config(runs):
    config = {"gke-gpu-types-allowed": {"allowedGpuTypes": ["nvidia-tesla-t4"]}}
    assert violations_of(runs["dev"], "gke-gpu-types-allowed", config=config) == [
        "GPU type 'nvidia-l4' is not allowed here; allowed: nvidia-tesla-t4."
    ]


def test_a_policy_can_be_disabled_by_config(runs):
    run = runs["dev"]
    resources = mutate(run, CLUSTER, None, _set("clusterAutoscaling.autoscalingProfile", "BALANCED"))
    assert violations_of(run, "gke-autoscaling-profile", resources, config={"gke-autoscaling-profile": "disabled"}) == []


def test_unknown_policy_config_key_is_an_error(runs):
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['maxGpus'\]"):
        policy_check.evaluate(runs["dev"], {"gke-gpu-pool-autoscaling": {"maxGpus": 3}})


def test_a_second_cluster_is_refused(runs):
    run = runs["dev"]
    second = dataclasses.replace(run.one(CLUSTER), urn=run.one(CLUSTER).urn + "-2", name="sd-gke-2")
    assert violations_of(run, "stack-exactly-one-cluster", run.resources + [second]) == [
        "A stack holds exactly one GKE cluster; this one declares 2."
    ]


def test_public_service_without_auth_is_refused(runs):
    run = runs["dev"]

    def no_auth(d):
        args = webui_container(d)["args"]
        i = args.index("--api-auth")
        del args[i:i + 2]

    from tests.test_await import webui_service

    public = Run(run.stack, run.resources + [webui_service(run, "LoadBalancer")], run.outputs, run.config)
    assert violations_of(public, "stack-public-service-requires-auth") == []
    found = violations_of(public, "stack-public-service-requires-auth", mutate(public, DEPLOYMENT, "webui-deployment", no_auth))
    assert found == ["Service 'webui' is public but 'webui' runs without --api-auth."]


ONLY_ITS_TYPES = [("dev", policy, type_, name, change, None) for policy, type_, name, change, _ in NON_COMPLIANT
                  if not policy.startswith("stack-")] + [
    ("prod", "gke-gpu-spot", NODE_POOL, "sd-gpu", lambda d: None, {"gke-gpu-spot": {"requireSpot": True}}),
    ("prod", "gke-deletion-protection-in-prod", CLUSTER, None, _set("deletionProtection", False), None),
    ("prod", "gke-prod-control-plane-private", CLUSTER, None, _set("privateClusterConfig.enablePrivateEndpoint", False),
     None),
    ("dev", "helm-releases-pinned", "kubernetes:helm.sh/v3:Release", "autoscaling-keda", _set("version", "2.x"), None),
    ("dev", "gke-spot-location-policy-any", NODE_POOL, "sd-gpu", _set("autoscaling.locationPolicy", "BALANCED"), None),
]
"""A non-compliant change for every resource policy whose check reads fields a resource of another type may
have too (a stack policy reads every resource; a pod policy finds no pod spec in a type it does not know)."""


@pytest.mark.parametrize("stack, policy, type_, name, change, config", ONLY_ITS_TYPES,
                         ids=[f"{c[1]}-{i}" for i, c in enumerate(ONLY_ITS_TYPES)])
def test_a_resource_policy_judges_only_the_types_it_names(runs, stack, policy, type_, name, change, config):
    """The same non-compliant inputs under a type the policy does not name (a CRD with look-alike fields, say)
    are not its business."""
    run = runs[stack]
    config = {**policy_check.stack_config(stack), **config} if config else None
    target = run.one(type_, name)
    changed = mutate(run, type_, name, change)
    assert [v.urn for v in policy_check.evaluate(run, config, changed) if v.policy == policy] == [target.urn]
    elsewhere = [dataclasses.replace(r, type="kubernetes:example.com/v1:LookAlike") if r.urn == target.urn else r
                 for r in changed]
    assert [v for v in policy_check.evaluate(run, config, elsewhere) if v.policy == policy] == []


def test_every_policy_has_a_non_compliant_case():
    covered = {case[0] for case in NON_COMPLIANT} | {
        "gke-deletion-protection-in-prod", "gke-prod-control-plane-private", "gke-gpu-spot", "stack-exactly-one-cluster",
        "stack-public-service-requires-auth",
        "gke-spot-location-policy-any",
        "k8s-pod-security-admission",  # tests/test_pod_security.py
        "k8s-gpu-pods-do-not-block-up",  # tests/test_await.py
        "stack-runtime-selection-agrees",  # tests/test_upgrade.py
        "k8s-gpu-deployments-demand-scaled", "keda-scaler-fits-gpu-pool", "helm-releases-pinned",  # test_autoscaling.py
        "gateway-public-requires-tls-and-auth",  # tests/test_gateway.py
        "k8s-only-the-gateway-reaches-the-webui",  # tests/test_one_way_in.py
        "k8s-long-drain-keeps-its-node",  # tests/test_request_queue.py
        "stack-alerts-page-the-channel", "stack-prod-alerts-page-someone",
    }
    assert {p.name for p in policy_check.policies()} == covered


def test_spot_pool_should_use_any_location_policy(runs):
    run = runs["dev"]
    balanced = mutate(run, NODE_POOL, "sd-gpu", _set("autoscaling.locationPolicy", "BALANCED"))
    found = violations_of(run, "gke-spot-location-policy-any", balanced)
    assert found == ["Spot GPU pool with locationPolicy other than ANY: scale-ups wait on zones without capacity."]


def test_advisory_policies_are_advisory():
    levels = {p.name: p.enforcement_level.value for p in policy_check.policies()}
    assert {n for n, lvl in levels.items() if lvl == "advisory"} == {
        "k8s-deployment-probes", "k8s-memory-limits", "gke-spot-location-policy-any",
    }


def test_pack_entry_point_only_builds_the_pack():
    source = (policy_check.POLICY_DIR / "__main__.py").read_text()
    assert "PolicyPack(" in source and "def " not in source


def test_an_alert_that_pages_nobody_is_refused_when_the_stack_has_a_channel(runs):
    resources = mutate(runs["dev"], "gcp:monitoring/alertPolicy:AlertPolicy", "sd-gpu-pool-at-max",
                       _set("notificationChannels", []))
    assert violations_of(runs["dev"], "stack-alerts-page-the-channel", resources) == [
        "Alert policy sd-gpu-pool-at-max (sd-gke dev: GPU pool at its maximum) pages no notification channel, though "
        "the stack has one (observability.notificationEmail)."]


def _without_channels(run: Run) -> list[Recorded]:
    return [r for r in run.resources if r.type != "gcp:monitoring/notificationChannel:NotificationChannel"]


def test_prod_alerts_without_a_notification_channel_are_refused(runs):
    run = runs["prod"]
    assert violations_of(run, "stack-prod-alerts-page-someone") == []
    alerts = len(run.of_type("gcp:monitoring/alertPolicy:AlertPolicy"))
    assert violations_of(run, "stack-prod-alerts-page-someone", _without_channels(run)) == [
        f"Production stack with {alerts} alert policies and no notification channel: they would page nobody. Set "
        "observability.notificationEmail (`pulumi config set --path 'sd-gke:observability.notificationEmail' "
        "<your-oncall-address> --stack prod`)."]


def test_outside_prod_alerts_may_page_nobody(runs):
    assert violations_of(runs["dev"], "stack-prod-alerts-page-someone", _without_channels(runs["dev"])) == []


def test_a_prod_stack_without_alerts_needs_no_channel(runs):
    """Observability off: no alert policies, nothing to page."""
    run = runs["prod"]
    quiet = [r for r in _without_channels(run) if r.type != "gcp:monitoring/alertPolicy:AlertPolicy"]
    assert violations_of(run, "stack-prod-alerts-page-someone", quiet) == []
