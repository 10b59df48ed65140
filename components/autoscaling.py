"""Demand-driven WebUI replicas: KEDA and its HTTP add-on, from zero to N and back, on requests.

The add-on's interceptor sits in front of the WebUI Service: it counts in-flight requests, holds a
request while no WebUI pod is ready, and feeds the counts to KEDA, which scales the Deployment
(kedacore/charts@cbb9bb8 v2.20.2; kedacore/http-add-on@v0.15.0 interceptor/proxy.go: the handler
chain Counting -> Placeholder -> EndpointResolver -> Upstream).

Two routes to the one WebUI Service, both feeding one ScaledObject:
- `/sdapi/` (the API): one in-flight generation per replica (`scalingMetric.concurrency.targetValue: 1`);
  a request that arrives during a cold start waits at the interceptor up to the readiness timeout
  (middleware/endpoint_resolver.go WaitForReady) and then goes through.
- everything else (the browser UI): while no pod is ready the interceptor answers at once with a
  "starting" page (`coldStart.placeholder`, middleware/placeholder.go), and the visit itself wakes a
  pod: the route scales on request rate, so a one-off page load still counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

from components.config import AutoscalingConfig
from components.labels import k8s_labels, pod_security_labels

NAMESPACE = "keda"
KEDA_OPERATOR_SERVICE_ACCOUNT = "keda-operator"
"""The operator's service account as the chart names it (keda/values.yaml `serviceAccount.operator.name`, v2.20.2)."""
CHART_REPOSITORY = "https://kedacore.github.io/charts"
"""kedacore/charts README: `helm repo add kedacore https://kedacore.github.io/charts`."""
KEDA_CHART = "keda"
HTTP_ADD_ON_CHART = "keda-add-ons-http"
SYSTEM_NODE_SELECTOR = {"sd-gke/pool": "system"}
"""The system pool's label (components/cluster.py): KEDA and the add-on never take a GPU node."""
SCALER_ADDRESS = f"{HTTP_ADD_ON_CHART}-external-scaler.{NAMESPACE}:9090"
"""The add-on scaler's gRPC Service: `{{ .Chart.Name }}-{{ .Values.scaler.service }}` on
`scaler.grpcPort` (http-add-on/templates/scaler/service.yaml, values.yaml at v2.20.2)."""
INTERCEPTOR_PROXY = f"{HTTP_ADD_ON_CHART}-interceptor-proxy"
INTERCEPTOR_PROXY_PORT = 8080
INTERCEPTOR_ADMIN_PORT = 9090
INTERCEPTOR_READY_PATH = "/readyz"
"""The interceptor's readiness endpoint on its admin port (templates/interceptor/deployment.yaml)."""
ADD_ON_UID = 65532
"""The add-on's images are built with ko (http-add-on@v0.15.0 .ko.yaml), whose images run as 65532."""
API_PATH = "/sdapi/"
STARTING_PAGE = Path(__file__).resolve().parent.parent / "images" / "webui" / "starting.html"
RESPONSE_BODY_LABEL = {"http.keda.sh/response-body": "true"}
"""A placeholder body in a ConfigMap must carry this label (v1beta1 StaticResponse.bodyFromConfigMap)."""
STARTING_RETRY_SECONDS = 15
UI_REQUEST_RATE_PER_REPLICA = 50
"""UI traffic (page loads, assets, Gradio polling) wakes one pod; it asks for a second only past this rate."""
MARGIN_SECONDS = 30
"""Slack between links of the timeout chain: connection set-up, upload, the interceptor's own hop."""
INTERCEPTOR_SHUTDOWN_DELAY_SECONDS = 5
CONTROL_PLANE_PORTS = ("6443", "9443")
"""What the API server calls on KEDA's pods: the metrics server (keda/values.yaml service.portHttpsTarget)
and the admission webhooks (webhooks.port, default 9443). A private cluster's control plane reaches nodes
on 443 and 10250 only until a firewall rule opens more
(https://cloud.google.com/kubernetes-engine/docs/how-to/private-clusters#add_firewall_rules): without it the
HPA gets no external metric (no scaling past one pod) and ScaledObjects fail admission."""


@dataclass(frozen=True)
class TimeoutChain:
    """Every timeout a request held through a cold start meets, outermost last.

    generation < response_header: the interceptor waits for one generation's first byte;
    readiness: how long a request waits at the interceptor for a ready pod;
    request = readiness + response_header: the interceptor's total for one request;
    load_balancer >= request: the Gateway's backend timeout (GCPBackendPolicy timeoutSec).
    """

    generation: int
    response_header: int
    readiness: int
    request: int
    load_balancer: int

    @classmethod
    def of(cls, generation_seconds: int, cold_start_seconds: int) -> TimeoutChain:
        response_header = generation_seconds + MARGIN_SECONDS
        request = cold_start_seconds + response_header
        return cls(generation_seconds, response_header, cold_start_seconds, request, request + MARGIN_SECONDS)


