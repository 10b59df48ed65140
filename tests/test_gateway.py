"""The way in: the Gateway in front of the request queue, internal by default, public only with TLS and IAP."""

from __future__ import annotations

import pytest

from components import gateway, request_queue
from tests import crd_schemas
from tests.test_cluster import stack_config
from tests.test_policy import _drop, _set, mutate, violations_of

PUBLIC_GATEWAY = {
    "proxyOnlyCidr": "10.24.0.0/23", "hostname": "sd.example.com", "certificateMap": "sd-webui",
    "iapClientId": "1234-abc.apps.googleusercontent.com", "iapSecretName": "webui-iap",
}
GATEWAY = "kubernetes:gateway.networking.k8s.io/v1:Gateway"
ROUTE = "kubernetes:gateway.networking.k8s.io/v1:HTTPRoute"
BACKEND_POLICY = "kubernetes:networking.gke.io/v1:GCPBackendPolicy"
HEALTH_CHECK = "kubernetes:networking.gke.io/v1:HealthCheckPolicy"
SUBNET = "gcp:compute/subnetwork:Subnetwork"
POLICY = "gateway-public-requires-tls-and-auth"
OBJECTS = [(GATEWAY, "webui-gateway"), (ROUTE, "webui-route"), (BACKEND_POLICY, "webui-backend-policy"),
           (HEALTH_CHECK, "webui-health-check")]


@pytest.fixture(scope="module")
def public():
    from tools import mockrun

    return mockrun.run("dev", overrides={"webui": {"public": True, "apiAuth": True,
                                                   "generationTimeoutSeconds": 120}, "gateway": PUBLIC_GATEWAY})


def inputs(run, type_: str, name: str) -> dict:
    return run.one(type_, name).inputs


def test_the_route_sends_everything_to_the_request_queue_clients_port(run):
    route = inputs(run, ROUTE, "webui-route")
    service = inputs(run, "kubernetes:core/v1:Service", "request-queue-service")
    assert route["spec"]["parentRefs"] == [{"name": "webui"}]
    assert route["spec"]["rules"] == [{"backendRefs": [{"name": service["metadata"]["name"], "port": 8080}]}]
    assert {"name": "http", "port": 8080, "targetPort": "http"} in service["spec"]["ports"]
    assert route["metadata"]["namespace"] == service["metadata"]["namespace"] == request_queue.NAMESPACE


def test_gateway_objects_live_beside_the_request_queue_service_they_target(run):
    """GCPBackendPolicy and HealthCheckPolicy must share the target Service's namespace (GKE docs)."""
    assert {inputs(run, t, n)["metadata"]["namespace"] for t, n in OBJECTS} == {request_queue.NAMESPACE}
    for type_, name in OBJECTS[2:]:
        assert inputs(run, type_, name)["spec"]["targetRef"] == {
            "group": "", "kind": "Service", "name": request_queue.SERVICE}


def test_the_load_balancer_health_checks_the_request_queue_healthz(run):
    check = inputs(run, HEALTH_CHECK, "webui-health-check")["spec"]["default"]["config"]
    assert check == {"type": "HTTP", "httpHealthCheck": {"portSpecification": "USE_FIXED_PORT", "port": 8080,
                                                      "requestPath": "/healthz"}}


def test_an_internal_gateway_gets_its_proxy_only_subnet(run):
    assert inputs(run, GATEWAY, "webui-gateway")["spec"]["gatewayClassName"] == gateway.INTERNAL_CLASS
    subnet = inputs(run, SUBNET, "webui-proxy-only")
    assert (subnet["purpose"], subnet["role"]) == ("REGIONAL_MANAGED_PROXY", "ACTIVE")
    assert subnet["network"] == inputs(run, "gcp:compute/subnetwork:Subnetwork", "sd-subnet")["network"]
    assert run.one(SUBNET, "webui-proxy-only").urn in run.one(GATEWAY, "webui-gateway").dependencies


def test_a_public_gateway_is_global_external_https_only_with_a_certificate_map(public):
    gw = inputs(public, GATEWAY, "webui-gateway")
    assert gw["spec"]["gatewayClassName"] == gateway.PUBLIC_CLASS
    assert gw["spec"]["listeners"] == [{"name": "https", "protocol": "HTTPS", "port": 443}]
    assert gw["metadata"]["annotations"] == {"networking.gke.io/certmap": "sd-webui"}
    assert "webui-proxy-only" not in {r.name for r in public.of_type(SUBNET)}


def test_a_public_gateway_requires_iap_on_the_request_queue(public):
    iap = inputs(public, BACKEND_POLICY, "webui-backend-policy")["spec"]["default"]["iap"]
    assert iap == {"enabled": True, "clientID": PUBLIC_GATEWAY["iapClientId"],
                   "oauth2ClientSecret": {"name": "webui-iap"}}


def test_a_public_route_answers_only_for_its_hostname(public):
    assert inputs(public, ROUTE, "webui-route")["spec"]["hostnames"] == ["sd.example.com"]


