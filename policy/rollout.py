"""What `pulumi up` waits for: GPU workloads never block it on GPU capacity."""

from __future__ import annotations

from pulumi_policy import StackValidationArgs
from resources import SERVICE, WORKLOADS, configured, containers, get, pod_spec, workload_of

AWAIT_CONFIG = {"gpuColdStartSeconds": {"type": "integer", "minimum": 60, "default": 1800}}
"""From zero GPU nodes to a warm pod: scale-up, node boot, GPU driver, runtime disk, and the WebUI's
15-minute startup window; and Spot capacity may not be there at all."""
DEFAULT_AWAIT_SECONDS = 600
"""pulumi-kubernetes waits 10 minutes for a Deployment, StatefulSet or Service to be ready
(provider/pkg/await/deployment.go DefaultDeploymentTimeoutMins, service.go DefaultServiceTimeoutMins)."""


def gpu_pods(pod: dict) -> bool:
    """A GPU is always a limit: Kubernetes refuses a GPU request without one ("Limit must be set for non
    overcommitable resources", kubernetes/kubernetes pkg/apis/core/validation/validation.go)."""
    return any("nvidia.com/gpu" in (get(c, "resources", "limits") or {}) for c in containers(pod))


def _await_seconds(r) -> float | None:
    """How long `up` waits for r's readiness on create or update, the shorter; None if it does not wait.
    customTimeouts come first, then pulumi.com/timeoutSeconds (provider/pkg/metadata/overrides.go
    TimeoutDuration); skipAwait or a waitFor condition replace the readiness await."""
    annotations = get(r.props, "metadata", "annotations") or {}
    if annotations.get("pulumi.com/skipAwait") == "true" or "pulumi.com/waitFor" in annotations:
        return None
    annotated = annotations.get("pulumi.com/timeoutSeconds")
    fallback = float(annotated) if annotated and annotated.isdigit() else DEFAULT_AWAIT_SECONDS
    timeouts = r.opts.custom_timeouts  # always set: 0s where none are given (pulumi_policy 1.21.0 _get_resource_options)
    return min((getattr(timeouts, f"{op}_seconds") or fallback) for op in ("create", "update"))


def gpu_pods_do_not_block_up(args: StackValidationArgs, report):
    """`up` finishes without waiting on GPU capacity: a workload with GPU pods, and a Service in front of
    them, either skip the readiness await or wait at least the GPU cold start."""
    budget = configured(args, "gpuColdStartSeconds")
    gpu = [r for r in args.resources if gpu_pods(pod_spec(r.resource_type, r.props) or {})]
    fronts = []
    for svc in (r for r in args.resources if r.resource_type == SERVICE):
        selector = get(svc.props, "spec", "selector") or {}
        if selector and any(all((get(w.props, *WORKLOADS[w.resource_type][:-1], "metadata", "labels") or {}).get(k) == v
                                for k, v in selector.items()) for w in gpu):
            fronts.append(svc)
    for r in gpu + fronts:
        seconds = _await_seconds(r)
        if seconds is not None and seconds < budget:
            report(f"{r.resource_type.split(':')[-1]} {workload_of(r.props)[1]!r} waits for GPU pods for up to "
                   f"{seconds:.0f}s, less than their cold start ({budget}s): `up` would fail while GPU capacity "
                   "comes up. Annotate it pulumi.com/skipAwait: \"true\" or give it customTimeouts of at least "
                   "the cold start.", r.urn)