@dataclass
class AutoscalingArgs:
    config: AutoscalingConfig
    environment: str
    generation_timeout_seconds: int
    namespace: pulumi.Input[str]
    deployment: pulumi.Input[str]
    service: pulumi.Input[str]
    service_port: str
    network: pulumi.Input[str]
    control_plane_cidr: str
    backlog: BacklogScaling | None = None


@dataclass
class BacklogScaling:
    """A queue's backlog as a second way to wake the WebUI: one ScaledObject carries it beside the HTTP
    triggers (KEDA takes the largest replica count any trigger asks for,
    https://keda.sh/docs/2.20/concepts/scaling-deployments/#scaledobject-spec), read by KEDA's operator
    as `operator_google_service_account` through Workload Identity (TriggerAuthentication podIdentity gcp,
    https://keda.sh/docs/2.20/authentication-providers/gcp-workload-identity/)."""

    trigger: pulumi.Input[dict]
    authentication: str
    authentication_spec: dict
    operator_google_service_account: pulumi.Input[str]


def seconds(value: int) -> str:
    """A metav1.Duration as the CRDs take it."""
    return f"{value}s"


def keda_values(operator_google_service_account: pulumi.Input[str] | None = None) -> dict:
    """KEDA's operator, metrics server and webhooks on the system pool (keda/values.yaml top-level nodeSelector);
    with a Google service account, the operator's Kubernetes one is bound to it for Workload Identity
    (keda/values.yaml `serviceAccount.operator.annotations`, kedacore/charts v2.20.2)."""
    values: dict = {"nodeSelector": SYSTEM_NODE_SELECTOR}
    if operator_google_service_account is not None:
        values["serviceAccount"] = {"operator": {"annotations": {
            "iam.gke.io/gcp-service-account": operator_google_service_account}}}
    return values


def http_add_on_values(chain: TimeoutChain) -> dict:
    """The add-on's three parts on the system pool, meeting Pod Security `restricted`, and an interceptor
    that drains for as long as a held request may last, so scaling the interceptors in cuts none.
    Request timeouts live on each InterceptorRoute (they override the interceptor's global ones)."""
    placement = {"nodeSelector": SYSTEM_NODE_SELECTOR}
    drain = chain.request
    return {
        "operator": placement,
        "scaler": placement,
        "interceptor": {
            **placement,
            "shutdownDelay": seconds(INTERCEPTOR_SHUTDOWN_DELAY_SECONDS),
            "drainTimeout": seconds(drain),
            "terminationGracePeriodSeconds": INTERCEPTOR_SHUTDOWN_DELAY_SECONDS + drain + MARGIN_SECONDS,
        },
        "podSecurityContext": {
            "runAsNonRoot": True, "runAsUser": ADD_ON_UID, "runAsGroup": ADD_ON_UID, "fsGroup": ADD_ON_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "privileged": False,
            "readOnlyRootFilesystem": True, "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def api_route_spec(service: str, port: str, chain: TimeoutChain) -> dict:
    """InterceptorRoute spec (http.keda.sh/v1beta1) of the API: held through a cold start, one generation per pod."""
    return {
        "target": {"service": service, "portName": port},
        "rules": [{"paths": [{"value": API_PATH}]}],
        "scalingMetric": {"concurrency": {"targetValue": 1}},
        "timeouts": {
            "readiness": seconds(chain.readiness),
            "responseHeader": seconds(chain.response_header),
            "request": seconds(chain.request),
        },
    }


def ui_route_spec(service: str, port: str, page: str, chain: TimeoutChain) -> dict:
    """InterceptorRoute spec of the browser UI: a starting page while no pod is ready, scaled on visits."""
    return {
        "target": {"service": service, "portName": port},
        "rules": [{"paths": [{"value": "/"}]}],
        "coldStart": {"placeholder": {"response": {
            "statusCode": 503,
            "bodyFromConfigMap": {"name": page, "key": "index.html"},
            "headers": {"Retry-After": str(STARTING_RETRY_SECONDS), "Cache-Control": "no-store"},
        }}},
        "scalingMetric": {"requestRate": {"targetValue": UI_REQUEST_RATE_PER_REPLICA, "window": "1m"}},
        "timeouts": {"responseHeader": seconds(chain.response_header)},
    }


def scaled_object_spec(cfg: AutoscalingConfig, deployment: str, routes: list[str],
                       extra_triggers: tuple[dict, ...] = ()) -> dict:
    """ScaledObject spec (keda.sh/v1alpha1): one external-push trigger per route, the cool-down both for
    1 -> 0 (cooldownPeriod) and for N -> N-1 (the HPA's scale-down stabilization window)."""
    return {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
        "minReplicaCount": cfg.min_replicas,
        "maxReplicaCount": cfg.max_replicas,
        "cooldownPeriod": cfg.cooldown_seconds,
        "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
            "scaleUp": {"stabilizationWindowSeconds": 0,
                        "policies": [{"type": "Pods", "value": cfg.max_replicas, "periodSeconds": 15}]},
            "scaleDown": {"stabilizationWindowSeconds": cfg.cooldown_seconds,
                          "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]},
        }}},
        "triggers": [
            {"type": "external-push", "name": route,
             "metadata": {"scalerAddress": SCALER_ADDRESS, "interceptorRoute": route}}
            for route in routes
        ] + list(extra_triggers),
    }


