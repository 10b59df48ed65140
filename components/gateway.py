"""The way in: a GKE Gateway in front of the request queue (components/request_queue.py).

Internal by default (class gke-l7-rilb, a regional internal Application Load Balancer, which needs a
proxy-only subnet in the region: https://cloud.google.com/load-balancing/docs/proxy-only-subnets).
Public (webui.public) means class gke-l7-global-external-managed with an HTTPS listener only, its
certificate from a Certificate Manager map (`networking.gke.io/certmap`,
https://cloud.google.com/kubernetes-engine/docs/how-to/secure-gateway#secure-using-certificate-manager)
and Identity-Aware Proxy on the backend (GCPBackendPolicy `iap`,
https://cloud.google.com/kubernetes-engine/docs/how-to/configure-gateway-resources#configure_iap).

The load balancer's backend timeout defaults to 30 s (GCPBackendPolicy `timeoutSec`, same page);
a request held through a cold start needs minutes, so it is set from the timeout chain.
GCPBackendPolicy and HealthCheckPolicy must sit in the namespace of the Service they target (same page,
"Restrictions and limitations"), so everything here lives in the request queue's namespace.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

from components.config import GatewayConfig
from components.labels import k8s_labels

INTERNAL_CLASS = "gke-l7-rilb"
PUBLIC_CLASS = "gke-l7-global-external-managed"
"""GatewayClasses: https://cloud.google.com/kubernetes-engine/docs/concepts/gateway-api#gatewayclass"""
FORWARDED_FOR_ENTRIES = {PUBLIC_CLASS: 2, INTERNAL_CLASS: 1}
"""How many X-Forwarded-For entries, counted from the end, a class's proxies append; the first of them is the
client's address, anything before it the client may have written. The global external Application Load
Balancer appends `<client-ip>,<load-balancer-ip>` (https://cloud.google.com/load-balancing/docs/https,
"X-Forwarded-For header"). For the regional internal one (Envoy) no such format was found in Google's
documentation, so only the last entry is trusted: if it too appends its own address, every caller through it
is one caller (docs/request-queue.md, "Who is a caller"), but no client can pass for another."""
CERTMAP_ANNOTATION = "networking.gke.io/certmap"
HEALTH_CHECK_RANGES = ("35.191.0.0/16", "130.211.0.0/22")
"""Where Google's health checks come from; the global external Application Load Balancer's proxies
(GFEs) use the same ranges for zonal NEG backends, and an Envoy-based internal one sends from its
proxy-only subnet (https://cloud.google.com/load-balancing/docs/firewall-rules, "Minimum required
ingress allow firewall rules")."""
GATEWAY_API = "gateway.networking.k8s.io/v1"
GKE_POLICY_API = "networking.gke.io/v1"


@dataclass
class Backend:
    """The Service the load balancer sends to, and where the health check asks whether a pod serves."""

    namespace: pulumi.Input[str]
    service: str
    port: int
    health_port: int
    health_path: str


@dataclass
class GatewayArgs:
    config: GatewayConfig
    public: bool
    environment: str
    region: str
    network: pulumi.Input[str]
    backend: Backend
    backend_timeout_seconds: int


def gateway_class(public: bool) -> str:
    return PUBLIC_CLASS if public else INTERNAL_CLASS


def forwarded_for_entries(cfg: GatewayConfig, public: bool) -> int:
    """X-Forwarded-For entries the request queue trusts: none without a Gateway (the peer is the client)."""
    return FORWARDED_FOR_ENTRIES[gateway_class(public)] if cfg.enabled else 0


def load_balancer_sources(cfg: GatewayConfig, public: bool) -> list[str]:
    """Where the load balancer's proxies and its health checks connect to the backend pods from."""
    return list(HEALTH_CHECK_RANGES) + ([] if public else [cfg.proxy_only_cidr])


def listeners(public: bool) -> list[dict]:
    """Public: HTTPS only (no plain-HTTP listener at all); internal: HTTP inside the VPC."""
    if public:
        return [{"name": "https", "protocol": "HTTPS", "port": 443}]
    return [{"name": "http", "protocol": "HTTP", "port": 80}]


