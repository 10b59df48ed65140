"""Cases of the way-in policies (policy/way_in.py) that the whole mutation run found untold: every internal
Gateway class, each way a listener may carry its certificate, which routes and backend policies a public
Gateway is judged by, the resource each refusal is attached to, and whose pods a copy outside their namespace is."""

from __future__ import annotations

import dataclasses

import pytest

from tests.test_gateway import BACKEND_POLICY, GATEWAY, POLICY, PUBLIC_GATEWAY, ROUTE
from tests.test_one_way_in import POLICY as ONLY_THE_GATEWAY
from tests.test_one_way_in import SERVICE, added, service
from tests.test_policy import _drop, _set, mutate, violations_of
from tools import policy_check
from tools.mockrun import Recorded, Run

NO_CERTIFICATE = ("Public Gateway request-queue/webui: HTTPS listener {!r} has no certificate "
                  "(networking.gke.io/certmap, tls.certificateRefs or pre-shared-certs).")
NO_IAP = ("Public Gateway request-queue/webui reaches Service {}/{} without authentication: enable IAP in its "
          "GCPBackendPolicy.")
PLAIN = "Public Gateway request-queue/webui has a HTTP listener {!r}: a public endpoint serves HTTPS only."


@pytest.fixture(scope="module")
def public(shared_runs) -> Run:
    return shared_runs.get("dev", {"webui": {"public": True, "apiAuth": True, "generationTimeoutSeconds": 120},
                                   "gateway": PUBLIC_GATEWAY})


def violations(run: Run, resources: list[Recorded], policy: str = POLICY) -> list[tuple[str, str | None]]:
    return [(v.message, v.urn) for v in policy_check.evaluate(run, None, resources) if v.policy == policy]


def with_listeners(*listeners: dict):
    return _set("spec.listeners", list(listeners))


def uncertified(name: str, **tls) -> dict:
    return {"name": name, "protocol": "HTTPS", "port": 443, **({"tls": tls} if tls else {})}


@pytest.mark.parametrize("gateway_class", ["gke-l7-rilb", "gke-l7-rilb-mc", "gke-l7-cross-regional-internal-managed-mc"])
def test_each_internal_class_may_serve_plain_http_without_iap(public, gateway_class):
    """GKE's internal Application Load Balancer classes
    (https://cloud.google.com/kubernetes-engine/docs/how-to/gatewayclass-capabilities)."""
    internal = mutate(public, GATEWAY, "webui-gateway", _set("spec.gatewayClassName", gateway_class))
    internal = [dataclasses.replace(r, inputs={**r.inputs, "spec": {**r.inputs["spec"], "listeners": [
        {"name": "http", "protocol": "HTTP", "port": 80}]}}) if r.type == GATEWAY else r for r in internal]
    assert violations_of(public, POLICY, [r for r in internal if r.type != BACKEND_POLICY]) == []


@pytest.mark.parametrize("tls", [{"certificateRefs": [{"name": "webui-cert"}]},
                                 {"options": {"networking.gke.io/pre-shared-certs": "webui-cert"}}],
                         ids=["certificateRefs", "pre-shared-certs"])
def test_a_listener_may_carry_its_own_certificate_instead_of_the_map(public, tls):
    own = mutate(public, GATEWAY, "webui-gateway", lambda i: (_drop("metadata.annotations")(i),
                                                               with_listeners(uncertified("https", **tls))(i)))
    assert violations_of(public, POLICY, own) == []


def test_every_listener_of_a_public_gateway_is_judged_and_each_refusal_is_the_gateways(public):
    listeners = with_listeners({"name": "http", "protocol": "HTTP", "port": 80}, uncertified("bare"),
                               uncertified("other-options", options={"some.example.com/x": "y"}))
    gateway = public.one(GATEWAY, "webui-gateway")
    resources = mutate(public, GATEWAY, "webui-gateway", lambda i: (_drop("metadata.annotations")(i), listeners(i)))
    assert violations(public, resources) == [(PLAIN.format("http"), gateway.urn),
                                             (NO_CERTIFICATE.format("bare"), gateway.urn),
                                             (NO_CERTIFICATE.format("other-options"), gateway.urn)]


def test_an_internal_gateway_listed_first_does_not_stop_the_public_one_being_judged(public):
    internal = dataclasses.replace(public.one(GATEWAY, "webui-gateway"), urn="urn:internal", name="internal")
    internal = dataclasses.replace(internal, inputs={"metadata": {"name": "internal", "namespace": "request-queue"},
                                                     "spec": {"gatewayClassName": "gke-l7-rilb", "listeners": []}})
    plain = mutate(public, GATEWAY, "webui-gateway", with_listeners({"name": "http", "protocol": "HTTP", "port": 80}))
    assert violations_of(public, POLICY, [internal] + plain) == [PLAIN.format("http")]


