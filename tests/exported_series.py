"""The time series a planned stack's cluster and project would export, built from what the plan registers,
so that an alert or chart query that can never have data is found before it is deployed.

A series is (metric, monitored resource type or None for PromQL, labels). Where each comes from:
- kube state metrics, when the cluster's monitoringConfig enables the package and Managed Service for
  Prometheus (https://cloud.google.com/kubernetes-engine/docs/how-to/kube-state-metrics): DEPLOYMENT gives
  kube_deployment_spec_replicas and kube_deployment_status_replicas_available {namespace, deployment} per
  Deployment, DAEMONSET kube_daemonset_status_desired_number_scheduled {namespace, daemonset} per DaemonSet,
  POD kube_pod_status_phase {namespace, phase} for every phase of the pods of a namespace the plan runs pods in.
- DCGM, when the cluster enables the DCGM package: GKE installs DCGM-Exporter with its managed drivers and
  collects its metrics (https://cloud.google.com/kubernetes-engine/docs/how-to/dcgm-metrics), so
  DCGM_FI_DEV_GPU_UTIL, DCGM_FI_DEV_FB_USED and DCGM_FI_DEV_FB_FREE exist when a node pool has GPUs whose
  driver GKE installs (gpuDriverInstallationConfig.gpuDriverVersion DEFAULT or LATEST).
- GKE system metrics, when SYSTEM_COMPONENTS is on (https://cloud.google.com/monitoring/api/metrics_kubernetes):
  kubernetes.io/container/restart_count on k8s_container {namespace_name, container_name} per container.
- log-based metrics (https://cloud.google.com/logging/docs/logs-based-metrics): logging.googleapis.com/user/NAME
  has a series of a resource only when a log entry of that resource matches the metric's filter; entries of
  k8s_container come from the containers the plan runs (GKE writes them with namespace_name and
  container_name: https://cloud.google.com/kubernetes-engine/docs/concepts/about-logs), and of gce_instance
  from the VMs it makes (the runtime bake's builder, components/runtime_bake/).
- Pub/Sub (https://cloud.google.com/monitoring/api/metrics_gcp_p_z, pubsub):
  pubsub.googleapis.com/subscription/num_undelivered_messages on pubsub_subscription {subscription_id}.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tools import mockrun

WORKLOADS = ("Deployment", "DaemonSet", "StatefulSet", "Job", "CronJob")
MANAGED_DRIVERS = ("DEFAULT", "LATEST")
DCGM_METRICS = ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE")
POD_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
BAKE = "sdgke:runtime_image:RuntimeDiskImage"
"""The runtime image: its bake runs a builder VM, whose log is a gce_instance log."""


@dataclass(frozen=True)
class Series:
    metric: str
    resource: str | None
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Selector:
    """What one query reads: a metric, its resource type (filters only) and label matchers."""

    metric: str
    resource: str | None
    matchers: tuple[tuple[str, str, str], ...] = ()
    """(label, operator, value): PromQL's =, !=, =~, !~; a filter's = only."""

    def matches(self, series: Series) -> bool:
        if series.metric != self.metric or (self.resource is not None and series.resource != self.resource):
            return False
        labels = dict(series.labels)
        return all(_holds(labels.get(name, ""), op, value) for name, op, value in self.matchers)

    def __str__(self) -> str:
        matchers = ",".join(f"{n}{op}{v!r}" for n, op, v in self.matchers)
        return f"{self.metric}{{{matchers}}}" + (f" on {self.resource}" if self.resource else "")


def _holds(actual: str, op: str, value: str) -> bool:
    return {"=": actual == value, "!=": actual != value,
            "=~": re.fullmatch(value, actual) is not None, "!~": re.fullmatch(value, actual) is None}[op]


@dataclass
class Exported:
    series: list[Series] = field(default_factory=list)

    def without_data(self, selectors: list[Selector]) -> list[str]:
        return [str(s) for s in selectors if not any(s.matches(series) for series in self.series)]


def _containers(run: mockrun.Run) -> list[tuple[str, str]]:
    """(namespace, container) of every container the plan's workloads run, init containers included."""
    out = []
    for obj in run.kubernetes_objects():
        manifest = obj.inputs
        if manifest.get("kind") not in WORKLOADS:
            continue
        template = manifest["spec"]
        if manifest["kind"] == "CronJob":
            template = template["jobTemplate"]["spec"]
        pod = template["template"]["spec"]
        namespace = manifest["metadata"].get("namespace", "default")
        out += [(namespace, c["name"]) for c in [*pod.get("initContainers", []), *pod["containers"]]]
    return out


