"""Simulate sd-gke's request path and scaling, the old design (KEDA HTTP add-on) against the new (the request
queue), and print latency, errors by kind, GPU-hours and the GPU time wasted on requests nobody waits for.

    python -m tools.simulate --scenario spike                                           # README: the spike (dev's settings)
    python -m tools.simulate --scenario business-week --warm "Mon-Fri 09:00-18:00 1"    # README: a business week
    python -m tools.simulate --trace my-trace.csv --tz Europe/Berlin --warm "Mon-Fri 08:00-19:00 1"
    python -m tools.simulate --pattern daily --hours 672                                # generated sessions

The model and the source of every rule are in tools/sim/model.py; traces in tools/sim/trace.py; warm
schedules in tools/sim/warm.py. Every row runs on the same arrivals once per node removal time of
`--node-scale-down` (GKE publishes no figure for OPTIMIZE_UTILIZATION), and shows p99 and GPU-hours as
min/mid/max over that range. With `--warm`, the rows compare scaling to `--min-replicas`, a warm minimum
of 1 at all times, and the schedules. Exit 2 on invalid parameters or trace, every problem listed.

The new design's settings are the stack's own (`--stack`, default dev): the queue's bounds and the generation
timeout from its config through the timeout chain (components/timeouts.py), KEDA's polling interval and the
cool-down the ScaledObject is given, the replica bounds, and the browser keepalive the request queue is given.
An option given on the command line overrides the stack.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

from tools.sim.arrivals import PATTERNS, Load, business_week, sessions, spike
from tools.sim.model import simulate
from tools.sim.result import Result
from tools.sim.scenario import DESIGNS, ColdStart, Costs, Scaling, Scenario, Timeouts
from tools.sim.trace import TraceError, TraceRow, parse_trace, to_demand, write_csv
from tools.sim.warm import parse_warm

SCENARIOS = ("spike", "business-week")
SCENARIO_HOURS = {"spike": 3.0, "business-week": 168.0}
NODE_SCALE_DOWN_S = (60.0, 330.0, 600.0)  # an assumed floor, the middle, upstream's default (tools/sim/model.py)


def _numbers(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from err


def stack_settings(stack: str) -> dict[str, float | int]:
    """The simulator's options as the stack deploys them: what components/ derives from its config."""
    from components import autoscaling, config, request_queue
    from components.timeouts import TimeoutChain
    from tools.mockrun import ROOT

    cfg = config.load_stack(ROOT, stack)
    chain = TimeoutChain.of(cfg)
    return {"generation_timeout": chain.generation, "max_wait": chain.queue_wait, "max_depth": cfg.queue.max_depth,
            "ui_keepalive": request_queue.UI_KEEPALIVE_SECONDS, "keda_poll": autoscaling.POLLING_INTERVAL_SECONDS,
            "stabilisation": cfg.autoscaling.cooldown_seconds, "cooldown": cfg.autoscaling.cooldown_seconds,
            "min_replicas": cfg.autoscaling.min_replicas, "max_replicas": cfg.autoscaling.max_replicas}


