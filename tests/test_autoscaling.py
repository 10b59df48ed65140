"""Demand-driven WebUI replicas, as registered: KEDA and its HTTP add-on, the routes, the ScaledObject,
and the policies that keep GPU Deployments demand-scaled within the pool."""

from __future__ import annotations

import pytest

from components import autoscaling
from tests import crd_schemas
from tests.test_cluster import stack_config
from tests.test_policy import _set, mutate, violations_of
from tools.mockrun import HELM_RELEASE

SCALED_OBJECT = "kubernetes:keda.sh/v1alpha1:ScaledObject"
ROUTE = "kubernetes:http.keda.sh/v1beta1:InterceptorRoute"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
NODE_POOL = "gcp:container/nodePool:NodePool"


def release(run, role: str) -> dict:
    return run.one(HELM_RELEASE, f"autoscaling-{role}").inputs


def spec(run, type_: str, name: str) -> dict:
    return run.one(type_, name).inputs["spec"]


def manifest(run, type_: str, name: str) -> dict:
    return {k: v for k, v in run.one(type_, name).inputs.items() if not k.startswith("__")}


# --- the charts -----------------------------------------------------------------------------

@pytest.mark.parametrize("role, chart, version", [
    ("keda", "keda", "2.20.2"), ("http-add-on", "keda-add-ons-http", "0.15.0"),
])
def test_keda_and_the_add_on_come_from_pinned_chart_versions(run, role, chart, version):
    inputs = release(run, role)
    assert (inputs["chart"], inputs["version"], inputs["namespace"]) == (chart, version, "keda")
    assert inputs["repositoryOpts"] == {"repo": "https://kedacore.github.io/charts"}


def test_the_keda_crd_schemas_are_written_from_the_docs_of_the_pinned_chart_versions():
    """The KEDA schemas are hand-written from the docs of the versions the charts pin (keda 2.20.2,
    keda-add-ons-http 0.15.0): their `source` names those doc versions."""
    docs = crd_schemas.schemas()
    for kind in ("ScaledObject", "TriggerAuthentication"):
        assert docs[("keda.sh/v1alpha1", kind)]["source"].startswith("hand-written from https://keda.sh/docs/2.20/")
    route = docs[("http.keda.sh/v1beta1", "InterceptorRoute")]["source"]
    assert route.startswith("hand-written from https://keda.sh/http-add-on/0.15/reference/interceptorroute/")


def test_the_add_on_is_installed_after_keda_whose_crds_its_chart_uses(run):
    add_on = run.one(HELM_RELEASE, "autoscaling-http-add-on")
    assert run.one(HELM_RELEASE, "autoscaling-keda").urn in add_on.dependencies


def test_the_charts_run_on_the_system_pool_never_on_a_gpu_node(run):
    system = run.one(NODE_POOL, "sd-system").inputs["nodeConfig"]["labels"]
    assert autoscaling.SYSTEM_NODE_SELECTOR.items() <= system.items()
    values = release(run, "http-add-on")["values"]
    assert release(run, "keda")["values"]["nodeSelector"] == autoscaling.SYSTEM_NODE_SELECTOR
    assert all(values[part]["nodeSelector"] == autoscaling.SYSTEM_NODE_SELECTOR
               for part in ("operator", "scaler", "interceptor"))


