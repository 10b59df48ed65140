"""The simulator on scenarios small enough to work out by hand (tools/sim, tools/simulate.py).

Defaults: cold start 38 + 89 + 4 + 11 + 65 = 207 s from zero nodes; a pod on an empty node that is already
up needs pull + WebUI = 76 s. The HPA syncs every 15 s; KEDA polls every 5 s (new) or 30 s (old, its default).
Dev's timeout chain: generation
120 s, the interceptor's responseHeader 150 s, readiness 600 s.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tools import simulate as cli
from tools.sim.arrivals import Load, business_week, sessions, spike
from tools.sim.model import simulate
from tools.sim.scenario import ColdStart, Scaling, Scenario, Session, Timeouts
from tools.sim.stats import latency_summary, percentile
from tools.sim.trace import TraceError, parse_trace, to_demand
from tools.sim.warm import parse_warm

G = 3.0  # seconds per image in these scenarios
COLD = ColdStart().total_s
DEV_TIMEOUTS = Timeouts()
SHIPPED_TRACE = Path(cli.__file__).parent / "sim" / "traces" / "business-week.csv"
POD_ON_A_NODE = ColdStart().pull_s + ColdStart().webui_s


def run(starts, design="new", duration_s=7200.0, generation_s=G, timeouts=DEV_TIMEOUTS, seed=0, ui=(), **scaling):
    scenario = Scenario(design=design, scaling=Scaling(**scaling), timeouts=timeouts, generation_s=generation_s)
    demand = [start if isinstance(start, Session) else Session(start) for start in starts]
    return simulate(scenario, demand, duration_s, seed, list(ui))


def latencies(result):
    return [request.latency for request in result.requests]


def statuses(result):
    return [request.status for request in result.requests]


# The cold start and the scaling rules

def test_the_published_cold_start_adds_up_to_about_three_and_a_half_minutes():
    assert COLD == 207 and POD_ON_A_NODE == 76


@pytest.mark.parametrize("design", ["old", "new"])
def test_one_request_from_zero_waits_the_whole_cold_start_and_one_generation(design):
    result = run([0.0], design=design)
    assert latencies(result) == [COLD + G] and result.requests[0].cold
    assert result.times("node-created") == [38.0] and result.times("pod-ready") == [207.0]


def test_the_request_queue_is_activated_at_keda_s_next_poll():
    result = run([1.5])  # KEDA polls every second (pollingInterval 1): the metrics-api trigger sees it at 2 s
    assert result.times("pod-created") == [2.0] and latencies(result) == [0.5 + COLD + G]


def test_one_request_with_a_warm_replica_waits_one_generation():
    result = run([0.0], min_replicas=1)
    assert latencies(result) == [G] and not result.requests[0].cold


def test_a_pod_idle_for_the_cool_down_is_removed_at_the_first_poll_after_it():
    result = run([0.0], cooldown_s=300, keda_poll_s=20)
    assert result.times("pod-gone") == [520.0]  # last seen active at 200 s; at 500 s exactly the cool-down has not passed


def test_the_old_design_scales_to_zero_on_keda_s_default_30_s_poll():
    result = run([0.0], design="old", cooldown_s=300)
    assert result.times("pod-gone") == [510.0]  # polls every 30 s; the last to see it busy is at 180 s (done at 210 s)


def test_a_pod_on_a_node_still_up_skips_the_node_boot_and_the_disk():
    result = run([0.0, 600.0], design="old")
    assert result.requests[1].cold and latencies(result)[1] == POD_ON_A_NODE + G
    assert result.times("node-created") == [38.0]


@pytest.mark.parametrize("removal_s", [60.0, 600.0])
def test_an_empty_node_is_removed_after_the_node_removal_time(removal_s):
    result = run([0.0], design="old", node_scale_down_s=removal_s)
    assert result.times("node-removed") == [result.times("pod-gone")[0] + removal_s]


def test_scale_down_waits_until_the_last_higher_recommendation_leaves_the_stabilisation_window():
    # 4 requests of 100 s: the warm pod runs three (to 300 s), the second pod, ready at 207 s, one (to 307 s).
    # The HPA recommends 2 at every sync up to 285 s and 1 from 300 s.
    kept = run([0.0] * 4, min_replicas=1, generation_s=100.0, stabilisation_s=300)
    assert kept.times("pod-gone") == [585.0]  # 285 + 300: a recommendation at the cutoff no longer counts
    # Without a window the newest pod is removed at 300 s and drains its generation first.
    assert run([0.0] * 4, min_replicas=1, generation_s=100.0, stabilisation_s=0).times("pod-gone") == [307.0]


def test_nodes_never_exceed_max_replicas():
    result = run([0.0] * 10, max_replicas=2)
    assert result.summary()["max_nodes"] == 2 and max(latencies(result)) == COLD + 5 * G


def test_gpu_hours_count_billed_node_time_within_the_run():
    result = run([], min_replicas=1, max_replicas=1, duration_s=86_400.0)
    assert result.summary()["gpu_hours_per_day"] == 24.0


# Timeouts: a cut request is an error, and the GPU time it still takes is waste

def test_each_design_s_load_balancer_waits_longer_than_the_hop_behind_it():
    timeouts = Timeouts(generation_s=120.0, cold_start_s=600.0, max_wait_s=300.0)
    assert (timeouts.response_header_s, timeouts.request_s) == (150.0, 750.0)
    assert timeouts.load_balancer_s("old") == 780.0  # the README's timeout chain in dev
    assert timeouts.load_balancer_s("new") == 300.0 + 120.0 + 30.0  # the longest wait plus one generation



def test_a_request_cut_by_the_interceptor_s_response_header_timeout_is_an_error_not_served():
    # responseHeader = 20 + 30 = 50 s; the second request waits 30 s in the pod, then needs 30 s more.
    result = run([0.0, 0.0], design="old", generation_s=30.0, timeouts=Timeouts(generation_s=20.0),
                 min_replicas=1, max_replicas=1)
    assert statuses(result) == [200, 504] and latencies(result) == [30.0, None]
    assert result.requests[1].end == 50.0 and result.requests[1].cause == "interceptor response header timeout"
    summary = result.summary()
    assert summary["served"] == 1 and summary["errors_504"] == 1 and summary["p99_s"] == 30.0
    assert result.wasted_seconds == 30.0  # WebUI ran the abandoned request all the same


def test_a_cold_start_longer_than_the_interceptor_s_readiness_timeout_ends_in_a_504():
    result = run([0.0], design="old", timeouts=Timeouts(cold_start_s=100.0))
    assert statuses(result) == [504] and result.requests[0].cause == "interceptor readiness timeout"
    assert result.requests[0].end == 100.0 and result.wasted_seconds == 0.0


def test_a_generation_past_its_timeout_is_interrupted_and_answered_504():
    result = run([0.0], generation_s=30.0, timeouts=Timeouts(generation_s=20.0), min_replicas=1)
    assert statuses(result) == [504] and result.requests[0].end == 20.0 and result.wasted_seconds == 20.0


def test_a_request_not_dispatched_within_max_wait_gets_503_and_never_reaches_a_gpu():
    result = run([0.0] * 3, generation_s=50.0, timeouts=Timeouts(max_wait_s=60.0), min_replicas=1, max_replicas=1)
    assert statuses(result) == [200, 200, 503] and result.requests[2].end == 60.0
    assert result.requests[2].handed is None and result.wasted_seconds == 0.0


def test_past_max_depth_a_request_gets_429_at_once():
    result = run([0.0] * 5, timeouts=Timeouts(max_depth=3))
    assert statuses(result) == [200, 200, 200, 429, 429]
    assert [r.end for r in result.requests[3:]] == [0.0, 0.0]
    assert result.summary()["errors_429"] == 2


# Dispatch: the old design's spike against the request queue

def test_the_old_design_s_spike_lands_on_one_pod_and_70_of_100_requests_get_a_504():
    api, ui = to_demand(spike(at_s=60.0))
    result = simulate(Scenario(design="old"), api, 3600.0, 0, ui)
    assert result.times("pod-ready") == [267.0, 267.0]  # both pods ready, the second never gets a request
    assert {request.pod for request in result.requests} == {0}
    summary = result.summary()
    assert (summary["served"], summary["errors_504"]) == (30, 70)  # 5 s each: served while 5 k <= 150
    assert summary["wasted_gpu_s"] == 70 * 5.0


def test_the_request_queue_serves_the_same_spike_on_both_pods_without_an_error():
    api, ui = to_demand(spike(at_s=60.0))
    result = simulate(Scenario(design="new"), api, 3600.0, 0, ui)
    summary = result.summary()
    assert summary["served"] == 100 and summary["p99_s"] == COLD + 50 * 5.0
    assert sorted(sum(r.pod == pod for r in result.requests) for pod in (0, 1)) == [50, 50]


def test_the_request_queue_never_hands_a_request_to_a_busy_pod():
    demand = sessions(Load(pattern="steady", sessions_per_hour=40, session_requests=3, think_s=5), 4 * 3600, seed=2)
    queue = simulate(Scenario(design="new", generation_s=20.0), demand, 4 * 3600, 2)
    service = simulate(Scenario(design="old", generation_s=20.0), demand, 4 * 3600, 2)
    assert all(r.handed == r.start for r in queue.requests if r.handed is not None)
    assert any(r.start > r.handed for r in service.requests if r.handed is not None)  # the same load queues in pods


# Spot preemption (seed 1: the warm node's notice comes at 29.3 s, it stops 30 s later)

def _preempted(design):
    scenario = Scenario(design=design, scaling=Scaling(min_replicas=1), generation_s=100.0, preemptions_per_node_hour=6.0)
    result = simulate(scenario, [Session(0.0)], 3600.0, seed=1)
    notice = result.times("node-preempted")[0]
    return result, result.requests[0], notice


def test_a_preempted_job_goes_back_to_the_head_of_the_queue_and_is_served_by_the_replacement():
    result, request, notice = _preempted("new")
    assert notice < 100.0 and request.status == 200 and request.pod != 0
    assert request.start >= notice + 30.0  # started again once the node had gone
    assert result.wasted_seconds == pytest.approx(notice + 30.0)  # the first attempt ran until the VM stopped


def test_a_request_on_a_preempted_pod_of_the_old_design_gets_502():
    result, request, notice = _preempted("old")
    assert request.status == 502 and request.end == pytest.approx(notice + 30.0)


# The browser route and warm schedules

def test_a_browser_visit_keeps_one_pod_wanted_for_the_keep_alive_window():
    result = run([], ui=[0.0], cooldown_s=300)
    assert result.times("pod-created") == [0.0]
    assert result.times("pod-gone") == [600.0]  # the keep-alive (300 s) and then the cool-down (300 s)


def test_a_warm_schedule_keeps_one_pod_in_its_window_and_none_outside_with_min_0():
    schedule, problems = parse_warm("Mon 09:00-18:00 1")
    assert not problems
    scenario = Scenario(scaling=Scaling(cooldown_s=300), warm=(schedule,), start_date="2026-12-07")  # a Monday
    result = simulate(scenario, [], 2 * 86_400.0)
    assert result.times("pod-created") == [9 * 3600.0]
    assert result.times("pod-gone") == [18 * 3600.0 + 300]  # the trigger goes inactive; KEDA's cool-down follows
    assert [(s.t, s.replicas) for s in result.samples if s.t >= 86_400.0] == []  # Tuesday: nothing


def test_a_warm_schedule_of_two_keeps_both_pods_through_its_window():
    schedule, _ = parse_warm("Mon 09:00-18:00 2")
    result = simulate(Scenario(warm=(schedule,)), [], 86_400.0)
    assert result.times("pod-created") == [9 * 3600.0] * 2
    # After 18:00 the HPA's last recommendation of 2 (17:59:45) leaves its window at 18:04:45; KEDA takes the
    # last pod at 18:05:00, when its cool-down has passed.
    assert result.times("pod-gone") == [18 * 3600.0 + 285, 18 * 3600.0 + 300]


def test_a_warm_schedule_follows_its_time_zone():
    schedule, _ = parse_warm("Mon-Fri 09:00-18:00 1")
    scenario = Scenario(warm=(schedule,), timezone="America/New_York", start_date="2026-12-07")
    assert simulate(scenario, [], 86_400.0).times("pod-created") == [9 * 3600.0]


def test_a_warm_schedule_is_the_same_window_as_keda_s_cron_trigger():
    schedule, _ = parse_warm("Mon-Fri 09:00-18:30 2")
    assert schedule.cron() == ("0 9 * * 1,2,3,4,5", "30 18 * * 1,2,3,4,5") and schedule.replicas == 2


@pytest.mark.parametrize(("text", "fragment"), [
    ("weekdays 9-18 1", "expected DAYS HH:MM-HH:MM REPLICAS"),
    ("Fri-Mon 09:00-18:00 1", "runs forward through the week"),
    ("Mon-Fri 18:00-09:00 1", "start before the end"),
    ("Mon-Fri 09:00-25:00 1", "end '25:00'"),
    ("Mon-Fri 09:00-18:00 0", "replicas 0"),
])
def test_an_invalid_warm_schedule_is_named_with_what_is_allowed(text, fragment):
    schedule, problems = parse_warm(text)
    assert schedule is None and any(fragment in problem and repr(text) in problem for problem in problems)


# Traces

def test_a_csv_trace_with_a_header_and_routes_is_read_in_time_order(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text("# recorded Monday\narrival_s,images,route\n30,2,api\n10,0,ui\n5.5,1\n")
    rows = parse_trace(path)
    assert [(row.t, row.images, row.route) for row in rows] == [(5.5, 1, "api"), (10.0, 0, "ui"), (30.0, 2, "api")]
    api, ui = to_demand(rows)
    assert [(s.start, s.images) for s in api] == [(5.5, 1), (30.0, 2)] and ui == [10.0]


def test_a_json_lines_trace_is_read(tmp_path):
    path = tmp_path / "trace.jsonl"
    path.write_text('{"t": 12.5, "images": 1}\n\n{"t": 3, "images": 4, "route": "api"}\n{"t": 1, "route": "ui"}\n')
    assert [(row.t, row.images, row.route) for row in parse_trace(path)] == [(1.0, 0, "ui"), (3.0, 4, "api"),
                                                                             (12.5, 1, "api")]


def trace_problems(tmp_path, name, text):
    """The file written and every problem parse_trace found in it (it must refuse the file)."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(TraceError) as error:
        parse_trace(path)
    return path, error.value.problems


