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


# --- every way around the Gateway: each refusal attached to its resource, every item named -------------------

INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
TAIL = "the Gateway is the only way in from outside the VPC; delete the Ingress."


def test_a_service_exposed_two_ways_names_both_and_is_reported_against_itself(runs):
    run = runs["dev"]
    resources = mutate(run, SERVICE, "request-queue-service",
                       lambda i: (_set("spec.type", "NodePort")(i), _set("spec.externalIPs", ["203.0.113.7"])(i)))
    service_urn = run.one(SERVICE, "request-queue-service").urn
    assert violations(run, resources, ONLY_THE_GATEWAY) == [(
        "Service request-queue/request-queue (type NodePort, externalIPs ['203.0.113.7']) lets traffic from outside "
        "the VPC reach the request queue's pods around the Gateway's TLS and IAP: make it a ClusterIP Service without "
        "externalIPs.", service_urn)]


def test_a_selectorless_service_in_their_namespace_is_named_as_theirs(runs):
    run = runs["dev"]
    resources = added(run, SERVICE, "side-door", service("sd-webui", None, type="LoadBalancer"))
    assert violations_of(run, ONLY_THE_GATEWAY, resources) == [
        "Service sd-webui/side-door (type LoadBalancer) lets traffic from outside the VPC reach the WebUI's pods around "
        "the Gateway's TLS and IAP: make it a ClusterIP Service without externalIPs."]


def test_a_service_selecting_their_pods_from_another_namespace_is_not_in_front_of_them(runs):
    """A Service selects pods in its own namespace only."""
    from components.labels import selector_labels

    run = runs["dev"]
    resources = added(run, SERVICE, "side-door", service("scratch", selector_labels("webui"), type="LoadBalancer"))
    assert violations_of(run, ONLY_THE_GATEWAY, resources) == []


def in_scratch(run: Run, app: str, service_name: str) -> list[Recorded]:
    """A copy of `app`'s Deployment in namespace scratch, behind a ClusterIP Service `service_name` there: a Service
    of theirs by what it selects, outside their namespaces."""
    deployment = run.one("kubernetes:apps/v1:Deployment", f"{app}-deployment")
    copied = dataclasses.replace(deployment, urn=f"urn:{app}-copy", name=f"{app}-copy", inputs={
        **deployment.inputs, "metadata": {"name": f"{app}-copy", "namespace": "scratch"}})
    front = service("scratch", {"app.kubernetes.io/name": app})
    front["metadata"]["name"] = service_name
    return [copied, Recorded(urn=f"urn:{service_name}", type=SERVICE, name=service_name, parent=None, provider=None,
                             custom=True, inputs=front)]


def front_in_scratch(run: Run) -> list[Recorded]:
    return in_scratch(run, "request-queue", "front")


@pytest.mark.parametrize("spec", [
    {"defaultBackend": {"service": {"name": "front"}}},
    {"backend": {"serviceName": "front", "servicePort": 8080}},
    {"rules": [{"http": {"paths": [{"backend": {"serviceName": "front"}}]}}]},
    {"rules": [{"host": "a.example.com"},
               {"http": {"paths": [{"path": "/docs", "backend": {"service": {"name": "docs"}}},
                                   {"path": "/", "backend": {"service": {"name": "front"}}}]}}]},
], ids=["defaultBackend", "extensions-backend", "extensions-rule", "second-path"])
def test_every_form_of_ingress_backend_is_read(runs, spec):
    """networking.k8s.io/v1 (service.name) and the old extensions/v1beta1 form (serviceName), default or per path."""
    run = runs["dev"]
    ingress = {"metadata": {"name": "side-door", "namespace": "scratch"}, "spec": spec}
    urn = f"urn:pulumi:{run.stack}::sd-gke::kubernetes:extensions/v1beta1:Ingress::side-door"
    resources = added(run, "kubernetes:extensions/v1beta1:Ingress", "side-door", ingress) + front_in_scratch(run)
    assert violations(run, resources, ONLY_THE_GATEWAY) == [(
        f"Ingress scratch/side-door routes to the request queue in namespace scratch: {TAIL}", urn)]


def test_an_ingress_without_a_backend_in_their_namespace_is_refused_too(runs):
    """Their namespaces hold no Ingress at all, whatever it routes to."""
    run = runs["dev"]
    ingress = {"metadata": {"name": "side-door", "namespace": "request-queue"}, "spec": {}}
    assert violations_of(run, ONLY_THE_GATEWAY, added(run, INGRESS, "side-door", ingress)) == [
        f"Ingress request-queue/side-door routes to the request queue in namespace request-queue: {TAIL}"]


def test_a_route_to_a_service_of_theirs_outside_their_namespaces_is_read_by_name(runs):
    run = runs["dev"]
    route = {"metadata": {"name": "side-door", "namespace": "scratch"},
             "spec": {"parentRefs": [{"name": "edge"}], "rules": [{"backendRefs": [{"name": "front"}]}]}}
    assert violations_of(run, ONLY_THE_GATEWAY, added(run, ROUTE, "side-door", route) + front_in_scratch(run)) == [
        "HTTPRoute scratch/side-door attaches the request queue to Gateway scratch/edge, which this stack does not "
        "declare, so no policy checks its TLS and IAP: attach it to the stack's Gateway only."]


