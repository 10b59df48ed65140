"""The published CRDs' CEL rules (x-kubernetes-validations), evaluated as kube-apiserver evaluates them
(tests/crd_schemas.py): a manifest that breaks a rule is refused with the rule's message, at the node that
declares it, and the plan's custom resources pass (tests/test_manifests.py, tests/test_gateway.py)."""

from __future__ import annotations

import copy
import re

import pytest

from components.gateway import Backend, health_check_spec
from tests import crd_schemas

FIXED = "for portSpecification being USE_FIXED_PORT, port must be set and portName must be unset"
NAMED = "for portSpecification being USE_NAMED_PORT, port must be unset and portName must be set"
SERVING = "port and portName must be unset for portSpecification being USE_SERVING_PORT (which is the default)"
PROTOCOLS = {"TCP": "tcpHealthCheck", "HTTP": "httpHealthCheck", "HTTPS": "httpsHealthCheck",
             "HTTP2": "http2HealthCheck", "GRPC": "grpcHealthCheck"}
SOURCE = re.compile(r"^[\w.-]+/[\w.-]+@\S+( \([0-9a-f]{40}\))? config/crd/\S+\.yaml$")


def health_check_policy(config: dict, **default) -> dict:
    return {"apiVersion": "networking.gke.io/v1", "kind": "HealthCheckPolicy", "metadata": {"name": "webui"},
            "spec": {"default": {"config": config, **default},
                     "targetRef": {"group": "", "kind": "Service", "name": "request-queue"}}}


def refused(manifest: dict, old: dict | None = None) -> list[str]:
    return crd_schemas.validate(manifest, old)


def at(path: str, kind: str, message: str) -> str:
    return f'{path}: Invalid value: "{kind}": {message}'


def test_the_plans_health_check_port_is_a_fixed_port():
    backend = Backend(namespace="sd-queue", service="request-queue", port=8000, health_port=8080, health_path="/healthz")
    manifest = health_check_policy(health_check_spec(backend)["default"]["config"])
    assert refused(manifest) == []


def test_a_health_check_port_without_its_specification_is_refused_as_on_main():
    """Today's main sent `port` alone: the default (USE_SERVING_PORT) refuses it and two rules cannot evaluate."""
    config = {"type": "HTTP", "httpHealthCheck": {"port": 8080, "requestPath": "/healthz"}}
    where = "spec.default.config.httpHealthCheck"
    assert refused(health_check_policy(config)) == [
        at(where, "object", f"no such member in mapping: 'portSpecification' evaluating rule: {FIXED}"),
        at(where, "object", f"no such member in mapping: 'portSpecification' evaluating rule: {NAMED}"),
        at(where, "object", SERVING)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("check, message", [
    ({"portSpecification": "USE_FIXED_PORT"}, FIXED),
    ({"portSpecification": "USE_FIXED_PORT", "port": 8080, "portName": "http"}, FIXED),
    ({"portSpecification": "USE_NAMED_PORT", "port": 8080, "portName": "http"}, NAMED),
    ({"portSpecification": "USE_NAMED_PORT"}, NAMED),
    ({"portSpecification": "USE_SERVING_PORT", "port": 8080}, SERVING),
    ({"portSpecification": "USE_SERVING_PORT", "portName": "http"}, SERVING),
], ids=["fixed-no-port", "fixed-with-name", "named-with-port", "named-no-name", "serving-with-port", "serving-with-name"])
def test_each_port_rule_refuses_its_violation_in_every_protocol(protocol, check, message):
    field = PROTOCOLS[protocol]
    assert refused(health_check_policy({"type": protocol, field: check})) == [
        at(f"spec.default.config.{field}", "object", message)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_health_check_type_without_its_config_is_refused(protocol):
    other = next(f for p, f in PROTOCOLS.items() if p != protocol)
    config = {"type": protocol, other: {"portSpecification": "USE_SERVING_PORT"}}
    assert refused(health_check_policy(config)) == [
        at("spec.default.config", "object", f"{PROTOCOLS[protocol]} must be specified for type {protocol}")]


@pytest.mark.parametrize("default, message", [
    ({"checkIntervalSec": 5, "timeoutSec": 10}, "timeOutSec cannot exceed checkIntervalSec"),
    ({"timeoutSec": 6}, "when checkIntervalSec is unspecified, timeOutSec cannot exceed 5, which is the default value "
                        "of checkIntervalSec"),
    ({"checkIntervalSec": 4}, "when timeoutSec is unspecified, checkIntervalSec must be at least 5, which is the "
                              "default value of timeoutSec"),
], ids=["timeout-over-interval", "timeout-over-default-interval", "interval-under-default-timeout"])
def test_each_interval_rule_refuses_its_violation(default, message):
    config = {"type": "HTTP", "httpHealthCheck": {"portSpecification": "USE_SERVING_PORT"}}
    assert refused(health_check_policy(config, **default)) == [at("spec.default", "object", message)]


def scaled_object(**spec) -> dict:
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "webui"},
            "spec": {"scaleTargetRef": {"name": "webui"},
                     "triggers": [{"type": "cron", "metadata": {"timezone": "UTC", "start": "0 9 * * *",
                                                                "end": "0 18 * * *", "desiredReplicas": "1"}}],
                     **spec}}