class Autoscaling(pulumi.ComponentResource):
    """KEDA and the HTTP add-on (pinned Helm releases), the WebUI's routes, starting page and ScaledObject."""

    def __init__(self, name: str, args: AutoscalingArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sdgke:autoscaling:Autoscaling", name, None, opts)
        cfg = args.config
        child = pulumi.ResourceOptions(parent=self)
        labels = k8s_labels("autoscaling", args.environment)
        self.timeouts = TimeoutChain.of(args.generation_timeout_seconds, cfg.cold_start_timeout_seconds)

        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=NAMESPACE, labels={**labels, **pod_security_labels("restricted")}),
            opts=child,
        )
        gcp.compute.Firewall(
            f"{name}-control-plane-to-keda",
            network=args.network,
            direction="INGRESS",
            source_ranges=[args.control_plane_cidr],
            allows=[gcp.compute.FirewallAllowArgs(protocol="tcp", ports=list(CONTROL_PLANE_PORTS))],
            description="GKE control plane to KEDA's metrics server and admission webhooks",
            opts=child,
        )
        repository = k8s.helm.v3.RepositoryOptsArgs(repo=CHART_REPOSITORY)
        keda = k8s.helm.v3.Release(
            f"{name}-keda",
            name=KEDA_CHART, chart=KEDA_CHART, version=cfg.keda_chart_version, repository_opts=repository,
            namespace=namespace.metadata.name,
            values=keda_values(args.backlog.operator_google_service_account if args.backlog else None), atomic=True,
            opts=child,
        )
        # The add-on's chart creates a ScaledObject for its interceptors: KEDA's CRDs come first.
        add_on = k8s.helm.v3.Release(
            f"{name}-http-add-on",
            name=HTTP_ADD_ON_CHART, chart=HTTP_ADD_ON_CHART, version=cfg.http_add_on_chart_version,
            repository_opts=repository, namespace=namespace.metadata.name,
            values=http_add_on_values(self.timeouts), atomic=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[keda]),
        )
        on_crds = pulumi.ResourceOptions(parent=self, depends_on=[add_on])

        page = k8s.core.v1.ConfigMap(
            f"{name}-starting-page",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="webui-starting", namespace=args.namespace,
                                                labels={**labels, **RESPONSE_BODY_LABEL}),
            data={"index.html": STARTING_PAGE.read_text().replace("RETRY_SECONDS", str(STARTING_RETRY_SECONDS))},
            opts=child,
        )
        routes = {
            "webui-api": pulumi.Output.all(args.service).apply(
                lambda a: api_route_spec(a[0], args.service_port, self.timeouts)),
            "webui-ui": pulumi.Output.all(args.service, page.metadata.name).apply(
                lambda a: ui_route_spec(a[0], args.service_port, a[1], self.timeouts)),
        }
        self.routes = [
            k8s.apiextensions.CustomResource(
                f"{name}-{route}",
                api_version="http.keda.sh/v1beta1", kind="InterceptorRoute",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=route, namespace=args.namespace, labels=labels),
                spec=spec,
                opts=on_crds,
            )
            for route, spec in routes.items()
        ]
        backlog_triggers: list[pulumi.Input[dict]] = []
        authentications = []
        if args.backlog is not None:
            authentications.append(k8s.apiextensions.CustomResource(
                f"{name}-backlog-authentication",
                api_version="keda.sh/v1alpha1", kind="TriggerAuthentication",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=args.backlog.authentication, namespace=args.namespace,
                                                    labels=labels),
                spec=args.backlog.authentication_spec,
                opts=on_crds,
            ))
            backlog_triggers.append(args.backlog.trigger)
        self.scaled_object = k8s.apiextensions.CustomResource(
            f"{name}-scaled-object",
            api_version="keda.sh/v1alpha1", kind="ScaledObject",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="webui", namespace=args.namespace, labels=labels),
            spec=pulumi.Output.all(args.deployment, *backlog_triggers).apply(
                lambda a: scaled_object_spec(cfg, a[0], list(routes), tuple(a[1:]))),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[add_on, *self.routes, *authentications]),
        )
        self.interceptor_namespace = namespace.metadata.name
        self.register_outputs({"namespace": self.interceptor_namespace, "scaled_object": "webui"})