def parser(stack: str = "dev") -> argparse.ArgumentParser:
    load_defaults, cold, scaling, timeouts, costs, scenario = Load(), ColdStart(), Scaling(), Timeouts(), Costs(), Scenario()
    p = argparse.ArgumentParser(prog="python -m tools.simulate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--stack", choices=("dev", "prod"), default=stack,
                   help="the stack whose settings the new design runs with (Pulumi.<stack>.yaml)")
    demand = p.add_argument_group("demand (one of --scenario, --trace; else sessions of --pattern)")
    demand.add_argument("--scenario", choices=SCENARIOS,
                        help="spike: 100 requests after a quiet hour; business-week: a few people in bursts, weekdays 09-18")
    demand.add_argument("--trace", type=Path, help="CSV arrival_s,images[,route] or JSON lines {\"t\":..,\"images\":..}")
    demand.add_argument("--pattern", choices=PATTERNS, default=load_defaults.pattern)
    demand.add_argument("--sessions-per-hour", type=float, default=load_defaults.sessions_per_hour)
    demand.add_argument("--session-requests", type=int, default=load_defaults.session_requests, help="prompts per session")
    demand.add_argument("--think", type=float, default=load_defaults.think_s, help="seconds between a session's prompts")
    demand.add_argument("--hours", type=float, help="simulated time (default: 3 spike, 168 business week, the trace's "
                        "whole days, 24 for sessions)")
    demand.add_argument("--seed", type=int, default=1)
    service = p.add_argument_group("service and timeouts")
    service.add_argument("--design", default=",".join(DESIGNS), help="old (KEDA HTTP add-on), new (request queue), or both")
    service.add_argument("--generation", type=float, default=scenario.generation_s, help="seconds per image")
    service.add_argument("--generation-timeout", type=float, default=timeouts.generation_s, help="webui.generationTimeoutSeconds")
    service.add_argument("--cold-start-timeout", type=float, default=timeouts.cold_start_s,
                         help="autoscaling.coldStartTimeoutSeconds (old: the interceptor's readiness timeout)")
    service.add_argument("--max-wait", type=float, default=timeouts.max_wait_s, help="new: QUEUE_MAX_WAIT_SECONDS")
    service.add_argument("--max-depth", type=int, default=timeouts.max_depth, help="new: QUEUE_MAX_DEPTH")
    service.add_argument("--ui-keepalive", type=float, default=scenario.ui_keepalive_s,
                         help="seconds a browser visit keeps a pod wanted (new: UI_KEEPALIVE_SECONDS)")
    steps = p.add_argument_group("cold start (seconds)")
    for name in ("autoscaler", "node", "disk", "pull", "webui"):
        steps.add_argument(f"--{name}", type=float, default=getattr(cold, f"{name}_s"))
    autoscaling = p.add_argument_group("autoscaling")
    autoscaling.add_argument("--min-replicas", type=int, default=scaling.min_replicas)
    autoscaling.add_argument("--max-replicas", type=int, default=scaling.max_replicas)
    autoscaling.add_argument("--hpa-sync", type=float, default=scaling.hpa_sync_s, help="HPA sync period, seconds")
    autoscaling.add_argument("--keda-poll", type=float, default=scaling.keda_poll_s, help="ScaledObject pollingInterval")
    autoscaling.add_argument("--stabilisation", type=float, default=scaling.stabilisation_s,
                             help="HPA scale-down stabilisation window, seconds")
    autoscaling.add_argument("--cooldown", type=float, default=scaling.cooldown_s, help="KEDA cooldownPeriod (1 -> 0)")
    autoscaling.add_argument("--node-scale-down", type=_numbers, default=list(NODE_SCALE_DOWN_S),
                             help="seconds an empty GPU node lives: 1 to 3 values (min,mid,max)")
    autoscaling.add_argument("--preemptions-per-node-hour", type=float, default=scenario.preemptions_per_node_hour,
                             help="Spot preemption rate (30 s notice)")
    autoscaling.add_argument("--warm", action="append", default=[], metavar="SCHEDULE",
                             help="warm capacity, e.g. 'Mon-Fri 09:00-18:00 1' (repeatable): KEDA cron trigger")
    autoscaling.add_argument("--tz", default=scenario.timezone, help="IANA time zone of the run's clock and --warm")
    autoscaling.add_argument("--start-date", default=scenario.start_date, help="the day t = 0 starts (midnight, --tz)")
    money = p.add_argument_group("costs (USD per GPU node-hour)")
    money.add_argument("--node-usd-per-hour", type=float, default=costs.node_usd_per_hour)
    money.add_argument("--disk-usd-per-hour", type=float, default=costs.disk_usd_per_hour)
    out = p.add_argument_group("output")
    out.add_argument("--png", type=Path, help="draw the timeline of the first row's middle run")
    out.add_argument("--write-trace", type=Path, help="write the scenario's arrivals as a CSV trace (and run nothing)")
    out.add_argument("--json", type=Path, help="write parameters and results as JSON ('-' for stdout)")
    p.set_defaults(**stack_settings(stack))
    return p


