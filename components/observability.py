"""Observability as code: log-based metrics on the disk attacher's step lines, one Cloud Monitoring
dashboard, the alert policies and the notification channel they page.

What each signal is built from:
- GPU utilisation and memory: GKE's managed DCGM metrics (components/cluster.py MONITORING_COMPONENTS),
  queried in PromQL by their DCGM field names (https://cloud.google.com/kubernetes-engine/docs/how-to/dcgm-metrics).
- pods against demand: kube state metrics of the WebUI Deployment (desired = what the scaler asked for,
  available) and of pending pods (https://cloud.google.com/kubernetes-engine/docs/how-to/kube-state-metrics).
- GPU nodes: DCGM's GPU utilisation has one series per GPU of every GPU node whatever delivers the runtime
  (GKE installs DCGM-Exporter on the GPU nodes with the drivers it manages, which every pool here uses:
  https://cloud.google.com/kubernetes-engine/docs/how-to/dcgm-metrics), so GPUs / GPUs per node = GPU nodes,
  of every pool at once; compared with the sum of every pool's maximum.
- cold-start phases, only where the disk attacher delivers the runtime: the agent prints one JSON line per
  step (images/attacher/attacher/log.py); GKE turns a JSON line into jsonPayload
  (https://cloud.google.com/kubernetes-engine/docs/concepts/about-logs), and a
  log-based distribution metric extracts duration_ms by step (https://cloud.google.com/logging/docs/logs-based-metrics/distribution-metrics).
  The whole timeline of a cold start, phase by phase, is tools/coldstart.py's job.
- WebUI errors: Python tracebacks and 5xx lines of the WebUI's --api-log, and container restarts.
- bake failures: the builder's startup script prints `sd-bake: FAILED: <reason>` (images/runtime/builder-startup.sh);
  the builder runs with google-logging-enabled, so its journal reaches Cloud Logging as a gce_instance log.

Every JSON body here is checked against Google's discovery documents in tests/test_observability.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_gcp as gcp

from components.config import ObservabilityConfig
from components.disk_attacher import NAMESPACE as ATTACHER_NAMESPACE


@dataclass(frozen=True)
class Workload:
    namespace: str
    name: str
    container: str


WEBUI = Workload("sd-webui", "webui", "webui")
ATTACHER = Workload(ATTACHER_NAMESPACE, "disk-attacher", "agent")
"""The workloads the metrics select, as components/webui.py and components/disk_attacher.py name them
(tests/test_observability.py checks them against the registered objects)."""

@dataclass(frozen=True)
class GpuCapacity:
    """What the GPU node pools can hold together."""

    max_nodes: int
    """The sum of every GPU pool's maximum: with the on-demand fallback, demand waits only when both are full."""
    gpus_per_node: int


@dataclass(frozen=True)
class QueueSubscriptions:
    """The Pub/Sub subscriptions of a request queue, when the stack has one: its backlog is charted and a
    non-empty dead letter alerts."""

    work: str
    dead_letter: str


STEP_SECONDS_METRIC = "sdgke/attacher_step_duration"
STEP_FAILURES_METRIC = "sdgke/attacher_step_failures"
WEBUI_ERRORS_METRIC = "sdgke/webui_errors"
BAKE_FAILURES_METRIC = "sdgke/bake_failures"
AUTO_CLOSE = "1800s"


def _container_filter(workload: Workload) -> str:
    return (f'resource.type="k8s_container" AND resource.labels.namespace_name="{workload.namespace}" '
            f'AND resource.labels.container_name="{workload.container}"')


