"""The scaling simulator on scenarios small enough to work out by hand (tools/sim, tools/simulate.py).

Defaults: cold start 38 + 89 + 4 + 11 + 65 = 207 s from zero nodes; a pod on an empty node that
is already up needs pull + WebUI = 76 s. Polls every 15 s.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from tools import simulate as cli
from tools.sim.arrivals import Load, sessions
from tools.sim.model import ColdStart, Scaling, Scenario, Session, simulate
from tools.sim.stats import latency_summary, percentile

G = 3.0  # seconds per image in these scenarios
COLD = ColdStart().total_s
POD_ON_A_NODE = ColdStart().pull_s + ColdStart().webui_s


def run(starts, duration_s=7200.0, dispatch="service", generation_s=G, **scaling):
    scenario = Scenario(scaling=Scaling(**scaling), generation_s=generation_s, dispatch=dispatch)
    return simulate(scenario, [start if isinstance(start, Session) else Session(start) for start in starts], duration_s)


def latencies(result):
    return [request.latency for request in result.requests]


def test_the_published_cold_start_adds_up_to_about_three_and_a_half_minutes():
    assert COLD == 207 and POD_ON_A_NODE == 76


def test_one_request_from_zero_waits_the_whole_cold_start_and_one_generation():
    result = run([0.0], min_replicas=0)
    assert latencies(result) == [COLD + G]
    assert result.requests[0].cold
    assert result.times("node-created") == [38.0] and result.times("node-usable") == [131.0]
    assert result.times("pod-ready") == [207.0]


def test_one_request_with_a_warm_replica_waits_one_generation():
    result = run([0.0], min_replicas=1)
    assert latencies(result) == [G] and not result.requests[0].cold
    assert result.times("node-created") == [0.0]


def test_simultaneous_requests_on_one_pod_are_served_one_after_another():
    result = run([0.0] * 5, min_replicas=1, max_replicas=1)
    assert latencies(result) == [G, 2 * G, 3 * G, 4 * G, 5 * G]


def test_a_pod_idle_for_exactly_the_cool_down_is_removed_then_and_not_before():
    result = run([0.0], min_replicas=0, cooldown_s=300)
    assert result.times("pod-gone") == [COLD + G + 300]  # 510 s, a poll (34 x 15 s)


def test_scale_to_zero_happens_at_the_first_poll_after_the_cool_down():
    result = run([0.0], min_replicas=0, cooldown_s=300, poll_s=20)
    assert result.times("pod-gone") == [520.0]  # idle since 210; the poll at 500 is too early


def test_a_request_during_the_cool_down_is_warm_and_restarts_it():
    result = run([0.0, 400.0], min_replicas=0, cooldown_s=300)
    assert latencies(result)[1] == G and not result.requests[1].cold
    assert result.times("pod-gone") == [705.0]  # idle since 403: first poll at or after 703


def test_an_empty_node_is_removed_after_the_scale_down_delay():
    assert run([0.0], min_replicas=0).times("node-removed") == [510.0 + 600]
    assert run([0.0], min_replicas=0, node_scale_down_s=120).times("node-removed") == [510.0 + 120]


def test_a_pod_on_a_node_still_up_skips_the_node_boot_and_the_disk():
    result = run([0.0, 600.0], min_replicas=0)
    assert result.requests[1].cold and latencies(result)[1] == POD_ON_A_NODE + G
    assert result.times("node-created") == [38.0]


def test_the_interceptor_releases_everything_it_held_to_the_first_ready_pod():
    result = run([0.0] * 3, min_replicas=0, max_replicas=2)
    assert result.times("pod-ready") == [207.0, 207.0]
    assert latencies(result) == [COLD + G, COLD + 2 * G, COLD + 3 * G]
    assert {request.pod for request in result.requests} == {0}


def test_a_shared_queue_spreads_held_requests_over_the_pods_as_they_turn_ready():
    result = run([0.0] * 3, min_replicas=0, max_replicas=2, dispatch="queue")
    assert latencies(result) == [COLD + G, COLD + G, COLD + 2 * G]


def test_scale_up_helps_only_new_requests_when_the_backlog_sits_in_one_pod():
    service = run([0.0] * 4, min_replicas=1, max_replicas=2, generation_s=100.0)
    queue = run([0.0] * 4, min_replicas=1, max_replicas=2, generation_s=100.0, dispatch="queue")
    assert service.times("pod-ready") == queue.times("pod-ready") == [0.0, 207.0]
    assert latencies(service) == [100.0, 200.0, 300.0, 400.0]
    assert latencies(queue) == [100.0, 200.0, 300.0, 307.0]


def test_scale_down_waits_until_the_last_higher_recommendation_leaves_the_stabilisation_window():
    # Two in flight until 300 s: the HPA recommends 2 at every poll up to 285 s, 1 from 300 s.
    result = run([0.0] * 4, min_replicas=1, max_replicas=2, generation_s=100.0, stabilisation_s=300)
    assert result.times("pod-gone") == [585.0]  # 285 + 300: a recommendation at the cutoff no longer counts
    assert result.times("node-removed") == [585.0 + 600]
    assert run([0.0] * 4, min_replicas=1, max_replicas=2, generation_s=100.0, stabilisation_s=0).times("pod-gone") == [300.0]


def test_the_newest_ready_pod_is_removed_first():
    result = run([0.0] * 4, min_replicas=1, max_replicas=2, generation_s=100.0)
    assert [event.id for event in result.events if event.kind == "pod-gone"] == [1]


def test_nodes_never_exceed_max_replicas():
    result = run([0.0] * 10, min_replicas=0, max_replicas=2, dispatch="queue")
    assert result.summary()["max_nodes"] == 2 and max(latencies(result)) == COLD + 5 * G


def test_a_session_sends_its_next_prompt_after_the_previous_image_and_the_think_time():
    result = run([Session(0.0, requests=3, think_s=30.0)], min_replicas=0)
    assert [request.arrival for request in result.requests] == [0.0, COLD + G + 30, COLD + 2 * G + 60]
    assert [request.cold for request in result.requests] == [True, False, False]


def test_gpu_hours_count_billed_node_time_within_the_run():
    result = run([0.0], min_replicas=0, duration_s=3600.0)
    assert result.node_seconds == 1110.0 - 38.0
    assert run([], min_replicas=1, max_replicas=1, duration_s=86_400.0).summary()["gpu_hours_per_day"] == 24.0


def test_cost_per_thousand_images_is_the_node_cost_over_the_images():
    summary = run([0.0, 1.0], min_replicas=0, duration_s=3600.0).summary()
    hourly = 0.30 + 0.007
    assert summary["cost_usd"] == pytest.approx(summary["gpu_hours"] * hourly)
    assert summary["usd_per_1000_images"] == pytest.approx(summary["cost_usd"] / 2 * 1000)


def test_cold_share_counts_requests_that_found_no_ready_pod():
    summary = run([0.0, 1.0, 400.0], min_replicas=0).summary()
    assert summary["cold_requests"] == 2 and summary["cold_share"] == pytest.approx(2 / 3)


def test_an_invalid_scenario_is_refused_with_every_problem_named():
    scenario = Scenario(scaling=Scaling(min_replicas=3, max_replicas=2), generation_s=0, dispatch="random")
    with pytest.raises(ValueError) as error:
        simulate(scenario, [], 60.0)
    for fragment in ("dispatch='random'", "generation_s=0", "min_replicas=3, max_replicas=2"):
        assert fragment in str(error.value)


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(10, 0, -1)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == (5.0, 10.0, 10.0)
    assert latency_summary([]) == {"p50": None, "p95": None, "p99": None, "max": None}


def test_the_same_seed_gives_the_same_sessions_and_another_seed_others():
    load = Load(pattern="steady", sessions_per_hour=6)
    assert sessions(load, 86_400, seed=7) == sessions(load, 86_400, seed=7)
    assert sessions(load, 86_400, seed=7) != sessions(load, 86_400, seed=8)


def test_steady_sessions_arrive_at_about_the_asked_rate():
    assert 900 <= len(sessions(Load(pattern="steady", sessions_per_hour=6), 7 * 86_400, seed=1)) <= 1116


def test_bursty_sessions_start_only_during_on_periods():
    load = Load(pattern="bursty", sessions_per_hour=4, burst_on_s=600, burst_off_s=3000)
    starts = [session.start for session in sessions(load, 7 * 86_400, seed=1)]
    assert starts and all(start % 3600 < 600 for start in starts)


def test_the_daily_curve_puts_most_sessions_around_its_peak():
    load = Load(pattern="daily", sessions_per_hour=4, daily_peak_hour=14, daily_amplitude=1)
    hours = [session.start % 86_400 / 3600 for session in sessions(load, 30 * 86_400, seed=1)]
    around_peak = sum(8 <= hour < 20 for hour in hours)
    assert around_peak > 0.75 * len(hours)  # a raised cosine puts 82 % of its mass within 6 h of the peak


def test_the_cli_prints_the_trade_off_table_with_a_fixed_replica_for_comparison(capsys):
    assert cli.main(["--hours", "48", "--sweep-min", "0,1", "--sweep-cooldown", "60,300"]) == 0
    out = capsys.readouterr().out
    for label in ("| min 0, cool-down 60 s |", "| min 0, cool-down 300 s |", "| min 1 (warm) |", "| fixed 1 replica |"):
        assert label in out
    assert "| scenario | p50 (s) | p99 (s) | met a cold start | GPU-h/day |" in out


def test_the_cli_writes_json_that_matches_a_direct_run(tmp_path):
    path = tmp_path / "run.json"
    assert cli.main(["--hours", "24", "--seed", "3", "--cooldown", "120", "--json", str(path)]) == 0
    document = json.loads(path.read_text())
    load = Load()
    direct = simulate(Scenario(scaling=replace(Scaling(), cooldown_s=120)), sessions(load, 86_400, 3), 86_400, 3)
    assert document["rows"][0]["summary"]["gpu_hours"] == direct.summary()["gpu_hours"]
    assert document["rows"][0]["scenario"]["scaling"]["cooldown_s"] == 120


def test_the_cli_lists_every_invalid_parameter_and_exits_2(capsys):
    assert cli.main(["--min-replicas", "3", "--amplitude", "1.5", "--hours", "0", "--dispatch", "queue"]) == 2
    err = capsys.readouterr().err
    for fragment in ("min_replicas=3", "daily_amplitude=1.5", "hours=0"):
        assert fragment in err


def test_the_cli_draws_the_timeline_as_a_png(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed: the PNG is optional")
    path = tmp_path / "timeline.png"
    assert cli.main(["--hours", "24", "--png", str(path)]) == 0
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and path.stat().st_size > 10_000