def build(args: argparse.Namespace) -> tuple[Scenario, list[str]]:
    """The base scenario and every problem with the arguments."""
    schedules, problems = [], []
    for text in args.warm:
        schedule, found = parse_warm(text)
        problems += found
        schedules += [schedule] if schedule else []
    designs = [part.strip() for part in args.design.split(",") if part.strip()]
    if not designs or any(design not in DESIGNS for design in designs):
        problems.append(f"--design {args.design!r}: expected old, new or old,new")
    scenario = Scenario(
        design=designs[0] if designs and designs[0] in DESIGNS else "new",
        cold_start=ColdStart(args.autoscaler, args.node, args.disk, args.pull, args.webui),
        scaling=Scaling(args.min_replicas, args.max_replicas, 1.0, args.hpa_sync, args.keda_poll, args.stabilisation,
                        args.cooldown, args.node_scale_down[0] if args.node_scale_down else 0.0),
        timeouts=Timeouts(args.generation_timeout, args.cold_start_timeout, args.max_wait, args.max_depth),
        costs=Costs(args.node_usd_per_hour, args.disk_usd_per_hour), generation_s=args.generation,
        ui_keepalive_s=args.ui_keepalive, preemptions_per_node_hour=args.preemptions_per_node_hour,
        warm=tuple(schedules), timezone=args.tz, start_date=args.start_date)
    problems += scenario.problems()
    if args.scenario and args.trace:
        problems.append(f"--scenario {args.scenario} and --trace {args.trace}: expected one of them, not both")
    if args.write_trace and not args.scenario:
        problems.append(f"--write-trace {args.write_trace}: expected a --scenario to write")
    if args.hours is not None and args.hours <= 0:
        problems.append(f"--hours {args.hours}: expected > 0")
    removal = args.node_scale_down
    if not 1 <= len(removal) <= 3 or any(v < 0 for v in removal) or removal != sorted(removal):
        problems.append(f"--node-scale-down {removal}: expected 1 to 3 values >= 0 in ascending order (min,mid,max)")
    if args.warm and args.min_replicas > 0:
        problems.append(f"--min-replicas {args.min_replicas} with --warm: expected 0, the schedules are compared with "
                        "scaling to zero and with a warm minimum of 1")
    return scenario, problems


def scenario_rows(args: argparse.Namespace) -> tuple[list[TraceRow], str]:
    if args.scenario == "spike":
        return spike(), "a spike of 100 one-image requests at t = 1 h after a quiet hour"
    return business_week(args.seed), f"a business week of 4 people working in bursts (seed {args.seed})"


