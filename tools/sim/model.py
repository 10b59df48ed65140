"""A discrete-event model of one scenario: requests, KEDA's HTTP add-on, the HPA, the cluster
autoscaler and the GPU node's cold start. Deterministic for a seed; every rule cites its source.

The path of a request (KEDA HTTP add-on v0.15.0, kedacore/http-add-on@4ea8a863bd7c16464dc5afbe9ebc8a26e563fac0):
- the interceptor holds it while the Service has no ready endpoint and releases every held request
  when the first one turns ready (pkg/k8s/ready_endpoints_cache.go WaitForReady); such a request's
  response carries `X-KEDA-HTTP-Cold-Start: true` (interceptor/middleware/endpoint_resolver.go:98).
  Here a request is "cold" by the same rule: no ready pod when it arrived.
- it is then proxied to the Service (interceptor/middleware/routing.go resolveUpstreamURL), whose
  proxy picks a ready endpoint at random (https://kubernetes.io/docs/reference/networking/virtual-ips/),
  and it queues in that pod: WebUI runs one generation at a time behind a FIFO lock
  (AUTOMATIC1111/stable-diffusion-webui@82a973c04367123ae98bd9abdf80d9eda9b910e2: modules/call_queue.py:8,
  modules/api/api.py:467). The interceptor does not cap per-pod concurrency (REFERENCE §3).
  `dispatch="service"` models that; `dispatch="queue"` models one shared FIFO that hands a request to a
  pod only when the pod is idle, the best any dispatcher could do, for comparison.

Scaling (one GPU pod per GPU node; g2-standard-8 has one L4):
- KEDA scales 0 -> 1 as soon as the interceptor pushes activity: a push scaler's activity goes
  straight to RequestScale, without waiting for the polling interval (kedacore/keda@258b79f9de7e550bc766b0bb1903c0d67971e655:
  pkg/scaling/scale_handler.go, startPushScalers), and 1 -> 0 once nothing was in flight for the
  cool-down (ScaledObject `cooldownPeriod`, https://keda.sh/docs/latest/reference/scaledobject-spec/),
  checked every poll.
- Between 1 and max the HPA runs every poll (sync period 15 s by default): desired =
  ceil(in-flight / target), left alone within the 10 % tolerance
  (https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/#algorithm-details);
  scale-up at most max(+4 pods, +100 %) per poll (the default scaleUp policies); scale-down to the
  highest recommendation made strictly within the stabilisation window
  (kubernetes/kubernetes@00067268967ec95a40035bd666374a1caf48dd1a: pkg/controller/podautoscaler/horizontal.go,
  stabilizeRecommendationWithBehaviors).
- Scale-down removes pods in the ReplicaSet's order: unscheduled, then not ready, then the most
  recently ready (same commit: pkg/controller/controller_utils.go, ActivePodsWithRanks.Less). A ready
  pod being removed finishes the generations queued in it first (the WebUI preStop drain).
- A pod that finds no empty usable node stays pending; the cluster autoscaler acts on pending pods
  after `autoscaler_s` and adds a node per pod not covered by a booting node, up to max_replicas nodes.
  The node is billed from then; it is usable after boot (`node_s`) and the runtime disk (`disk_s`,
  once per node: the disk attacher). A pod then pulls (`pull_s`) and starts WebUI (`webui_s`).
- A node empty for `node_scale_down_s` is removed. GKE documents that OPTIMIZE_UTILIZATION removes
  nodes "faster" than the balanced profile without a figure
  (https://cloud.google.com/kubernetes-engine/docs/concepts/cluster-autoscaler#autoscaling_profiles);
  the default is upstream's `scale-down-unneeded-time`, 10 min
  (https://github.com/kubernetes/autoscaler/blob/master/cluster-autoscaler/FAQ.md), an upper bound.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from tools.sim.stats import latency_summary

DISPATCH = ("service", "queue")
HPA_TOLERANCE = 0.1
HPA_SCALE_UP_PODS = 4
HPA_SCALE_UP_FACTOR = 2


@dataclass(frozen=True)
class ColdStart:
    """Seconds per step. Defaults: the published timeline after the image split (Google Cloud blog,
    https://cloud.google.com/blog/products/containers-kubernetes/stable-diffusion-containers-on-gke):
    autoscaler trigger 38 s, node boot and scheduling 89 s, volume 4 s, image pull start 10 s + pull
    1 s, WebUI ready about 65 s."""

    autoscaler_s: float = 38.0
    node_s: float = 89.0
    disk_s: float = 4.0
    pull_s: float = 11.0
    webui_s: float = 65.0

    @property
    def total_s(self) -> float:
        return self.autoscaler_s + self.node_s + self.disk_s + self.pull_s + self.webui_s


@dataclass(frozen=True)
class Scaling:
    min_replicas: int = 0
    max_replicas: int = 2  # also the GPU pool's max nodes (Pulumi.dev.yaml gpuPool.maxNodes)
    target_in_flight: float = 1.0  # the ScaledObject's concurrency target per pod
    poll_s: float = 15.0  # the HPA sync period (kube-controller-manager default)
    stabilisation_s: float = 300.0  # HPA scaleDown.stabilizationWindowSeconds default
    cooldown_s: float = 300.0  # KEDA cooldownPeriod default
    node_scale_down_s: float = 600.0  # cluster autoscaler scale-down-unneeded-time default


@dataclass(frozen=True)
class Costs:
    """Per GPU node and hour, from the README's cost section (us-central1): g2-standard-8 + one L4,
    about $0.30 Spot (dev) or $0.85 on demand; its runtime disk about $0.007."""

    node_usd_per_hour: float = 0.30
    disk_usd_per_hour: float = 0.007


@dataclass(frozen=True)
class Scenario:
    cold_start: ColdStart = field(default_factory=ColdStart)
    scaling: Scaling = field(default_factory=Scaling)
    costs: Costs = field(default_factory=Costs)
    generation_s: float = 5.0  # an assumption: one 512x512 20-step image on an L4; measure yours
    dispatch: str = "service"

    def problems(self) -> list[str]:
        """Every invalid field, named with its value and what is allowed."""
        found = []
        scaling = self.scaling
        if self.dispatch not in DISPATCH:
            found.append(f"dispatch={self.dispatch!r}: expected one of {', '.join(DISPATCH)}")
        if self.generation_s <= 0:
            found.append(f"generation_s={self.generation_s}: expected > 0")
        if scaling.max_replicas < 1 or not 0 <= scaling.min_replicas <= scaling.max_replicas:
            found.append(f"min_replicas={scaling.min_replicas}, max_replicas={scaling.max_replicas}: "
                         "expected 0 <= min <= max and max >= 1")
        if scaling.target_in_flight <= 0 or scaling.poll_s <= 0:
            found.append(f"target_in_flight={scaling.target_in_flight}, poll_s={scaling.poll_s}: expected > 0")
        for name, value in [*asdict(self.cold_start).items(), *asdict(self.costs).items(),
                            ("stabilisation_s", scaling.stabilisation_s), ("cooldown_s", scaling.cooldown_s),
                            ("node_scale_down_s", scaling.node_scale_down_s)]:
            if value < 0:
                found.append(f"{name}={value}: expected >= 0")
        return found


@dataclass(frozen=True)
class Session:
    """One person's prompts: the first at `start`, each next one `think_s` after the previous image came
    back (a closed loop: nobody sends prompt two while prompt one is still waiting for a cold start)."""

    start: float
    requests: int = 1
    think_s: float = 0.0


@dataclass
class Request:
    id: int
    arrival: float
    session: Session
    follow_ups: int  # prompts of its session still to come after this one
    start: float | None = None
    end: float | None = None
    cold: bool = False  # no ready pod when it arrived: the interceptor held it (X-KEDA-HTTP-Cold-Start)
    pod: int | None = None

    @property
    def latency(self) -> float | None:
        return None if self.end is None else self.end - self.arrival


@dataclass(eq=False)
class Node:
    id: int
    created: float  # billed from here
    state: str = "booting"  # booting | usable | removed
    pod: Pod | None = None
    removed: float | None = None
    idle_token: int = 0


@dataclass(eq=False)
class Pod:
    id: int
    created: float
    state: str = "pending"  # pending | starting | ready | terminating | gone
    node: Node | None = None
    ready_since: float | None = None
    queue: deque[Request] = field(default_factory=deque)
    current: Request | None = None


@dataclass(frozen=True)
class Event:
    t: float
    kind: str  # node-created, node-usable, node-removed, pod-created, pod-bound, pod-ready, pod-terminating, pod-gone
    id: int


@dataclass(frozen=True)
class Sample:
    t: float
    in_flight: int
    replicas: int
    pods_ready: int
    pods: int
    nodes: int


@dataclass
class Result:
    scenario: Scenario
    duration_s: float
    requests: list[Request]
    events: list[Event]
    samples: list[Sample]
    node_seconds: float  # GPU node time billed within [0, duration_s]

    def times(self, kind: str) -> list[float]:
        return [event.t for event in self.events if event.kind == kind]

    def summary(self) -> dict[str, float | int | None]:
        done = [r.latency for r in self.requests if r.latency is not None]
        cold = sum(r.cold for r in self.requests)
        gpu_hours = self.node_seconds / 3600
        costs = self.scenario.costs
        cost = gpu_hours * (costs.node_usd_per_hour + costs.disk_usd_per_hour)
        return {
            "requests": len(self.requests),
            "completed": len(done),
            **{f"{key}_s": value for key, value in latency_summary(done).items()},
            "cold_requests": cold,
            "cold_share": cold / len(self.requests) if self.requests else None,
            "gpu_hours": gpu_hours,
            "gpu_hours_per_day": gpu_hours * 86_400 / self.duration_s,
            "cost_usd": cost,
            "usd_per_1000_images": cost / len(done) * 1000 if done else None,
            "max_nodes": max((s.nodes for s in self.samples), default=0),
        }


# At equal times: state changes first, then arrivals, then the autoscalers.
_NODE_USABLE, _POD_READY, _GENERATION_DONE, _ARRIVAL, _CA_CHECK, _POLL, _NODE_IDLE = range(7)


class _Simulation:
    def __init__(self, scenario: Scenario, sessions: list[Session], duration_s: float, seed: int):
        self.scenario = scenario
        self.scaling = scenario.scaling
        self.duration_s = duration_s
        self.rng = random.Random(f"dispatch-{seed}")
        self.heap: list[tuple[float, int, int, Callable, object]] = []
        self.sequence = itertools.count()
        self.now = 0.0
        self.sessions = sorted(sessions, key=lambda session: session.start)
        self.requests: list[Request] = []
        self.arrivals_due = 0
        self.nodes: list[Node] = []
        self.pods: list[Pod] = []
        self.held: deque[Request] = deque()  # in the interceptor (queue mode: the shared FIFO)
        self.in_flight = 0
        self.last_active = 0.0
        self.replicas = self.scaling.min_replicas
        self.recommendations: list[tuple[float, int]] = []
        self.events: list[Event] = []
        self.samples: list[Sample] = []
        for _ in range(self.scaling.min_replicas):  # the warm minimum is up when the run starts
            self._node_usable(self._new_node(booting=False))
            self._pod_ready(self._new_pod())

    def run(self) -> Result:
        for session in self.sessions:
            self._request_at(session.start, session, session.requests - 1)
        self._at(0.0, _POLL, self._poll, None)
        self._sample()
        while self.heap:
            self.now, _, _, handler, argument = heapq.heappop(self.heap)
            handler(argument)
            self._sample()
        billed = sum(max(0.0, min(self.duration_s, node.removed if node.removed is not None else self.duration_s)
                         - node.created) for node in self.nodes)
        return Result(self.scenario, self.duration_s, self.requests, self.events, self.samples, billed)

    def _at(self, t: float, priority: int, handler: Callable, argument: object) -> None:
        heapq.heappush(self.heap, (t, priority, next(self.sequence), handler, argument))

    def _log(self, kind: str, subject: int) -> None:
        self.events.append(Event(self.now, kind, subject))

    def _sample(self) -> None:
        live = [p for p in self.pods if p.state != "gone"]
        sample = Sample(self.now, self.in_flight, self.replicas, sum(p.state == "ready" for p in live), len(live),
                        sum(n.state != "removed" for n in self.nodes))
        if self.samples and self.samples[-1].t == sample.t:
            self.samples[-1] = sample
        elif not self.samples or _differs(self.samples[-1], sample):
            self.samples.append(sample)

    def _ready(self) -> list[Pod]:
        return [p for p in self.pods if p.state == "ready"]

    # Requests

    def _request_at(self, t: float, session: Session, follow_ups: int) -> None:
        request = Request(len(self.requests), t, session, follow_ups)
        self.requests.append(request)
        self.arrivals_due += 1
        self._at(t, _ARRIVAL, self._arrive, request)

    def _arrive(self, request: Request) -> None:
        self.arrivals_due -= 1
        self.in_flight += 1
        if self.replicas == 0:
            self._set_replicas(1)
        ready = self._ready()
        request.cold = not ready
        if self.scenario.dispatch == "queue":
            self.held.append(request)
            self._feed_idle_pods()
        elif ready:
            self._enqueue(self.rng.choice(ready), request)
        else:
            self.held.append(request)

    def _enqueue(self, pod: Pod, request: Request) -> None:
        pod.queue.append(request)
        if pod.current is None:
            self._start_next(pod)

    def _feed_idle_pods(self) -> None:
        for pod in self._ready():
            if pod.current is None and self.held:
                self._enqueue(pod, self.held.popleft())

    def _start_next(self, pod: Pod) -> None:
        request = pod.queue.popleft()
        pod.current, request.start, request.pod = request, self.now, pod.id
        self._at(self.now + self.scenario.generation_s, _GENERATION_DONE, self._generation_done, pod)

    def _generation_done(self, pod: Pod) -> None:
        done, pod.current = pod.current, None
        done.end = self.now
        if done.follow_ups:
            self._request_at(self.now + done.session.think_s, done.session, done.follow_ups - 1)
        self.in_flight -= 1
        if self.in_flight == 0:
            self.last_active = self.now
        if pod.queue:
            self._start_next(pod)
        elif pod.state == "terminating":
            self._pod_gone(pod)
        elif self.scenario.dispatch == "queue":
            self._feed_idle_pods()

    # Pods and nodes

    def _new_pod(self) -> Pod:
        pod = Pod(len(self.pods), self.now)
        self.pods.append(pod)
        self._log("pod-created", pod.id)
        self._bind_pending()
        if pod.node is None:
            self._at(self.now + self.scenario.cold_start.autoscaler_s, _CA_CHECK, self._ca_check, None)
        return pod

    def _bind_pending(self) -> None:
        for pod in self.pods:
            if pod.state != "pending":
                continue
            node = next((n for n in self.nodes if n.state == "usable" and n.pod is None), None)
            if node is None:
                return
            pod.node, node.pod, pod.state = node, pod, "starting"
            node.idle_token += 1
            self._log("pod-bound", pod.id)
            cold_start = self.scenario.cold_start
            self._at(self.now + cold_start.pull_s + cold_start.webui_s, _POD_READY, self._pod_ready, pod)

    def _pod_ready(self, pod: Pod) -> None:
        if pod.state != "starting":
            return  # removed while it started, or made ready at the start of the run
        pod.state, pod.ready_since = "ready", self.now
        self._log("pod-ready", pod.id)
        if self.scenario.dispatch == "queue":
            self._feed_idle_pods()
            return
        while self.held:  # the interceptor releases everything it held to the Service at once
            self._enqueue(self.rng.choice(self._ready()), self.held.popleft())

    def _remove_pod(self, pod: Pod) -> None:
        if pod.state == "ready" and (pod.current or pod.queue):
            pod.state = "terminating"  # out of the endpoints; drains what it holds
            self._log("pod-terminating", pod.id)
        else:
            self._pod_gone(pod)

    def _pod_gone(self, pod: Pod) -> None:
        pod.state = "gone"
        self._log("pod-gone", pod.id)
        node, pod.node = pod.node, None
        if node is not None:
            node.pod = None
            self._bind_pending()
            if node.pod is None:
                self._node_emptied(node)

    def _new_node(self, booting: bool = True) -> Node:
        node = Node(len(self.nodes), self.now)
        self.nodes.append(node)
        self._log("node-created", node.id)
        if booting:
            cold_start = self.scenario.cold_start
            self._at(self.now + cold_start.node_s + cold_start.disk_s, _NODE_USABLE, self._node_usable, node)
        return node

    def _node_usable(self, node: Node) -> None:
        node.state = "usable"
        self._log("node-usable", node.id)
        self._bind_pending()
        if node.pod is None:
            self._node_emptied(node)

    def _node_emptied(self, node: Node) -> None:
        node.idle_token += 1
        self._at(self.now + self.scaling.node_scale_down_s, _NODE_IDLE, self._node_idle, (node, node.idle_token))

    def _node_idle(self, argument: tuple[Node, int]) -> None:
        node, token = argument
        if token == node.idle_token and node.pod is None and node.state == "usable":
            node.state, node.removed = "removed", self.now
            self._log("node-removed", node.id)

    def _ca_check(self, _: object) -> None:
        pending = sum(p.state == "pending" for p in self.pods)
        booting = sum(n.state == "booting" for n in self.nodes)
        room = self.scaling.max_replicas - sum(n.state != "removed" for n in self.nodes)
        for _ in range(min(pending - booting, room)):
            self._new_node()

    # Autoscalers

    def _poll(self, _: object) -> None:
        scaling = self.scaling
        if self.replicas > 0:
            idle_for = self.now - self.last_active
            if self.in_flight == 0 and scaling.min_replicas == 0 and idle_for >= scaling.cooldown_s:
                self.recommendations.clear()
                self._set_replicas(0)
            else:
                self._set_replicas(self._hpa_replicas())
        if self.now + scaling.poll_s < self.duration_s or self.in_flight or self.arrivals_due:
            self._at(self.now + scaling.poll_s, _POLL, self._poll, None)

    def _hpa_replicas(self) -> int:
        scaling, current = self.scaling, self.replicas
        if abs(self.in_flight / (scaling.target_in_flight * current) - 1) <= HPA_TOLERANCE:
            desired = current
        else:
            desired = math.ceil(self.in_flight / scaling.target_in_flight)
        desired = min(max(desired, scaling.min_replicas, 1), scaling.max_replicas)
        cutoff = self.now - scaling.stabilisation_s
        self.recommendations = [(t, r) for t, r in self.recommendations if t > cutoff]
        self.recommendations.append((self.now, desired))
        if desired >= current:
            return min(desired, max(current + HPA_SCALE_UP_PODS, current * HPA_SCALE_UP_FACTOR))
        return min(current, max(r for _, r in self.recommendations))

    def _set_replicas(self, replicas: int) -> None:
        self.replicas = replicas
        live = [p for p in self.pods if p.state in ("pending", "starting", "ready")]
        for _ in range(replicas - len(live)):
            self._new_pod()
        excess = len(live) - replicas
        if excess > 0:
            for pod in sorted(live, key=_deletion_order)[:excess]:
                self._remove_pod(pod)


def _deletion_order(pod: Pod) -> tuple:
    return (pod.node is not None, pod.state == "ready", -(pod.ready_since or 0.0), -pod.created, -pod.id)


def _differs(a: Sample, b: Sample) -> bool:
    return (a.in_flight, a.replicas, a.pods_ready, a.pods, a.nodes) != (b.in_flight, b.replicas, b.pods_ready, b.pods, b.nodes)


def simulate(scenario: Scenario, sessions: list[Session], duration_s: float, seed: int = 0) -> Result:
    """Run one scenario over the given sessions. Nodes are billed within [0, duration_s]; sessions that
    start before the end are followed to their last image."""
    problems = scenario.problems()
    if problems:
        raise ValueError("invalid scenario: " + "; ".join(problems))
    return _Simulation(scenario, sessions, duration_s, seed).run()
