"""How tools/e2e reads a run: the stand-ins' generation logs and the load test's outcomes, on one clock."""

from tools.e2e import measures, report
from tools.e2e.load import Run
from tools.e2e.scenarios import Check, Result
from tools.loadtest import Outcome

WARM_UP = {"tag": None, "start": 0.0, "end": 1.0}


def run_of(*outcomes: Outcome, started: float = 10.0) -> Run:
    return Run(started, list(outcomes))


def test_a_pod_is_ready_when_its_warm_up_generation_ends():
    assert measures.ready_times([[WARM_UP, {"tag": "0", "start": 2.0, "end": 3.0}],
                                 [{"tag": None, "start": 4.0, "end": 5.5}]]) == [1.0, 5.5]


def test_an_idle_gap_counts_only_while_a_request_of_the_run_waits():
    # request 0 arrives at 10 and runs 11-12; request 1 arrives at 14, after the pod went idle at 12
    run = run_of(Outcome(0, started_s=0.0, latency_s=2.0), Outcome(1, started_s=4.0, latency_s=1.0))
    log = [{"tag": "0", "start": 11.0, "end": 12.0}, {"tag": "1", "start": 14.2, "end": 15.0}]
    assert measures.longest_idle_gap(run, [log]) == 0.0


def test_an_idle_gap_while_a_request_waits_is_the_dispatch_delay():
    run = run_of(Outcome(0, started_s=0.0, latency_s=2.0), Outcome(1, started_s=0.0, latency_s=4.0))
    log = [{"tag": "0", "start": 11.0, "end": 12.0}, {"tag": "1", "start": 12.7, "end": 14.0}]
    assert round(measures.longest_idle_gap(run, [log]), 6) == 0.7


def test_the_ideal_is_fed_with_the_recorded_arrivals_ready_times_and_durations():
    # two requests at 10, one pod ready at 12, generations of 1 s and 2 s: ideal latencies 3 and 5
    run = run_of(Outcome(0, started_s=0.0, latency_s=3.5), Outcome(1, started_s=0.0, latency_s=5.5))
    log = [{"tag": None, "start": 11.0, "end": 12.0}, {"tag": "0", "start": 12.1, "end": 13.1},
           {"tag": "1", "start": 13.2, "end": 15.2}]
    assert measures.ideal_p99(run, [log]) == 5.0


def test_the_path_overhead_is_latency_less_the_queue_wait_and_the_generation():
    run = run_of(Outcome(0, started_s=0.0, latency_s=1.5, queue_wait_s=0.25))
    assert measures.overheads(run, [[{"tag": "0", "start": 11.0, "end": 12.0}]]) == [0.25]


def test_the_table_has_a_row_per_criterion_and_the_figures_once():
    result = Result("spike", 100, 0, 1.0, 2.0, 1.9, [Check("errors", "0 errors", "0", True),
                                                    Check("ratio", "p99 <= 1.10 x ideal", "1.053", True)])
    lines = report.table([result]).splitlines()
    assert lines[0].startswith("| scenario | n | errors |") and len(lines) == 4
    assert lines[2] == "| spike | 100 | 0 | 1.00 | 2.00 | 1.90 | 1.053 | 0 errors | 0 | yes |"
    assert lines[3].startswith("|  |  |") and lines[3].endswith("| 1.053 | yes |")


def test_a_scenario_passes_only_when_every_criterion_holds():
    checks = [Check("errors", "0 errors", "0", True), Check("ratio", "p99", "1.2", False)]
    assert not Result("spike", 1, 0, 1.0, 1.0, checks=checks).ok
    assert not Result("spike", 1, 0, 1.0, 1.0, checks=[]).ok
