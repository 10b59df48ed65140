"""Demand-driven WebUI replicas: KEDA scales the WebUI Deployment from zero to N and back.

One ScaledObject carries every reason to run a WebUI pod; KEDA takes the largest replica count any trigger
asks for (https://keda.sh/docs/2.20/concepts/scaling-deployments/#scaledobject-spec):
- the request queue's demand (docs/request-queue.md): KEDA's `metrics-api` trigger reads `desired`
  (generations running plus requests waiting, or one pod while a browser is active) from
  `GET /v1/demand` every polling interval (https://keda.sh/docs/2.20/scalers/metrics-api/);
- warm schedules (`autoscaling.warmSchedules`): one `cron` trigger each
  (https://keda.sh/docs/2.20/scalers/cron/);
- the batch backlog, with jobs on (components/jobs.py `backlog_scaling`).
KEDA itself is a pinned Helm release (kedacore/charts, chart keda 2.20.2) on the system pool.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

from components.config import AutoscalingConfig, WarmSchedule
from components.labels import k8s_labels, pod_security_labels

NAMESPACE = "keda"
KEDA_OPERATOR_SERVICE_ACCOUNT = "keda-operator"
"""The operator's service account as the chart names it (keda/values.yaml `serviceAccount.operator.name`, v2.20.2)."""
CHART_REPOSITORY = "https://kedacore.github.io/charts"
"""kedacore/charts README: `helm repo add kedacore https://kedacore.github.io/charts`."""
KEDA_CHART = "keda"
SYSTEM_NODE_SELECTOR = {"sd-gke/pool": "system"}
"""The system pool's label (components/cluster.py): KEDA and the request queue never take a GPU node."""
POLLING_INTERVAL_SECONDS = 1
"""How often KEDA asks every trigger (ScaledObject `pollingInterval`, default 30 s,
https://keda.sh/docs/2.20/reference/scaledobject-spec/#pollinginterval). At zero replicas only KEDA's own
loop can wake the WebUI, so this is the delay from a first request to the 0 -> 1 decision: one second, as
the HTTP add-on's push scaler gave. One `GET /v1/demand` a second costs the request queue nothing; the
backlog trigger's Cloud Monitoring read every second stays far inside its quota."""
DEMAND_TRIGGER = "request-queue"
CONTROL_PLANE_PORTS = ("6443", "9443")
"""What the API server calls on KEDA's pods: the metrics server (keda/values.yaml service.portHttpsTarget)
and the admission webhooks (webhooks.port, default 9443). A private cluster's control plane reaches nodes
on 443 and 10250 only until a firewall rule opens more
(https://cloud.google.com/kubernetes-engine/docs/how-to/private-clusters#add_firewall_rules): without it the
HPA gets no external metric (no scaling past one pod) and ScaledObjects fail admission."""


@dataclass
class AutoscalingArgs:
    config: AutoscalingConfig
    environment: str
    namespace: pulumi.Input[str]
    deployment: pulumi.Input[str]
    demand_url: str
    """The request queue's `GET /v1/demand` (components/request_queue.py)."""
    network: pulumi.Input[str]
    control_plane_cidr: str
    backlog: BacklogScaling | None = None


@dataclass
class BacklogScaling:
    """A queue's backlog as another way to wake the WebUI: one ScaledObject carries it beside the request
    queue's demand, read by KEDA's operator as `operator_google_service_account` through Workload Identity
    (TriggerAuthentication podIdentity gcp, https://keda.sh/docs/2.20/authentication-providers/gcp-workload-identity/)."""

    trigger: pulumi.Input[dict]
    authentication: str
    authentication_spec: dict
    operator_google_service_account: pulumi.Input[str]


def keda_values(operator_google_service_account: pulumi.Input[str] | None = None) -> dict:
    """KEDA's operator, metrics server and webhooks on the system pool (keda/values.yaml top-level nodeSelector);
    with a Google service account, the operator's Kubernetes one is bound to it for Workload Identity
    (keda/values.yaml `serviceAccount.operator.annotations`, kedacore/charts v2.20.2)."""
    values: dict = {"nodeSelector": SYSTEM_NODE_SELECTOR}
    if operator_google_service_account is not None:
        values["serviceAccount"] = {"operator": {"annotations": {
            "iam.gke.io/gcp-service-account": operator_google_service_account}}}
    return values


def demand_trigger(url: str) -> dict:
    """KEDA's `metrics-api` trigger on the request queue's demand: the JSON field `desired` (GJSON path,
    `valueLocation`) against `targetValue` 1, so the HPA asks for one pod per unit of demand; active above
    `activationTargetValue`, 0 by default (https://keda.sh/docs/2.20/scalers/metrics-api/)."""
    return {"type": "metrics-api", "name": DEMAND_TRIGGER,
            "metadata": {"url": url, "format": "json", "valueLocation": "desired", "targetValue": "1"}}


def warm_trigger(index: int, schedule: WarmSchedule) -> dict:
    """KEDA's `cron` trigger: `desiredReplicas` between `start` and `end` in `timezone`
    (https://keda.sh/docs/2.20/scalers/cron/)."""
    return {"type": "cron", "name": f"warm-{index}",
            "metadata": {"timezone": schedule.timezone, "start": schedule.start, "end": schedule.end,
                         "desiredReplicas": str(schedule.replicas)}}


def scaled_object_spec(cfg: AutoscalingConfig, deployment: str, demand_url: str,
                       extra_triggers: tuple[dict, ...] = ()) -> dict:
    """ScaledObject spec (keda.sh/v1alpha1): the demand, the warm schedules and any extra trigger; the cool-down
    both for 1 -> 0 (cooldownPeriod) and for N -> N-1 (the HPA's scale-down stabilization window)."""
    return {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
        "pollingInterval": POLLING_INTERVAL_SECONDS,
        "minReplicaCount": cfg.min_replicas,
        "maxReplicaCount": cfg.max_replicas,
        "cooldownPeriod": cfg.cooldown_seconds,
        "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
            "scaleUp": {"stabilizationWindowSeconds": 0,
                        "policies": [{"type": "Pods", "value": cfg.max_replicas, "periodSeconds": 15}]},
            "scaleDown": {"stabilizationWindowSeconds": cfg.cooldown_seconds,
                          "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]},
        }}},
        "triggers": [demand_trigger(demand_url),
                     *(warm_trigger(i, s) for i, s in enumerate(cfg.warm_schedules)),
                     *extra_triggers],
    }


class Autoscaling(pulumi.ComponentResource):
    """KEDA (a pinned Helm release), the control plane's way to it, and the WebUI's ScaledObject."""

    def __init__(self, name: str, args: AutoscalingArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sdgke:autoscaling:Autoscaling", name, None, opts)
        cfg = args.config
        child = pulumi.ResourceOptions(parent=self)
        labels = k8s_labels("autoscaling", args.environment)

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
        keda = k8s.helm.v3.Release(
            f"{name}-keda",
            name=KEDA_CHART, chart=KEDA_CHART, version=cfg.keda_chart_version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=CHART_REPOSITORY),
            namespace=namespace.metadata.name,
            values=keda_values(args.backlog.operator_google_service_account if args.backlog else None), atomic=True,
            opts=child,
        )
        on_crds = pulumi.ResourceOptions(parent=self, depends_on=[keda])
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
                lambda a: scaled_object_spec(cfg, a[0], args.demand_url, tuple(a[1:]))),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[keda, *authentications]),
        )
        self.register_outputs({"namespace": namespace.metadata.name, "scaled_object": "webui"})
