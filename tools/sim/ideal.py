"""The ideal shared queue the real one is measured against (issue 17 item 5): one FIFO buffer, every
request handed at once to whichever pod frees first, no dispatch overhead at all.

Fed with what a run recorded (each request's arrival, each pod's ready time, each generation's own
duration), it gives the latencies no dispatcher could beat with those pods at those times.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence


def ideal_latencies(arrivals: Sequence[float], durations: Sequence[float], ready_at: Sequence[float]) -> list[float]:
    """Latency of each request (same order as `arrivals`) served first come, first served by pods that
    become free at `ready_at` and then run one generation at a time; request i takes `durations[i]`."""
    if len(arrivals) != len(durations):
        raise ValueError(f"{len(arrivals)} arrivals but {len(durations)} durations")
    if not ready_at:
        raise ValueError("no pods: the ideal queue needs at least one ready time")
    free_at = sorted(ready_at)
    heapq.heapify(free_at)
    latencies = [0.0] * len(arrivals)
    for i in sorted(range(len(arrivals)), key=lambda i: arrivals[i]):
        start = max(arrivals[i], heapq.heappop(free_at))
        end = start + durations[i]
        heapq.heappush(free_at, end)
        latencies[i] = end - arrivals[i]
    return latencies
