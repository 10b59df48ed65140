"""Cold starts reconstructed from the records: milestones, the phases between them, and what is missing.

A cold start is a WebUI pod that waited for a new node: the cluster autoscaler recorded
`TriggeredScaleUp` on it, or its node registered after the pod was created. Its milestones:

  pod created          pod metadata.creationTimestamp
  scale-up triggered   Event reason TriggeredScaleUp on the pod, from cluster-autoscaler: "pod triggered scale-up: [...]"
                       (kubernetes/autoscaler cluster-autoscaler/processors/status/eventing_scale_up_processor.go),
                       or GKE's visibility log: a scale-up decision whose triggeringPods name the pod, at decideTime
                       (https://cloud.google.com/kubernetes-engine/docs/how-to/cluster-autoscaler-visibility)
  node registered      Node metadata.creationTimestamp (the kubelet registers the Node once the VM has booted)
  node Ready           Node condition Ready=True, lastTransitionTime
  node untainted       the disk attacher's `untaint` step line (images/attacher/attacher/log.py: one JSON line per
                       step, written when it ends: ts = end, duration_ms); its earlier steps are the disk's sub-phases
  pod scheduled        pod condition PodScheduled=True, lastTransitionTime (else the scheduler's `Scheduled` Event)
  image pull started   kubelet Event `Pulling` on spec.containers{webui}
  image pulled         kubelet Event `Pulled`: "Successfully pulled image %q in %v (%v including waiting)..."
                       or "Container image %q already present on machine" (kubernetes/kubernetes
                       pkg/kubelet/images/image_manager.go, EnsureImageExists)
  container started    kubelet Event `Started` on spec.containers{webui} (else containerStatuses running.startedAt)
  pod ready            pod condition Ready=True, lastTransitionTime: the readiness probe (images/webui/probe.py
                       `ready`) passes only after the startup probe's warm-up txt2img, so Ready = WebUI ready
  first image served   the first `API <time> 200 http/1.1 POST /sdapi/v1/txt2img <client> <seconds>` line of the
                       WebUI's --api-log (AUTOMATIC1111 v1.10.1 modules/api/api.py api_middleware) from a client
                       other than 127.0.0.1 (the probes call from inside the pod); its time is the container
                       runtime's stamp (`kubectl logs --timestamps`), when the response was sent

An Event's time is its eventTime (events.k8s.io, microseconds) or firstTimestamp (core/v1, seconds); the
earliest record wins whatever order they arrive in. A milestone without a record is reported "not found",
never estimated; a phase whose end precedes its start by more than the 1 s resolution of Kubernetes
timestamps is reported out of order instead of as a negative duration.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from tools.startup.recording import ATTACHER_NAMESPACE, WEBUI_CONTAINER, WEBUI_NAMESPACE, Recording

RESOLUTION_S = 1.0
"""metav1.Time serialises to whole seconds (RFC 3339 without fractions): two milestones from different
sources may appear up to this much out of order without being so."""

PHASES: tuple[tuple[str, str, str], ...] = (
    ("autoscaler", "pod created", "scale-up triggered"),
    ("node create", "scale-up triggered", "node registered"),
    ("node ready", "node registered", "node Ready"),
    ("runtime disk", "node Ready", "node untainted"),
    ("scheduling", "node untainted", "pod scheduled"),
    ("pod setup", "pod scheduled", "image pull started"),
    ("image pull", "image pull started", "image pulled"),
    ("container start", "image pulled", "container started"),
    ("WebUI ready", "container started", "pod ready"),
    ("first image", "pod ready", "first image served"),
)
TOTAL = "total"

WHERE = {
    "scale-up triggered": "no TriggeredScaleUp event on the pod (events expire: kube-apiserver --event-ttl, 1 h by default) "
                          "and no scale-up decision naming it in GKE's autoscaler visibility log",
    "node registered": "the pod's node is not in the node list (scaled down and deleted since?)",
    "node Ready": "the node has no Ready=True condition",
    "node untainted": "no `untaint` step line from the disk attacher on the node (pod logs gone and no Cloud Logging entries?)",
    "pod scheduled": "no PodScheduled=True condition and no Scheduled event",
    "image pull started": "no Pulling event for the container (expired?)",
    "image pulled": "no Pulled event for the container (expired?)",
    "container started": "no Started event and the container is not running",
    "pod ready": "the pod has no Ready=True condition",
    "first image served": "no `API ... 200 ... POST /sdapi/v1/txt2img` line from a client in the WebUI log (is --api-log on, "
                          "has anyone asked for an image yet?)",
}

_API_LINE = re.compile(r"API \S+ \S+ (?P<code>\d{3}) \S+ (?P<method>[A-Z]+) (?P<endpoint>\S+) (?P<client>\S+) "
                       r"(?P<duration>[\d.]+)$")
_PULLED = re.compile(r"in (?P<pull>\S+) \((?P<total>\S+) including waiting\)")
_GO_DURATION = re.compile(r"([\d.]+)(h|ms|µs|us|ns|m|s)")
_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9}
_LOCAL = frozenset({"127.0.0.1", "::1"})


def go_seconds(text: str) -> float | None:
    """A Go time.Duration as String() prints it ("1m5.2s", "850ms"), in seconds; None if it is not one."""
    parts = _GO_DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _GO_UNITS[u] for n, u in parts)


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Milestone:
    time: datetime
    source: str


@dataclass(frozen=True)
class Phase:
    name: str
    start: datetime | None
    end: datetime | None
    problem: str | None = None
    detail: str = ""
    status: str = "ok"
    measured: float | None = None
    """The duration the recording itself states (the kubelet's pull time), finer than whole-second timestamps."""

    @property
    def seconds(self) -> float | None:
        if self.problem or self.start is None or self.end is None:
            return None
        if self.measured is not None:
            return self.measured
        return max(0.0, (self.end - self.start).total_seconds())


@dataclass
class ColdStart:
    pod: str
    node: str | None
    created: datetime
    milestones: dict[str, Milestone]
    phases: list[Phase]
    steps: list[Phase] = field(default_factory=list)
    """The disk attacher's steps on the node, for the `runtime disk` phase's breakdown."""
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> Phase:
        start = self.milestones["pod created"].time
        for last in ("first image served", "pod ready"):
            if last in self.milestones:
                return replace(_phase(TOTAL, self.milestones, "pod created", last), detail=f"pod created -> {last}")
        return Phase(TOTAL, start, None, problem="not found: pod ready (" + WHERE["pod ready"] + ")")


@dataclass
class Reconstruction:
    cold_starts: list[ColdStart]
    skipped: list[str]
    """WebUI pods that are not cold starts, or cannot be told apart, and why."""
    missing: list[str]


def _event_time(event: dict[str, Any]) -> datetime | None:
    return parse_time(event.get("eventTime") or event.get("firstTimestamp") or event.get("metadata", {}).get("creationTimestamp"))


def _condition(obj: dict[str, Any], kind: str) -> datetime | None:
    for condition in obj.get("status", {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return parse_time(condition.get("lastTransitionTime"))
    return None


def _strip_stamp(line: str) -> tuple[datetime | None, str]:
    """`kubectl logs --timestamps` prefixes every line with the runtime's RFC 3339 time and a space."""
    stamp, _, rest = line.partition(" ")
    try:
        return parse_time(stamp), rest
    except ValueError:
        return None, line


def _events_of(recording: Recording, pod: dict[str, Any]) -> list[dict[str, Any]]:
    meta = pod["metadata"]
    found = []
    for event in recording.events:
        target = event.get("involvedObject") or event.get("regarding") or {}
        if target.get("kind") != "Pod":
            continue
        same = target.get("uid") == meta.get("uid") if target.get("uid") and meta.get("uid") else (
            target.get("name") == meta["name"] and target.get("namespace") == meta.get("namespace"))
        if same and _event_time(event) is not None:
            found.append(event)
    return sorted(found, key=_event_time)


def _first(events: list[dict[str, Any]], reason: str, container: str | None = None) -> dict[str, Any] | None:
    for event in events:
        target = event.get("involvedObject") or event.get("regarding") or {}
        if event.get("reason") == reason and (container is None or target.get("fieldPath") == f"spec.containers{{{container}}}"):
            return event
    return None


def _attacher_steps(recording: Recording, node: str) -> list[dict[str, Any]]:
    """The agent's step lines on `node`, from its pods' logs and from Cloud Logging, deduplicated, in time order.

    A pod belongs to the node when the pod list says so, or, for a pod gone with its node, when one of its
    lines names the node: `identify` notes the instance, `untaint` the node (GKE names a node after its VM).
    """
    on_node = {p["metadata"]["name"] for p in recording.pods
               if p["metadata"].get("namespace") == ATTACHER_NAMESPACE and p.get("spec", {}).get("nodeName") == node}
    by_pod: dict[str, list[Any]] = {}
    for (namespace, pod, _container), lines in recording.logs.items():
        if namespace == ATTACHER_NAMESPACE:
            by_pod.setdefault(pod, []).extend(_json(_strip_stamp(line)[1]) for line in lines)
    for entry in recording.cloud_logging:
        by_pod.setdefault(entry.get("resource", {}).get("labels", {}).get("pod_name", ""), []).append(entry.get("jsonPayload"))
    records: dict[tuple[str, str], dict[str, Any]] = {}
    for pod, items in by_pod.items():
        steps = [r for r in items if isinstance(r, dict) and r.get("event") == "step" and r.get("ts")]
        if pod in on_node or any(node in (r.get("node"), r.get("instance")) for r in steps):
            records.update({(r["ts"], str(r.get("step"))): r for r in steps})
    return sorted(records.values(), key=lambda r: parse_time(r["ts"]))


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _steps_and_untaint(records: list[dict[str, Any]]) -> tuple[list[Phase], Milestone | None]:
    steps: list[Phase] = []
    for record in records:
        end = parse_time(record["ts"])
        start = end - timedelta(milliseconds=float(record.get("duration_ms", 0)))
        steps.append(Phase(str(record.get("step")), start, end, status=str(record.get("status", "ok")),
                           detail=record.get("error") or record.get("reason") or ""))
        if record.get("step") == "untaint" and record.get("status") == "ok":
            return steps, Milestone(end, "disk attacher `untaint` step")
    return steps, None


def _scale_up_decision(recording: Recording, meta: dict[str, Any]) -> Milestone | None:
    """The earliest GKE autoscaler visibility decision to scale up for this pod."""
    found = []
    for entry in recording.cloud_logging:
        decision = (entry.get("jsonPayload") or {}).get("decision") or {}
        pods = (decision.get("scaleUp") or {}).get("triggeringPods") or []
        if any(p.get("name") == meta["name"] and p.get("namespace", meta.get("namespace")) == meta.get("namespace")
               for p in pods) and str(decision.get("decideTime", "")).isdigit():
            found.append(Milestone(datetime.fromtimestamp(int(decision["decideTime"]), UTC),
                                   f"GKE autoscaler visibility: scale-up decision {decision.get('eventId', '')}"))
    return min(found, key=lambda m: m.time, default=None)


def _first_image(recording: Recording, pod: dict[str, Any]) -> Milestone | None:
    meta = pod["metadata"]
    for line in recording.logs.get((meta.get("namespace", WEBUI_NAMESPACE), meta["name"], WEBUI_CONTAINER), []):
        stamp, text = _strip_stamp(line)
        match = _API_LINE.search(text)
        if (stamp and match and match["code"] == "200" and match["method"] == "POST"
                and match["endpoint"] == "/sdapi/v1/txt2img" and match["client"] not in _LOCAL):
            return Milestone(stamp, f"WebUI --api-log: txt2img 200 to {match['client']} in {match['duration']} s")
    return None


def _phase(name: str, milestones: dict[str, Milestone], start: str, end: str) -> Phase:
    missing = [m for m in (start, end) if m not in milestones]
    if missing:
        return Phase(name, None, None, problem="not found: " + "; ".join(f"{m} ({WHERE.get(m, 'no record')})" for m in missing))
    begin, finish = milestones[start], milestones[end]
    if (finish.time - begin.time).total_seconds() <= -RESOLUTION_S:
        return Phase(name, begin.time, finish.time, problem=f"out of order: {end} ({finish.time:%H:%M:%S}) is before "
                                                             f"{start} ({begin.time:%H:%M:%S})")
    return Phase(name, begin.time, finish.time, detail=finish.source)


def reconstruct(recording: Recording, last: int | None = None) -> Reconstruction:
    nodes = {n["metadata"]["name"]: n for n in recording.nodes}
    webui_pods = [p for p in recording.pods if p["metadata"].get("namespace") == WEBUI_NAMESPACE
                  and any(c.get("name") == WEBUI_CONTAINER for c in p.get("spec", {}).get("containers", []))]
    cold, skipped = [], []
    for pod in sorted(webui_pods, key=lambda p: parse_time(p["metadata"]["creationTimestamp"])):
        result = _cold_start(recording, pod, nodes)
        if isinstance(result, str):
            skipped.append(result)
        else:
            cold.append(result)
    missing = [f"not found: {m}" for m in recording.missing]
    if "pods.json" in recording.missing:
        missing.append("without the pod list there is no cold start to reconstruct")
    return Reconstruction(cold[-last:] if last else cold, skipped, missing)


def _cold_start(recording: Recording, pod: dict[str, Any], nodes: dict[str, dict[str, Any]]) -> ColdStart | str:
    meta, name = pod["metadata"], pod["metadata"]["name"]
    created = parse_time(meta["creationTimestamp"])
    events = _events_of(recording, pod)
    node_name = pod.get("spec", {}).get("nodeName")
    node = nodes.get(node_name) if node_name else None
    m: dict[str, Milestone] = {"pod created": Milestone(created, "pod creationTimestamp")}
    notes: list[str] = []
    if (event := _first(events, "TriggeredScaleUp")) is not None:
        m["scale-up triggered"] = Milestone(_event_time(event), f"TriggeredScaleUp: {event.get('message', '')}")
    elif (decided := _scale_up_decision(recording, meta)) is not None:
        m["scale-up triggered"] = decided
    node_created = parse_time(node["metadata"]["creationTimestamp"]) if node else None
    if "scale-up triggered" not in m and (node_created is None or node_created < created):
        why = ("its node predates it" if node_created else
               f"no TriggeredScaleUp event and its node {node_name or '(not scheduled)'} is not in the node list")
        declined = _first(events, "NotTriggerScaleUp")
        extra = f"; the autoscaler said: {declined.get('message')}" if declined else ""
        return f"{name}: not a cold start ({why}){extra}" if node_created else f"{name}: cannot tell ({why}){extra}"
    if (event := _first(events, "FailedScheduling")) is not None:
        notes.append(f"unschedulable at {_event_time(event):%H:%M:%S}: {event.get('message', '')}")
    steps: list[Phase] = []
    if node is not None:
        m["node registered"] = Milestone(node_created, "Node creationTimestamp")
        if (ready := _condition(node, "Ready")) is not None:
            m["node Ready"] = Milestone(ready, "Node condition Ready")
        steps, untaint = _steps_and_untaint(_attacher_steps(recording, node_name))
        if untaint is not None:
            m["node untainted"] = untaint
    if (scheduled := _condition(pod, "PodScheduled")) is not None:
        m["pod scheduled"] = Milestone(scheduled, "pod condition PodScheduled")
    elif (event := _first(events, "Scheduled")) is not None:
        m["pod scheduled"] = Milestone(_event_time(event), f"Scheduled: {event.get('message', '')}")
    pulling, pulled = _first(events, "Pulling", WEBUI_CONTAINER), _first(events, "Pulled", WEBUI_CONTAINER)
    if pulled is not None and "already present" in pulled.get("message", ""):
        pulling = pulling or pulled  # nothing pulled: the pull phase is empty, not missing
    if pulling is not None:
        m["image pull started"] = Milestone(_event_time(pulling), "Pulling event")
    if pulled is not None:
        match = _PULLED.search(pulled.get("message", ""))
        said = (f"kubelet: pulled in {match['pull']} ({match['total']} including waiting)" if match
                else pulled.get("message", ""))
        m["image pulled"] = Milestone(_event_time(pulled), said)
    if (event := _first(events, "Started", WEBUI_CONTAINER)) is not None:
        m["container started"] = Milestone(_event_time(event), "Started event")
    else:
        for status in pod.get("status", {}).get("containerStatuses") or []:
            started = (status.get("state", {}).get("running") or {}).get("startedAt")
            if status.get("name") == WEBUI_CONTAINER and started:
                m["container started"] = Milestone(parse_time(started), "containerStatuses running.startedAt")
    if (ready := _condition(pod, "Ready")) is not None:
        m["pod ready"] = Milestone(ready, "pod condition Ready (readiness probe: warm)")
    if (first := _first_image(recording, pod)) is not None:
        m["first image served"] = first
    phases = [_phase(phase, m, start, end) for phase, start, end in PHASES]
    if pulled is not None and (match := _PULLED.search(pulled.get("message", ""))):
        total = go_seconds(match["total"])
        if total is not None:
            phases = [replace(p, measured=total) if p.name == "image pull" and not p.problem else p for p in phases]
    return ColdStart(pod=name, node=node_name, created=created, milestones=m, phases=phases, steps=steps, notes=notes)