def log_metrics(disk_attacher: bool) -> dict[str, dict[str, Any]]:
    """Log-based metrics (logging.v2 LogMetric), keyed by role; the attacher's steps only where it runs."""
    steps = _container_filter(ATTACHER) + ' AND jsonPayload.event="step"'
    attacher = {
        "step-duration": dict(
            name=STEP_SECONDS_METRIC,
            description="Duration of each disk attacher step on a new GPU node (ms), by step and status.",
            filter=steps,
            metric_descriptor=dict(metric_kind="DELTA", value_type="DISTRIBUTION", unit="ms", labels=[
                dict(key="step", value_type="STRING", description="identify, inspect, create_disk, ... untaint"),
                dict(key="status", value_type="STRING", description="ok, skipped or failed")]),
            value_extractor="EXTRACT(jsonPayload.duration_ms)",
            label_extractors={"step": "EXTRACT(jsonPayload.step)", "status": "EXTRACT(jsonPayload.status)"},
            # 50 ms .. 50 ms * 2^16 = 55 min: a mount takes milliseconds, a disk from a large image minutes.
            bucket_options=dict(exponential_buckets=dict(num_finite_buckets=16, growth_factor=2, scale=50)),
        ),
        "step-failures": dict(
            name=STEP_FAILURES_METRIC,
            description="Disk attacher steps that failed, by step (the line carries the error).",
            filter=steps + ' AND jsonPayload.status="failed"',
            metric_descriptor=dict(metric_kind="DELTA", value_type="INT64", unit="1", labels=[
                dict(key="step", value_type="STRING", description="the step that failed")]),
            label_extractors={"step": "EXTRACT(jsonPayload.step)"},
        ),
    }
    return {
        **(attacher if disk_attacher else {}),
        "webui-errors": dict(
            name=WEBUI_ERRORS_METRIC,
            description="WebUI errors: Python tracebacks, and API answers 500-599 in its --api-log.",
            # --api-log prints "API <date> <time> <code> ..." (AUTOMATIC1111 v1.10.1 modules/api/api.py).
            filter=_container_filter(WEBUI) + ' AND (textPayload:"Traceback (most recent call last)" OR '
                                              'textPayload=~"^API \\\\S+ \\\\S+ 5\\\\d\\\\d ")',
            metric_descriptor=dict(metric_kind="DELTA", value_type="INT64", unit="1"),
        ),
        "bake-failures": dict(
            name=BAKE_FAILURES_METRIC,
            description="Runtime disk image bakes that failed (the builder VM's `sd-bake: FAILED` line).",
            # The builder's script output reaches Cloud Logging through COS's logging agent (journald); which payload
            # field carries the line is the agent's choice, so the filter searches every field for it.
            filter='resource.type="gce_instance" AND "sd-bake: FAILED"',
            metric_descriptor=dict(metric_kind="DELTA", value_type="INT64", unit="1"),
        ),
    }


def _user_metric(name: str) -> str:
    return f"logging.googleapis.com/user/{name}"


class Queries:
    """The PromQL the dashboard charts and the alerts evaluate, in one place."""

    wanted = f'max(kube_deployment_spec_replicas{{namespace="{WEBUI.namespace}",deployment="{WEBUI.name}"}})'
    available = (f'max(kube_deployment_status_replicas_available{{namespace="{WEBUI.namespace}",'
                 f'deployment="{WEBUI.name}"}})')
    pending = f'sum(kube_pod_status_phase{{namespace="{WEBUI.namespace}",phase="Pending"}})'
    gpu_util = "DCGM_FI_DEV_GPU_UTIL"
    gpu_memory_used = "DCGM_FI_DEV_FB_USED"
    gpu_memory_free = "DCGM_FI_DEV_FB_FREE"

    @staticmethod
    def gpu_nodes(gpus_per_node: int) -> str:
        """Each GPU counted once, by its UUID: DCGM-Exporter labels a series with the pod using the GPU as well
        (https://docs.nvidia.com/datacenter/dcgm/latest/reference/command-line-reference/dcgm-exporter.html:
        "adds entity and optional workload labels"; default labels gpu, UUID, modelName, Hostname), so a GPU
        whose pod changed within the lookback has two series."""
        gpus = f"count(count by (UUID) ({Queries.gpu_util}))"
        return gpus if gpus_per_node == 1 else f"{gpus} / {gpus_per_node}"


