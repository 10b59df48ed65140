"""The only way in from outside the VPC: the stack's Gateway, public only with HTTPS, a certificate and IAP."""

from __future__ import annotations

import re

from pulumi_policy import StackValidationArgs
from resources import BACKEND_POLICY, GATEWAY, HTTP_ROUTE, SERVICE, WORKLOADS, containers, get, pod_spec, workload_of

INTERNAL_GATEWAY_CLASSES = ("gke-l7-rilb", "gke-l7-rilb-mc", "gke-l7-cross-regional-internal-managed-mc")
"""Internal Application Load Balancers: reachable from the VPC only
(https://cloud.google.com/kubernetes-engine/docs/how-to/gatewayclass-capabilities). Every other class is public."""
CERTIFICATE_ANNOTATIONS = ("networking.gke.io/certmap",)
PRE_SHARED_CERTS = "networking.gke.io/pre-shared-certs"


def public_gateway_tls_and_auth(args: StackValidationArgs, report):
    """A public Gateway listens on HTTPS only, with a certificate, and every backend behind it requires IAP."""
    routes = [r for r in args.resources if r.resource_type == HTTP_ROUTE]
    policies = {(workload_of(r.props)[0], get(r.props, "spec", "targetRef", "name")): r
                for r in args.resources if r.resource_type == BACKEND_POLICY}
    for gw in (r for r in args.resources if r.resource_type == GATEWAY):
        if get(gw.props, "spec", "gatewayClassName") in INTERNAL_GATEWAY_CLASSES:
            continue
        namespace, name = workload_of(gw.props)
        annotations = get(gw.props, "metadata", "annotations") or {}
        for listener in get(gw.props, "spec", "listeners") or []:
            if listener.get("protocol") != "HTTPS":
                report(f"Public Gateway {namespace}/{name} has a {listener.get('protocol')} listener "
                       f"{listener.get('name')!r}: a public endpoint serves HTTPS only.", gw.urn)
                continue
            tls = listener.get("tls") or {}
            if not (any(annotations.get(a) for a in CERTIFICATE_ANNOTATIONS) or tls.get("certificateRefs")
                    or (tls.get("options") or {}).get(PRE_SHARED_CERTS)):
                report(f"Public Gateway {namespace}/{name}: HTTPS listener {listener.get('name')!r} has no certificate "
                       "(networking.gke.io/certmap, tls.certificateRefs or pre-shared-certs).", gw.urn)
        for route in routes:
            route_ns = workload_of(route.props)[0]
            parents = get(route.props, "spec", "parentRefs") or []
            if not any(p.get("name") == name and (p.get("namespace") or route_ns) == namespace for p in parents):
                continue
            for rule in get(route.props, "spec", "rules") or []:
                for ref in rule.get("backendRefs") or []:
                    backend_ns = ref.get("namespace") or route_ns
                    policy = policies.get((backend_ns, ref.get("name")))
                    if get(policy.props if policy else {}, "spec", "default", "iap", "enabled") is not True:
                        report(f"Public Gateway {namespace}/{name} reaches Service {backend_ns}/{ref.get('name')} "
                               "without authentication: enable IAP in its GCPBackendPolicy.", route.urn)


PROTECTED_NAMESPACES = {"sd-webui": "the WebUI", "request-queue": "the request queue"}
"""Where the WebUI and the request queue (the front) run (components/webui.py, components/request_queue.py NAMESPACE):
every pod there is reached from outside the VPC only through the public Gateway, whose TLS and IAP the
gateway-public-requires-tls-and-auth policy checks."""
PROTECTED_APPS = ("webui", "request-queue")
"""Their pods' `app.kubernetes.io/name` (components/labels.py): a copy of them in another namespace is theirs too."""
APP_LABEL = "app.kubernetes.io/name"
INGRESS = re.compile(r"^kubernetes:(networking\.k8s\.io|extensions)/v[^:]+:Ingress$")
ROUTE = re.compile(r"^kubernetes:gateway\.networking\.k8s\.io/v[^:]+:(HTTP|GRPC|TLS|TCP|UDP)Route$")
ANY_GATEWAY = re.compile(r"^kubernetes:gateway\.networking\.k8s\.io/v[^:]+:Gateway$")


def _namespace(props: dict) -> str:
    """An object without a namespace lands in `default`."""
    return workload_of(props)[0] or "default"


def _pod_labels(r) -> dict:
    return get(r.props, *WORKLOADS[r.resource_type][:-1], "metadata", "labels") or {}


def _whose(r) -> str | None:
    """Whose pods r runs, if they are the WebUI's or the request queue's."""
    if _namespace(r.props) in PROTECTED_NAMESPACES:
        return PROTECTED_NAMESPACES[_namespace(r.props)]
    app = _pod_labels(r).get(APP_LABEL)
    return PROTECTED_NAMESPACES["sd-webui" if app == "webui" else "request-queue"] if app in PROTECTED_APPS else None


def _protected_services(resources) -> dict[tuple[str, str], str]:
    """(namespace, name) of every Service in front of those pods -> whose pods they are. A Service in their
    namespace counts whatever it selects: a selector-less one takes hand-written endpoints."""
    workloads = [r for r in resources if pod_spec(r.resource_type, r.props) is not None and _whose(r)]
    found = {}
    for svc in (r for r in resources if r.resource_type == SERVICE):
        key = (_namespace(svc.props), workload_of(svc.props)[1])
        selector = get(svc.props, "spec", "selector") or {}
        if key[0] in PROTECTED_NAMESPACES:
            found[key] = PROTECTED_NAMESPACES[key[0]]
        for w in workloads:
            if selector and _namespace(w.props) == key[0] and all(_pod_labels(w).get(k) == v for k, v in selector.items()):
                found[key] = _whose(w)
    return found


