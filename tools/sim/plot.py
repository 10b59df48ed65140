"""The timeline of one simulated run as a PNG: demand, pods, nodes and latency against time.

matplotlib is imported here only, so the simulator itself runs without it.
"""

from __future__ import annotations

from pathlib import Path

from tools.sim.result import Result


def _steps(result: Result, field: str) -> tuple[list[float], list[float]]:
    hours = [s.t / 3600 for s in result.samples] + [result.duration_s / 3600]
    values = [getattr(s, field) for s in result.samples]
    return hours, values + values[-1:]


def draw(result: Result, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (demand, pods, nodes, latency) = pyplot.subplots(4, 1, sharex=True, figsize=(11, 9), constrained_layout=True)
    figure.suptitle(title, fontsize=10)
    demand.step(*_steps(result, "in_flight"), where="post", color="tab:blue", linewidth=0.8)
    demand.set_ylabel("in flight")
    pods.step(*_steps(result, "replicas"), where="post", color="tab:gray", linewidth=0.8, label="desired replicas")
    pods.step(*_steps(result, "pods_ready"), where="post", color="tab:green", linewidth=1.2, label="ready pods")
    pods.set_ylabel("pods")
    pods.legend(loc="upper right", fontsize=8)
    nodes.step(*_steps(result, "nodes"), where="post", color="tab:orange", linewidth=1.2)
    nodes.set_ylabel("GPU nodes")
    for cold, colour, label in ((False, "tab:blue", "warm"), (True, "tab:red", "met a cold start")):
        points = [(r.arrival / 3600, r.latency) for r in result.requests if r.cold is cold and r.latency is not None]
        if points:
            latency.scatter(*zip(*points, strict=True), s=6, color=colour, label=label)
    errors = [(r.arrival / 3600, max(r.end - r.arrival, 0.1)) for r in result.requests if r.end is not None and not r.served]
    if errors:
        latency.scatter(*zip(*errors, strict=True), s=12, marker="x", color="black", label="error (when the client got it)")
    latency.set_yscale("log")
    latency.set_ylabel("latency (s)")
    latency.set_xlabel("time (h)")
    latency.legend(loc="center right", fontsize=8)
    for axis in (demand, pods, nodes):
        axis.yaxis.get_major_locator().set_params(integer=True)
    latency.set_xlim(0, result.duration_s / 3600)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
