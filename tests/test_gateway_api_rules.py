"""Every CEL rule of Gateway API v1.2's Gateway and HTTPRoute CRDs (quoted in tests/schemas/gateway-api-docs/)
refuses a manifest that breaks it, with its message at its node, evaluated as kube-apiserver does
(tests/crd_schemas.py); a rule the schema itself shadows is listed with the schema error that refuses first."""

from __future__ import annotations

import pytest

from tests import crd_schemas

GATEWAY_API = "gateway.networking.k8s.io/v1"
HTTP = {"name": "http", "protocol": "HTTP", "port": 80}
PREFIX_MATCH = {"path": {"type": "PathPrefix", "value": "/"}}


def gateway(**spec) -> dict:
    return {"apiVersion": GATEWAY_API, "kind": "Gateway", "metadata": {"name": "webui"},
            "spec": {"gatewayClassName": "gke-l7-rilb", "listeners": [HTTP], **spec}}


def route(*rules: dict, **spec) -> dict:
    return {"apiVersion": GATEWAY_API, "kind": "HTTPRoute", "metadata": {"name": "webui"},
            "spec": {"parentRefs": [{"name": "webui"}], "rules": list(rules), **spec}}


def at(path: str, kind: str, message: str) -> str:
    return f'{path}: Invalid value: "{kind}": {message}'


def filter_of(kind: str) -> dict:
    """A filter of `kind` with the field its type requires, and nothing else."""
    field = kind[0].lower() + kind[1:] if kind != "URLRewrite" else "urlRewrite"
    body = {"RequestMirror": {"backendRef": {"name": "mirror", "port": 80}},
            "ExtensionRef": {"group": "example.com", "kind": "Filter", "name": "f"}}.get(kind, {})
    return {"type": kind, field: body}


def redirect_path(**path) -> dict:
    return {"type": "RequestRedirect", "requestRedirect": {"path": path}}


def rewrite_path(**path) -> dict:
    return {"type": "URLRewrite", "urlRewrite": {"path": path}}


BACKEND = {"name": "request-queue", "port": 8000}
FIELDS = {"RequestHeaderModifier": "requestHeaderModifier", "ResponseHeaderModifier": "responseHeaderModifier",
          "RequestMirror": "requestMirror", "RequestRedirect": "requestRedirect", "URLRewrite": "urlRewrite",
          "ExtensionRef": "extensionRef"}
PATH_RULES = "when type one of ['Exact', 'PathPrefix']"
VALID_CHARACTERS = ("must only contain valid characters (matching "
                    "^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$) for types ['Exact', 'PathPrefix']")


def filter_cases(where: str, place, either_rules: int) -> list:
    """The filter rules, which the CRD declares both on a rule's filters and on each backendRef's (there the
    redirect-or-rewrite rule twice)."""
    cases = [
        (place([filter_of("RequestRedirect"), filter_of("URLRewrite")]), [
            at(where, "array", "May specify either httpRouteFilterRequestRedirect or httpRouteFilterRequestRewrite, "
                               "but not both")] * either_rules),
    ]
    cases += [(place([filter_of(kind), filter_of(kind)]), [at(where, "array", f"{kind} filter cannot be repeated")])
              for kind in ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite")]
    for kind, field in FIELDS.items():
        cases.append((place([{"type": kind}]), [
            at(f"{where}.0", "object", f"filter.{field} must be specified for {kind} filter.type")]))
        other = "RequestHeaderModifier" if kind != "RequestHeaderModifier" else "ResponseHeaderModifier"
        cases.append((place([{**filter_of(other), field: filter_of(kind)[field]}]), [
            at(f"{where}.0", "object", f"filter.{field} must be nil if the filter.type is not {kind}")]))
    cases.append((place([{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "mirror"}}}]), [
        at(f"{where}.0.requestMirror.backendRef", "object", "Must have port for Service reference")]))
    for make, field in ((redirect_path, "requestRedirect"), (rewrite_path, "urlRewrite")):
        path = f"{where}.0.{field}.path"
        cases += [
            (place([make(type="ReplaceFullPath")]), [
                at(path, "object", "replaceFullPath must be specified when type is set to 'ReplaceFullPath'")]),
            (place([make(type="ReplacePrefixMatch", replaceFullPath="/a")]), [
                at(path, "object", "type must be 'ReplaceFullPath' when replaceFullPath is set"),
                at(path, "object", "replacePrefixMatch must be specified when type is set to 'ReplacePrefixMatch'")]),
            (place([make(type="ReplaceFullPath", replacePrefixMatch="/a")]), [
                at(path, "object", "replaceFullPath must be specified when type is set to 'ReplaceFullPath'"),
                at(path, "object", "type must be 'ReplacePrefixMatch' when replacePrefixMatch is set")]),
        ]
    return cases