def _data_set(query: dict[str, Any], legend: str | None) -> dict[str, Any]:
    """A chart's series; without a legend the chart names each series by its labels."""
    data_set = {"timeSeriesQuery": query, "plotType": "LINE"}
    if legend:
        data_set["legendTemplate"] = legend
    return data_set


def _promql(query: str, legend: str | None = None) -> dict[str, Any]:
    return _data_set({"prometheusQuery": query}, legend)


def _filter_set(filter_: str, aligner: str, reducer: str, group_by: list[str], legend: str | None = None,
                period: str = "60s") -> dict[str, Any]:
    aggregation = {"alignmentPeriod": period, "perSeriesAligner": aligner, "crossSeriesReducer": reducer}
    if group_by:
        aggregation["groupByFields"] = group_by
    return _data_set({"timeSeriesFilter": {"filter": filter_, "aggregation": aggregation}}, legend)


def _chart(title: str, data_sets: list[dict[str, Any]], y_label: str, thresholds: list[dict[str, Any]] = ()) -> dict[str, Any]:
    chart: dict[str, Any] = {"dataSets": data_sets, "yAxis": {"label": y_label, "scale": "LINEAR"}}
    if thresholds:
        chart["thresholds"] = list(thresholds)
    return {"title": title, "xyChart": chart}


