"""A discrete-event model of one scenario: requests, the way in (the KEDA HTTP add-on's interceptor, or the
request queue that replaces it), the HPA, KEDA, the cluster autoscaler, Spot preemption and the GPU node's
cold start. Deterministic for a seed; every rule cites its source. A request cut by a timeout is an error,
never "served", and the GPU time spent on a request nobody waits for is counted as waste.

`design="old"`, the KEDA HTTP add-on v0.15.0 (kedacore/http-add-on@4ea8a863bd7c16464dc5afbe9ebc8a26e563fac0):
- the interceptor holds a request while the Service has no ready endpoint and releases every held request
  to the first endpoint that turns ready (pkg/k8s/ready_endpoints_cache.go WaitForReady); a request is
  "cold" by the rule of its `X-KEDA-HTTP-Cold-Start` header (interceptor/middleware/endpoint_resolver.go):
  no ready pod when it arrived. Held longer than the route's `timeouts.readiness` it gets a 504.
- afterwards it is proxied to the Service (interceptor/middleware/routing.go resolveUpstreamURL), whose proxy
  picks a ready endpoint at random (https://kubernetes.io/docs/reference/networking/virtual-ips/), and it
  queues in that pod: WebUI runs one generation at a time behind a FIFO lock
  (AUTOMATIC1111/stable-diffusion-webui@82a973c04367123ae98bd9abdf80d9eda9b910e2: modules/call_queue.py:8,
  modules/api/api.py:467).
- the route's `timeouts.responseHeader` runs per upstream call, so it covers the wait inside the pod plus the
  generation (interceptor/handler/upstream.go: 504 on expiry); `timeouts.request` bounds the whole request;
  the load balancer's backend timeout (GCPBackendPolicy `timeoutSec`) bounds it from outside (counted as a
  502; Google's load balancer logs call it `backend_timeout`, the status code is not verified; with the chain
  the program derives it never fires first). A cut request stays queued in WebUI, which runs it anyway:
  nothing interrupts it (REFERENCE section 8).
- every request the interceptor holds or has forwarded counts toward its concurrency metric, pushed to KEDA
  (`external-push`): KEDA scales 0 -> 1 at once (kedacore/keda@258b79f9de7e550bc766b0bb1903c0d67971e655
  pkg/scaling/scale_handler.go startPushScalers). A browser tab's Gradio WebSocket is an open request too.

`design="new"`, the request queue (docs/request-queue.md):
- one FIFO buffer; a pod's worker takes a job only when its WebUI has none in flight, so nothing waits in a pod;
- `QUEUE_MAX_DEPTH` requests waiting: a new one gets 429 at once; not dispatched within
  `QUEUE_MAX_WAIT_SECONDS`: 503; a generation longer than its `generation_timeout` is interrupted
  (`/sdapi/v1/interrupt`) and the client gets 504; a client gone (the load balancer's timeout) is dropped from
  the buffer or interrupted;
- KEDA's `metrics-api` trigger reads `desired = max(busy + waiting, 1 if ui_active)` every `pollingInterval`
  (https://keda.sh/docs/latest/scalers/metrics-api/; activation 0 -> 1 happens on that poll,
  https://keda.sh/docs/latest/reference/scaledobject-spec/#pollinginterval); a browser visit keeps one pod
  wanted for `UI_KEEPALIVE_SECONDS`.

Both designs (one GPU pod per GPU node; g2-standard-8 has one L4):
- KEDA scales 1 -> 0 once no trigger was active for `cooldownPeriod`, checked every polling interval
  (https://keda.sh/docs/latest/reference/scaledobject-spec/#cooldownperiod).
- Between 1 and max the HPA runs every sync period (15 s by default): desired = ceil(metric / target), left
  alone within the 10 % tolerance (https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/
  #algorithm-details); scale-up at most max(+4 pods, +100 %) per sync (the default scaleUp policies);
  scale-down to the highest recommendation made strictly within the stabilisation window
  (kubernetes/kubernetes@00067268967ec95a40035bd666374a1caf48dd1a pkg/controller/podautoscaler/horizontal.go,
  stabilizeRecommendationWithBehaviors); components/autoscaling.py sets the window to `cooldownSeconds`.
- Warm schedules are KEDA cron triggers: `desiredReplicas` between start and end in the trigger's time zone
  (https://keda.sh/docs/latest/scalers/cron/); the ScaledObject takes the largest trigger, so a schedule is a
  floor on the replicas while it is active, and an active trigger keeps KEDA from scaling to zero.
- Scale-down removes pods in the ReplicaSet's order: unscheduled, then not ready, then the most recently
  ready (kubernetes@00067268 pkg/controller/controller_utils.go ActivePodsWithRanks.Less). A pod being removed
  finishes what it holds first (the WebUI preStop drain; the worker's SIGTERM handling).
- A pod that finds no empty usable node stays pending; the cluster autoscaler acts on pending pods after
  `autoscaler_s` and adds a node per pod not covered by a booting node, up to max_replicas nodes. The node is
  billed from then; usable after boot (`node_s`) and the runtime disk (`disk_s`); a pod then pulls (`pull_s`)
  and starts WebUI (`webui_s`).
- A node empty for `node_scale_down_s` is removed. GKE documents that OPTIMIZE_UTILIZATION removes nodes
  "faster" than the balanced profile, without a figure
  (https://cloud.google.com/kubernetes-engine/docs/concepts/cluster-autoscaler#autoscaling_profiles); upstream's
  `scale-down-unneeded-time` is 10 min (https://github.com/kubernetes/autoscaler/blob/master/cluster-autoscaler/
  FAQ.md, "How does scale-down work?"), so the command line runs a range of values.
- Spot preemption: each node is preempted at `preemptions_per_node_hour` (a Poisson rate). GKE gives the pods
  30 s after the preemption notice, then the VM stops (https://cloud.google.com/kubernetes-engine/docs/concepts/
  spot-vms, "Termination and graceful shutdown of Spot VMs": 15 s for ordinary pods, then 15 s for system
  pods). From the notice the pod takes no new work and the ReplicaSet creates its replacement; what is still running when
  the VM stops is lost: the old design's clients of that pod get 502, the new design puts the job back at
  the head of the buffer while its client waits within its bound (docs/request-queue.md, `cancel`), else 502.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

from tools.sim.result import Event, Request, Result, Sample
from tools.sim.scenario import Scenario, Session
from tools.sim.warm import run_start_epoch

HPA_TOLERANCE = 0.1
HPA_SCALE_UP_PODS = 4
HPA_SCALE_UP_FACTOR = 2
SPOT_NOTICE_S = 30.0
KEDA_DEFAULT_POLL_S = 30.0  # old: components/autoscaling.py sets no pollingInterval (scaledobject-spec default)


@dataclass(eq=False)
class Node:
    id: int
    created: float  # billed from here
    state: str = "booting"  # booting | usable | preempted | removed
    pod: Pod | None = None
    removed: float | None = None
    idle_token: int = 0


@dataclass(eq=False)
class Pod:
    id: int
    created: float
    state: str = "pending"  # pending | starting | ready | terminating | preempted | gone
    node: Node | None = None
    ready_since: float | None = None
    queue: deque[Request] = field(default_factory=deque)  # old design: waiting inside WebUI
    current: Request | None = None

(_NODE_USABLE, _POD_READY, _GENERATION_DONE, _NODE_GONE, _DEADLINE, _ARRIVAL, _UI, _NOTICE, _CA_CHECK, _KEDA, _HPA,
 _NODE_IDLE) = range(12)


class _Simulation:
    def __init__(self, scenario: Scenario, sessions: list[Session], ui_visits: list[float], duration_s: float, seed: int):
        self.scenario = scenario
        self.old = scenario.design == "old"
        self.scaling = scenario.scaling
        self.keda_poll_s = KEDA_DEFAULT_POLL_S if self.old else scenario.scaling.keda_poll_s
        self.timeouts = scenario.timeouts
        self.duration_s = duration_s
        self.rng = random.Random(f"dispatch-{seed}")
        self.spot = random.Random(f"spot-{seed}")
        self.start_epoch = run_start_epoch(date.fromisoformat(scenario.start_date), scenario.timezone)
        self.heap: list[tuple[float, int, int, Callable, object]] = []
        self.sequence = itertools.count()
        self.now = 0.0
        self.sessions = sorted(sessions, key=lambda session: session.start)
        self.ui_visits = sorted(ui_visits)
        self.requests: list[Request] = []
        self.pending_work = 0  # arrivals and UI visits still to come: the autoscalers keep running until none
        self.nodes: list[Node] = []
        self.pods: list[Pod] = []
        self.live_nodes: list[Node] = []  # not removed
        self.live_pods: list[Pod] = []  # not gone
        self.buffer: deque[Request] = deque()  # old: held by the interceptor; new: the request queue
        self.concurrency = 0  # old: requests the interceptor holds or has forwarded, and open browser sockets
        self.ui_until = -math.inf  # new: a browser visited; one pod wanted until then
        self.last_active = 0.0
        self.keda_next: int | None = None  # the tick of KEDA's next poll; None while parked
        self.hpa_running = False
        self.replicas = 0
        self.recommendations: list[tuple[float, int]] = []
        self.events: list[Event] = []
        self.samples: list[Sample] = []
        self.busy_seconds = 0.0
        self.wasted_seconds = 0.0
        for _ in range(max(self.scaling.min_replicas, self._warm_floor())):  # the floor is up when the run starts
            self.replicas += 1
            self._node_usable(self._new_node(booting=False))
            self._pod_ready(self._new_pod())

    def run(self) -> Result:
        for session in self.sessions:
            self._request_at(session.start, session, session.requests - 1)
        for visit in self.ui_visits:
            self.pending_work += 1
            self._at(visit, _UI, self._ui_visit, None)
        self._wake_keda(0)
        self._wake_hpa()
        self._sample()
        while self.heap:
            self.now, _, _, handler, argument = heapq.heappop(self.heap)
            handler(argument)
            self._sample()
        billed = sum(max(0.0, min(self.duration_s, node.removed if node.removed is not None else self.duration_s)
                         - node.created) for node in self.nodes)
        return Result(self.scenario, self.duration_s, self.requests, self.events, self.samples, billed,
                      self.busy_seconds, self.wasted_seconds)

    def _at(self, t: float, priority: int, handler: Callable, argument: object) -> None:
        heapq.heappush(self.heap, (t, priority, next(self.sequence), handler, argument))

    def _log(self, kind: str, subject: int) -> None:
        self.events.append(Event(self.now, kind, subject))

    def _sample(self) -> None:
        live = self.live_pods
        sample = Sample(self.now, self._metric(), self.replicas, sum(p.state == "ready" for p in live), len(live),
                        len(self.live_nodes))
        if self.samples and self.samples[-1].t == sample.t:
            self.samples[-1] = sample
        elif not self.samples or _differs(self.samples[-1], sample):
            self.samples.append(sample)

    def _ready(self) -> list[Pod]:
        """Endpoints (old) or registered workers (new): ready, not leaving."""
        return [p for p in self.live_pods if p.state == "ready"]

    def _warm_floor(self) -> int:
        epoch = self.start_epoch + self.now
        return max((s.replicas_at(epoch, self.scenario.timezone) for s in self.scenario.warm), default=0)

    # Requests

    def _request_at(self, t: float, session: Session, follow_ups: int) -> None:
        request = Request(len(self.requests), t, session, follow_ups)
        self.requests.append(request)
        self.pending_work += 1
        self._at(t, _ARRIVAL, self._arrive, request)

    def _arrive(self, request: Request) -> None:
        self.pending_work -= 1
        self._wake_keda()
        ready = self._ready()
        request.cold = not ready
        self._deadline(self.now + self.timeouts.load_balancer_s(self.scenario.design), request, 502, "load balancer")
        if self.old:
            self.concurrency += 1
            if self.replicas == 0:
                self._set_replicas(max(1, self.scaling.min_replicas))  # external-push: activation at once
            self._deadline(self.now + self.timeouts.request_s, request, 504, "interceptor request timeout")
            if ready:
                self._forward(self.rng.choice(ready), request)
            else:
                self.buffer.append(request)
                self._deadline(self.now + self.timeouts.cold_start_s, request, 504, "interceptor readiness timeout")
            return
        if len(self.buffer) >= self.timeouts.max_depth:
            self._finish(request, 429, "queue full")
            return
        self.buffer.append(request)
        self._deadline(self.now + self.timeouts.max_wait_s, request, 503, "queue wait")
        self._dispatch()

    def _deadline(self, t: float, request: Request, status: int, cause: str) -> None:
        self._at(t, _DEADLINE, self._expire, (request, status, cause))

    def _expire(self, argument: tuple[Request, int, str]) -> None:
        request, status, cause = argument
        if request.end is not None:
            return
        if cause == "interceptor readiness timeout" and request not in self.buffer:
            return  # released to a pod in time
        if cause == "queue wait" and request not in self.buffer:
            return  # dispatched in time
        if request in self.buffer:
            self.buffer.remove(request)
        elif not self.old:
            self._interrupt(request)
        # old: a request cut while in a pod stays in WebUI's queue; the GPU runs it anyway
        self._finish(request, status, cause)

    def _finish(self, request: Request, status: int, cause: str = "") -> None:
        request.end, request.status, request.cause = self.now, status, cause
        if self.old:
            self.concurrency -= 1
        if request.follow_ups:
            self._request_at(self.now + request.session.think_s, request.session, request.follow_ups - 1)

    def _ui_visit(self, _: object) -> None:
        self.pending_work -= 1
        self._wake_keda()
        if not self.old:
            self.ui_until = max(self.ui_until, self.now + self.scenario.ui_keepalive_s)
            return
        self.concurrency += 1
        self.pending_work += 1
        self._at(self.now + self.scenario.ui_keepalive_s, _UI, self._ui_socket_closed, None)
        if self.replicas == 0:
            self._set_replicas(max(1, self.scaling.min_replicas))

    def _ui_socket_closed(self, _: object) -> None:
        self.pending_work -= 1
        self.concurrency -= 1

    # Old design: the pod queues

    def _forward(self, pod: Pod, request: Request) -> None:
        request.attempt += 1
        request.handed = self.now
        self._deadline(self.now + self.timeouts.response_header_s, request, 504, "interceptor response header timeout")
        pod.queue.append(request)
        if pod.current is None:
            self._start_next(pod)

    def _start_next(self, pod: Pod) -> None:
        self._start(pod, pod.queue.popleft())

    # New design: the shared buffer

    def _dispatch(self) -> None:
        for pod in self._ready():
            if pod.current is None and self.buffer:
                self._start(pod, self.buffer.popleft())

    def _interrupt(self, request: Request) -> None:
        """The worker interrupts the generation its client no longer waits for (/sdapi/v1/interrupt)."""
        pod = next(p for p in self.live_pods if p.current is request)
        self._stop_generation(pod, wasted=True)
        self._pod_idle(pod)

    # Generations

    def _start(self, pod: Pod, request: Request) -> None:
        request.attempt += 1
        pod.current, request.start, request.pod = request, self.now, pod.id
        if not self.old:
            request.handed = self.now
        service = request.service_s(self.scenario.generation_s)
        if not self.old and service > self.timeouts.generation_s:
            self._at(self.now + self.timeouts.generation_s, _GENERATION_DONE, self._generation_timeout,
                     (pod, request, request.attempt))
        else:
            self._at(self.now + service, _GENERATION_DONE, self._generation_done, (pod, request, request.attempt))

    def _stop_generation(self, pod: Pod, wasted: bool) -> Request:
        request, pod.current = pod.current, None
        spent = self.now - request.start
        self.busy_seconds += spent
        if wasted:
            self.wasted_seconds += spent
        request.attempt += 1
        return request

    def _generation_done(self, argument: tuple[Pod, Request, int]) -> None:
        pod, request, attempt = argument
        if pod.current is not request or request.attempt != attempt:
            return
        self._stop_generation(pod, wasted=request.end is not None)
        if request.end is None:
            self._finish(request, 200)
        self._pod_idle(pod)

    def _generation_timeout(self, argument: tuple[Pod, Request, int]) -> None:
        pod, request, attempt = argument
        if pod.current is not request or request.attempt != attempt:
            return
        self._stop_generation(pod, wasted=True)
        self._finish(request, 504, "generation timeout")
        self._pod_idle(pod)

    def _pod_idle(self, pod: Pod) -> None:
        if pod.queue:
            self._start_next(pod)
        elif pod.state == "terminating":
            self._pod_gone(pod)
        elif not self.old:
            self._dispatch()

    # Pods and nodes

    def _new_pod(self) -> Pod:
        pod = Pod(len(self.pods), self.now)
        self.pods.append(pod)
        self.live_pods.append(pod)
        self._log("pod-created", pod.id)
        self._bind_pending()
        if pod.node is None:
            self._at(self.now + self.scenario.cold_start.autoscaler_s, _CA_CHECK, self._ca_check, None)
        return pod

    def _bind_pending(self) -> None:
        for pod in self.live_pods:
            if pod.state != "pending":
                continue
            node = next((n for n in self.live_nodes if n.state == "usable" and n.pod is None), None)
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
        if not self.old:
            self._dispatch()
            return
        while self.buffer:  # the interceptor releases everything it held to the first ready endpoint
            self._forward(pod, self.buffer.popleft())

    def _remove_pod(self, pod: Pod) -> None:
        if pod.state == "ready" and (pod.current or pod.queue):
            pod.state = "terminating"  # out of the endpoints / unregistered; drains what it holds
            self._log("pod-terminating", pod.id)
        else:
            self._pod_gone(pod)

    def _pod_gone(self, pod: Pod) -> None:
        pod.state = "gone"
        self.live_pods.remove(pod)
        self._log("pod-gone", pod.id)
        node, pod.node = pod.node, None
        if node is not None and node.state == "usable":
            node.pod = None
            self._bind_pending()
            if node.pod is None:
                self._node_emptied(node)

    def _new_node(self, booting: bool = True) -> Node:
        node = Node(len(self.nodes), self.now)
        self.nodes.append(node)
        self.live_nodes.append(node)
        self._log("node-created", node.id)
        if booting:
            cold_start = self.scenario.cold_start
            self._at(self.now + cold_start.node_s + cold_start.disk_s, _NODE_USABLE, self._node_usable, node)
        rate = self.scenario.preemptions_per_node_hour
        notice = self.now + self.spot.expovariate(rate / 3600) if rate > 0 else math.inf
        if notice < self.duration_s:  # later ones cannot change the run's figures (and would go on forever)
            self._at(notice, _NOTICE, self._preemption_notice, node)
        return node

    def _node_usable(self, node: Node) -> None:
        if node.state != "booting":
            return
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
            self._node_removed(node)

    def _node_removed(self, node: Node) -> None:
        node.state, node.removed = "removed", self.now
        self.live_nodes.remove(node)
        self._log("node-removed", node.id)

    def _ca_check(self, _: object) -> None:
        pending = sum(p.state == "pending" for p in self.live_pods)
        booting = sum(n.state == "booting" for n in self.live_nodes)
        room = self.scaling.max_replicas - len(self.live_nodes)
        for _ in range(min(pending - booting, room)):
            self._new_node()

    def _preemption_notice(self, node: Node) -> None:
        if node.state in ("removed", "preempted"):
            return
        node.state = "preempted"
        self._log("node-preempted", node.id)
        pod = node.pod
        if pod is not None:
            pod.state = "preempted"  # out of the endpoints; the worker unregisters and takes no new job
            self._log("pod-preempted", pod.id)
        self._set_replicas(self.replicas)  # the ReplicaSet replaces the pod at once
        self._at(self.now + SPOT_NOTICE_S, _NODE_GONE, self._node_gone, node)

    def _node_gone(self, node: Node) -> None:
        self._node_removed(node)
        pod, node.pod = node.pod, None
        if any(p.state == "pending" for p in self.live_pods):
            self._at(self.now + self.scenario.cold_start.autoscaler_s, _CA_CHECK, self._ca_check, None)
        if pod is None:
            return
        lost = [self._stop_generation(pod, wasted=True)] if pod.current else []
        lost += list(pod.queue)
        pod.queue.clear()
        pod.node = None
        self._pod_gone(pod)
        for request in lost:
            if request.end is not None:
                continue
            if not self.old and self.now < request.arrival + self.timeouts.max_wait_s:
                self.buffer.appendleft(request)  # back to the head of the buffer
            else:
                self._finish(request, 502, "preempted")
        if not self.old:
            self._dispatch()

    # Autoscalers

    def _metric(self) -> int:
        if self.old:
            return self.concurrency
        busy = sum(p.current is not None for p in self.live_pods)
        return max(busy + len(self.buffer), 1 if self.now < self.ui_until else 0)

    def _keda_poll(self, tick: int) -> None:
        """KEDA's loop: activation 0 -> 1 (the new design's metrics-api and every cron trigger) and 1 -> 0.
        While nothing is active the loop skips the polls that would change nothing: an arrival, a browser
        visit, the end of the cool-down or the next warm window wakes it at the tick that would see it."""
        scaling = self.scaling
        active = self._metric() > 0 or self._warm_floor() > 0
        if active:
            self.last_active = self.now
            if self.replicas == 0:
                self._set_replicas(max(1, self._warm_floor(), scaling.min_replicas))
        elif self.replicas > 0 and scaling.min_replicas == 0 and self.now - self.last_active > scaling.cooldown_s:
            # strictly after: LastActiveTime.Add(cooldownPeriod).Before(now) (kedacore/keda@258b79f9
            # pkg/scaling/executor/scale_scaledobjects.go scaleToZeroOrIdle)
            self.recommendations.clear()
            self._set_replicas(0)
        self.keda_next = None
        if active:
            self._wake_keda(tick + 1)
            return
        # Idle: the polls until the cool-down ends or a warm window opens see nothing new, so skip to that tick.
        due = []
        if self.replicas > 0 and scaling.min_replicas == 0:
            due.append(max(tick + 1, math.floor((self.last_active + scaling.cooldown_s) / self.keda_poll_s) + 1))
        opening = self._next_warm_window()
        if opening is not None:
            due.append(math.ceil(opening / self.keda_poll_s))
        if due:
            self._wake_keda(min(due))

    def _wake_keda(self, tick: int | None = None) -> None:
        """Schedule KEDA's next poll (at `tick`, or the first tick from now) unless an earlier one is due."""
        tick = math.ceil(self.now / self.keda_poll_s) if tick is None else tick
        if tick * self.keda_poll_s >= self.duration_s and not self.pending_work and not self._metric():
            return  # past the end of the run and nothing left to serve
        if self.keda_next is None or tick < self.keda_next:
            self.keda_next = tick
            self._at(tick * self.keda_poll_s, _KEDA, self._keda_tick, tick)

    def _keda_tick(self, tick: int) -> None:
        if tick == self.keda_next:  # an earlier wake-up replaced this one
            self._keda_poll(tick)

    def _next_warm_window(self) -> float | None:
        epoch = self.start_epoch + self.now
        openings = [s.next_start(epoch, self.scenario.timezone) for s in self.scenario.warm]
        return min(openings) - self.start_epoch if openings else None

    def _hpa_sync(self, tick: int) -> None:
        """The HPA's loop, every sync period while the workload is above zero (at zero KEDA owns it)."""
        self.hpa_running = self.replicas > 0
        if not self.hpa_running:
            return
        self._set_replicas(self._hpa_replicas())
        if (tick + 1) * self.scaling.hpa_sync_s < self.duration_s or self.pending_work or self._metric():
            self._at((tick + 1) * self.scaling.hpa_sync_s, _HPA, self._hpa_sync, tick + 1)
        else:
            self.hpa_running = False

    def _hpa_replicas(self) -> int:
        scaling, current, metric = self.scaling, self.replicas, self._metric()
        desired = math.ceil(metric / scaling.target)
        if abs(metric / (scaling.target * current) - 1) <= HPA_TOLERANCE:
            desired = current
        desired = max(desired, self._warm_floor())
        desired = min(max(desired, scaling.min_replicas, 1), scaling.max_replicas)
        cutoff = self.now - scaling.stabilisation_s
        self.recommendations = [(t, r) for t, r in self.recommendations if t > cutoff]
        self.recommendations.append((self.now, desired))
        if desired >= current:
            return min(desired, max(current + HPA_SCALE_UP_PODS, current * HPA_SCALE_UP_FACTOR))
        return min(current, max(r for _, r in self.recommendations))

    def _wake_hpa(self) -> None:
        if not self.hpa_running:
            self.hpa_running = True
            tick = math.ceil(self.now / self.scaling.hpa_sync_s)
            self._at(tick * self.scaling.hpa_sync_s, _HPA, self._hpa_sync, tick)

    def _set_replicas(self, replicas: int) -> None:
        self.replicas = replicas
        if replicas:
            self._wake_hpa()
        live = [p for p in self.live_pods if p.state in ("pending", "starting", "ready")]
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


def simulate(scenario: Scenario, sessions: list[Session], duration_s: float, seed: int = 0,
             ui_visits: list[float] = ()) -> Result:
    """Run one scenario over the given sessions and browser visits. Nodes are billed within [0, duration_s];
    sessions that start before the end are followed to their last answer."""
    problems = scenario.problems()
    if problems:
        raise ValueError("invalid scenario: " + "; ".join(problems))
    return _Simulation(scenario, sessions, list(ui_visits), duration_s, seed).run()