@pytest.mark.parametrize("bounds", [{"minReplicaCount": 3, "maxReplicaCount": 2}, {"minReplicaCount": 101}],
                         ids=["min-over-max", "min-over-default-max"])
def test_a_scaled_object_minimum_over_its_maximum_is_refused(bounds):
    assert refused(scaled_object(**bounds)) == [
        at("spec", "object", "minReplicaCount must be less than or equal to maxReplicaCount")]


def gateway(*listeners: dict) -> dict:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": "webui"},
            "spec": {"gatewayClassName": "gke-l7-rilb", "listeners": list(listeners)}}


HTTP = {"name": "http", "protocol": "HTTP", "port": 80}


@pytest.mark.parametrize("listeners, message", [
    ([HTTP, {**HTTP, "port": 8080}], "Listener name must be unique within the Gateway"),
    ([HTTP, {**HTTP, "name": "again"}], "Combination of port, protocol and hostname must be unique for each listener"),
    ([{**HTTP, "tls": {"mode": "Terminate", "certificateRefs": [{"name": "cert"}]}}],
     "tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']"),
    ([{"name": "https", "protocol": "HTTPS", "port": 443, "tls": {"mode": "Passthrough"}}],
     "tls mode must be Terminate for protocol HTTPS"),
], ids=["duplicate-name", "duplicate-port", "tls-on-http", "https-passthrough"])
def test_each_listener_rule_refuses_its_violation(listeners, message):
    assert refused(gateway(*listeners)) == [at("spec.listeners", "array", message)]


def test_a_terminating_listener_without_a_certificate_is_refused_at_its_tls():
    """A rule under `items` runs once per item, with `self` bound to that item's node."""
    https = {"name": "https", "protocol": "HTTPS", "port": 443, "tls": {"certificateRefs": [], "options": {}}}
    assert refused(gateway(HTTP, https)) == [
        at("spec.listeners.1.tls", "object", "certificateRefs or options must be specified when mode is Terminate")]


def route(**spec) -> dict:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "webui"},
            "spec": {"parentRefs": [{"name": "webui"}], **spec}}


def test_a_route_sees_the_defaults_the_api_server_fills_in():
    """parentRefs' group and kind, and a rule's path match, are defaulted before the rules read them."""
    assert refused(route(rules=[{"backendRefs": [{"name": "request-queue", "port": 8000}]}])) == []


