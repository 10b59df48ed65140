"""What a run measured, read from the load test's outcomes and the stand-ins' generation logs: when each pod
was ready, the idle gaps while work waited, the ideal shared queue's p99, the path's own overhead."""

from __future__ import annotations

from tools.e2e.load import Run
from tools.sim.ideal import ideal_latencies
from tools.sim.stats import percentile


def ready_times(generations: list[list[dict]]) -> list[float]:
    """When each pod could first serve: the end of its worker's warm-up generation (the first, untagged)."""
    times = []
    for pod, log in enumerate(generations):
        warm_up = next((g for g in log if g["tag"] is None), None)
        if warm_up is None:
            raise RuntimeError(f"pod {pod} never ran its warm-up generation")
        times.append(warm_up["end"])
    return times


def served(generations: list[list[dict]]) -> dict[str, dict]:
    """Each tagged generation by its X-Loadtest-Request tag."""
    return {g["tag"]: g for log in generations for g in log if g["tag"] is not None}


def ideal_p99(run: Run, generations: list[list[dict]]) -> float:
    """p99 of the ideal shared queue fed with this run's arrivals, ready times and generation durations."""
    by_tag = served(generations)
    answered = [o for o in run.outcomes if str(o.index) in by_tag]
    durations = [by_tag[str(o.index)]["end"] - by_tag[str(o.index)]["start"] for o in answered]
    latencies = ideal_latencies([run.arrival(o) for o in answered], durations, ready_times(generations))
    return percentile(latencies, 99)


def longest_idle_gap(run: Run, generations: list[list[dict]]) -> float:
    """The longest a pod stayed idle after a generation while a request of the run was waiting
    (arrived and not yet started anywhere): the dispatch's own delay."""
    by_tag = served(generations)
    waiting = [(run.arrival(o), by_tag[str(o.index)]["start"]) for o in run.outcomes if str(o.index) in by_tag]
    longest = 0.0
    for log in generations:
        for ended, following in zip(log, log[1:], strict=False):
            work_waited = any(arrived <= ended["end"] < started for arrived, started in waiting)
            if work_waited:
                longest = max(longest, following["start"] - ended["end"])
    return longest


def overheads(run: Run, generations: list[list[dict]]) -> list[float]:
    """Per request: latency - wait in the buffer (X-Queue-Wait) - its generation: what the path itself adds."""
    by_tag = served(generations)
    return [o.latency_s - o.queue_wait_s - (by_tag[str(o.index)]["end"] - by_tag[str(o.index)]["start"])
            for o in run.outcomes if o.error is None and o.queue_wait_s is not None and str(o.index) in by_tag]