def in_rule(filters: list) -> dict:
    return route({"filters": filters})


def in_backend_ref(filters: list) -> dict:
    return route({"backendRefs": [{**BACKEND, "filters": filters}]})


def path_match(value: str, type_: str = "PathPrefix") -> dict:
    return route({"matches": [{"path": {"type": type_, "value": value}}], "backendRefs": [BACKEND]})


PATH = "spec.rules.0.matches.0.path"
ROUTE_CASES = [
    *filter_cases("spec.rules.0.filters", in_rule, either_rules=1),
    *filter_cases("spec.rules.0.backendRefs.0.filters", in_backend_ref, either_rules=2),
    (route({"backendRefs": [{"name": "request-queue"}]}), [
        at("spec.rules.0.backendRefs.0", "object", "Must have port for Service reference")]),
    (route(parentRefs=[{"name": "webui"}, {"name": "webui", "sectionName": "http"}]), [
        at("spec.parentRefs", "array",
           "sectionName must be specified when parentRefs includes 2 or more references to the same parent")]),
    (route(parentRefs=[{"name": "webui", "sectionName": "http"}, {"name": "webui", "sectionName": "http"}]), [
        at("spec.parentRefs", "array",
           "sectionName must be unique when parentRefs includes 2 or more references to the same parent")]),
    (route(*[{"matches": [PREFIX_MATCH] * 64} for _ in range(3)]), [
        at("spec.rules", "array", "While 16 rules and 64 matches per rule are allowed, the total number of matches "
                                  "across all rules in a route must be less than 128")]),
    (route({"backendRefs": [BACKEND], "filters": [filter_of("RequestRedirect")]}), [
        at("spec.rules.0", "object", "RequestRedirect filter must not be used together with backendRefs")]),
    (route({"matches": [{"path": {"type": "Exact", "value": "/a"}}],
            "filters": [redirect_path(type="ReplacePrefixMatch", replacePrefixMatch="/b")]}), [
        at("spec.rules.0", "object", "When using RequestRedirect filter with path.replacePrefixMatch, exactly one "
                                     "PathPrefix match must be specified")]),
    (route({"matches": [{"path": {"type": "Exact", "value": "/a"}}],
            "filters": [rewrite_path(type="ReplacePrefixMatch", replacePrefixMatch="/b")]}), [
        at("spec.rules.0", "object", "When using URLRewrite filter with path.replacePrefixMatch, exactly one "
                                     "PathPrefix match must be specified")]),
    (route({"matches": [{"path": {"type": "Exact", "value": "/a"}}], "backendRefs": [
        {**BACKEND, "filters": [redirect_path(type="ReplacePrefixMatch", replacePrefixMatch="/b")]}]}), [
        at("spec.rules.0", "object", "Within backendRefs, when using RequestRedirect filter with "
                                     "path.replacePrefixMatch, exactly one PathPrefix match must be specified")]),
    (route({"matches": [{"path": {"type": "Exact", "value": "/a"}}], "backendRefs": [
        {**BACKEND, "filters": [rewrite_path(type="ReplacePrefixMatch", replacePrefixMatch="/b")]}]}), [
        at("spec.rules.0", "object", "Within backendRefs, When using URLRewrite filter with "
                                     "path.replacePrefixMatch, exactly one PathPrefix match must be specified")]),
    (path_match("a"), [at(PATH, "object", f"value must be an absolute path and start with '/' {PATH_RULES}")]),
    (path_match("/a//b"), [at(PATH, "object", f"must not contain '//' {PATH_RULES}")]),
    (path_match("/a/./b"), [at(PATH, "object", f"must not contain '/./' {PATH_RULES}")]),
    (path_match("/a/../b"), [at(PATH, "object", f"must not contain '/../' {PATH_RULES}")]),
    (path_match("/a%2fb"), [at(PATH, "object", f"must not contain '%2f' {PATH_RULES}")]),
    (path_match("/a%2Fb"), [at(PATH, "object", f"must not contain '%2F' {PATH_RULES}")]),
    (path_match("/a#b", "Exact"), [at(PATH, "object", f"must not contain '#' {PATH_RULES}"),
                                   at(PATH, "object", VALID_CHARACTERS)]),
    (path_match("/a/.."), [at(PATH, "object", f"must not end with '/..' {PATH_RULES}")]),
    (path_match("/a/."), [at(PATH, "object", f"must not end with '/.' {PATH_RULES}")]),
    (path_match("/a b"), [at(PATH, "object", VALID_CHARACTERS)]),
    (route({"timeouts": {"request": "10s", "backendRequest": "1m"}}), [
        at("spec.rules.0.timeouts", "object", "backendRequest timeout cannot be longer than request timeout")]),
]