def test_a_backend_without_iap_is_reported_against_its_route(public):
    route = public.one(ROUTE, "webui-route")
    open_door = mutate(public, BACKEND_POLICY, "webui-backend-policy", _drop("spec.default.iap"))
    assert violations(public, open_door) == [(NO_IAP.format("request-queue", "request-queue"), route.urn)]


def test_a_backend_with_no_backend_policy_at_all_is_refused(public):
    without = [r for r in public.resources if r.type != BACKEND_POLICY]
    assert violations_of(public, POLICY, without) == [NO_IAP.format("request-queue", "request-queue")]


def test_a_route_attached_to_another_gateway_is_not_this_ones(public):
    """Neither another Gateway's name in the route's namespace nor this name in another namespace is this Gateway."""
    for parent in ({"name": "elsewhere"}, {"name": "webui", "namespace": "scratch"}):
        detached = mutate(public, ROUTE, "webui-route", _set("spec.parentRefs", [parent]))
        without = [r for r in detached if r.type != BACKEND_POLICY]
        assert violations_of(public, POLICY, without) == [], parent


def test_an_unattached_route_listed_first_does_not_hide_an_attached_one(public):
    route = public.one(ROUTE, "webui-route")
    stray = dataclasses.replace(route, urn="urn:stray", name="stray", inputs={
        "metadata": {"name": "stray", "namespace": "request-queue"},
        "spec": {"parentRefs": [{"name": "elsewhere"}], "rules": []}})
    resources = [stray] + mutate(public, BACKEND_POLICY, "webui-backend-policy", _drop("spec.default.iap"))
    assert violations_of(public, POLICY, resources) == [NO_IAP.format("request-queue", "request-queue")]


def test_a_backend_in_another_namespace_is_judged_by_that_namespaces_policy(public):
    """A backendRef's own namespace names where its Service, and so its GCPBackendPolicy, lives."""
    policy = public.one(BACKEND_POLICY, "webui-backend-policy")
    elsewhere = dataclasses.replace(policy, urn="urn:elsewhere", inputs={
        **policy.inputs, "metadata": {**policy.inputs["metadata"], "namespace": "edge"}})
    moved = mutate(public, ROUTE, "webui-route", _set("spec.rules.0.backendRefs.0.namespace", "edge"))
    assert violations_of(public, POLICY, [r for r in moved if r.type != BACKEND_POLICY] + [elsewhere]) == []
    assert violations_of(public, POLICY, moved) == [NO_IAP.format("edge", "request-queue")]


# --- whose pods: k8s-only-the-gateway-reaches-the-webui -------------------------------------------------

def test_a_copy_of_the_request_queue_in_another_namespace_is_guarded_by_its_labels(runs):
    from components.labels import selector_labels

    run = runs["dev"]
    front = next(r for r in run.of_type("kubernetes:apps/v1:Deployment") if r.name.startswith("request-queue"))
    copied = dataclasses.replace(front, name="front-copy", urn="urn:copy", inputs={
        **front.inputs, "metadata": {"name": "front", "namespace": "scratch"}})
    resources = added(run, SERVICE, "side-door", service("scratch", selector_labels("request-queue"), type="NodePort"))
    assert violations_of(run, ONLY_THE_GATEWAY, resources + [copied]) == [
        "Service scratch/side-door (type NodePort) lets traffic from outside the VPC reach the request queue's pods "
        "around the Gateway's TLS and IAP: make it a ClusterIP Service without externalIPs."]


def test_an_object_without_a_namespace_is_named_in_default(runs):
    from components.labels import selector_labels

    run = runs["dev"]
    webui = run.one("kubernetes:apps/v1:Deployment", "webui-deployment")
    copied = dataclasses.replace(webui, name="webui-copy", urn="urn:copy", inputs={
        **webui.inputs, "metadata": {"name": "webui"}})
    exposed = service("default", selector_labels("webui"), type="LoadBalancer")
    del exposed["metadata"]["namespace"]
    assert violations_of(run, ONLY_THE_GATEWAY, added(run, SERVICE, "side-door", exposed) + [copied]) == [
        "Service default/side-door (type LoadBalancer) lets traffic from outside the VPC reach the WebUI's pods "
        "around the Gateway's TLS and IAP: make it a ClusterIP Service without externalIPs."]


def test_a_workload_of_another_app_outside_their_namespaces_may_have_a_load_balancer(runs):
    run = runs["dev"]
    webui = run.one("kubernetes:apps/v1:Deployment", "webui-deployment")
    template = webui.inputs["spec"]["template"]
    labels = {**template["metadata"]["labels"], "app.kubernetes.io/name": "other-app"}
    other = dataclasses.replace(webui, name="other", urn="urn:other", inputs={
        "metadata": {"name": "other", "namespace": "scratch"},
        "spec": {**webui.inputs["spec"], "template": {**template, "metadata": {**template["metadata"], "labels": labels}}}})
    exposed = service("scratch", {"app.kubernetes.io/name": "other-app"}, type="LoadBalancer")
    assert violations_of(run, ONLY_THE_GATEWAY, added(run, SERVICE, "side-door", exposed) + [other]) == []