def dashboard(environment: str, budget_s: int, capacity: GpuCapacity, disk_attacher: bool,
              queue: QueueSubscriptions | None = None) -> dict[str, Any]:
    """The dashboard (monitoring.v1 Dashboard): two charts per row on a 48-column mosaic."""
    step_filter = f'metric.type="{_user_metric(STEP_SECONDS_METRIC)}" AND resource.type="k8s_container"'
    widgets = [
        _chart("GPU utilisation (%)", [_promql(Queries.gpu_util)], "%"),
        _chart("GPU memory (MiB)", [_promql(Queries.gpu_memory_used), _promql(Queries.gpu_memory_free)], "MiB"),
        _chart("WebUI pods and GPU nodes against demand", [
            _promql(Queries.wanted, "replicas wanted (demand)"), _promql(Queries.available, "replicas available"),
            _promql(Queries.pending, "pods pending (waiting for a node)"),
            _promql(Queries.gpu_nodes(capacity.gpus_per_node), "GPU nodes"),
        ], "count", [{"value": capacity.max_nodes, "label": "GPU pools' maximum", "color": "RED"}]),
        *([_chart("Cold start: disk attacher steps, p95 (ms)", [
            _filter_set(step_filter, "ALIGN_DELTA", "REDUCE_PERCENTILE_95", ['metric.label."step"'])], "ms")]
          if disk_attacher else []),
        _chart("Cold start: wanted replicas not yet available", [
            _promql(f"{Queries.wanted} - {Queries.available}", "replicas still starting")],
            "count"),
        *([_chart("Disk attacher failures", [_filter_set(
            f'metric.type="{_user_metric(STEP_FAILURES_METRIC)}" AND resource.type="k8s_container"',
            "ALIGN_SUM", "REDUCE_SUM", ['metric.label."step"'], period="300s")], "failures / 5 min")]
          if disk_attacher else []),
        _chart("WebUI errors (per 5 min)", [
            _filter_set(f'metric.type="{_user_metric(WEBUI_ERRORS_METRIC)}" AND resource.type="k8s_container"',
                        "ALIGN_SUM", "REDUCE_SUM", [], "tracebacks and 5xx answers", "300s"),
            # GKE system metric (https://cloud.google.com/monitoring/api/metrics_kubernetes): restarts, cumulative.
            _filter_set('metric.type="kubernetes.io/container/restart_count" AND resource.type="k8s_container" AND '
                        f'resource.labels.namespace_name="{WEBUI.namespace}"', "ALIGN_DELTA", "REDUCE_SUM", [],
                        "container restarts", "300s")], "count"),
    ]
    if queue is not None:
        widgets.append(_chart("Queue backlog", [
            _filter_set(_subscription_filter(queue.work), "ALIGN_MAX", "REDUCE_SUM", [], "pending requests", "60s"),
            _filter_set(_subscription_filter(queue.dead_letter), "ALIGN_MAX", "REDUCE_SUM", [], "dead-lettered", "60s"),
        ], "messages"))
    widgets.append({"title": "Where a cold start's seconds go", "text": {"format": "MARKDOWN", "content": (
        f"Budget: **{budget_s} s** from a wanted replica to a ready one (alert *cold start over budget*).\n\n"
        "Every phase of the last cold starts, from the cluster's own records:\n\n"
        "`python -m tools.coldstart --context <kube context> --project <project> --cluster <cluster> --png coldstart.png`\n\n"
        "What each phase means and the lever that shortens it: README, *See the cold start*.")}})
    tiles = [{"xPos": 24 * (i % 2), "yPos": 16 * (i // 2), "width": 24, "height": 16, "widget": widget}
             for i, widget in enumerate(widgets)]
    return {"displayName": f"sd-gke {environment}: GPUs, scaling and cold starts",
            "mosaicLayout": {"columns": 48, "tiles": tiles}}


def _subscription_filter(subscription: str) -> str:
    return ('metric.type="pubsub.googleapis.com/subscription/num_undelivered_messages" AND '
            f'resource.type="pubsub_subscription" AND resource.labels.subscription_id="{subscription}"')


def _log_count_condition(title: str, metric: str, resource: str) -> dict[str, Any]:
    return dict(display_name=title, condition_threshold=dict(
        filter=f'metric.type="{_user_metric(metric)}" AND resource.type="{resource}"',
        comparison="COMPARISON_GT", threshold_value=0, duration="0s",
        aggregations=[dict(alignment_period="300s", per_series_aligner="ALIGN_SUM", cross_series_reducer="REDUCE_SUM")],
        trigger=dict(count=1)))


def _promql_condition(title: str, query: str, duration_s: int) -> dict[str, Any]:
    return dict(display_name=title, condition_prometheus_query_language=dict(
        query=query, duration=f"{duration_s}s", evaluation_interval="60s"))


def alert_policies(environment: str, budget_s: int, capacity: GpuCapacity, disk_attacher: bool,
                   queue: QueueSubscriptions | None = None) -> dict[str, dict[str, Any]]:
    """Alert policies (monitoring.v3 AlertPolicy) keyed by role, without their notification channels."""
    def policy(title: str, severity: str, condition: dict[str, Any], runbook: str) -> dict[str, Any]:
        return dict(display_name=f"sd-gke {environment}: {title}", combiner="OR", severity=severity,
                    conditions=[condition], alert_strategy=dict(auto_close=AUTO_CLOSE),
                    documentation=dict(mime_type="text/markdown", content=runbook))

    policies = {
        "cold-start-over-budget": policy(
            "cold start over budget", "WARNING",
            _promql_condition(f"a wanted WebUI replica unavailable for over {budget_s} s",
                              f"({Queries.wanted} - {Queries.available}) > 0", budget_s),
            f"A WebUI replica the scaler asked for has not been available for {budget_s} s "
            "(observability.coldStartBudgetSeconds). See where the time goes: `python -m tools.coldstart "
            "--context <ctx>`; a phase marked *not found* is the place to look (no node: GPU quota or stock-out "
            "in the autoscaler's events" + ("; no untaint: the disk attacher's log)." if disk_attacher else ").")),
        "gpu-pool-at-max": policy(
            "GPU pool at its maximum", "WARNING",
            _promql_condition(f"GPU nodes at the pools' maximum ({capacity.max_nodes})",
                              f"{Queries.gpu_nodes(capacity.gpus_per_node)} >= {capacity.max_nodes}", 300),
            f"The GPU pools have run {capacity.max_nodes} nodes, every pool's gpuPool.maxNodes, for 5 minutes: "
            "more demand waits indefinitely. Raise gpuPool.maxNodes (and the GPU quota) if this is steady load."),
        "bake-failures": policy(
            "runtime image bake failed", "ERROR",
            _log_count_condition("a bake failed", BAKE_FAILURES_METRIC, "gce_instance"),
            "A runtime disk image bake failed; `pulumi up` printed the reason and the serial console's tail. "
            "The builder VM and its disks are deleted either way."),
    }
    if disk_attacher:
        policies["attacher-failures"] = policy(
            "disk attacher step failed", "ERROR",
            _log_count_condition("an attacher step failed", STEP_FAILURES_METRIC, "k8s_container"),
            f"A disk attacher step failed on a GPU node; its pod logs the error (`kubectl logs -n {ATTACHER.namespace} "
            f"ds/{ATTACHER.name}`). The node stays tainted, so no WebUI pod lands there until a retry succeeds.")
    if queue is not None:
        policies["dead-letter-not-empty"] = policy(
            "dead-letter queue not empty", "ERROR",
            dict(display_name=f"messages in {queue.dead_letter}", condition_threshold=dict(
                filter=_subscription_filter(queue.dead_letter),
                comparison="COMPARISON_GT", threshold_value=0, duration="0s",
                aggregations=[dict(alignment_period="60s", per_series_aligner="ALIGN_MAX")],
                trigger=dict(count=1))),
            f"Requests that failed every delivery attempt are in {queue.dead_letter}: read them, fix the cause, "
            "and replay or drop them.")
    return policies


@dataclass
class ObservabilityArgs:
    project: str
    environment: str
    config: ObservabilityConfig
    capacity: GpuCapacity
    disk_attacher: bool
    """Whether a disk attacher DaemonSet delivers the runtime (runtime.delivery daemonset): its step metrics,
    charts and alert exist only then."""
    queue: QueueSubscriptions | None = None


class Observability(pulumi.ComponentResource):
    """Log-based metrics, the dashboard, the alert policies and their notification channel."""

    def __init__(self, name: str, args: ObservabilityArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sdgke:observability:Observability", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        budget = args.config.cold_start_budget_seconds
        self.metrics = {role: gcp.logging.Metric(f"{name}-{role}", project=args.project, **spec, opts=child)
                        for role, spec in log_metrics(args.disk_attacher).items()}
        self.channel = None
        if args.config.notification_email is not None:
            self.channel = gcp.monitoring.NotificationChannel(
                f"{name}-email", project=args.project, type="email",
                display_name=f"sd-gke {args.environment} alerts",
                labels={"email_address": args.config.notification_email}, opts=child)
        self.dashboard = gcp.monitoring.Dashboard(
            f"{name}-dashboard", project=args.project,
            dashboard_json=json.dumps(dashboard(args.environment, budget, args.capacity, args.disk_attacher, args.queue),
                                      sort_keys=True),
            opts=child)
        channels = [self.channel.id] if self.channel is not None else []
        # A policy on a log-based metric is refused until the metric exists.
        after_metrics = pulumi.ResourceOptions(parent=self, depends_on=list(self.metrics.values()))
        self.alerts = {role: gcp.monitoring.AlertPolicy(f"{name}-{role}", project=args.project,
                                                        notification_channels=channels, **spec, opts=after_metrics)
                       for role, spec in alert_policies(args.environment, budget, args.capacity, args.disk_attacher,
                                                        args.queue).items()}
        self.register_outputs({"dashboard": self.dashboard.id, "alerts": [a.name for a in self.alerts.values()]})