def test_every_bad_csv_row_is_named_by_line_value_and_what_is_allowed(tmp_path):
    path, problems = trace_problems(tmp_path, "trace.csv", "arrival_s,images\n-1,1\n10,1.5\n20\n30,1,browser\nnan,2\n")
    assert f"{path}:2: arrival '-1': expected seconds from the run's start, a finite number >= 0" in problems
    assert f"{path}:3: images '1.5': expected a whole number from 1 to 1000" in problems
    assert any(p.startswith(f"{path}:4: '20': expected arrival_s,images[,route]") for p in problems)
    assert f"{path}:5: route 'browser': expected one of api, ui" in problems
    assert any(p.startswith(f"{path}:6: arrival 'nan'") for p in problems) and len(problems) == 5


def test_every_bad_json_line_is_named_by_line_value_and_what_is_allowed(tmp_path):
    text = '{"t": 1, "images": 1}\n{"t": 2, "images": 0}\n{"t": 3, "img": 1}\n{"t": 4\n[1, 2]\n{"t": true, "images": 1}\n'
    path, problems = trace_problems(tmp_path, "trace.jsonl", text)
    assert any(p.startswith(f"{path}:6: arrival True") for p in problems)
    assert f"{path}:2: images 0: expected a whole number from 1 to 1000" in problems
    assert any(p.startswith(f"{path}:3: keys ['img', 't']") for p in problems)
    assert any(p.startswith(f"{path}:4: not JSON") for p in problems)
    assert any(p.startswith(f"{path}:5: '[1, 2]': expected an object") for p in problems)


