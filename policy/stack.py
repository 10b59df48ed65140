"""Checks across a stack's resources: one cluster, alerts that page, the runtime's paths and node selection agree."""

from __future__ import annotations

from gke import boot_disk_images
from pulumi_policy import StackValidationArgs
from resources import (
    ALERT_POLICY,
    ATTACHER,
    CLUSTER,
    NODE_POOL,
    NOTIFICATION_CHANNEL,
    RUNTIME_NODE_LABEL,
    SERVICE,
    WEBUI_NAME,
    WORKLOADS,
    configured,
    containers,
    get,
    is_gpu_pool,
    pod_spec,
    workload_of,
)


def exactly_one_cluster(args: StackValidationArgs, report):
    clusters = [r for r in args.resources if r.resource_type == CLUSTER]
    if len(clusters) != 1:
        report(f"A stack holds exactly one GKE cluster; this one declares {len(clusters)}.")


def alerts_page_the_channel(args: StackValidationArgs, report):
    """With a notification channel in the stack, an alert that pages nobody is an alert nobody sees."""
    if not any(r.resource_type == NOTIFICATION_CHANNEL for r in args.resources):
        return
    for r in args.resources:  # an unknown list (preview) arrives as None: only a known empty one is judged
        if r.resource_type == ALERT_POLICY and ("notificationChannels" not in r.props or r.props["notificationChannels"] == []):
            report(f"Alert policy {r.name} ({r.props.get('displayName')}) pages no notification channel, though the "
                   "stack has one (observability.notificationEmail).")


def prod_alerts_page_someone(args: StackValidationArgs, report):
    """Prod's alerts page someone: alert policies without a notification channel open incidents nobody is told of.
    A stack without alert policies (no observability) has nothing to page."""
    if not configured(args, "production"):
        return
    alerts = [r for r in args.resources if r.resource_type == ALERT_POLICY]
    if alerts and not any(r.resource_type == NOTIFICATION_CHANNEL for r in args.resources):
        report(f"Production stack with {len(alerts)} alert policies and no notification channel: they would page "
               "nobody. Set observability.notificationEmail (`pulumi config set --path "
               "'sd-gke:observability.notificationEmail' <your-oncall-address> --stack prod`).")


def runtime_paths_agree(args: StackValidationArgs, report):
    """The WebUI's runtime hostPath is the very path the disk attacher mounts the disk at or, where the GPU
    pools carry the runtime as a secondary boot disk, the path GKE mounts that disk at."""
    attacher_paths, webui_paths = set(), set()
    boot_disk_paths = {f"/mnt/disks/gke-secondary-disks/gke-{image.rsplit('/', 1)[-1]}-disk"
                       for r in args.resources if r.resource_type == NODE_POOL and is_gpu_pool(r.props)
                       for image in boot_disk_images(r.props) if image}
    for r in args.resources:
        pod = pod_spec(r.resource_type, r.props)
        if pod is None:
            continue
        identity = workload_of(r.props)
        if identity == ATTACHER:
            for container in containers(pod):
                for env in container.get("env") or []:
                    if env.get("name") == "SDGKE_MOUNT_PATH":
                        attacher_paths.add(env.get("value"))
        elif identity[1] == WEBUI_NAME:
            webui_paths |= {v["hostPath"].get("path") for v in pod.get("volumes") or [] if v.get("hostPath")}
    if boot_disk_paths and attacher_paths:
        report("The GPU pools carry the runtime as a secondary boot disk and a disk attacher mounts it too: "
               "choose one delivery (runtime.delivery).")
    expected, source = (boot_disk_paths, "GKE mounts the pools' secondary boot disk") if boot_disk_paths else \
        (attacher_paths, "the disk attacher mounts it")
    if webui_paths and webui_paths != expected:
        report(f"The WebUI mounts the runtime from {sorted(webui_paths)} but {source} at "
               f"{sorted(expected) or 'nothing'}.")


def runtime_selection_agrees(args: StackValidationArgs, report):
    """The runtime the agent mounts is the runtime label of a GPU pool, and the only one the agent and
    the WebUI select: an agent on a node of another runtime finds that runtime's disk, refuses it and
    stays unready (the DaemonSet rollout never ends); a WebUI pod there runs the other runtime."""
    agent_hashes, webui_selected, agent_selected = set(), set(), set()
    pool_hashes = {get(r.props, "nodeConfig", "labels", RUNTIME_NODE_LABEL)
                   for r in args.resources if r.resource_type == NODE_POOL and is_gpu_pool(r.props)}
    for r in args.resources:
        pod = pod_spec(r.resource_type, r.props)
        if pod is None:
            continue
        if workload_of(r.props) == ATTACHER:
            agent_hashes |= {e.get("value") for c in containers(pod) for e in c.get("env") or []
                             if e.get("name") == "SDGKE_RUNTIME_HASH"}
            terms = get(pod, "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution",
                         "nodeSelectorTerms") or [{}]
            per_term = [{tuple(x.get("values") or ()) for x in t.get("matchExpressions") or []
                         if x.get("key") == RUNTIME_NODE_LABEL and x.get("operator") == "In"} for t in terms]
            agent_selected = set.intersection(*per_term)
        elif workload_of(r.props)[1] == WEBUI_NAME:
            webui_selected.add((pod.get("nodeSelector") or {}).get(RUNTIME_NODE_LABEL, ""))
    for r in args.resources:
        if r.resource_type == NODE_POOL and is_gpu_pool(r.props):
            label = get(r.props, "nodeConfig", "labels", RUNTIME_NODE_LABEL)
            for image in boot_disk_images(r.props):
                if label and image and not image.endswith(f"sd-runtime-{label}"):
                    report(f"A GPU pool labelled {RUNTIME_NODE_LABEL}={label} carries the runtime image {image}: "
                           "its nodes would hold another runtime than their label says.")
    known = {h for h in agent_hashes if h}
    if len(known) != 1:
        return  # unknown in this preview, or no agent: nothing to judge
    (runtime,) = known
    if None not in pool_hashes and runtime not in pool_hashes:
        report(f"No GPU node pool is labelled {RUNTIME_NODE_LABEL}={runtime}, the runtime the disk attacher mounts "
               f"(pools: {sorted(h or 'unlabelled' for h in pool_hashes)}).")
    if (runtime,) not in agent_selected:
        report(f"The disk attacher does not require {RUNTIME_NODE_LABEL} In [{runtime}] in its node affinity: on a node of "
               "another runtime it would find that runtime's disk, refuse it and stay unready.")
    for selected in webui_selected - {None, runtime}:
        report(f"The WebUI selects {RUNTIME_NODE_LABEL}={selected or '(nothing)'} but the disk attacher mounts runtime "
               f"{runtime}: its pods would run another runtime or never be scheduled.")


def public_service_needs_auth(args: StackValidationArgs, report):
    workloads = [r for r in args.resources if pod_spec(r.resource_type, r.props) is not None]
    for svc in (r for r in args.resources if r.resource_type == SERVICE):
        if get(svc.props, "spec", "type") not in ("LoadBalancer", "NodePort"):
            continue
        selector = get(svc.props, "spec", "selector") or {}
        for w in workloads:
            labels = get(w.props, *WORKLOADS[w.resource_type][:-1], "metadata", "labels") or {}
            if selector and all(labels.get(k) == v for k, v in selector.items()):
                pod = pod_spec(w.resource_type, w.props)
                if not any("--api-auth" in (c.get("args") or []) for c in containers(pod)):
                    report(f"Service {workload_of(svc.props)[1]!r} is public but {workload_of(w.props)[1]!r} "
                           "runs without --api-auth.", svc.urn)
