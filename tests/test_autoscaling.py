"""Demand-driven WebUI replicas, as registered: KEDA, the ScaledObject on the request queue's demand, the warm
schedules and the backlog, and the policies that keep GPU Deployments demand-scaled within the pool."""

from __future__ import annotations

import copy

import pytest

from components import autoscaling
from tests import crd_schemas
from tests.test_cluster import stack_config
from tests.test_policy import _set, mutate, violations_of
from tools.mockrun import HELM_RELEASE

SCALED_OBJECT = "kubernetes:keda.sh/v1alpha1:ScaledObject"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
NODE_POOL = "gcp:container/nodePool:NodePool"


def release(run, role: str) -> dict:
    return run.one(HELM_RELEASE, f"autoscaling-{role}").inputs


def spec(run, type_: str, name: str) -> dict:
    return run.one(type_, name).inputs["spec"]


def manifest(run, type_: str, name: str) -> dict:
    """A copy of the object as the cluster gets it: tests edit it, and `runs` is shared."""
    return copy.deepcopy({k: v for k, v in run.one(type_, name).inputs.items() if not k.startswith("__")})


# --- the charts -----------------------------------------------------------------------------

def test_keda_comes_from_a_pinned_chart_version(run):
    inputs = release(run, "keda")
    assert (inputs["chart"], inputs["version"], inputs["namespace"]) == ("keda", "2.20.2", "keda")
    assert inputs["repositoryOpts"] == {"repo": "https://kedacore.github.io/charts"}


def test_keda_is_the_only_helm_release(run):
    """The KEDA HTTP add-on is gone: the request queue holds requests and feeds KEDA (docs/request-queue.md)."""
    assert [r.name for r in run.of_type(HELM_RELEASE)] == ["autoscaling-keda"]
    assert not [r for r in run.resources if r.type.startswith("kubernetes:http.keda.sh/")]


def test_the_keda_crd_schemas_are_written_from_the_docs_of_the_pinned_chart_version():
    docs = crd_schemas.schemas()
    for kind in ("ScaledObject", "TriggerAuthentication"):
        assert docs[("keda.sh/v1alpha1", kind)]["source"].startswith("hand-written from https://keda.sh/docs/2.20/")


def test_keda_runs_on_the_system_pool_never_on_a_gpu_node(run):
    system = run.one(NODE_POOL, "sd-system").inputs["nodeConfig"]["labels"]
    assert autoscaling.SYSTEM_NODE_SELECTOR.items() <= system.items()
    assert release(run, "keda")["values"]["nodeSelector"] == autoscaling.SYSTEM_NODE_SELECTOR


