"""Demand scaling: GPU Deployments scaled by KEDA within the GPU pools, triggers that read no data as zero."""

from __future__ import annotations

from typing import Any

from pulumi_policy import StackValidationArgs
from resources import DEPLOYMENT, NODE_POOL, SCALED_OBJECT, get, is_gpu_pool, pod_spec, workload_of
from rollout import gpu_pods

PINNED_ANNOTATION = "sd-gke/replicas-pinned"
"""A GPU Deployment that is not demand-scaled says why its replica count is fixed, in this annotation."""


def _scale_targets(resources) -> set[tuple[str | None, str | None]]:
    return {(workload_of(r.props)[0], get(r.props, "spec", "scaleTargetRef", "name"))
            for r in resources if r.resource_type == SCALED_OBJECT
            and (get(r.props, "spec", "scaleTargetRef", "kind") or "Deployment") == "Deployment"}


def gpu_deployments_demand_scaled(args: StackValidationArgs, report):
    """A GPU Deployment is either scaled on demand (a ScaledObject targets it, and it sets no `replicas` to
    fight the autoscaler over) or pinned on purpose (`replicas` plus an annotation that says why)."""
    targets = _scale_targets(args.resources)
    for r in args.resources:
        if r.resource_type != DEPLOYMENT or not gpu_pods(pod_spec(r.resource_type, r.props) or {}):
            continue
        namespace, name = workload_of(r.props)
        replicas = get(r.props, "spec", "replicas")
        pinned = (get(r.props, "metadata", "annotations") or {}).get(PINNED_ANNOTATION)
        if (namespace, name) in targets:
            if replicas is not None:
                report(f"Deployment {namespace}/{name} is demand-scaled but sets replicas: {replicas}; every apply "
                       "would reset what the autoscaler chose. Drop spec.replicas.", r.urn)
        elif replicas is None or not pinned:
            report(f"GPU Deployment {namespace}/{name} is neither demand-scaled (no ScaledObject targets it) nor "
                   f"pinned (spec.replicas and a {PINNED_ANNOTATION} annotation saying why): a GPU node would run "
                   "whether or not anyone asks for it.", r.urn)


def _pool_gpus(pool: dict) -> int | None:
    autoscaling = pool.get("autoscaling") or {}
    nodes = autoscaling.get("totalMaxNodeCount")
    if nodes is None and autoscaling.get("maxNodeCount") is not None:
        nodes = autoscaling["maxNodeCount"] * max(len(pool.get("nodeLocations") or []), 1)
    if nodes is None:
        return None
    return nodes * sum(a.get("count") or 0 for a in get(pool, "nodeConfig", "guestAccelerators") or [])


def _pod_gpus(pod: dict) -> int:
    """Read from limits only: Kubernetes refuses a GPU request without an equal limit ("Limit must be set for non
    overcommitable resources", kubernetes/kubernetes pkg/apis/core/validation/validation.go)."""
    return sum(int(get(c, "resources", "limits", "nvidia.com/gpu") or 0) for c in pod.get("containers") or [])


KEDA_DEFAULT_MAX_REPLICAS = 100
"""What a ScaledObject without maxReplicaCount may ask for (https://keda.sh/docs/2.20/reference/scaledobject-spec/:
"maxReplicaCount: 100 # Optional. Default: 100")."""


def scaler_fits_pool(args: StackValidationArgs, report):
    """A ScaledObject never asks for more GPU pods than the GPU pools can hold: beyond that, pods only wait."""
    pools = [_pool_gpus(r.props) for r in args.resources if r.resource_type == NODE_POOL and is_gpu_pool(r.props)]
    if not pools or any(p is None for p in pools):
        return
    gpus = sum(pools)
    deployments = {workload_of(r.props): r for r in args.resources if r.resource_type == DEPLOYMENT}
    for so in (r for r in args.resources if r.resource_type == SCALED_OBJECT):
        namespace, _ = workload_of(so.props)
        target = deployments.get((namespace, get(so.props, "spec", "scaleTargetRef", "name")))
        per_pod = _pod_gpus(pod_spec(DEPLOYMENT, target.props) or {}) if target else 0
        maximum = get(so.props, "spec", "maxReplicaCount")
        if maximum is None:
            maximum = KEDA_DEFAULT_MAX_REPLICAS
        if not per_pod:
            continue
        if maximum * per_pod > gpus:
            report(f"ScaledObject {namespace}/{workload_of(so.props)[1]} may ask for {maximum} pods of {per_pod} GPU(s); "
                   f"the GPU pools hold {gpus} GPU(s) at most.", so.urn)


CLOUD_MONITORING_SCALERS = ("gcp-pubsub", "gcp-stackdriver", "gcp-cloudtasks")
"""KEDA's scalers that ask Cloud Monitoring and fail when no series comes back unless `valueIfNull` is set
(kedacore/keda@v2.20.2 pkg/scalers/gcp/gcp_stackdriver_client.go GetMetrics, QueryMetrics)."""
CLOUD_MONITORING_PROMQL = "https://monitoring.googleapis.com/"
GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")
"""What Go's strconv.ParseBool reads as true, as KEDA parses `ignoreNullValues`."""


def _is_zero(value: Any) -> bool:
    try:
        return float(value) == 0
    except (TypeError, ValueError):
        return False


def keda_no_data_is_zero(args, report):
    """A trigger that reads Cloud Monitoring counts "no data" (an idle or new subscription) as 0. An error
    instead keeps KEDA from scaling to zero and the HPA from scaling down (kedacore/keda@v2.20.2
    pkg/scaling/executor/scale_scaledobjects.go RequestScale; kubernetes/kubernetes#99514): a GPU node held
    for as long as the queue stays idle. The prometheus scaler's own switch is `ignoreNullValues`
    (pkg/scalers/prometheus_scaler.go ExecutePromQuery), said explicitly rather than left to its default."""
    namespace, name = workload_of(args.props)
    for trigger in get(args.props, "spec", "triggers") or []:
        kind = get(trigger, "type")
        if kind in CLOUD_MONITORING_SCALERS and not _is_zero(get(trigger, "metadata", "valueIfNull")):
            report(f"ScaledObject {namespace}/{name}: its {kind} trigger has valueIfNull "
                   f"{get(trigger, 'metadata', 'valueIfNull')!r}; set valueIfNull: \"0\", or an idle subscription is "
                   "an error that holds the GPU pods.")
        elif kind == "prometheus" and str(get(trigger, "metadata", "serverAddress")).startswith(CLOUD_MONITORING_PROMQL) \
                and get(trigger, "metadata", "ignoreNullValues") not in GO_TRUE:
            report(f"ScaledObject {namespace}/{name}: its prometheus trigger on Cloud Monitoring has ignoreNullValues "
                   f"{get(trigger, 'metadata', 'ignoreNullValues')!r}; set ignoreNullValues: \"true\", or a query "
                   "with no data is an error that holds the GPU pods.")
