"""The tables: one per cold start (its phases, the attacher's steps, what was not found), then the
median and p90 of every phase over the cold starts that recorded it."""

from __future__ import annotations

from tools.sim.stats import percentile
from tools.startup.timeline import PHASES, TOTAL, ColdStart, Phase, Reconstruction

DETAIL_WIDTH = 72


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _row(phase: Phase, origin, indent: str = "") -> str:
    offset = "" if phase.start is None else f"+{(phase.start - origin).total_seconds():.1f}"
    said = phase.problem or phase.detail
    if phase.status != "ok":
        said = f"{phase.status}: {said}" if said else phase.status
    if len(said) > DETAIL_WIDTH and not phase.problem:
        said = said[:DETAIL_WIDTH - 1] + "…"
    return f"  {indent + phase.name:<22} {offset:>8} {_seconds(phase.seconds):>8}  {said}"


def cold_start_table(cold: ColdStart) -> str:
    origin = cold.created
    lines = [f"cold start of {cold.pod} on {cold.node or '(no node)'}, pod created {origin:%Y-%m-%d %H:%M:%S} UTC",
             f"  {'phase':<22} {'start s':>8} {'seconds':>8}  from"]
    for phase in cold.phases:
        lines.append(_row(phase, origin))
        if phase.name == "runtime disk":
            lines += [_row(step, origin, indent="· ") for step in cold.steps]
    lines.append(_row(cold.total, origin))
    lines += [f"  note: {note}" for note in cold.notes]
    return "\n".join(lines)


def phase_values(cold_starts: list[ColdStart]) -> dict[str, list[float]]:
    names = [name for name, _, _ in PHASES] + [TOTAL]
    values: dict[str, list[float]] = {name: [] for name in names}
    for cold in cold_starts:
        for phase in [*cold.phases, cold.total]:
            key = TOTAL if phase.name.startswith(TOTAL) else phase.name
            if phase.seconds is not None:
                values[key].append(phase.seconds)
    return values


def summary_table(cold_starts: list[ColdStart]) -> str:
    lines = [f"per phase over {len(cold_starts)} cold start(s) (nearest-rank percentiles; n = cold starts that recorded it)",
             f"  {'phase':<22} {'n':>3} {'median s':>9} {'p90 s':>8}"]
    for name, values in phase_values(cold_starts).items():
        if values:
            lines.append(f"  {name:<22} {len(values):>3} {percentile(values, 50):>9.1f} {percentile(values, 90):>8.1f}")
        else:
            lines.append(f"  {name:<22} {0:>3} {'-':>9} {'-':>8}  not found in any")
    return "\n".join(lines)


def render(result: Reconstruction) -> str:
    parts = [cold_start_table(cold) for cold in result.cold_starts]
    if result.cold_starts:
        parts.append(summary_table(result.cold_starts))
    else:
        parts.append("no cold start found in the records")
    if result.skipped:
        parts.append("\n".join(["WebUI pods left out:", *(f"  {why}" for why in result.skipped)]))
    if result.missing:
        parts.append("\n".join(["records missing:", *(f"  {why}" for why in result.missing)]))
    return "\n\n".join(parts) + "\n"
