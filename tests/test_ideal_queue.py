"""The ideal shared queue of tools/sim/ideal.py: the yardstick of the end-to-end harness (tools/e2e)."""

import pytest

from tools.sim.ideal import ideal_latencies


def test_a_request_arriving_at_a_free_pod_takes_only_its_generation():
    assert ideal_latencies([5.0], [2.0], ready_at=[0.0]) == [2.0]


def test_a_request_before_any_pod_is_ready_waits_for_the_first_ready_pod():
    assert ideal_latencies([0.0], [1.0], ready_at=[4.0, 3.0]) == [4.0]


def test_a_burst_goes_to_whichever_pod_frees_first_in_arrival_order():
    # pod A ready at 0, pod B at 1; four requests at 0 of 2 s each: A 0-2, B 1-3, A 2-4, B 3-5
    assert ideal_latencies([0.0] * 4, [2.0] * 4, ready_at=[0.0, 1.0]) == [2.0, 3.0, 4.0, 5.0]


def test_each_request_takes_its_own_duration():
    assert ideal_latencies([0.0, 0.0], [1.0, 3.0], ready_at=[0.0]) == [1.0, 4.0]


def test_requests_are_served_in_arrival_order_whatever_order_they_are_given_in():
    assert ideal_latencies([1.0, 0.0], [1.0, 1.0], ready_at=[0.0]) == [1.0, 1.0]
    assert ideal_latencies([0.5, 0.0], [1.0, 1.0], ready_at=[0.0]) == [1.5, 1.0]


def test_mismatched_arrivals_and_durations_are_refused():
    with pytest.raises(ValueError, match="2 arrivals but 1 durations"):
        ideal_latencies([0.0, 1.0], [1.0], ready_at=[0.0])


def test_no_pods_is_refused():
    with pytest.raises(ValueError, match="no pods"):
        ideal_latencies([0.0], [1.0], ready_at=[])