def demand(args: argparse.Namespace) -> tuple[list, list[float], float, str]:
    """Sessions, browser visits, the simulated time and a line saying what they are. TraceError on a bad trace."""
    if args.scenario:
        rows, what = scenario_rows(args)
    elif args.trace:
        rows, what = parse_trace(args.trace), f"the trace {args.trace}"
    else:
        load = Load(args.pattern, args.sessions_per_hour, args.session_requests, args.think)
        hours = args.hours or 24.0
        found = sessions(load, hours * 3600, args.seed)
        what = f"{len(found)} sessions of {load.session_requests} prompts ({load.pattern}, seed {args.seed})"
        return found, [], hours * 3600, what
    api, ui = to_demand(rows)
    hours = args.hours or SCENARIO_HOURS.get(args.scenario) or 24.0 * (int(rows[-1].t // 86_400) + 1)
    if rows[-1].t >= hours * 3600:
        raise TraceError([f"--hours {hours:g}: expected more than the last arrival ({rows[-1].t:g} s = "
                          f"{rows[-1].t / 3600:.2f} h), or nothing past the run would be billed"])
    images = sum(session.images for session in api)
    return api, ui, hours * 3600, f"{what}: {len(api)} requests ({images} images), {len(ui)} browser visits"


def variants(scenario: Scenario, designs: list[str]) -> list[tuple[str, str, Scenario]]:
    """(design, capacity label, scenario) for every row."""
    if scenario.warm:
        capacities = [(f"min {scenario.scaling.min_replicas}", replace(scenario, warm=())),
                      ("warm 1 always", replace(scenario, warm=(), scaling=replace(scenario.scaling, min_replicas=1))),
                      ("; ".join(s.text for s in scenario.warm), scenario)]
    else:
        capacities = [(f"min {scenario.scaling.min_replicas}", scenario)]
    return [(design, label, replace(variant, design=design)) for label, variant in capacities for design in designs]


def run_row(scenario: Scenario, removal: list[float], api, ui, duration_s: float, seed: int) -> list[Result]:
    return [simulate(replace(scenario, scaling=replace(scenario.scaling, node_scale_down_s=value)), api, duration_s, seed, ui)
            for value in removal]


def _spread(values: list[float | None], fmt: str) -> str:
    return " / ".join("n/a" if value is None else fmt.format(value) for value in values)


def table(rows: list[tuple[str, str, list[Result]]], removal: list[float], per_day: bool) -> str:
    gpu_key, gpu_title = ("gpu_hours_per_day", "GPU-h/day") if per_day else ("gpu_hours", "GPU-h")
    spread = " / ".join(f"{value:g}" for value in removal)
    header = (f"| design | capacity | p50 (s) | p99 (s), node removal {spread} s | 504 | 429 | 503 | 502 | served | "
              f"{gpu_title}, node removal {spread} s | wasted GPU-s |")
    lines = [header, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for design, capacity, results in rows:
        summaries = [result.summary() for result in results]
        middle = summaries[len(summaries) // 2]
        p50 = "n/a" if middle["p50_s"] is None else f"{middle['p50_s']:.0f}"
        served = "n/a" if middle["served_share"] is None else f"{middle['served_share']:.0%}"
        lines.append(f"| {design} | {capacity} | {p50} | {_spread([s['p99_s'] for s in summaries], '{:.0f}')} | "
                     f"{middle['errors_504']} | {middle['errors_429']} | {middle['errors_503']} | {middle['errors_502']} | "
                     f"{served} | {_spread([s[gpu_key] for s in summaries], '{:.2f}')} | {middle['wasted_gpu_s']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--stack", choices=("dev", "prod"), default="dev")
    known, _ = first.parse_known_args(argv)
    args = parser(known.stack).parse_args(argv)
    scenario, problems = build(args)
    try:
        api, ui, duration_s, what = demand(args)
    except TraceError as error:
        problems += error.problems
    if problems:
        print("invalid parameters:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    if args.write_trace:
        rows, what = scenario_rows(args)
        write_csv(rows, args.write_trace, f"{what}; t = 0 is Monday 00:00 (python -m tools.simulate --write-trace)")
        print(f"wrote {len(rows)} rows to {args.write_trace}")
        return 0
    designs = [part.strip() for part in args.design.split(",") if part.strip()]
    rows = [(design, capacity, run_row(variant, args.node_scale_down, api, ui, duration_s, args.seed))
            for design, capacity, variant in variants(scenario, designs)]
    print(f"stack {args.stack}: queue max depth {args.max_depth}, max wait {args.max_wait:g} s, generation timeout "
          f"{args.generation_timeout:g} s, KEDA polling {args.keda_poll:g} s, cool-down {args.cooldown:g} s")
    print(f"{what}; {duration_s / 3600:g} h simulated; {scenario.generation_s:g} s per image; "
          f"cold start {scenario.cold_start.total_s:g} s from zero nodes; max {scenario.scaling.max_replicas} pods")
    print("p50, errors, served and wasted GPU-s at the middle node removal time; errors: 504 timeouts, 429 queue full, "
          "503 queue wait, 502 load balancer or preemption")
    print(table(rows, args.node_scale_down, per_day=duration_s >= 86_400))
    if args.json:
        document = {"what": what, "duration_s": duration_s, "seed": args.seed, "node_scale_down_s": args.node_scale_down,
                    "rows": [{"design": design, "capacity": capacity, "scenario": asdict(results[0].scenario),
                              "summaries": [result.summary() for result in results]} for design, capacity, results in rows]}
        text = json.dumps(document, indent=2, default=str)
        if str(args.json) == "-":
            print(text)
        else:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(text + "\n")
    if args.png:
        from tools.sim.plot import draw

        design, capacity, results = rows[0]
        result = results[len(results) // 2]
        draw(result, args.png, f"{design}, {capacity}: {len(result.requests)} requests, seed {args.seed}")
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
