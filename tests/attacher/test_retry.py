"""The agent's retry policy at its edges: which answers retry, the attempt and time budgets, the backoff.

Jitter is pinned by making `random.uniform` return its upper bound, and time by a fake clock, so
every delay is a literal here: the expected values are written out, never computed from the policy.
"""

from __future__ import annotations

import json
import time

import pytest
import requests
from attacher import retry
from attacher.retry import HttpStatusError, RetryPolicy, is_transient
from google.api_core import exceptions as gexc

from tests import jitter
from tests.attacher.test_units import Flaky


@pytest.fixture
def top_of_jitter(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, float]]:
    return jitter.top_of_jitter(monkeypatch)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """time.monotonic as seen by the policy: pops the next value (the first is the start)."""
    readings: list[float] = []
    monkeypatch.setattr(retry.time, "monotonic", lambda: readings.pop(0))
    return readings


def test_defaults_are_half_a_second_doubling_to_eight_for_eight_attempts_within_a_minute():
    policy = RetryPolicy()
    assert (policy.initial_seconds, policy.max_delay_seconds, policy.max_attempts, policy.budget_seconds) == (
        0.5, 8.0, 8, 60.0)
    assert policy.sleep is time.sleep


@pytest.mark.parametrize("status", [429, 500, 503, 599])
def test_http_429_and_5xx_are_transient(status: int):
    assert is_transient(HttpStatusError("metadata", status, ""))


@pytest.mark.parametrize("status", [400, 404, 428, 430, 499])
def test_other_http_statuses_are_not_transient(status: int):
    assert not is_transient(HttpStatusError("metadata", status, ""))


@pytest.mark.parametrize("error", [requests.ConnectionError("reset"), requests.Timeout("slow"),
                                   gexc.TooManyRequests("x"), gexc.InternalServerError("x"), gexc.GatewayTimeout("x")])
def test_connection_failures_timeouts_and_api_429_5xx_are_transient(error: BaseException):
    assert is_transient(error)


@pytest.mark.parametrize("error", [ValueError("bug"), gexc.Forbidden("x"), gexc.PreconditionFailed("x")])
def test_other_errors_are_not_transient(error: BaseException):
    assert not is_transient(error)


def test_an_http_status_error_keeps_the_status_and_the_first_300_characters_of_the_body():
    error = HttpStatusError("kubernetes", 503, "b" * 400)
    assert error.status == 503
    assert str(error) == "kubernetes answered HTTP 503: " + "b" * 300


def test_the_last_allowed_attempt_still_runs():
    call = Flaky(gexc.ServiceUnavailable("x"), gexc.ServiceUnavailable("x"))
    assert RetryPolicy(max_attempts=3, sleep=lambda s: None).call("x", call) == "ok"
    assert call.calls == 3


def test_no_attempt_runs_beyond_max_attempts():
    call = Flaky(*[gexc.ServiceUnavailable("x")] * 3)
    with pytest.raises(gexc.ServiceUnavailable):
        RetryPolicy(max_attempts=3, sleep=lambda s: None).call("x", call)
    assert call.calls == 3


def test_backoff_doubles_from_the_initial_delay_up_to_the_cap(top_of_jitter):
    delays: list[float] = []
    policy = RetryPolicy(initial_seconds=0.5, max_delay_seconds=8.0, max_attempts=8, sleep=delays.append)
    with pytest.raises(gexc.ServiceUnavailable):
        policy.call("x", Flaky(*[gexc.ServiceUnavailable("x")] * 8))
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_jitter_draws_from_zero_to_the_backoff(top_of_jitter):
    RetryPolicy(initial_seconds=0.25, sleep=lambda s: None).call("x", Flaky(gexc.ServiceUnavailable("x")))
    assert top_of_jitter == [(0, 0.25)]


def test_a_retry_whose_delay_ends_exactly_at_the_budget_still_runs(top_of_jitter, clock):
    clock += [0.0, 1.0]  # started, then the first failure one second in; the delay is 0.5
    call = Flaky(gexc.ServiceUnavailable("x"))
    assert RetryPolicy(initial_seconds=0.5, budget_seconds=1.5, sleep=lambda s: None).call("x", call) == "ok"
    assert call.calls == 2


def test_no_retry_starts_past_the_budget(top_of_jitter, clock):
    clock += [0.0, 1.0]
    call = Flaky(gexc.ServiceUnavailable("x"))
    with pytest.raises(gexc.ServiceUnavailable):
        RetryPolicy(initial_seconds=0.5, budget_seconds=1.49, sleep=lambda s: None).call("x", call)
    assert call.calls == 1


def test_each_retry_logs_the_call_the_attempt_the_delay_and_the_error(top_of_jitter, capsys):
    call = Flaky(requests.ConnectionError("c" * 250))
    RetryPolicy(initial_seconds=2.0, sleep=lambda s: None).call("compute.disks.get", call)
    line = json.loads(capsys.readouterr().out)
    del line["ts"]
    assert line == {"event": "retry", "call": "compute.disks.get", "attempt": 1, "delay_ms": 2000,
                    "error": "ConnectionError: " + "c" * 200}
