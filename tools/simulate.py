"""Simulate sd-gke's request-driven scaling and print latency, cold starts, GPU-hours and cost.

    python -m tools.simulate [--pattern daily] [--min-replicas 0] [--cooldown 300] ... [--png PATH] [--json PATH]
    python -m tools.simulate --sweep-min 0,1 --sweep-cooldown 60,300,900,1800   # the README's trade-off table

The model and the source of every default are in tools/sim/model.py; arrivals in tools/sim/arrivals.py.
A sweep runs every (warm minimum, cool-down) pair on the same arrivals, plus one fixed replica
(today's Deployment) for comparison. Exit 2 on invalid parameters, every problem listed.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

from tools.sim.arrivals import PATTERNS, Load, sessions
from tools.sim.model import DISPATCH, ColdStart, Costs, Result, Scaling, Scenario, simulate

COLUMNS = (("p50_s", "p50 (s)", "{:.0f}"), ("p99_s", "p99 (s)", "{:.0f}"), ("cold_share", "met a cold start", "{:.1%}"),
           ("gpu_hours_per_day", "GPU-h/day", "{:.1f}"), ("usd_per_day", "$/day", "{:.2f}"),
           ("usd_per_1000_images", "$/1000 images", "{:.2f}"))


def _floats(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from err


def parser() -> argparse.ArgumentParser:
    defaults_load, defaults_cold, defaults_scaling, defaults_costs = Load(), ColdStart(), Scaling(), Costs()
    p = argparse.ArgumentParser(prog="python -m tools.simulate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    load = p.add_argument_group("demand")
    load.add_argument("--pattern", choices=PATTERNS, default=defaults_load.pattern)
    load.add_argument("--sessions-per-hour", type=float, default=defaults_load.sessions_per_hour,
                      help="mean session starts per hour over the run")
    load.add_argument("--session-requests", type=int, default=defaults_load.session_requests, help="prompts per session")
    load.add_argument("--think", type=float, default=defaults_load.think_s, help="seconds between a session's prompts")
    load.add_argument("--burst-on", type=float, default=defaults_load.burst_on_s, help="bursty: seconds on")
    load.add_argument("--burst-off", type=float, default=defaults_load.burst_off_s, help="bursty: seconds off")
    load.add_argument("--peak-hour", type=float, default=defaults_load.daily_peak_hour, help="daily: hour of the peak")
    load.add_argument("--amplitude", type=float, default=defaults_load.daily_amplitude, help="daily: 0 flat .. 1 zero at night")
    load.add_argument("--hours", type=float, default=24.0, help="simulated time")
    load.add_argument("--seed", type=int, default=1)
    model = p.add_argument_group("service")
    model.add_argument("--generation", type=float, default=Scenario().generation_s, help="seconds per image")
    model.add_argument("--dispatch", choices=DISPATCH, default=Scenario().dispatch,
                       help="service: random ready pod, queue inside it (KEDA + Service); queue: one shared FIFO")
    cold = p.add_argument_group("cold start (seconds)")
    for name in ("autoscaler", "node", "disk", "pull", "webui"):
        cold.add_argument(f"--{name}", type=float, default=getattr(defaults_cold, f"{name}_s"))
    scaling = p.add_argument_group("autoscaling")
    scaling.add_argument("--min-replicas", type=int, default=defaults_scaling.min_replicas)
    scaling.add_argument("--max-replicas", type=int, default=defaults_scaling.max_replicas)
    scaling.add_argument("--target", type=float, default=defaults_scaling.target_in_flight, help="in-flight requests per pod")
    scaling.add_argument("--poll", type=float, default=defaults_scaling.poll_s, help="seconds between HPA/KEDA evaluations")
    scaling.add_argument("--stabilisation", type=float, default=defaults_scaling.stabilisation_s,
                         help="HPA scale-down stabilisation window, seconds")
    scaling.add_argument("--cooldown", type=float, default=defaults_scaling.cooldown_s,
                         help="seconds with nothing in flight before scaling to zero")
    scaling.add_argument("--node-scale-down", type=float, default=defaults_scaling.node_scale_down_s,
                         help="seconds a GPU node stays empty before the cluster autoscaler removes it")
    costs = p.add_argument_group("costs (USD per GPU node-hour)")
    costs.add_argument("--node-usd-per-hour", type=float, default=defaults_costs.node_usd_per_hour)
    costs.add_argument("--disk-usd-per-hour", type=float, default=defaults_costs.disk_usd_per_hour)
    sweep = p.add_argument_group("trade-off table")
    sweep.add_argument("--sweep-min", type=_floats, help="warm minimums to compare, e.g. 0,1")
    sweep.add_argument("--sweep-cooldown", type=_floats, help="cool-downs to compare, seconds, e.g. 60,300,900")
    out = p.add_argument_group("output")
    out.add_argument("--png", type=Path, help="draw the timeline of the run (of the first row when sweeping)")
    out.add_argument("--json", type=Path, help="write parameters and results as JSON ('-' for stdout)")
    return p


def build(args: argparse.Namespace) -> tuple[Load, Scenario, list[str]]:
    load = Load(args.pattern, args.sessions_per_hour, args.session_requests, args.think, args.burst_on, args.burst_off,
                args.peak_hour, args.amplitude)
    scenario = Scenario(ColdStart(args.autoscaler, args.node, args.disk, args.pull, args.webui),
                        Scaling(args.min_replicas, args.max_replicas, args.target, args.poll, args.stabilisation,
                                args.cooldown, args.node_scale_down),
                        Costs(args.node_usd_per_hour, args.disk_usd_per_hour), args.generation, args.dispatch)
    problems = load.problems() + scenario.problems()
    if args.hours <= 0:
        problems.append(f"hours={args.hours}: expected > 0")
    for flag, values in (("--sweep-min", args.sweep_min), ("--sweep-cooldown", args.sweep_cooldown)):
        if values is not None and (not values or any(v < 0 for v in values)):
            problems.append(f"{flag}={values}: expected a non-empty list of numbers >= 0")
    for value in args.sweep_min or []:
        if value != int(value) or value > args.max_replicas:
            problems.append(f"--sweep-min value {value}: expected a whole number <= --max-replicas ({args.max_replicas})")
    return load, scenario, problems


def label(scaling: Scaling) -> str:
    if scaling.min_replicas == scaling.max_replicas:
        return f"fixed {scaling.min_replicas} replica{'s' if scaling.min_replicas > 1 else ''}"
    if scaling.min_replicas:
        return f"min {scaling.min_replicas} (warm)"  # KEDA's cool-down only applies with a minimum of 0
    return f"min 0, cool-down {scaling.cooldown_s:g} s"


def variants(scenario: Scenario, args: argparse.Namespace) -> list[tuple[str, Scenario]]:
    """The scenarios of a sweep, each labelled; a single run when no sweep was asked for."""
    if args.sweep_min is None and args.sweep_cooldown is None:
        return [(label(scenario.scaling), scenario)]
    rows = []
    for minimum in args.sweep_min or [scenario.scaling.min_replicas]:
        for cooldown in args.sweep_cooldown or [scenario.scaling.cooldown_s]:
            variant = replace(scenario, scaling=replace(scenario.scaling, min_replicas=int(minimum), cooldown_s=cooldown))
            if all(label(variant.scaling) != existing for existing, _ in rows):
                rows.append((label(variant.scaling), variant))
    fixed = replace(scenario.scaling, min_replicas=1, max_replicas=1)
    if all(label(fixed) != existing for existing, _ in rows):
        rows.append((label(fixed), replace(scenario, scaling=fixed)))
    return rows


def row(result: Result) -> dict:
    summary = result.summary()
    summary["usd_per_day"] = summary["cost_usd"] * 86_400 / result.duration_s
    return summary


def table(rows: list[tuple[str, dict]]) -> str:
    header = "| scenario | " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    lines = [header, "|---|" + "---:|" * len(COLUMNS)]
    for label, summary in rows:
        cells = ["n/a" if summary[key] is None else fmt.format(summary[key]) for key, _, fmt in COLUMNS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    load, scenario, problems = build(args)
    if problems:
        print("invalid parameters:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    duration_s = args.hours * 3600
    demand = sessions(load, duration_s, args.seed)
    results = [(label, simulate(variant, demand, duration_s, args.seed)) for label, variant in variants(scenario, args)]
    rows = [(label, row(result)) for label, result in results]
    print(f"{len(demand)} sessions of {load.session_requests} prompts over {args.hours:g} h ({load.pattern}, seed {args.seed}); "
          f"{scenario.generation_s:g} s per image; cold start {scenario.cold_start.total_s:g} s from zero nodes")
    print(table(rows))
    if args.json:
        document = {"load": asdict(load), "hours": args.hours, "seed": args.seed,
                    "rows": [{"label": label, "scenario": asdict(result.scenario), "summary": summary}
                             for (label, result), (_, summary) in zip(results, rows, strict=True)]}
        text = json.dumps(document, indent=2)
        if str(args.json) == "-":
            print(text)
        else:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(text + "\n")
    if args.png:
        from tools.sim.plot import draw

        label, result = results[0]
        draw(result, args.png, f"{label}: {len(result.requests)} requests, {load.pattern} load, seed {args.seed}")
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