def backend_policy_spec(backend: Backend, timeout_seconds: int, cfg: GatewayConfig, public: bool) -> dict:
    default: dict = {"timeoutSec": timeout_seconds}
    if public:
        default["iap"] = {"enabled": True, "clientID": cfg.iap_client_id,
                          "oauth2ClientSecret": {"name": cfg.iap_secret_name}}
    return {"default": default, "targetRef": {"group": "", "kind": "Service", "name": backend.service}}


def health_check_spec(backend: Backend) -> dict:
    """Ask the backend's health endpoint whether it serves (the request queue's /healthz: 503 while it drains).

    A fixed port needs `portSpecification: USE_FIXED_PORT`: the CRD's rules refuse `port` under the default
    (USE_SERVING_PORT) and fail on a missing `portSpecification` (GoogleCloudPlatform/gke-gateway-api
    @fc40d606a5332f11a8883f85caff66b63c4e88ef config/crd/networking.gke.io_healthcheckpolicies.yaml,
    httpHealthCheck x-kubernetes-validations; tests/schemas/gke-docs/HealthCheckPolicy.json holds them)."""
    return {
        "default": {"config": {"type": "HTTP", "httpHealthCheck": {
            "portSpecification": "USE_FIXED_PORT", "port": backend.health_port, "requestPath": backend.health_path,
        }}},
        "targetRef": {"group": "", "kind": "Service", "name": backend.service},
    }


class Gateway(pulumi.ComponentResource):
    """Gateway, HTTPRoute, GCPBackendPolicy and HealthCheckPolicy; the proxy-only subnet when internal."""

    def __init__(self, name: str, args: GatewayArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sdgke:gateway:Gateway", name, None, opts)
        cfg, backend = args.config, args.backend
        child = pulumi.ResourceOptions(parent=self)
        labels = k8s_labels("gateway", args.environment)
        sources = load_balancer_sources(cfg, args.public)
        gcp.compute.Firewall(
            f"{name}-load-balancer-to-backend",
            network=args.network,
            direction="INGRESS",
            source_ranges=sources,
            allows=[gcp.compute.FirewallAllowArgs(protocol="tcp", ports=sorted({str(backend.port), str(backend.health_port)}))],
            description="The WebUI Gateway's load balancer and its health checks to the request queue's pods",
            opts=child,
        )
        depends = []
        if not args.public:
            depends.append(gcp.compute.Subnetwork(
                f"{name}-proxy-only",
                name=f"{name}-proxy-only",
                region=args.region,
                network=args.network,
                ip_cidr_range=cfg.proxy_only_cidr,
                purpose="REGIONAL_MANAGED_PROXY",
                role="ACTIVE",
                opts=child,
            ))
        annotations = {CERTMAP_ANNOTATION: cfg.certificate_map} if args.public else None
        self.gateway = k8s.apiextensions.CustomResource(
            f"{name}-gateway",
            api_version=GATEWAY_API, kind="Gateway",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="webui", namespace=backend.namespace, labels=labels,
                                                annotations=annotations),
            spec={"gatewayClassName": gateway_class(args.public),
                  "listeners": listeners(args.public)},
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends),
        )
        route: dict = {
            "parentRefs": [{"name": "webui"}],
            "rules": [{"backendRefs": [{"name": backend.service, "port": backend.port}]}],
        }
        if cfg.hostname:
            route["hostnames"] = [cfg.hostname]
        self.route = k8s.apiextensions.CustomResource(
            f"{name}-route",
            api_version=GATEWAY_API, kind="HTTPRoute",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="webui", namespace=backend.namespace, labels=labels),
            spec=route,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.gateway]),
        )
        self.backend_policy = k8s.apiextensions.CustomResource(
            f"{name}-backend-policy",
            api_version=GKE_POLICY_API, kind="GCPBackendPolicy",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="webui", namespace=backend.namespace, labels=labels),
            spec=backend_policy_spec(backend, args.backend_timeout_seconds, cfg, args.public),
            opts=child,
        )
        k8s.apiextensions.CustomResource(
            f"{name}-health-check",
            api_version=GKE_POLICY_API, kind="HealthCheckPolicy",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="webui", namespace=backend.namespace, labels=labels),
            spec=health_check_spec(backend),
            opts=child,
        )
        self.name = "webui"
        self.register_outputs({"gateway": self.name})