def exported(run: mockrun.Run) -> Exported:
    cluster = run.one("gcp:container/cluster:Cluster").inputs
    monitoring = cluster.get("monitoringConfig", {})
    packages = set(monitoring.get("enableComponents", []))
    prometheus = monitoring.get("managedPrometheus", {}).get("enabled", False)
    out = Exported()
    workloads = [o.inputs for o in run.kubernetes_objects() if o.inputs.get("kind") in WORKLOADS]
    containers = _containers(run)
    if prometheus and "DEPLOYMENT" in packages:
        for w in (w for w in workloads if w["kind"] == "Deployment"):
            labels = (("namespace", w["metadata"]["namespace"]), ("deployment", w["metadata"]["name"]))
            out.series += [Series(m, None, labels) for m in
                           ("kube_deployment_spec_replicas", "kube_deployment_status_replicas_available")]
    if prometheus and "DAEMONSET" in packages:
        out.series += [Series("kube_daemonset_status_desired_number_scheduled", None,
                              (("namespace", w["metadata"]["namespace"]), ("daemonset", w["metadata"]["name"])))
                       for w in workloads if w["kind"] == "DaemonSet"]
    if prometheus and "POD" in packages:
        out.series += [Series("kube_pod_status_phase", None, (("namespace", ns), ("phase", phase)))
                       for ns in sorted({ns for ns, _ in containers}) for phase in POD_PHASES]
    if prometheus and "DCGM" in packages and _managed_gpu_nodes(run):
        out.series += [Series(m, None) for m in DCGM_METRICS]
    if "SYSTEM_COMPONENTS" in packages:
        out.series += [Series("kubernetes.io/container/restart_count", "k8s_container",
                              (("namespace_name", ns), ("container_name", c))) for ns, c in containers]
    sources = [("k8s_container", (("namespace_name", ns), ("container_name", c))) for ns, c in containers]
    if run.of_type(BAKE):
        sources.append(("gce_instance", ()))
    for metric in run.of_type("gcp:logging/metric:Metric"):
        reads = filter_selector(metric.inputs["filter"], "")
        out.series += [Series(f"logging.googleapis.com/user/{metric.inputs['name']}", resource, labels)
                       for resource, labels in sources
                       if Selector("", reads.resource, reads.matchers).matches(Series("", resource, labels))]
    out.series += [Series("pubsub.googleapis.com/subscription/num_undelivered_messages", "pubsub_subscription",
                          (("subscription_id", s.inputs["name"]),)) for s in run.of_type("gcp:pubsub/subscription:Subscription")]
    return out


def _managed_gpu_nodes(run: mockrun.Run) -> bool:
    for pool in run.of_type("gcp:container/nodePool:NodePool"):
        for accelerator in pool.inputs["nodeConfig"].get("guestAccelerators", []):
            version = accelerator.get("gpuDriverInstallationConfig", {}).get("gpuDriverVersion")
            if version in MANAGED_DRIVERS:
                return True
    return False


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?")
_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"\s*,?')


def promql_selectors(query: str) -> list[Selector]:
    """The instant-vector selectors of a PromQL query: names not called as functions, nor keywords or grouping labels."""
    query = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)|\[[^\]]*\]", " ", query)
    out = []
    for found in _SELECTOR.finditer(query):
        name, braces = found.group(1), found.group(2)
        rest = query[found.end():].lstrip()
        if name in PROMQL_WORDS or (braces is None and rest.startswith("(")):
            continue
        matchers = tuple(m.groups() for m in _MATCHER.finditer(braces[1:-1])) if braces else ()
        out.append(Selector(name, None, matchers))
    return out


_FILTER_TERM = re.compile(r'(metric\.type|resource\.type|resource\.labels\.(\w+))\s*=\s*"([^"]*)"')


def filter_selector(filter_: str, default_metric: str | None = None) -> Selector:
    """The metric, resource type and resource labels a Monitoring or Logging filter asks for with `=`."""
    metric, resource, matchers = default_metric, None, []
    for term, label, value in _FILTER_TERM.findall(filter_):
        if term == "metric.type":
            metric = value
        elif term == "resource.type":
            resource = value
        else:
            matchers.append((label, "=", value))
    if metric is None:
        raise ValueError(f"filter names no metric.type: {filter_}")
    return Selector(metric, resource, tuple(matchers))