def _owner(protected: dict[tuple[str, str], str], namespace: str, service: str | None) -> str | None:
    """Whose pods a Service reached by (namespace, name) fronts: any Service in their namespaces is theirs."""
    return protected.get((namespace, service)) or PROTECTED_NAMESPACES.get(namespace)


def _ingress_backends(ingress: dict) -> set[str]:
    spec = ingress.get("spec") or {}
    backends = [spec.get("defaultBackend"), spec.get("backend")]
    backends += [p.get("backend") for rule in spec.get("rules") or [] for p in get(rule, "http", "paths") or []]
    return {get(b, "service", "name") or get(b, "serviceName") for b in backends if b} - {None}


def _exposed_service(r, protected, report) -> None:
    namespace, name = _namespace(r.props), workload_of(r.props)[1]
    if (namespace, name) not in protected:
        return
    service_type, external_ips = get(r.props, "spec", "type"), get(r.props, "spec", "externalIPs")
    exposed = [f"type {service_type}"] if service_type in ("LoadBalancer", "NodePort") else []
    exposed += [f"externalIPs {external_ips}"] if external_ips else []
    if exposed:
        report(f"Service {namespace}/{name} ({', '.join(exposed)}) lets traffic from outside the VPC reach "
               f"{protected[(namespace, name)]}'s pods around the Gateway's TLS and IAP: make it a ClusterIP Service "
               "without externalIPs.", r.urn)


def _ingress(r, protected, report) -> None:
    namespace, name = _namespace(r.props), workload_of(r.props)[1]
    owners = sorted({o for s in _ingress_backends(r.props) if (o := _owner(protected, namespace, s))}
                    | ({PROTECTED_NAMESPACES[namespace]} if namespace in PROTECTED_NAMESPACES else set()))
    if owners:
        report(f"Ingress {namespace}/{name} routes to {' and '.join(owners)} in namespace {namespace}: the Gateway is "
               "the only way in from outside the VPC; delete the Ingress.", r.urn)


def _route(r, protected, gateways, report) -> None:
    namespace, name = _namespace(r.props), workload_of(r.props)[1]
    owners = sorted({o for rule in get(r.props, "spec", "rules") or [] for ref in rule.get("backendRefs") or []
                     if (o := _owner(protected, ref.get("namespace") or namespace, ref.get("name")))})
    foreign = sorted(f"{p.get('kind') or 'Gateway'} {p.get('namespace') or namespace}/{p.get('name')}"
                     for p in get(r.props, "spec", "parentRefs") or []
                     if (p.get("kind") or "Gateway") != "Gateway"
                     or (p.get("namespace") or namespace, p.get("name")) not in gateways)
    if owners and foreign:
        report(f"{r.resource_type.rsplit(':', 1)[-1]} {namespace}/{name} attaches {' and '.join(owners)} to "
               f"{', '.join(foreign)}, which this stack does not declare, so no policy checks its TLS and IAP: attach "
               "it to the stack's Gateway only.", r.urn)


def _host_network_or_ports(r, report) -> None:
    owner = _whose(r)
    if owner is None:
        return
    pod, kind = pod_spec(r.resource_type, r.props), r.resource_type.rsplit(":", 1)[-1]
    namespace, name = _namespace(r.props), workload_of(r.props)[1]
    if pod.get("hostNetwork"):
        report(f"{kind} {namespace}/{name} runs {owner}'s pods with hostNetwork, answering on the node's address "
               "around the Gateway: drop hostNetwork.", r.urn)
    for container in containers(pod):
        ports = sorted(p["hostPort"] for p in container.get("ports") or [] if p.get("hostPort"))
        if ports:
            report(f"{kind} {namespace}/{name}: container {container.get('name')!r} of {owner}'s pods takes hostPort "
                   f"{', '.join(map(str, ports))}, answering on the node's address around the Gateway: drop it.", r.urn)


def only_the_gateway_reaches_the_webui(args: StackValidationArgs, report):
    """From outside the VPC, the WebUI's and the request queue's pods are reached through the stack's Gateway
    only, never around its TLS and IAP: no Service of type LoadBalancer or NodePort or with externalIPs in front
    of them (https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types,
    #external-ips), no Ingress (GKE's default Ingress class is an external Application Load Balancer:
    https://cloud.google.com/kubernetes-engine/docs/concepts/ingress), no route attached to a Gateway the stack
    does not declare, and no hostNetwork or hostPort on their pods (either answers on the node's own address:
    https://kubernetes.io/docs/concepts/configuration/overview/#services)."""
    protected = _protected_services(args.resources)
    gateways = {(_namespace(r.props), workload_of(r.props)[1]) for r in args.resources if ANY_GATEWAY.match(r.resource_type)}
    for r in args.resources:
        if r.resource_type == SERVICE:
            _exposed_service(r, protected, report)
        elif INGRESS.match(r.resource_type):
            _ingress(r, protected, report)
        elif ROUTE.match(r.resource_type):
            _route(r, protected, gateways, report)
        elif pod_spec(r.resource_type, r.props) is not None:
            _host_network_or_ports(r, report)