TCP = {"name": "tcp", "protocol": "TCP", "port": 9000}
GATEWAY_CASES = [
    (gateway(listeners=[HTTP, {**HTTP, "port": 8080}]), [
        at("spec.listeners", "array", "Listener name must be unique within the Gateway")]),
    (gateway(listeners=[HTTP, {**HTTP, "name": "again"}]), [
        at("spec.listeners", "array", "Combination of port, protocol and hostname must be unique for each listener")]),
    (gateway(listeners=[{**HTTP, "tls": {"mode": "Terminate", "certificateRefs": [{"name": "cert"}]}}]), [
        at("spec.listeners", "array", "tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']")]),
    (gateway(listeners=[{"name": "https", "protocol": "HTTPS", "port": 443, "tls": {"mode": "Passthrough"}}]), [
        at("spec.listeners", "array", "tls mode must be Terminate for protocol HTTPS")]),
    (gateway(listeners=[{**TCP, "hostname": "a.example.com"}]), [
        at("spec.listeners", "array", "hostname must not be specified for protocols ['TCP', 'UDP']")]),
    (gateway(listeners=[HTTP, {"name": "https", "protocol": "HTTPS", "port": 443,
                               "tls": {"certificateRefs": [], "options": {}}}]), [
        at("spec.listeners.1.tls", "object", "certificateRefs or options must be specified when mode is Terminate")]),
    (gateway(addresses=[{"type": "IPAddress", "value": "10.0.0.1"}, {"value": "10.0.0.1"}]), [
        at("spec.addresses", "array", "IPAddress values must be unique")]),
    (gateway(addresses=[{"type": "Hostname", "value": "a.example.com"}] * 2), [
        at("spec.addresses", "array", "Hostname values must be unique")]),
    (gateway(addresses=[{"type": "Hostname", "value": "Not_A_Host"}]), [
        at("spec.addresses.0", "object", "Hostname value must only contain valid characters (matching "
                                         "^(\\*\\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$)")]),
    *[(gateway(infrastructure={field: {"bad key!": "v"}}), [
        at(f"spec.infrastructure.{field}", "object", f"{noun} keys must be in the form of an optional DNS subdomain "
           "prefix followed by a required name segment of up to 63 characters.")])
      for field, noun in (("annotations", "Annotation"), ("labels", "Label"))],
    *[(gateway(infrastructure={field: {"a" * 253 + "/x": "v"}}), [
        at(f"spec.infrastructure.{field}", "object", f"If specified, the {noun} key's prefix must be a DNS subdomain "
           "not longer than 253 characters in total.")])
      for field, noun in (("annotations", "annotation"), ("labels", "label"))],
]

SHADOWED = {
    ("HTTPRoute", "spec.rules.matches.path", "type must be one of ['Exact', 'PathPrefix', 'RegularExpression']"):
        "the schema's enum for path.type refuses any other value first, and the rules are then not checked",
}


def test_a_route_sees_the_defaults_the_api_server_fills_in():
    """parentRefs' group and kind, and a rule's path match, are defaulted before the rules read them."""
    assert crd_schemas.validate(route({"backendRefs": [BACKEND]})) == []


@pytest.mark.parametrize("manifest, expected", GATEWAY_CASES + ROUTE_CASES)
def test_each_rule_refuses_its_violation(manifest, expected):
    assert crd_schemas.validate(manifest) == expected


def test_a_path_type_the_enum_refuses_is_refused_before_the_rules_run():
    refused = crd_schemas.validate(path_match("/a", "Regex"))
    assert refused[-1] == crd_schemas.RULES_NOT_CHECKED and "'Regex' is not one of" in refused[0]


@pytest.mark.parametrize("kind", ["Gateway", "HTTPRoute"])
def test_every_rule_of_the_kind_has_a_violation_above_or_is_shadowed_by_the_schema(kind):
    refused = set().union(*(crd_schemas.failed_rules(expected) for manifest, expected in GATEWAY_CASES + ROUTE_CASES
                            if manifest["kind"] == kind))
    assert crd_schemas.declared_rules(GATEWAY_API, kind) - refused == {
        (path, message) for shadowed_kind, path, message in SHADOWED if shadowed_kind == kind}