def test_a_parent_of_another_kind_named_like_the_stacks_gateway_is_not_it(runs):
    run = runs["dev"]
    route = {"metadata": {"name": "side-door", "namespace": "request-queue"},
             "spec": {"parentRefs": [{"kind": "Service", "name": "webui"}],
                      "rules": [{"backendRefs": [{"name": "request-queue"}]}]}}
    assert violations_of(run, ONLY_THE_GATEWAY, added(run, ROUTE, "side-door", route)) == [
        "HTTPRoute request-queue/side-door attaches the request queue to Service request-queue/webui, which this "
        "stack does not declare, so no policy checks its TLS and IAP: attach it to the stack's Gateway only."]


def test_an_ingress_in_their_namespace_is_theirs_whatever_it_routes_to(runs):
    run = runs["dev"]
    ingress = {"metadata": {"name": "side-door", "namespace": "sd-webui"},
               "spec": {"defaultBackend": {"service": {"name": "docs"}}}}
    assert violations_of(run, ONLY_THE_GATEWAY, added(run, INGRESS, "side-door", ingress)) == [
        f"Ingress sd-webui/side-door routes to the WebUI in namespace sd-webui: {TAIL}"]


def test_an_ingress_routing_to_both_names_both(runs):
    run = runs["dev"]
    ingress = {"metadata": {"name": "side-door", "namespace": "scratch"}, "spec": {"rules": [{"http": {"paths": [
        {"backend": {"service": {"name": "front"}}}, {"backend": {"service": {"name": "ui"}}}]}}]}}
    resources = added(run, INGRESS, "side-door", ingress) + front_in_scratch(run) + in_scratch(run, "webui", "ui")
    assert violations_of(run, ONLY_THE_GATEWAY, resources) == [
        f"Ingress scratch/side-door routes to the WebUI and the request queue in namespace scratch: {TAIL}"]


def test_a_route_naming_a_backend_in_their_namespace_from_elsewhere_is_refused_against_the_route(runs):
    run = runs["dev"]
    route = {"metadata": {"name": "side-door", "namespace": "scratch"},
             "spec": {"parentRefs": [{"name": "edge", "namespace": "infra"}, {"kind": "Service", "name": "mesh"}],
                      "rules": [{"backendRefs": [{"name": "request-queue", "namespace": "request-queue"},
                                                 {"name": "anything", "namespace": "sd-webui"}]}]}}
    urn = f"urn:pulumi:{run.stack}::sd-gke::{ROUTE}::side-door"
    assert violations(run, added(run, ROUTE, "side-door", route), ONLY_THE_GATEWAY) == [(
        "HTTPRoute scratch/side-door attaches the WebUI and the request queue to Gateway infra/edge, Service "
        "scratch/mesh, which this stack does not declare, so no policy checks its TLS and IAP: attach it to the "
        "stack's Gateway only.", urn)]


def test_a_route_to_other_services_from_any_gateway_passes(runs):
    run = runs["dev"]
    route = {"metadata": {"name": "docs", "namespace": "scratch"},
             "spec": {"parentRefs": [{"name": "edge", "namespace": "infra"}], "rules": [{"backendRefs": [{"name": "docs"}]}]}}
    assert violations_of(run, ONLY_THE_GATEWAY, added(run, ROUTE, "docs", route)) == []


def test_a_route_from_the_stacks_gateway_named_with_its_namespace_and_kind_passes(runs):
    run = runs["dev"]
    route = {"metadata": {"name": "side-door", "namespace": "scratch"},
             "spec": {"parentRefs": [{"kind": "Gateway", "name": "webui", "namespace": "request-queue"}],
                      "rules": [{"backendRefs": [{"name": "request-queue", "namespace": "request-queue"}]}]}}
    assert violations_of(run, ONLY_THE_GATEWAY, added(run, ROUTE, "side-door", route)) == []


def test_host_network_and_two_host_ports_are_reported_against_the_workload(runs):
    run = runs["dev"]
    deployment = run.one("kubernetes:apps/v1:Deployment", "webui-deployment")

    def both(inputs: dict) -> None:
        pod = inputs["spec"]["template"]["spec"]
        pod["hostNetwork"] = True
        pod["containers"][0]["ports"] = [{"containerPort": 7860, "hostPort": 7860}, {"containerPort": 80, "hostPort": 80}]

    resources = mutate(run, "kubernetes:apps/v1:Deployment", "webui-deployment", both)
    name = deployment.inputs["spec"]["template"]["spec"]["containers"][0]["name"]
    assert violations(run, resources, ONLY_THE_GATEWAY) == [
        ("Deployment sd-webui/webui runs the WebUI's pods with hostNetwork, answering on the node's address around "
         "the Gateway: drop hostNetwork.", deployment.urn),
        (f"Deployment sd-webui/webui: container {name!r} of the WebUI's pods takes hostPort 80, 7860, answering on "
         "the node's address around the Gateway: drop it.", deployment.urn)]
