"""What one simulated run is asked to model (tools/sim/model.py runs it): the design, the cold start, the scaling
and timeout settings, the costs, the warm schedules; and the demand, as sessions. `Scenario.problems` names every
invalid field."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date

from tools.sim.warm import WarmSchedule, run_start_epoch

DESIGNS = ("old", "new")
"""The KEDA HTTP add-on's interceptor (old) and the request queue that replaces it (new); model.py says how each
is modelled."""


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
    target: float = 1.0  # metric per pod: one request in flight (old), one wanted pod (new)
    hpa_sync_s: float = 15.0  # the HPA sync period (kube-controller-manager default)
    keda_poll_s: float = 1.0  # new: the ScaledObject's pollingInterval (components/autoscaling.py POLLING_INTERVAL_SECONDS)
    stabilisation_s: float = 300.0  # HPA scaleDown.stabilizationWindowSeconds = autoscaling.cooldownSeconds
    cooldown_s: float = 300.0  # KEDA cooldownPeriod = autoscaling.cooldownSeconds (dev)
    node_scale_down_s: float = 600.0  # cluster autoscaler scale-down-unneeded-time default


@dataclass(frozen=True)
class Timeouts:
    """Dev's figures (README, the timeout chain) and the request queue's bounds; the derived links follow the
    chain the program builds: each hop waits longer than the hop behind it."""

    generation_s: float = 120.0  # webui.generationTimeoutSeconds
    cold_start_s: float = 600.0  # autoscaling.coldStartTimeoutSeconds: the interceptor's readiness timeout
    max_wait_s: float = 600.0  # QUEUE_MAX_WAIT_SECONDS = queue.maxWaitSeconds (Pulumi.dev.yaml)
    max_depth: int = 200  # QUEUE_MAX_DEPTH = queue.maxDepth (Pulumi.dev.yaml)

    @property
    def response_header_s(self) -> float:
        return self.generation_s + 30  # InterceptorRoute timeouts.responseHeader

    @property
    def request_s(self) -> float:
        return self.cold_start_s + self.response_header_s  # InterceptorRoute timeouts.request

    def load_balancer_s(self, design: str) -> float:
        """GCPBackendPolicy timeoutSec: 30 s past the longest the hop behind it may take."""
        return (self.request_s if design == "old" else self.max_wait_s + self.generation_s) + 30


@dataclass(frozen=True)
class Costs:
    """Per GPU node and hour, from the README's cost section (us-central1): g2-standard-8 + one L4,
    about $0.30 Spot (dev) or $0.85 on demand; its runtime disk about $0.007."""

    node_usd_per_hour: float = 0.30
    disk_usd_per_hour: float = 0.007


@dataclass(frozen=True)
class Scenario:
    design: str = "new"
    cold_start: ColdStart = field(default_factory=ColdStart)
    scaling: Scaling = field(default_factory=Scaling)
    timeouts: Timeouts = field(default_factory=Timeouts)
    costs: Costs = field(default_factory=Costs)
    generation_s: float = 5.0  # per image; an assumption: one 512x512 20-step image on an L4; measure yours
    ui_keepalive_s: float = 300.0  # UI_KEEPALIVE_SECONDS; old design: how long a browser tab holds its socket
    preemptions_per_node_hour: float = 0.0
    warm: tuple[WarmSchedule, ...] = ()
    timezone: str = "UTC"  # the run's clock and the warm schedules' time zone
    start_date: str = "2026-12-07"  # a Monday: t = 0 is its midnight in `timezone`

    def problems(self) -> list[str]:
        """Every invalid field, named with its value and what is allowed."""
        found = []
        scaling, timeouts = self.scaling, self.timeouts
        if self.design not in DESIGNS:
            found.append(f"design={self.design!r}: expected one of {', '.join(DESIGNS)}")
        if self.generation_s <= 0:
            found.append(f"generation_s={self.generation_s}: expected > 0")
        if scaling.max_replicas < 1 or not 0 <= scaling.min_replicas <= scaling.max_replicas:
            found.append(f"min_replicas={scaling.min_replicas}, max_replicas={scaling.max_replicas}: "
                         "expected 0 <= min <= max and max >= 1")
        for name in ("target", "hpa_sync_s", "keda_poll_s"):
            if getattr(scaling, name) <= 0:
                found.append(f"{name}={getattr(scaling, name)}: expected > 0")
        if timeouts.max_depth < 1:
            found.append(f"max_depth={timeouts.max_depth}: expected >= 1")
        for name, value in [*asdict(self.cold_start).items(), *asdict(self.costs).items(),
                            ("stabilisation_s", scaling.stabilisation_s), ("cooldown_s", scaling.cooldown_s),
                            ("node_scale_down_s", scaling.node_scale_down_s), ("ui_keepalive_s", self.ui_keepalive_s),
                            ("preemptions_per_node_hour", self.preemptions_per_node_hour)]:
            if value < 0:
                found.append(f"{name}={value}: expected >= 0")
        for name in ("generation_s", "cold_start_s", "max_wait_s"):
            if getattr(timeouts, name) <= 0:
                found.append(f"timeouts.{name}={getattr(timeouts, name)}: expected > 0")
        for schedule in self.warm:
            if schedule.replicas > scaling.max_replicas:
                found.append(f"warm schedule {schedule.text!r}: {schedule.replicas} replicas, "
                             f"expected at most max_replicas ({scaling.max_replicas})")
        try:
            run_start_epoch(date.fromisoformat(self.start_date), self.timezone)
        except (ValueError, KeyError) as error:
            found.append(f"start_date={self.start_date!r}, timezone={self.timezone!r}: {error}")
        return found


@dataclass(frozen=True)
class Session:
    """One person's prompts: the first at `start`, each next one `think_s` after the previous answer (a closed
    loop). A trace row is a session of one request. `images` per request: one generation of that many."""

    start: float
    requests: int = 1
    think_s: float = 0.0
    images: int = 1

