"""Only one way in (issue 18 item 6): from outside the VPC, the WebUI and the request queue are reached through the
stack's Gateway and nothing else. Each path around it, added to the real plan the way a careless change would add
it, is refused with a message naming it; the plan as the program registers it passes.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from components import request_queue, webui
from components.labels import selector_labels
from tests.test_gateway import PUBLIC_GATEWAY
from tests.test_policy import _set, mutate, violations_of
from tools import policy_check
from tools.mockrun import Recorded, Run

POLICY = "k8s-only-the-gateway-reaches-the-webui"
GATEWAY_POLICY = "gateway-public-requires-tls-and-auth"
SERVICE = "kubernetes:core/v1:Service"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
GATEWAY = "kubernetes:gateway.networking.k8s.io/v1:Gateway"
ROUTE = "kubernetes:gateway.networking.k8s.io/v1:HTTPRoute"


def added(run: Run, type_: str, name: str, inputs: dict) -> list[Recorded]:
    """The run's resources and one more, as a change would register it."""
    urn = f"urn:pulumi:{run.stack}::sd-gke::{type_}::{name}"
    return run.resources + [Recorded(urn=urn, type=type_, name=name, parent=None, provider=None, custom=True,
                                     inputs=inputs)]


def service(namespace: str, selector: dict | None, **spec) -> dict:
    return {"metadata": {"name": "side-door", "namespace": namespace},
            "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": "http"}], **spec}}


def test_the_real_plan_passes(run):
    assert violations_of(run, POLICY) == []


def test_the_policy_guards_the_namespaces_the_program_uses():
    policy_check.policies()  # puts policy/ on the path, as the engine runs the pack from there
    import way_in

    assert set(way_in.PROTECTED_NAMESPACES) == {webui.NAMESPACE, request_queue.NAMESPACE}


@pytest.mark.parametrize(("namespace", "app", "owner"), [
    ("sd-webui", "webui", "the WebUI"), ("request-queue", "request-queue", "the request queue")])
@pytest.mark.parametrize("service_type", ["LoadBalancer", "NodePort"])
def test_a_load_balancer_or_node_port_service_in_front_of_the_pods_is_refused(runs, namespace, app, owner, service_type):
    run = runs["dev"]
    resources = added(run, SERVICE, "side-door", service(namespace, selector_labels(app), type=service_type))
    assert violations_of(run, POLICY, resources) == [
        f"Service {namespace}/side-door (type {service_type}) lets traffic from outside the VPC reach {owner}'s pods "
        "around the Gateway's TLS and IAP: make it a ClusterIP Service without externalIPs."]


def test_external_ips_on_a_cluster_ip_service_are_refused(runs):
    run = runs["dev"]
    resources = mutate(run, SERVICE, "request-queue-service", _set("spec.externalIPs", ["203.0.113.7"]))
    assert violations_of(run, POLICY, resources) == [
        "Service request-queue/request-queue (externalIPs ['203.0.113.7']) lets traffic from outside the VPC reach "
        "the request queue's pods around the Gateway's TLS and IAP: make it a ClusterIP Service without externalIPs."]


def test_a_selectorless_service_in_their_namespace_is_refused_as_theirs(runs):
    """Without a selector a Service takes hand-written endpoints, which may be the pods' addresses."""
    run = runs["dev"]
    resources = added(run, SERVICE, "side-door", service("sd-webui", None, type="LoadBalancer"))
    assert len(violations_of(run, POLICY, resources)) == 1


def test_a_copy_of_the_webui_in_another_namespace_is_guarded_by_its_labels(runs):
    run = runs["dev"]
    copy = dataclasses.replace(run.one(DEPLOYMENT, "webui-deployment"), name="webui-copy", urn="urn:copy")
    copy = dataclasses.replace(copy, inputs={**copy.inputs, "metadata": {"name": "webui", "namespace": "scratch"}})
    exposed = Recorded(urn="urn:svc", type=SERVICE, name="svc", parent=None, provider=None, custom=True,
                       inputs=service("scratch", selector_labels("webui"), type="NodePort"))
    assert violations_of(run, POLICY, run.resources + [copy, exposed]) == [
        "Service scratch/side-door (type NodePort) lets traffic from outside the VPC reach the WebUI's pods around the "
        "Gateway's TLS and IAP: make it a ClusterIP Service without externalIPs."]


@pytest.mark.parametrize("svc", [
    service("scratch", {"app": "other"}, type="LoadBalancer"),
    service("request-queue", selector_labels("request-queue"), type="ClusterIP"),
])
def test_services_in_front_of_other_pods_or_inside_the_cluster_pass(runs, svc):
    run = runs["dev"]
    assert violations_of(run, POLICY, added(run, SERVICE, "side-door", svc)) == []


@pytest.mark.parametrize("spec", [
    {"defaultBackend": {"service": {"name": "request-queue", "port": {"number": 8080}}}},
    {"rules": [{"http": {"paths": [{"path": "/", "pathType": "Prefix",
                                    "backend": {"service": {"name": "request-queue", "port": {"number": 8080}}}}]}}]},
])
def test_an_ingress_to_the_request_queue_is_refused(runs, spec):
    run = runs["dev"]
    ingress = {"metadata": {"name": "side-door", "namespace": "request-queue"}, "spec": spec}
    resources = added(run, "kubernetes:networking.k8s.io/v1:Ingress", "side-door", ingress)
    assert violations_of(run, POLICY, resources) == [
        "Ingress request-queue/side-door routes to the request queue in namespace request-queue: the Gateway is the "
        "only way in from outside the VPC; delete the Ingress."]


