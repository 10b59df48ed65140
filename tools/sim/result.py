"""What one simulated run gives: every request with its outcome, the events, the sampled state, the GPU time
billed, busy and wasted; and the summary the tables are made of."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from tools.sim.scenario import Scenario, Session
from tools.sim.stats import latency_summary

ERROR_STATUSES = (504, 429, 503, 502)


@dataclass
class Request:
    id: int
    arrival: float
    session: Session
    follow_ups: int  # prompts of its session still to come after this one
    start: float | None = None  # its generation started (the last attempt)
    end: float | None = None  # the client got its answer (success or error)
    status: int | None = None  # 200, or the error the client got
    cause: str = ""  # what cut it
    cold: bool = False  # no ready pod when it arrived
    pod: int | None = None
    handed: float | None = None  # given to a pod: the interceptor forwarded it (old), a worker took it (new)
    attempt: int = 0  # bumped on every dispatch and interruption: stale events are ignored

    @property
    def served(self) -> bool:
        return self.status == 200

    @property
    def latency(self) -> float | None:
        return round(self.end - self.arrival, 6) if self.served else None  # no float noise in the tables

    def service_s(self, generation_s: float) -> float:
        return self.session.images * generation_s


@dataclass(frozen=True)
class Event:
    t: float
    kind: str  # node-created, node-usable, node-preempted, node-removed, pod-created, pod-bound, pod-ready, ...
    id: int


@dataclass(frozen=True)
class Sample:
    t: float
    in_flight: int  # the scaling metric: the interceptor's concurrency (old), busy + waiting (new)
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
    busy_seconds: float  # GPU time generating
    wasted_seconds: float  # GPU time on requests whose client got an error or was gone

    def times(self, kind: str) -> list[float]:
        return [event.t for event in self.events if event.kind == kind]

    def errors(self) -> Counter[int]:
        return Counter(r.status for r in self.requests if r.status is not None and not r.served)

    def summary(self) -> dict[str, float | int | None]:
        served = [r.latency for r in self.requests if r.served]
        errors = self.errors()
        gpu_hours = self.node_seconds / 3600
        costs = self.scenario.costs
        cost = gpu_hours * (costs.node_usd_per_hour + costs.disk_usd_per_hour)
        return {
            "requests": len(self.requests),
            "served": len(served),
            "served_share": len(served) / len(self.requests) if self.requests else None,
            **{f"errors_{status}": errors.get(status, 0) for status in ERROR_STATUSES},
            **{f"{key}_s": value for key, value in latency_summary(served).items()},
            "cold_requests": sum(r.cold for r in self.requests),
            "gpu_hours": gpu_hours,
            "gpu_hours_per_day": gpu_hours * 86_400 / self.duration_s,
            "wasted_gpu_s": self.wasted_seconds,
            "cost_usd": cost,
            "max_nodes": max((s.nodes for s in self.samples), default=0),
        }


# At equal times: state changes first, then deadlines, arrivals, and the autoscalers.