def test_a_trace_without_requests_is_refused(tmp_path):
    _, problems = trace_problems(tmp_path, "empty.csv", "# nothing\n\n")
    assert len(problems) == 1 and "no rows" in problems[0]


def test_the_cli_reports_a_bad_trace_and_exits_2_without_a_traceback(tmp_path, capsys):
    path = tmp_path / "trace.csv"
    path.write_text("0,1\n5,many\n")
    assert cli.main(["--trace", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2: images 'many'" in err and "Traceback" not in err


def test_the_cli_refuses_a_run_shorter_than_the_trace(tmp_path, capsys):
    path = tmp_path / "trace.csv"
    path.write_text("0,1\n7200,1\n")
    assert cli.main(["--trace", str(path), "--hours", "1"]) == 2
    assert "--hours 1: expected more than the last arrival (7200 s = 2.00 h)" in capsys.readouterr().err


def test_the_cli_replays_a_trace(tmp_path, capsys):
    path = tmp_path / "trace.csv"
    path.write_text("".join(f"{60 + i},1\n" for i in range(4)))
    assert cli.main(["--trace", str(path), "--hours", "1", "--node-scale-down", "600"]) == 0
    out = capsys.readouterr().out
    assert "4 requests (4 images)" in out and "| new | min 0 |" in out and "| old | min 0 |" in out


# Scenarios and the command line

def test_the_business_week_works_weekdays_from_nine_to_six_and_its_seed_decides_it():
    rows = business_week(seed=1)
    assert rows == business_week(seed=1) and rows != business_week(seed=2)
    assert all(t.t % 86_400 >= 9 * 3600 and t.t % 86_400 < 18 * 3600 and t.t // 86_400 < 5 for t in rows)


def test_the_shipped_business_week_trace_is_the_generator_s_seed_1():
    assert parse_trace(SHIPPED_TRACE) == business_week(seed=1)  # rewrite it with --write-trace if this fails


def test_the_cli_spike_table_shows_the_old_design_s_504s_and_the_range_of_node_removal_times(capsys):
    assert cli.main(["--scenario", "spike", "--node-scale-down", "60,600"]) == 0
    out = capsys.readouterr().out
    assert "| old | min 0 | 282 | 357 / 357 | 70 | 0 | 0 | 0 | 30% |" in out
    assert "| new | min 0 | 332 | 457 / 457 | 0 | 0 | 0 | 0 | 100% |" in out


def test_the_cli_compares_min_0_a_warm_minimum_and_the_schedule(tmp_path, capsys):
    path = tmp_path / "trace.csv"
    path.write_text("36000,1\n")  # Monday 10:00
    assert cli.main(["--trace", str(path), "--design", "new", "--node-scale-down", "600",
                     "--warm", "Mon-Fri 09:00-18:00 1"]) == 0
    out = capsys.readouterr().out
    assert "| new | min 0 | 212 |" in out and "| new | warm 1 always | 5 |" in out
    assert "| new | Mon-Fri 09:00-18:00 1 | 5 |" in out


def test_the_cli_lists_every_invalid_parameter_and_exits_2(capsys):
    assert cli.main(["--min-replicas", "3", "--design", "both", "--node-scale-down", "600,60", "--hours", "0",
                     "--warm", "someday", "--tz", "Mars/Olympus"]) == 2
    err = capsys.readouterr().err
    for fragment in ("min_replicas=3", "--design 'both'", "--node-scale-down [600.0, 60.0]", "--hours 0",
                     "warm schedule 'someday'", "timezone 'Mars/Olympus'"):
        assert fragment in err


def test_the_cli_writes_json_that_matches_a_direct_run(tmp_path):
    path = tmp_path / "run.json"
    assert cli.main(["--scenario", "spike", "--design", "new", "--node-scale-down", "600", "--json", str(path)]) == 0
    document = json.loads(path.read_text())
    api, ui = to_demand(spike())
    direct = simulate(Scenario(design="new"), api, 3 * 3600.0, 1, ui)
    assert document["rows"][0]["summaries"][0]["gpu_hours"] == direct.summary()["gpu_hours"]


# Demand generators and statistics

def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(10, 0, -1)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == (5.0, 10.0, 10.0)
    assert latency_summary([]) == {"p50": None, "p95": None, "p99": None, "max": None}


def test_the_same_seed_gives_the_same_sessions_and_another_seed_others():
    load = Load(pattern="steady", sessions_per_hour=6)
    assert sessions(load, 86_400, seed=7) == sessions(load, 86_400, seed=7)
    assert sessions(load, 86_400, seed=7) != sessions(load, 86_400, seed=8)


def test_a_session_sends_its_next_prompt_after_the_previous_answer_and_the_think_time():
    result = run([Session(0.0, requests=3, think_s=30.0)], design="old")
    assert [request.arrival for request in result.requests] == [0.0, COLD + G + 30, COLD + 2 * G + 60]


def test_an_invalid_scenario_is_refused_with_every_problem_named():
    scenario = Scenario(design="random", scaling=Scaling(min_replicas=3, max_replicas=2), generation_s=0,
                        timeouts=replace(Timeouts(), max_depth=0))
    with pytest.raises(ValueError) as error:
        simulate(scenario, [], 60.0)
    for fragment in ("design='random'", "generation_s=0", "min_replicas=3, max_replicas=2", "max_depth=0"):
        assert fragment in str(error.value)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_new_design_runs_with_the_settings_the_stack_deploys(stack):
    from components import autoscaling, config
    from components.request_queue import UI_KEEPALIVE_SECONDS
    from tools.mockrun import ROOT

    cfg = config.load_stack(ROOT, stack)
    args = cli.parser(stack).parse_args(["--scenario", "spike"])
    assert (args.max_depth, args.max_wait, args.generation_timeout) == (
        cfg.queue.max_depth, cfg.queue.max_wait_seconds, cfg.webui.generation_timeout_seconds)
    assert (args.keda_poll, args.cooldown, args.stabilisation) == (
        autoscaling.POLLING_INTERVAL_SECONDS, cfg.autoscaling.cooldown_seconds, cfg.autoscaling.cooldown_seconds)
    assert (args.min_replicas, args.max_replicas, args.ui_keepalive) == (
        cfg.autoscaling.min_replicas, cfg.autoscaling.max_replicas, UI_KEEPALIVE_SECONDS)


def test_prod_s_queue_depth_differs_from_dev_s_so_the_stack_is_really_read():
    assert cli.parser("dev").parse_args([]).max_depth == 200
    assert cli.parser("prod").parse_args([]).max_depth == 1000


def test_an_option_on_the_command_line_overrides_the_stack(capsys):
    assert cli.main(["--stack", "prod", "--scenario", "spike", "--max-depth", "7", "--design", "new",
                     "--node-scale-down", "60"]) == 0
    assert "stack prod: queue max depth 7," in capsys.readouterr().out