@pytest.mark.parametrize("spec, where, kind, message", [
    ({"rules": [{"backendRefs": [{"name": "request-queue"}]}]}, "spec.rules.0.backendRefs.0", "object",
     "Must have port for Service reference"),
    ({"parentRefs": [{"name": "webui"}, {"name": "webui", "sectionName": "http"}]}, "spec.parentRefs", "array",
     "sectionName must be specified when parentRefs includes 2 or more references to the same parent"),
    ({"parentRefs": [{"name": "webui", "namespace": "a", "sectionName": "http"},
                     {"name": "webui", "namespace": "a", "sectionName": "http"}]}, "spec.parentRefs", "array",
     "sectionName must be unique when parentRefs includes 2 or more references to the same parent"),
    ({"rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/a//b"}}]}]}, "spec.rules.0.matches.0.path",
     "object", "must not contain '//' when type one of ['Exact', 'PathPrefix']"),
    ({"rules": [{"timeouts": {"request": "10s", "backendRequest": "1m"}}]}, "spec.rules.0.timeouts", "object",
     "backendRequest timeout cannot be longer than request timeout"),
], ids=["backend-without-port", "same-parent-twice", "same-section-twice", "double-slash", "backend-timeout"])
def test_route_rules_refuse_their_violations(spec, where, kind, message):
    assert refused(route(**spec)) == [at(where, kind, message)]


TRANSITION = {"apiVersion": "example.com/v1", "kind": "Frozen", "openAPIV3Schema": {
    "type": "object", "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                     "metadata": {"type": "object"},
                                     "spec": {"type": "object", "properties": {"zone": {
                                         "type": "string",
                                         "x-kubernetes-validations": [{"rule": "self == oldSelf",
                                                                       "message": "zone is immutable"}]}}}}}}


def test_a_transition_rule_runs_only_on_an_update(monkeypatch):
    monkeypatch.setitem(crd_schemas.schemas(), ("example.com/v1", "Frozen"), TRANSITION)
    created = {"apiVersion": "example.com/v1", "kind": "Frozen", "metadata": {"name": "a"}, "spec": {"zone": "a"}}
    moved = copy.deepcopy(created)
    moved["spec"]["zone"] = "b"
    assert refused(moved) == []
    assert refused(moved, old=created) == [at("spec.zone", "string", "zone is immutable")]
    assert refused(created, old=created) == []


def test_an_update_that_leaves_a_failing_value_unchanged_is_not_refused_for_it():
    """Validation ratcheting: only what the update changes must pass the rules that do not name oldSelf."""
    config = {"type": "HTTP", "httpHealthCheck": {"portSpecification": "USE_SERVING_PORT", "port": 8080}}
    stored = health_check_policy(config)
    relabelled = copy.deepcopy(stored)
    relabelled["metadata"]["labels"] = {"team": "ml"}
    assert refused(relabelled, old=stored) == []
    moved = copy.deepcopy(stored)
    moved["spec"]["default"]["config"]["httpHealthCheck"]["port"] = 8081
    assert refused(moved, old=stored) == [at("spec.default.config.httpHealthCheck", "object", SERVING)]


def test_rules_are_not_checked_on_an_object_of_the_wrong_shape():
    """kube-apiserver skips the rules after a type, enum, required or size error, and says so."""
    config = {"type": "HTTP", "httpHealthCheck": {"portSpecification": "USE_SERVING_PORT", "port": "8080"}}
    assert refused(health_check_policy(config)) == [
        "spec.default.config.httpHealthCheck.port: '8080' is not of type 'integer'", crd_schemas.RULES_NOT_CHECKED]


def every_rule():
    def walk(node):
        if isinstance(node, dict):
            yield from node.get("x-kubernetes-validations", [])
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)
    for (_, kind), doc in crd_schemas.schemas().items():
        for rule in walk(doc["openAPIV3Schema"]):
            yield kind, rule


def test_every_rule_names_the_crd_file_and_commit_it_is_quoted_from_and_compiles():
    rules = list(every_rule())
    assert {kind for kind, _ in rules} == {"Gateway", "HTTPRoute", "HealthCheckPolicy", "ScaledObject"}
    for kind, rule in rules:
        assert SOURCE.match(rule["source"]), (kind, rule)
        crd_schemas._program(rule["rule"])