def test_keda_namespace_enforces_restricted_pod_security(run):
    ns = run.one("kubernetes:core/v1:Namespace", "autoscaling-namespace").inputs["metadata"]
    assert ns["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_releases_go_through_the_cluster_provider(run):
    assert all("pulumi:providers:kubernetes::sd-k8s" in r.provider for r in run.of_type(HELM_RELEASE))


# --- the ScaledObject -----------------------------------------------------------------------

def test_one_scaled_object_drives_the_webui_deployment(run):
    so = spec(run, SCALED_OBJECT, "autoscaling-scaled-object")
    assert so["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "webui"}
    assert run.one(SCALED_OBJECT, "autoscaling-scaled-object").inputs["metadata"]["namespace"] == "sd-webui"


@pytest.mark.parametrize("stack, minimum, maximum, cooldown", [("dev", 0, 2, 300), ("prod", 1, 8, 900)])
def test_replicas_and_cool_down_follow_the_stack(runs, stack, minimum, maximum, cooldown):
    so = spec(runs[stack], SCALED_OBJECT, "autoscaling-scaled-object")
    assert (so["minReplicaCount"], so["maxReplicaCount"], so["cooldownPeriod"]) == (minimum, maximum, cooldown)
    behavior = so["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == cooldown


def test_dev_idles_at_zero_gpu_pods(runs):
    assert spec(runs["dev"], SCALED_OBJECT, "autoscaling-scaled-object")["minReplicaCount"] == 0


def test_the_request_queue_demand_drives_the_scaled_object_through_keda_metrics_api(run):
    """KEDA 2.20 metrics-api: `url`, `valueLocation` (GJSON), `targetValue` (https://keda.sh/docs/2.20/scalers/metrics-api/)."""
    demand = spec(run, SCALED_OBJECT, "autoscaling-scaled-object")["triggers"][0]
    assert demand == {"type": "metrics-api", "name": "request-queue", "metadata": {
        "url": "http://request-queue.request-queue.svc.cluster.local:8081/v1/demand", "format": "json",
        "valueLocation": "desired", "targetValue": "1"}}


def test_the_demand_url_is_the_request_queue_service_workers_port(run):
    service = run.one("kubernetes:core/v1:Service", "request-queue-service").inputs
    url = spec(run, SCALED_OBJECT, "autoscaling-scaled-object")["triggers"][0]["metadata"]["url"]
    workers = next(p for p in service["spec"]["ports"] if p["name"] == "workers")
    meta = service["metadata"]
    assert url.startswith(f"http://{meta['name']}.{meta['namespace']}.svc.cluster.local:{workers['port']}/")


def test_keda_polls_every_second_so_a_first_request_wakes_a_pod_at_once(run):
    assert spec(run, SCALED_OBJECT, "autoscaling-scaled-object")["pollingInterval"] == 1


def test_the_scaled_object_waits_for_keda_whose_crds_it_needs(run):
    so = run.one(SCALED_OBJECT, "autoscaling-scaled-object")
    assert run.one(HELM_RELEASE, "autoscaling-keda").urn in so.dependencies


def test_each_warm_schedule_is_a_keda_cron_trigger(run_stack):
    schedules = [{"timezone": "Europe/Berlin", "start": "0 9 * * 1-5", "end": "0 18 * * 1-5", "replicas": 1},
                 {"timezone": "America/New_York", "start": "30 7 * * SAT", "end": "0 12 * * SAT", "replicas": 2}]
    run = run_stack("dev", autoscaling={"minReplicas": 0, "maxReplicas": 2, "cooldownSeconds": 300,
                                        "kedaChartVersion": "2.20.2", "warmSchedules": schedules})
    triggers = [t for t in spec(run, SCALED_OBJECT, "autoscaling-scaled-object")["triggers"] if t["type"] == "cron"]
    assert triggers == [
        {"type": "cron", "name": "warm-0", "metadata": {"timezone": "Europe/Berlin", "start": "0 9 * * 1-5",
                                                        "end": "0 18 * * 1-5", "desiredReplicas": "1"}},
        {"type": "cron", "name": "warm-1", "metadata": {"timezone": "America/New_York", "start": "30 7 * * SAT",
                                                        "end": "0 12 * * SAT", "desiredReplicas": "2"}}]


@pytest.mark.parametrize("stack, crons", [("dev", 0), ("prod", 1)])
def test_the_stacks_warm_schedules_become_cron_triggers(runs, stack, crons):
    triggers = spec(runs[stack], SCALED_OBJECT, "autoscaling-scaled-object")["triggers"]
    assert [t["type"] for t in triggers].count("cron") == crons == len(stack_config(runs[stack]).autoscaling.warm_schedules)


DOCUMENTED_METADATA = {
    "metrics-api": {"url", "format", "valueLocation", "targetValue", "activationTargetValue", "unsafeSsl"},
    "cron": {"timezone", "start", "end", "desiredReplicas"},
}
"""Trigger parameters as KEDA 2.20 documents them (https://keda.sh/docs/2.20/scalers/metrics-api/,
https://keda.sh/docs/2.20/scalers/cron/): the CRD leaves `metadata` an open string map, so a misspelt
parameter would pass the schema and be ignored by the scaler."""


def test_demand_and_warm_triggers_use_only_documented_parameters(runs):
    for run in runs.values():
        for trigger in spec(run, SCALED_OBJECT, "autoscaling-scaled-object")["triggers"]:
            documented = DOCUMENTED_METADATA.get(trigger["type"])
            assert documented is None or set(trigger["metadata"]) <= documented, trigger


def test_the_scaled_object_matches_the_pinned_crd_schema(run):
    assert crd_schemas.validate(manifest(run, SCALED_OBJECT, "autoscaling-scaled-object")) == []


def test_the_crd_schema_check_rejects_a_misspelt_field(runs):
    broken = manifest(runs["dev"], SCALED_OBJECT, "autoscaling-scaled-object")
    broken["spec"] = {**broken["spec"], "maxReplicas": 3}
    assert crd_schemas.validate(broken) == [
        "spec: Additional properties are not allowed ('maxReplicas' was unexpected)"]


def test_the_crd_schema_check_rejects_a_non_string_trigger_value(runs):
    broken = manifest(runs["dev"], SCALED_OBJECT, "autoscaling-scaled-object")
    broken["spec"]["triggers"][0]["metadata"]["targetValue"] = 1
    assert crd_schemas.validate(broken) == ["spec.triggers.0.metadata.targetValue: 1 is not of type 'string'",
                                            crd_schemas.RULES_NOT_CHECKED]


# --- policies -------------------------------------------------------------------------------

POLICY_SCALED = "k8s-gpu-deployments-demand-scaled"
POLICY_FITS = "keda-scaler-fits-gpu-pool"


def test_the_demand_scaled_webui_passes(run):
    assert violations_of(run, POLICY_SCALED) == [] and violations_of(run, POLICY_FITS) == []


def test_a_gpu_deployment_without_a_scaler_is_refused(runs):
    run = runs["dev"]
    unscaled = [r for r in run.resources if r.type != SCALED_OBJECT]
    assert violations_of(run, POLICY_SCALED, unscaled) == [
        "GPU Deployment sd-webui/webui is neither demand-scaled (no ScaledObject targets it) nor pinned "
        "(spec.replicas and a sd-gke/replicas-pinned annotation saying why): a GPU node would run whether or not "
        "anyone asks for it."]


def test_a_gpu_deployment_pinned_with_a_reason_passes(runs):
    run = runs["dev"]
    pinned = mutate(run, DEPLOYMENT, "webui-deployment", lambda d: (
        d["spec"].__setitem__("replicas", 1),
        d["metadata"].setdefault("annotations", {}).__setitem__("sd-gke/replicas-pinned", "benchmark host")))
    assert violations_of(run, POLICY_SCALED, [r for r in pinned if r.type != SCALED_OBJECT]) == []


def test_a_demand_scaled_deployment_that_sets_replicas_is_refused(runs):
    run = runs["dev"]
    fighting = mutate(run, DEPLOYMENT, "webui-deployment", _set("spec.replicas", 1))
    assert violations_of(run, POLICY_SCALED, fighting) == [
        "Deployment sd-webui/webui is demand-scaled but sets replicas: 1; every apply would reset what the "
        "autoscaler chose. Drop spec.replicas."]


def test_a_scaler_larger_than_the_gpu_pool_is_refused(runs):
    run = runs["dev"]
    too_many = mutate(run, SCALED_OBJECT, "autoscaling-scaled-object", _set("spec.maxReplicaCount", 3))
    assert violations_of(run, POLICY_FITS, too_many) == [
        "ScaledObject sd-webui/webui may ask for 3 pods of 1 GPU(s); the GPU pools hold 2 GPU(s) at most."]


@pytest.mark.parametrize("change, message", [
    (_set("version", "2.x"), "Helm release 'keda' has version '2.x': pin an exact chart version (X.Y.Z)."),
    (_set("repositoryOpts.repo", "http://kedacore.github.io/charts"),
     "Helm release 'keda' comes from 'http://kedacore.github.io/charts': use an https chart repository."),
])
def test_an_unpinned_helm_release_is_refused(runs, change, message):
    run = runs["dev"]
    assert violations_of(run, "helm-releases-pinned") == []
    assert violations_of(run, "helm-releases-pinned", mutate(run, HELM_RELEASE, "autoscaling-keda", change)) == [message]


def test_the_offline_plan_shows_keda_the_scaled_object_the_request_queue_and_the_gateway(runs):
    from tools import plan

    tree = plan.render_tree(runs["dev"])
    for line in (
        "kubernetes:helm.sh/v3:Release autoscaling-keda  [chart=keda, version=2.20.2, namespace=keda]",
        "kubernetes:keda.sh/v1alpha1:ScaledObject autoscaling-scaled-object  [minReplicaCount=0, maxReplicaCount=2",
        "kubernetes:apps/v1:Deployment request-queue-deployment  [namespace=request-queue, replicas=1]",
        "kubernetes:gateway.networking.k8s.io/v1:HTTPRoute webui-route",
        "kubernetes:gateway.networking.k8s.io/v1:Gateway webui-gateway  [gatewayClassName=gke-l7-rilb]",
    ):
        assert line in tree


# --- stack config ---------------------------------------------------------------------------

def problems_with(**sections) -> list[str]:
    from components import config
    from tests.test_config import stack_values

    raw = stack_values("dev")
    for key, changes in sections.items():
        raw[key] = {**raw.get(key, {}), **changes} if isinstance(changes, dict) else changes
    try:
        config.parse(raw)
    except config.ConfigError as err:
        return err.problems
    return []


@pytest.mark.parametrize("sections, expected", [
    ({"autoscaling": {"maxReplicas": 3}},
     "autoscaling.maxReplicas: 3 is not allowed; expected at most 2, the GPUs the pool holds (gpuPool.maxNodes x "
     "gpuPool.acceleratorCount; one GPU per WebUI pod)"),
    ({"autoscaling": {"minReplicas": 1}},
     "autoscaling.minReplicas: 1 is not allowed; expected 0 outside prod: an idle stack keeps no GPU node"),
    ({"environment": "prod", "autoscaling": {"minReplicas": 2, "maxReplicas": 1}},
     "autoscaling.minReplicas: 2 is not allowed; expected at most autoscaling.maxReplicas (1)"),
    ({"autoscaling": {"coldStartTimeoutSeconds": 600}},
     "autoscaling.coldStartTimeoutSeconds: 600 is not allowed; expected no value: the key is gone; requests now wait "
     "in the request queue; set queue.maxWaitSeconds instead"),
    ({"autoscaling": {"httpAddOnChartVersion": "0.15.0"}},
     'autoscaling.httpAddOnChartVersion: "0.15.0" is not allowed; expected no value: the key is gone; the KEDA HTTP '
     "add-on is replaced by the request queue (docs/request-queue.md); delete the key"),
    ({"autoscaling": {"kedaChartVersion": "2.19.0"}},
     'autoscaling.kedaChartVersion: "2.19.0" is not allowed; expected one of 2.20.2'),
    ({"gateway": {"proxyOnlyCidr": "10.10.0.0/23"}},
     'gateway.proxyOnlyCidr: "10.10.0.0/23" is not allowed; expected a range that does not overlap '
     "network.subnetCidr (10.10.0.0/20)"),
    ({"webui": {"replicas": 2}},
     "webui.replicas: 2 is not allowed; expected no value: the key is gone, the autoscaler owns the replica count; "
     "set autoscaling.minReplicas and autoscaling.maxReplicas instead"),
], ids=["max-beyond-pool", "warm-pod-in-dev", "min-above-max", "cold-start-timeout-gone", "add-on-gone", "unvendored-chart",
        "proxy-subnet-overlaps", "webui-replicas-gone"])
def test_bad_autoscaling_config_is_reported_with_key_value_and_what_is_allowed(sections, expected):
    assert problems_with(**sections) == [expected]


def test_prod_may_keep_a_warm_pod():
    assert problems_with(environment="prod", autoscaling={"minReplicas": 1}) == []


def test_the_private_control_plane_may_call_keda_metrics_server_and_webhooks(run):
    rule = run.one("gcp:compute/firewall:Firewall", "autoscaling-control-plane-to-keda").inputs
    assert rule["sourceRanges"] == [stack_config(run).network.master_cidr]
    assert rule["allows"] == [{"protocol": "tcp", "ports": ["6443", "9443"]}]
    assert rule["network"] == run.one("gcp:compute/subnetwork:Subnetwork", "sd-subnet").inputs["network"]
    assert rule["direction"] == "INGRESS"


# --- the job queue's backlog (issue 12) ------------------------------------------------------

TRIGGER_AUTHENTICATION = "kubernetes:keda.sh/v1alpha1:TriggerAuthentication"


def test_the_queue_backlog_wakes_the_same_webui_as_the_request_queue(run):
    triggers = spec(run, SCALED_OBJECT, "autoscaling-scaled-object")["triggers"]
    assert [t["type"] for t in triggers if t["type"] != "cron"] == ["metrics-api", "prometheus"]
    assert triggers[-1]["authenticationRef"] == {"name": "sd-jobs-monitoring"}
    assert {k: triggers[-1]["metadata"][k] for k in ("threshold", "activationThreshold", "ignoreNullValues")} == {
        "threshold": "5", "activationThreshold": "0", "ignoreNullValues": "true"}


def test_keda_reads_the_backlog_as_its_operator_through_workload_identity(run):
    authentication = run.one(TRIGGER_AUTHENTICATION, "autoscaling-backlog-authentication")
    assert authentication.inputs["metadata"] == {
        "name": "sd-jobs-monitoring", "namespace": "sd-webui", "labels": authentication.inputs["metadata"]["labels"]}
    assert authentication.inputs["spec"] == {"podIdentity": {"provider": "gcp"}}
    assert authentication.urn in run.one(SCALED_OBJECT, "autoscaling-scaled-object").dependencies
    annotations = release(run, "keda")["values"]["serviceAccount"]["operator"]["annotations"]
    reader = run.one("gcp:serviceaccount/account:Account", "jobs-keda-metrics").state["email"]
    assert annotations == {"iam.gke.io/gcp-service-account": reader}
    binding = run.one("gcp:serviceaccount/iAMMember:IAMMember", "jobs-keda-workload-identity").inputs
    assert binding["member"].endswith(".svc.id.goog[keda/keda-operator]")


def test_the_trigger_authentication_matches_its_pinned_crd_schema(run):
    assert crd_schemas.validate(manifest(run, TRIGGER_AUTHENTICATION, "autoscaling-backlog-authentication")) == []


def test_without_the_job_queue_only_requests_wake_the_webui(run_stack):
    run = run_stack("dev", jobs={"enabled": False})
    triggers = spec(run, SCALED_OBJECT, "autoscaling-scaled-object")["triggers"]
    assert [t["type"] for t in triggers] == ["metrics-api"]
    assert run.of_type(TRIGGER_AUTHENTICATION) == []
    assert "serviceAccount" not in release(run, "keda")["values"]