def test_the_add_on_meets_the_restricted_pod_security_its_namespace_enforces(run):
    ns = run.one("kubernetes:core/v1:Namespace", "autoscaling-namespace").inputs["metadata"]
    assert ns["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    values = release(run, "http-add-on")["values"]
    assert values["podSecurityContext"]["runAsNonRoot"] is True
    assert values["podSecurityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert values["securityContext"]["allowPrivilegeEscalation"] is False
    assert values["securityContext"]["capabilities"] == {"drop": ["ALL"]}


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


def test_each_route_feeds_the_scaled_object_through_the_add_on_scaler(run):
    triggers = [t for t in spec(run, SCALED_OBJECT, "autoscaling-scaled-object")["triggers"]
                if "interceptorRoute" in t["metadata"]]
    assert [t["type"] for t in triggers] == ["external-push", "external-push"]
    assert {t["metadata"]["interceptorRoute"] for t in triggers} == {"webui-api", "webui-ui"}
    assert {t["metadata"]["scalerAddress"] for t in triggers} == {"keda-add-ons-http-external-scaler.keda:9090"}


def test_the_scaled_object_waits_for_its_crd_and_its_routes(run):
    so = run.one(SCALED_OBJECT, "autoscaling-scaled-object")
    needed = {run.one(HELM_RELEASE, "autoscaling-http-add-on").urn, *(r.urn for r in run.of_type(ROUTE))}
    assert needed <= set(so.dependencies)


# --- the routes -----------------------------------------------------------------------------

def test_the_api_asks_for_one_in_flight_generation_per_pod(run):
    api = spec(run, ROUTE, "autoscaling-webui-api")
    assert api["scalingMetric"] == {"concurrency": {"targetValue": 1}}
    assert api["rules"] == [{"paths": [{"value": "/sdapi/"}]}]


def test_api_requests_wait_through_a_cold_start_instead_of_getting_a_placeholder(run):
    api = spec(run, ROUTE, "autoscaling-webui-api")
    assert "coldStart" not in api
    cold_start = stack_config(run).autoscaling.cold_start_timeout_seconds
    assert api["timeouts"]["readiness"] == f"{cold_start}s"


def test_both_routes_target_the_webui_service_by_its_port_name(run):
    service = run.one("kubernetes:core/v1:Service", "webui-service").inputs
    port_names = {p["name"] for p in service["spec"]["ports"]}
    for name in ("autoscaling-webui-api", "autoscaling-webui-ui"):
        target = spec(run, ROUTE, name)["target"]
        assert target["service"] == service["metadata"]["name"] and target["portName"] in port_names
        assert run.one(ROUTE, name).inputs["metadata"]["namespace"] == service["metadata"]["namespace"]


def test_browsers_get_a_starting_page_while_no_pod_is_ready(run):
    ui = spec(run, ROUTE, "autoscaling-webui-ui")
    response = ui["coldStart"]["placeholder"]["response"]
    page = run.one("kubernetes:core/v1:ConfigMap", "autoscaling-starting-page").inputs
    assert response["bodyFromConfigMap"] == {"name": page["metadata"]["name"], "key": "index.html"}
    assert page["metadata"]["labels"]["http.keda.sh/response-body"] == "true"
    assert "is starting" in page["data"]["index.html"]
    assert f'content="{autoscaling.STARTING_RETRY_SECONDS}"' in page["data"]["index.html"]
    assert response["statusCode"] == 503 and response["headers"]["Retry-After"] == str(autoscaling.STARTING_RETRY_SECONDS)


def test_a_browser_visit_wakes_a_pod_though_the_placeholder_answers_at_once(run):
    """The placeholder answers within the request, too short for a concurrency sample: the UI route
    scales on request rate, which remembers the visit for its window."""
    ui = spec(run, ROUTE, "autoscaling-webui-ui")
    assert set(ui["scalingMetric"]) == {"requestRate"}
    assert ui["rules"] == [{"paths": [{"value": "/"}]}]


@pytest.mark.parametrize("name", ["autoscaling-scaled-object", "autoscaling-webui-api", "autoscaling-webui-ui"])
def test_custom_resources_match_the_pinned_crd_schemas(run, name):
    type_ = SCALED_OBJECT if name.endswith("scaled-object") else ROUTE
    assert crd_schemas.validate(manifest(run, type_, name)) == []


def test_the_crd_schema_check_rejects_a_misspelt_field(runs):
    broken = manifest(runs["dev"], SCALED_OBJECT, "autoscaling-scaled-object")
    broken["spec"] = {**broken["spec"], "maxReplicas": 3}
    assert crd_schemas.validate(broken) == [
        "spec: Additional properties are not allowed ('maxReplicas' was unexpected)"]


def test_the_crd_schema_check_rejects_a_concurrency_target_below_one(runs):
    broken = manifest(runs["dev"], ROUTE, "autoscaling-webui-api")
    broken["spec"] = {**broken["spec"], "scalingMetric": {"concurrency": {"targetValue": 0}}}
    assert crd_schemas.validate(broken) == ["spec.scalingMetric.concurrency.targetValue: 0 is less than the minimum of 1"]


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


def test_the_offline_plan_shows_keda_the_add_on_the_scaled_object_the_routes_and_the_gateway(runs):
    from tools import plan

    tree = plan.render_tree(runs["dev"])
    for line in (
        "kubernetes:helm.sh/v3:Release autoscaling-keda  [chart=keda, version=2.20.2, namespace=keda]",
        "kubernetes:helm.sh/v3:Release autoscaling-http-add-on  [chart=keda-add-ons-http, version=0.15.0",
        "kubernetes:keda.sh/v1alpha1:ScaledObject autoscaling-scaled-object  [minReplicaCount=0, maxReplicaCount=2",
        "kubernetes:http.keda.sh/v1beta1:InterceptorRoute autoscaling-webui-api  [value=/sdapi/",
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
    ({"autoscaling": {"coldStartTimeoutSeconds": 60}},
     "autoscaling.coldStartTimeoutSeconds: 60 is not allowed; expected an integer from 300 to 3600"),
    ({"autoscaling": {"kedaChartVersion": "2.19.0"}},
     'autoscaling.kedaChartVersion: "2.19.0" is not allowed; expected one of 2.20.2'),
    ({"gateway": {"proxyOnlyCidr": "10.10.0.0/23"}},
     'gateway.proxyOnlyCidr: "10.10.0.0/23" is not allowed; expected a range that does not overlap '
     "network.subnetCidr (10.10.0.0/20)"),
    ({"webui": {"replicas": 2}},
     "webui.replicas: 2 is not allowed; expected no value: the key is gone, the autoscaler owns the replica count; "
     "set autoscaling.minReplicas and autoscaling.maxReplicas instead"),
], ids=["max-beyond-pool", "warm-pod-in-dev", "min-above-max", "cold-start-too-short", "unvendored-chart",
        "proxy-subnet-overlaps", "webui-replicas-gone"])
def test_bad_autoscaling_config_is_reported_with_key_value_and_what_is_allowed(sections, expected):
    assert problems_with(**sections) == [expected]


def test_prod_may_keep_a_warm_pod():
    assert problems_with(environment="prod", autoscaling={"minReplicas": 1}) == []


def test_the_add_on_pods_our_values_make_pass_pod_security_restricted(run):
    """The chart puts `podSecurityContext` on each pod and `securityContext` on each container
    (kedacore/charts@v2.20.2 http-add-on/templates/*/deployment.yaml): the pod they make passes the
    Restricted checks of policy/pod_security.py, and the chart's defaults alone would not."""
    from tests.test_pod_security import pod_security

    values = release(run, "http-add-on")["values"]
    pod = {"securityContext": values["podSecurityContext"],
           "containers": [{"name": "interceptor", "image": "ghcr.io/kedacore/http-add-on-interceptor:0.15.0",
                           "securityContext": values["securityContext"]}]}
    assert pod_security.violations({}, pod, "restricted") == []
    chart_defaults = {"securityContext": {"fsGroup": 1000, "supplementalGroups": [1000]},
                      "containers": [{"name": "interceptor", "securityContext": {
                          "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "privileged": False,
                          "readOnlyRootFilesystem": True}}]}
    assert {v.check for v in pod_security.violations({}, chart_defaults, "restricted")} == {
        "runAsNonRoot", "seccompProfile_restricted"}


def test_the_private_control_plane_may_call_keda_metrics_server_and_webhooks(run):
    rule = run.one("gcp:compute/firewall:Firewall", "autoscaling-control-plane-to-keda").inputs
    assert rule["sourceRanges"] == [stack_config(run).network.master_cidr]
    assert rule["allows"] == [{"protocol": "tcp", "ports": ["6443", "9443"]}]
    assert rule["network"] == run.one("gcp:compute/subnetwork:Subnetwork", "sd-subnet").inputs["network"]
    assert rule["direction"] == "INGRESS"


# --- the job queue's backlog (issue 12) ------------------------------------------------------

TRIGGER_AUTHENTICATION = "kubernetes:keda.sh/v1alpha1:TriggerAuthentication"


def test_the_queue_backlog_wakes_the_same_webui_as_the_http_routes(run):
    triggers = spec(run, SCALED_OBJECT, "autoscaling-scaled-object")["triggers"]
    assert [t["type"] for t in triggers] == ["external-push", "external-push", "prometheus"]
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


def test_without_the_queue_only_requests_wake_the_webui(run_stack):
    run = run_stack("dev", jobs={"enabled": False})
    triggers = spec(run, SCALED_OBJECT, "autoscaling-scaled-object")["triggers"]
    assert [t["type"] for t in triggers] == ["external-push", "external-push"]
    assert run.of_type(TRIGGER_AUTHENTICATION) == []
    assert "serviceAccount" not in release(run, "keda")["values"]
