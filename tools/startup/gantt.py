"""The Gantt chart: the latest cold start phase by phase (the attacher's steps under `runtime disk`), and,
with several cold starts, one stacked bar each, so a slow phase stands out. Missing phases are drawn as
a hatched gap labelled "not found", never as an estimate.

matplotlib is imported here only (Agg backend: no display needed).
"""

from __future__ import annotations

from pathlib import Path

from tools.startup.timeline import PHASES, ColdStart

COLOURS = ("tab:blue", "tab:orange", "tab:olive", "tab:purple", "tab:gray", "tab:cyan", "tab:green", "tab:pink",
           "tab:red", "tab:brown")
PHASE_COLOUR = {name: COLOURS[i % len(COLOURS)] for i, (name, _, _) in enumerate(PHASES)}


def draw(cold_starts: list[ColdStart], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    latest = cold_starts[-1]
    rows = []
    for phase in latest.phases:
        rows.append((phase.name, phase, PHASE_COLOUR[phase.name]))
        if phase.name == "runtime disk":
            rows += [(f"  · {step.name}", step, "tab:red" if step.status == "failed" else "#c9a0dc") for step in latest.steps]
    several = len(cold_starts) > 1
    heights = [max(3.0, 0.32 * len(rows))] + ([max(1.5, 0.4 * len(cold_starts))] if several else [])
    figure, axes = pyplot.subplots(len(heights), 1, figsize=(11, sum(heights) + 1.2), squeeze=False,
                                   gridspec_kw={"height_ratios": heights}, constrained_layout=True)
    detail = axes[0][0]
    origin = latest.created
    for y, (_label, phase, colour) in enumerate(rows):
        if phase.seconds is None:
            detail.text(1, y, (phase.problem or "not found").split(" (")[0], va="center", fontsize=7, color="tab:red")
            continue
        left = (phase.start - origin).total_seconds()
        detail.barh(y, max(phase.seconds, 0.3), left=left, color=colour, edgecolor="black", linewidth=0.3)
        detail.text(left + max(phase.seconds, 0.3) + 1, y, f"{phase.seconds:.1f} s", va="center", fontsize=7)
    detail.set_yticks(range(len(rows)), [label for label, _, _ in rows], fontsize=8)
    detail.set_ylim(len(rows) - 0.4, -0.6)
    detail.set_xlabel("seconds since the pod was created")
    total = latest.total
    detail.set_title(f"cold start of {latest.pod} on {latest.node or '(no node)'}: "
                     + (f"{total.seconds:.0f} s, {total.detail}" if total.seconds is not None else total.problem or ""),
                     fontsize=9)
    detail.set_xlim(left=0)
    detail.grid(axis="x", linewidth=0.3)
    if several:
        overview = axes[1][0]
        for y, cold in enumerate(cold_starts):
            left = 0.0
            for phase in cold.phases:
                if phase.seconds is None:
                    overview.barh(y, 4, left=left, color="white", edgecolor="tab:red", hatch="///", linewidth=0.5)
                    left += 4
                    continue
                overview.barh(y, phase.seconds, left=left, color=PHASE_COLOUR[phase.name], edgecolor="black", linewidth=0.2)
                left += phase.seconds
        overview.set_yticks(range(len(cold_starts)), [f"{c.created:%m-%d %H:%M}" for c in cold_starts], fontsize=7)
        overview.invert_yaxis()
        overview.set_xlabel("seconds, phases end to end (hatched: not found)")
        handles = [matplotlib.patches.Patch(color=PHASE_COLOUR[name], label=name) for name, _, _ in PHASES]
        overview.legend(handles=handles, fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.45))
        overview.set_title(f"{len(cold_starts)} cold starts", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