def test_an_ingress_to_other_services_passes(runs):
    run = runs["dev"]
    ingress = {"metadata": {"name": "docs", "namespace": "scratch"},
               "spec": {"defaultBackend": {"service": {"name": "docs", "port": {"number": 80}}}}}
    assert violations_of(run, POLICY, added(run, "kubernetes:networking.k8s.io/v1:Ingress", "docs", ingress)) == []


def foreign_route(parent: dict) -> dict:
    return {"metadata": {"name": "side-door", "namespace": "request-queue"},
            "spec": {"parentRefs": [parent], "rules": [{"backendRefs": [{"name": "request-queue", "port": 8080}]}]}}


def test_a_route_from_a_gateway_the_stack_does_not_declare_is_refused(runs):
    run = runs["dev"]
    route = foreign_route({"name": "shared-edge", "namespace": "infra"})
    assert violations_of(run, POLICY, added(run, ROUTE, "side-door", route)) == [
        "HTTPRoute request-queue/side-door attaches the request queue to Gateway infra/shared-edge, which this stack "
        "does not declare, so no policy checks its TLS and IAP: attach it to the stack's Gateway only."]


def test_a_grpc_route_is_held_to_the_same_rule(runs):
    run = runs["dev"]
    route = foreign_route({"name": "shared-edge", "namespace": "infra"})
    resources = added(run, "kubernetes:gateway.networking.k8s.io/v1:GRPCRoute", "side-door", route)
    assert len(violations_of(run, POLICY, resources)) == 1


def test_a_second_route_from_the_stacks_own_gateway_passes(runs):
    run = runs["dev"]
    route = foreign_route({"name": "webui"})
    assert violations_of(run, POLICY, added(run, ROUTE, "side-door", route)) == []


def test_host_network_on_the_webui_pods_is_refused(runs):
    run = runs["dev"]
    resources = mutate(run, DEPLOYMENT, "webui-deployment", _set("spec.template.spec.hostNetwork", True))
    assert violations_of(run, POLICY, resources) == [
        "Deployment sd-webui/webui runs the WebUI's pods with hostNetwork, answering on the node's address around the "
        "Gateway: drop hostNetwork."]


def test_a_host_port_on_the_request_queue_pods_is_refused(runs):
    run = runs["dev"]

    def host_port(inputs: dict) -> None:
        inputs["spec"]["template"]["spec"]["containers"][0]["ports"][0]["hostPort"] = 8080

    resources = mutate(run, DEPLOYMENT, "request-queue-deployment", host_port)
    assert violations_of(run, POLICY, resources) == [
        "Deployment request-queue/request-queue: container 'request-queue' of the request queue's pods takes hostPort "
        "8080, answering on the node's address around the Gateway: drop it."]


# --- a Gateway is public by its class, whatever webui.public says ------------------------------

def test_the_internal_plans_gateway_moved_to_a_public_class_needs_https_a_certificate_and_iap(runs):
    """dev keeps webui.public false; its Gateway switched to GKE's global external class
    (https://cloud.google.com/kubernetes-engine/docs/how-to/gatewayclass-capabilities) is judged as public."""
    run = runs["dev"]
    assert json.loads(run.config["sd-gke:webui"])["public"] is False
    resources = mutate(run, GATEWAY, "webui-gateway", _set("spec.gatewayClassName", "gke-l7-global-external-managed"))
    assert violations_of(run, GATEWAY_POLICY, resources) == [
        "Public Gateway request-queue/webui has a HTTP listener 'http': a public endpoint serves HTTPS only.",
        "Public Gateway request-queue/webui reaches Service request-queue/request-queue without authentication: "
        "enable IAP in its GCPBackendPolicy."]


@pytest.mark.parametrize("gateway_class", ["gke-l7-regional-external-managed", "gke-l7-gxlb", "some-other-controller"])
def test_every_class_but_the_internal_ones_is_public(runs, gateway_class):
    run = runs["dev"]
    resources = mutate(run, GATEWAY, "webui-gateway", _set("spec.gatewayClassName", gateway_class))
    assert len(violations_of(run, GATEWAY_POLICY, resources)) == 2


def test_a_second_public_gateway_the_stack_declares_is_judged_like_the_first(run_stack):
    public = run_stack("dev", webui={"public": True, "apiAuth": True, "generationTimeoutSeconds": 120},
                       gateway=PUBLIC_GATEWAY)
    second = dataclasses.replace(public.one(GATEWAY, "webui-gateway"), name="edge", urn="urn:edge")
    second = dataclasses.replace(second, inputs={**second.inputs, "metadata": {"name": "edge",
                                                                               "namespace": "request-queue"}})
    route = foreign_route({"name": "edge"})
    resources = added(public, ROUTE, "side-door", route) + [second]
    assert violations_of(public, POLICY, resources) == []
    assert violations_of(public, GATEWAY_POLICY, resources) == [
        "Public Gateway request-queue/edge: HTTPS listener 'https' has no certificate (networking.gke.io/certmap, "
        "tls.certificateRefs or pre-shared-certs)."]
