"""Recordings of cold starts, built to the shapes the APIs and programs really emit, for tools/coldstart.py.

    python -m tests.coldstart_fixtures     # rewrites tests/fixtures/coldstart/ (tests check it is up to date)

Shapes and texts, with their sources:
- core/v1 Event as `kubectl get events -o json` lists it: involvedObject {kind, namespace, name, uid, fieldPath},
  reason, message, source {component, host}, firstTimestamp/lastTimestamp (seconds) and count, or, for events
  written through events.k8s.io/v1 (the scheduler), eventTime (microseconds) with firstTimestamp null
  (https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/event-v1/).
- cluster-autoscaler on the pod: TriggeredScaleUp "pod triggered scale-up: %v" of its ScaleUpInfos
  "{<node group> <current>-><new> (max: <max>)}", NotTriggerScaleUp "pod didn't trigger scale-up: ..."
  (kubernetes/autoscaler cluster-autoscaler/processors/status/eventing_scale_up_processor.go,
  cluster-autoscaler/processors/status/scale_up_status_processor.go; FAQ "What events are emitted by CA?").
- default-scheduler: FailedScheduling "0/N nodes are available: ...", Scheduled "Successfully assigned NS/POD to NODE"
  (kubernetes/kubernetes pkg/scheduler/schedule_one.go).
- kubelet: Pulling `Pulling image "%s"`, Pulled `Successfully pulled image %q in %v (%v including waiting).
  Image size: %v bytes.` (kubernetes/kubernetes pkg/kubelet/images/image_manager.go, 1.30+), Created, Started
  `Started container %s` (pkg/kubelet/kuberuntime/kuberuntime_container.go).
- Node: metadata.creationTimestamp, condition Ready (reason KubeletReady, "kubelet is posting ready status").
- Pod conditions PodScheduled, Initialized, ContainersReady, Ready with lastTransitionTime
  (https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-conditions).
- the disk attacher's lines: images/attacher/attacher/log.py (ts at the step's end, milliseconds, duration_ms),
  steps in the order of images/attacher/attacher/agent.py run_pass.
- the WebUI's --api-log line `API {t} {code} {prot}/{ver} {method} {endpoint} {cli} {duration}`
  (AUTOMATIC1111 v1.10.1 modules/api/api.py api_middleware), behind `kubectl logs --timestamps` stamps.
- Cloud Logging LogEntry (logging.v2): resource {type k8s_container, labels}, timestamp, jsonPayload; GKE's
  cluster autoscaler visibility log `container.googleapis.com/cluster-autoscaler-visibility`, jsonPayload.decision
  {decideTime (Unix seconds, a string), eventId, scaleUp {increasedMigs, triggeringPods [{name, namespace,
  controller}], triggeringPodsTotalCount}} (https://cloud.google.com/kubernetes-engine/docs/how-to/cluster-autoscaler-visibility).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tools.startup.recording import ATTACHER_NAMESPACE, VISIBILITY_LOG, WEBUI_NAMESPACE, Recording, save

ROOT = Path(__file__).parent / "fixtures" / "coldstart"
IMAGE = "us-central1-docker.pkg.dev/sd-gke-dev/sd/sd-base@sha256:" + "a" * 64
GROUP = "https://www.googleapis.com/compute/v1/projects/sd-gke-dev/zones/us-central1-a/instanceGroups/gke-sd-gke-sd-gpu-5c3e-grp"
ATTACHER_STEPS = ("identify", "inspect", "create_disk", "attach_disk", "wait_device", "mount", "verify", "untaint")


@dataclass(frozen=True)
class Story:
    """One cold start, as seconds after the pod's creation (the published run: autoscaler 38 s, node 89 s,
    volume 4 s, pull 11 s, WebUI 65 s)."""

    pod: str
    node: str
    created: datetime
    scale_up: float = 38.0
    node_registered: float = 93.0
    node_ready: float = 117.0
    attacher_start: float = 119.5
    step_ms: tuple[int, ...] = (180, 420, 1850, 2900, 310, 240, 90, 110)
    scheduled: float = 126.0
    pulling: float = 133.0
    pull_s: float = 1.9
    started: float = 136.0
    ready: float = 198.0
    first_image: float | None = 204.5
    attacher_pod: str = ""
    attacher_logs_in: str = "pod"  # pod | cloud | none
    scale_up_in: str = "event"  # event | visibility (the event expired; GKE's decision log remains) | none


def _t(start: datetime, seconds: float) -> datetime:
    return start + timedelta(seconds=seconds)


def _seconds(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _nano(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def _digest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _uid(name: str) -> str:
    return f"3f1c2a7e-0b5d-4c1e-9a2f-{_digest(name)[:12]}"


def event(pod: dict[str, Any], reason: str, message: str, at: datetime, component: str, *, container: str | None = None,
          count: int = 1, last: datetime | None = None, series: bool = False) -> dict[str, Any]:
    meta = pod["metadata"]
    target = {"kind": "Pod", "namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"],
              "apiVersion": "v1", "resourceVersion": "48211"}
    if container:
        target["fieldPath"] = f"spec.containers{{{container}}}"
    record = {"apiVersion": "v1", "kind": "Event", "metadata": {
        "name": f"{meta['name']}.{_digest(reason, at)[:16]}", "namespace": meta["namespace"],
        "creationTimestamp": _seconds(at), "resourceVersion": "48213"},
        "involvedObject": target, "reason": reason, "message": message, "type": "Normal",
        "source": {"component": component}, "reportingComponent": component, "reportingInstance": "",
        "count": count}
    if series:  # written through events.k8s.io/v1: eventTime set, the deprecated timestamps null
        record.update(eventTime=_micro(at), firstTimestamp=None, lastTimestamp=None, action="Scheduling",
                      reportingInstance=f"{component}-gke-control-plane")
    else:
        record.update(eventTime=None, firstTimestamp=_seconds(at), lastTimestamp=_seconds(last or at))
        if component == "kubelet":
            record["source"]["host"] = pod["spec"].get("nodeName", "")
    return record


def webui_pod(story: Story) -> dict[str, Any]:
    c = story.created
    conditions = [
        {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": _seconds(_t(c, story.pulling - 6))},
        {"type": "Initialized", "status": "True", "lastTransitionTime": _seconds(_t(c, story.pulling - 1))},
        {"type": "Ready", "status": "True", "lastTransitionTime": _seconds(_t(c, story.ready))},
        {"type": "ContainersReady", "status": "True", "lastTransitionTime": _seconds(_t(c, story.ready))},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": _seconds(_t(c, story.scheduled))},
    ]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": story.pod, "namespace": WEBUI_NAMESPACE, "uid": _uid(story.pod), "creationTimestamp": _seconds(c),
        "labels": {"app.kubernetes.io/name": "webui"},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": story.pod.rsplit("-", 1)[0],
                             "uid": _uid("rs"), "controller": True, "blockOwnerDeletion": True}]},
        "spec": {"nodeName": story.node, "initContainers": [{"name": "prepare", "image": IMAGE}],
                 "containers": [{"name": "webui", "image": IMAGE}]},
        "status": {"phase": "Running", "conditions": conditions, "startTime": _seconds(_t(c, story.scheduled)),
                   "containerStatuses": [{"name": "webui", "ready": True, "restartCount": 0, "image": IMAGE,
                                          "state": {"running": {"startedAt": _seconds(_t(c, story.started))}}}]}}


def node(story: Story) -> dict[str, Any]:
    c = story.created
    return {"apiVersion": "v1", "kind": "Node", "metadata": {
        "name": story.node, "creationTimestamp": _seconds(_t(c, story.node_registered)),
        "labels": {"cloud.google.com/gke-nodepool": "sd-gpu-5c3e", "cloud.google.com/gke-accelerator": "nvidia-l4"}},
        "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
        "status": {"conditions": [
            {"type": "MemoryPressure", "status": "False", "lastTransitionTime": _seconds(_t(c, story.node_registered)),
             "reason": "KubeletHasSufficientMemory"},
            {"type": "Ready", "status": "True", "lastTransitionTime": _seconds(_t(c, story.node_ready)),
             "lastHeartbeatTime": _seconds(_t(c, story.ready + 30)), "reason": "KubeletReady",
             "message": "kubelet is posting ready status"}]}}


def attacher_pod(story: Story) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": story.attacher_pod, "namespace": ATTACHER_NAMESPACE, "uid": _uid(story.attacher_pod),
        "creationTimestamp": _seconds(_t(story.created, story.node_registered + 1)),
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "disk-attacher", "uid": _uid("ds"),
                             "controller": True, "blockOwnerDeletion": True}]},
        "spec": {"nodeName": story.node, "containers": [{"name": "agent", "image": IMAGE}]},
        "status": {"phase": "Running"}}


def attacher_lines(story: Story) -> list[tuple[datetime, dict[str, Any]]]:
    """What the agent prints: one line per step at its end (log.step), then the pass line."""
    disk = f"sd-runtime-{story.node}-5c3e0a9d1b2f"
    fields = {"identify": {"project": "sd-gke-dev", "zone": "us-central1-a", "instance": story.node},
              "inspect": {"disk": disk}, "create_disk": {"disk": disk}, "attach_disk": {"disk": disk},
              "wait_device": {"device": "/dev/disk/by-id/google-sd-runtime"},
              "mount": {"device": "/dev/disk/by-id/google-sd-runtime", "mount_path": "/mnt/disks/sd-runtime",
                        "read_ahead_kb": 1024, "mounted_now": True},
              "verify": {"mount_path": "/mnt/disks/sd-runtime", "recipe_hash": "5c3e0a9d1b2f"},
              "untaint": {"node": story.node, "taint": "sd-gke/runtime-not-ready", "outcome": "removed"}}
    at = _t(story.created, story.attacher_start)
    lines = []
    for step, ms in zip(ATTACHER_STEPS, story.step_ms, strict=True):
        at += timedelta(milliseconds=ms)
        lines.append((at, {"ts": at.isoformat(timespec="milliseconds"), "event": "step", "step": step, "status": "ok",
                           "duration_ms": ms, **fields[step]}))
    lines.append((at, {"ts": at.isoformat(timespec="milliseconds"), "event": "pass", "status": "ok", "disk": disk}))
    return lines


def visibility_entry(story: Story) -> dict[str, Any]:
    decided = _t(story.created, story.scale_up)
    return {"insertId": f"sd{story.pod[-5:]}", "logName": f"projects/sd-gke-dev/logs/{VISIBILITY_LOG.replace('/', '%2F')}",
            "receiveTimestamp": _nano(decided + timedelta(seconds=1)), "timestamp": _nano(decided),
            "resource": {"type": "k8s_cluster", "labels": {"project_id": "sd-gke-dev", "location": "us-central1",
                                                           "cluster_name": "sd-gke"}},
            "jsonPayload": {"decision": {
                "decideTime": str(int(decided.timestamp())), "eventId": f"ed5cb16d-{_digest(story.pod)[:8]}",
                "scaleUp": {"increasedMigs": [{"mig": {"name": GROUP.rsplit("/", 1)[1], "nodepool": "sd-gpu-5c3e",
                                                       "zone": "us-central1-a"}, "requestedNodes": 1}],
                            "triggeringPods": [{"name": story.pod, "namespace": WEBUI_NAMESPACE, "controller": {
                                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": story.pod.rsplit("-", 1)[0]}}],
                            "triggeringPodsTotalCount": 1}}}}


def events_of(story: Story, pod: dict[str, Any]) -> list[dict[str, Any]]:
    c = story.created
    found = [event(pod, "FailedScheduling", "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector. "
                   "preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.",
                   _t(c, 0.4), "default-scheduler", series=True)]
    if story.scale_up_in == "event":
        found.append(event(pod, "TriggeredScaleUp", f"pod triggered scale-up: [{{{GROUP} 0->1 (max: 2)}}]",
                           _t(c, story.scale_up), "cluster-autoscaler"))
    found += [
        # Repeated while the node boots: one record, count > 1, firstTimestamp the first time.
        event(pod, "FailedScheduling", "0/3 nodes are available: 1 node(s) had untolerated taint "
              "{sd-gke/runtime-not-ready: }, 2 node(s) didn't match Pod's node affinity/selector.",
              _t(c, story.node_ready - 2), "default-scheduler", series=True),
        event(pod, "Scheduled", f"Successfully assigned {WEBUI_NAMESPACE}/{story.pod} to {story.node}",
              _t(c, story.scheduled + 0.2), "default-scheduler", series=True),
        event(pod, "Pulling", f'Pulling image "{IMAGE}"', _t(c, story.pulling - 4), "kubelet", container="prepare"),
        event(pod, "Pulled", f'Successfully pulled image "{IMAGE}" in 3.1s (3.1s including waiting). '
              "Image size: 2147483648 bytes.", _t(c, story.pulling - 1), "kubelet", container="prepare"),
        event(pod, "Pulling", f'Pulling image "{IMAGE}"', _t(c, story.pulling), "kubelet", container="webui"),
        event(pod, "Pulled", f'Successfully pulled image "{IMAGE}" in {story.pull_s}s ({story.pull_s + 0.3:.1f}s including '
              "waiting). Image size: 2147483648 bytes.", _t(c, story.pulling + story.pull_s), "kubelet", container="webui"),
        event(pod, "Created", "Created container: webui", _t(c, story.started - 0.5), "kubelet", container="webui"),
        event(pod, "Started", "Started container webui", _t(c, story.started), "kubelet", container="webui"),
    ]
    return found


def webui_log(story: Story) -> list[str]:
    c = story.created
    lines = [(_t(c, story.started + 1), "Launching Web UI with arguments: --listen --port 7860 --api --api-log"),
             (_t(c, story.started + 55), "Model loaded in 41.2s (load weights from disk: 12.0s, create model: 0.9s)."),
             (_t(c, story.ready - 3), f"API {_t(c, story.ready - 3):%Y-%m-%d %H:%M:%S.%f} 200 http/1.1 POST "
                                      "/sdapi/v1/txt2img 127.0.0.1 2.8731"),
             (_t(c, story.ready + 1), f"API {_t(c, story.ready + 1):%Y-%m-%d %H:%M:%S.%f} 200 http/1.1 GET "
                                      "/sdapi/v1/options 127.0.0.1 0.0041")]
    if story.first_image is not None:
        at = _t(c, story.first_image)
        lines.append((at, f"API {at:%Y-%m-%d %H:%M:%S.%f} 200 http/1.1 POST /sdapi/v1/txt2img 10.16.0.12 5.9012"))
    return [f"{_nano(at)} {text}" for at, text in lines]


def recording(stories: list[Story], *, warm: list[Story] = (), shuffle_seed: int | None = None) -> Recording:
    rec = Recording()
    for story in [*stories, *warm]:
        pod = webui_pod(story)
        rec.pods.append(pod)
        rec.events += events_of(story, pod) if story in stories else [
            event(pod, "Scheduled", f"Successfully assigned {WEBUI_NAMESPACE}/{story.pod} to {story.node}",
                  _t(story.created, 0.1), "default-scheduler", series=True)]
        rec.logs[(WEBUI_NAMESPACE, story.pod, "webui")] = webui_log(story)
        if all(n["metadata"]["name"] != story.node for n in rec.nodes):
            rec.nodes.append(node(story))
        if story in warm or story.attacher_logs_in == "none":
            continue
        lines = attacher_lines(story)
        if story.attacher_logs_in == "pod":
            rec.pods.append(attacher_pod(story))
            rec.logs[(ATTACHER_NAMESPACE, story.attacher_pod, "agent")] = [
                f"{_nano(at)} {json.dumps(line)}" for at, line in lines]
        else:  # the attacher pod is gone with an earlier node: its lines live on in Cloud Logging
            rec.cloud_logging += [{"insertId": f"{i:04d}{story.attacher_pod}", "logName":
                                   "projects/sd-gke-dev/logs/stdout", "receiveTimestamp": _nano(at + timedelta(seconds=2)),
                                   "resource": {"type": "k8s_container", "labels": {
                                       "project_id": "sd-gke-dev", "location": "us-central1", "cluster_name": "sd-gke",
                                       "namespace_name": ATTACHER_NAMESPACE, "pod_name": story.attacher_pod,
                                       "container_name": "agent"}},
                                   "severity": "INFO", "timestamp": _nano(at), "jsonPayload": line}
                                  for i, (at, line) in enumerate(lines) if line["event"] == "step"]
        if story.scale_up_in == "visibility":
            rec.cloud_logging.append(visibility_entry(story))
    if shuffle_seed is not None:  # the API lists events in no promised order
        random.Random(shuffle_seed).shuffle(rec.events)
    return rec


DAY = datetime(2026, 11, 20, 9, 14, 2, tzinfo=UTC)
THREE = [
    Story("webui-6b9f7c5d84-2xk7p", "gke-sd-gke-sd-gpu-5c3e-8f2a1c3d-7m4q", DAY,
          scale_up=41.0, node_registered=101.0, node_ready=126.0, attacher_start=128.2, scheduled=135.0, pulling=143.0,
          started=146.0, ready=211.0, first_image=218.2, attacher_pod="disk-attacher-4hz8t", attacher_logs_in="cloud",
          scale_up_in="visibility"),
    Story("webui-6b9f7c5d84-q8w3n", "gke-sd-gke-sd-gpu-5c3e-8f2a1c3d-b9ds", DAY + timedelta(hours=3, minutes=7),
          scale_up=35.0, node_registered=88.0, node_ready=110.0, attacher_start=112.4, scheduled=119.0, pulling=126.0,
          pull_s=2.4, started=129.0, ready=190.0, first_image=195.8, attacher_pod="disk-attacher-x2v9c"),
    Story("webui-6b9f7c5d84-hm5rt", "gke-sd-gke-sd-gpu-5c3e-8f2a1c3d-r6fz", DAY + timedelta(hours=6, minutes=41),
          attacher_pod="disk-attacher-p7lqm"),
]
WARM = Story("webui-6b9f7c5d84-zz9kd", THREE[2].node, THREE[2].created + timedelta(minutes=4))


def scenarios() -> dict[str, Recording]:
    gaps = Story("webui-6b9f7c5d84-g4p2s", "gke-sd-gke-sd-gpu-5c3e-8f2a1c3d-t1kw", DAY, first_image=None,
                 attacher_logs_in="none", scale_up_in="none")
    skewed = Story("webui-6b9f7c5d84-s7j1x", "gke-sd-gke-sd-gpu-5c3e-8f2a1c3d-u2ne", DAY, node_ready=131.0,
                   attacher_start=118.0, scheduled=125.0, attacher_pod="disk-attacher-s9k2d")
    return {
        "three-cold-starts": recording(THREE, warm=[WARM], shuffle_seed=7),
        "gaps": recording([gaps]),
        "out-of-order": recording([skewed], shuffle_seed=3),
    }


def write(root: Path = ROOT) -> None:
    if root.exists():
        shutil.rmtree(root)
    for name, rec in scenarios().items():
        save(rec, root / name)


if __name__ == "__main__":
    write()