def test_a_public_webui_without_certificate_or_iap_is_refused_by_the_config():
    from components import config
    from tests.test_config import stack_values

    raw = stack_values("dev")
    raw["webui"] = {**raw["webui"], "public": True}
    with pytest.raises(config.ConfigError) as err:
        config.parse(raw)
    assert [p.split(":")[0] for p in err.value.problems] == [
        "gateway.hostname", "gateway.certificateMap", "gateway.iapClientId", "gateway.iapSecretName"]


@pytest.mark.parametrize("type_, name", OBJECTS)
def test_gateway_objects_match_their_crd_schemas(run, public, type_, name):
    for r in (run, public):
        manifest = {k: v for k, v in inputs(r, type_, name).items() if not k.startswith("__")}
        assert crd_schemas.validate(manifest) == []


def test_the_backend_timeout_is_within_what_the_crd_accepts(run):
    schema = crd_schemas.schemas()[("networking.gke.io/v1", "GCPBackendPolicy")]["openAPIV3Schema"]
    limit = schema["properties"]["spec"]["properties"]["default"]["properties"]["timeoutSec"]["maximum"]
    assert 30 < inputs(run, BACKEND_POLICY, "webui-backend-policy")["spec"]["default"]["timeoutSec"] <= limit


# --- the policy -----------------------------------------------------------------------------

def test_a_public_gateway_with_tls_and_iap_passes(public, run):
    assert violations_of(public, POLICY) == [] and violations_of(run, POLICY) == []


def test_a_public_plain_http_listener_is_refused(public):
    plain = mutate(public, GATEWAY, "webui-gateway", _set("spec.listeners.0", {"name": "http", "protocol": "HTTP", "port": 80}))
    assert violations_of(public, POLICY, plain) == [
        "Public Gateway request-queue/webui has a HTTP listener 'http': a public endpoint serves HTTPS only."]


def test_a_public_https_listener_without_a_certificate_is_refused(public):
    uncertified = mutate(public, GATEWAY, "webui-gateway", _drop("metadata.annotations"))
    assert violations_of(public, POLICY, uncertified) == [
        "Public Gateway request-queue/webui: HTTPS listener 'https' has no certificate "
        "(networking.gke.io/certmap, tls.certificateRefs or pre-shared-certs)."]


def test_a_public_gateway_without_iap_is_refused(public):
    open_door = mutate(public, BACKEND_POLICY, "webui-backend-policy", _drop("spec.default.iap"))
    assert violations_of(public, POLICY, open_door) == [
        "Public Gateway request-queue/webui reaches Service request-queue/request-queue without authentication: "
        "enable IAP in its GCPBackendPolicy."]


def test_an_internal_gateway_may_serve_plain_http(run):
    assert inputs(run, GATEWAY, "webui-gateway")["spec"]["listeners"][0]["protocol"] == "HTTP"
    assert violations_of(run, POLICY) == []


def test_the_cluster_runs_the_gke_gateway_controller_with_the_standard_crds(run):
    cluster = run.one("gcp:container/cluster:Cluster").inputs
    assert cluster["gatewayApiConfig"] == {"channel": "CHANNEL_STANDARD"}
    assert cluster["addonsConfig"]["httpLoadBalancing"] == {"disabled": False}


def test_the_load_balancer_and_its_health_checks_reach_the_request_queue_pods(run, public):
    internal = inputs(run, "gcp:compute/firewall:Firewall", "webui-load-balancer-to-backend")
    proxy_only = stack_config(run).gateway.proxy_only_cidr
    assert internal["sourceRanges"] == ["35.191.0.0/16", "130.211.0.0/22", proxy_only]
    assert internal["allows"] == [{"protocol": "tcp", "ports": ["8080"]}]
    external = inputs(public, "gcp:compute/firewall:Firewall", "webui-load-balancer-to-backend")
    assert external["sourceRanges"] == ["35.191.0.0/16", "130.211.0.0/22"]


def _forwarded_for_entries(run) -> str:
    [queue] = run.one("kubernetes:apps/v1:Deployment", "request-queue-deployment").inputs["spec"]["template"]["spec"][
        "containers"]
    return next(e["value"] for e in queue["env"] if e["name"] == "FORWARDED_FOR_ENTRIES")


def test_the_request_queue_trusts_the_x_forwarded_for_entries_its_gateway_class_appends(run, public):
    """Global external: `<client-ip>,<load-balancer-ip>`; internal: only the last entry (no documented format)."""
    assert (_forwarded_for_entries(run), _forwarded_for_entries(public)) == ("1", "2")
    assert gateway.FORWARDED_FOR_ENTRIES == {gateway.INTERNAL_CLASS: 1, gateway.PUBLIC_CLASS: 2}


def test_without_a_gateway_the_request_queue_trusts_no_x_forwarded_for(run_stack):
    assert _forwarded_for_entries(run_stack("dev", gateway={"enabled": False})) == "0"
