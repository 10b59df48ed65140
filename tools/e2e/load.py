"""The load: tools/loadtest.py against the request queue, its run kept on the stand-ins' clock so each
arrival can be set beside the generation that served it."""

from __future__ import annotations

import time
from dataclasses import dataclass

from tools import loadtest
from tools.e2e.processes import AUTH


@dataclass
class Run:
    """One loadtest run: its outcomes, on the same clock (time.monotonic) as the stand-ins' logs."""

    started: float  # read just before loadtest.run reads its own (outcomes' started_s count from that)
    outcomes: list[loadtest.Outcome]

    def arrival(self, outcome: loadtest.Outcome) -> float:
        return self.started + outcome.started_s

    @property
    def latencies(self) -> list[float]:
        return [o.latency_s for o in self.outcomes if o.error is None]

    @property
    def errors(self) -> int:
        return sum(o.error is not None for o in self.outcomes)


def drive(url: str, requests: int, arrivals: tuple[float, ...] = ()) -> Run:
    """tools/loadtest.py against the request queue; every request in flight at once (arrivals pace them)."""
    plan = loadtest.Plan(loadtest.endpoint(url), requests, requests, AUTH, dict(loadtest.DEFAULT_PAYLOAD),
                         timeout_s=120.0, deadline_s=600.0, arrivals_s=arrivals)
    started = time.monotonic()
    return Run(started, loadtest.run(plan))
