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


PORT_VIOLATIONS = [
    ({"portSpecification": "USE_FIXED_PORT"}, FIXED),
    ({"portSpecification": "USE_FIXED_PORT", "port": 8080, "portName": "http"}, FIXED),
    ({"portSpecification": "USE_NAMED_PORT", "port": 8080, "portName": "http"}, NAMED),
    ({"portSpecification": "USE_NAMED_PORT"}, NAMED),
    ({"portSpecification": "USE_SERVING_PORT", "port": 8080}, SERVING),
    ({"portSpecification": "USE_SERVING_PORT", "portName": "http"}, SERVING),
]
SERVING_CHECK = {"type": "HTTP", "httpHealthCheck": {"portSpecification": "USE_SERVING_PORT"}}
INTERVAL_VIOLATIONS = [
    ({"checkIntervalSec": 5, "timeoutSec": 10}, "timeOutSec cannot exceed checkIntervalSec"),
    ({"timeoutSec": 6}, "when checkIntervalSec is unspecified, timeOutSec cannot exceed 5, which is the default value "
                        "of checkIntervalSec"),
    ({"checkIntervalSec": 4}, "when timeoutSec is unspecified, checkIntervalSec must be at least 5, which is the "
                              "default value of timeoutSec"),
]


def other_check(protocol: str) -> dict:
    return {next(f for p, f in PROTOCOLS.items() if p != protocol): {"portSpecification": "USE_SERVING_PORT"}}


HEALTH_CHECK_CASES = [
    *[(health_check_policy({"type": protocol, field: check}), [at(f"spec.default.config.{field}", "object", message)])
      for protocol, field in PROTOCOLS.items() for check, message in PORT_VIOLATIONS],
    *[(health_check_policy({"type": protocol, **other_check(protocol)}), [
        at("spec.default.config", "object", f"{field} must be specified for type {protocol}")])
      for protocol, field in PROTOCOLS.items()],
    *[(health_check_policy(SERVING_CHECK, **default), [at("spec.default", "object", message)])
      for default, message in INTERVAL_VIOLATIONS],
]


def scaled_object(**spec) -> dict:
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "webui"},
            "spec": {"scaleTargetRef": {"name": "webui"},
                     "triggers": [{"type": "cron", "metadata": {"timezone": "UTC", "start": "0 9 * * *",
                                                                "end": "0 18 * * *", "desiredReplicas": "1"}}],
                     **spec}}


SCALED_OBJECT_CASES = [
    (scaled_object(**bounds), [at("spec", "object", "minReplicaCount must be less than or equal to maxReplicaCount")])
    for bounds in ({"minReplicaCount": 3, "maxReplicaCount": 2}, {"minReplicaCount": 101})
]
CASES = HEALTH_CHECK_CASES + SCALED_OBJECT_CASES


@pytest.mark.parametrize("manifest, expected", CASES)
def test_each_rule_refuses_its_violation(manifest, expected):
    assert refused(manifest) == expected


@pytest.mark.parametrize("api_version, kind", [("networking.gke.io/v1", "HealthCheckPolicy"),
                                               ("keda.sh/v1alpha1", "ScaledObject")])
def test_every_rule_of_the_kind_has_a_violation_above(api_version, kind):
    refused_rules = set().union(*(crd_schemas.failed_rules(expected) for manifest, expected in CASES
                                  if manifest["kind"] == kind))
    assert crd_schemas.declared_rules(api_version, kind) == refused_rules


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
