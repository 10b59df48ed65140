"""The load test against a local stand-in WebUI (one generation at a time) and a stand-in interceptor.

Counts and ordering only: nothing here asserts how fast anything ran.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import ROOT
from tests.fakes.webui import FakeInterceptor, FakeWebui
from tools import loadtest

AUTH = "sd:secret"


@pytest.fixture
def webui():
    with FakeWebui(auth=AUTH, generation_seconds=0.05, model_loaded=True) as fake:
        yield fake


@pytest.fixture
def interceptor(webui):
    with FakeInterceptor(webui.url) as fake:
        yield fake


def plan(url: str, requests: int, concurrency: int, auth: str | None = AUTH, **overrides) -> loadtest.Plan:
    settings = {"timeout_s": 30.0, "deadline_s": 60.0, "payload": dict(loadtest.DEFAULT_PAYLOAD), **overrides}
    return loadtest.Plan(url, requests, concurrency, auth, **settings)


def in_background(test_plan: loadtest.Plan) -> tuple[threading.Thread, list]:
    results: list = []
    thread = threading.Thread(target=lambda: results.extend(loadtest.run(test_plan)), daemon=True)
    thread.start()
    return thread, results


def wait_until(condition, what: str) -> None:
    give_up = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < give_up, f"gave up waiting for {what}"
        time.sleep(0.01)


def test_every_request_is_sent_once_with_the_credentials_and_the_payload(webui):
    summary = loadtest.summarise(loadtest.run(plan(webui.url, 6, 3)))
    assert summary["requests"] == summary["sent"] == summary["succeeded"] == 6 and summary["errors"] == {}
    assert len(webui.txt2img_payloads) == 6 and all(p == loadtest.DEFAULT_PAYLOAD for p in webui.txt2img_payloads)
    assert sorted(webui.served, key=int) == [str(i) for i in range(6)]


def test_the_host_header_can_name_the_route(webui):
    loadtest.run(plan(webui.url, 2, 1, host="webui.example.com"))
    assert webui.hosts == ["webui.example.com", "webui.example.com"]


def test_the_stand_in_generates_one_image_at_a_time(webui):
    loadtest.run(plan(webui.url, 6, 6))
    assert webui.max_generating == 1 and len(webui.served) == 6


def test_never_more_than_c_requests_are_in_flight(webui):
    webui.admit.clear()
    thread, _ = in_background(plan(webui.url, 7, 3))
    wait_until(lambda: webui.open_requests == 3, "three open requests")
    webui.admit.set()
    thread.join(timeout=30)
    assert webui.max_open_requests == 3 and len(webui.served) == 7


def test_requests_queued_in_the_pod_come_back_in_the_order_they_were_served():
    with FakeWebui(auth=AUTH, generation_seconds=0.3, model_loaded=True) as webui:
        webui.admit.clear()
        thread, outcomes = in_background(plan(webui.url, 4, 4))
        wait_until(lambda: webui.open_requests == 4, "four open requests")
        webui.admit.set()
        thread.join(timeout=30)
    finished = {str(o.index): o.started_s + o.latency_s for o in outcomes}
    in_service_order = [finished[request] for request in webui.served]
    assert len(in_service_order) == 4 and in_service_order == sorted(in_service_order)


def test_percentiles_are_taken_over_the_successful_requests():
    outcomes = [loadtest.Outcome(i, latency_s=float(i + 1), status=200) for i in range(10)]
    outcomes.append(loadtest.Outcome(10, latency_s=99.0, status=500, error="HTTP 500"))
    summary = loadtest.summarise(outcomes)
    assert summary["latency_s"] == {"p50": 5.0, "p95": 10.0, "p99": 10.0, "max": 10.0}
    assert summary["errors"] == {"HTTP 500": 1}


def test_requests_held_by_the_interceptor_count_as_cold_starts(interceptor):
    thread, outcomes = in_background(plan(interceptor.url, 4, 4))
    wait_until(lambda: interceptor.held == 4, "four held requests")
    interceptor.endpoints_ready.set()
    thread.join(timeout=30)
    summary = loadtest.summarise(outcomes)
    assert summary["succeeded"] == 4 and summary["cold_starts"] == 4


def test_requests_to_a_ready_backend_through_the_interceptor_are_warm(interceptor):
    interceptor.endpoints_ready.set()
    summary = loadtest.summarise(loadtest.run(plan(interceptor.url, 3, 3)))
    assert summary["cold_starts"] == 0 and summary["responses_with_cold_start_header"] == 3


def test_without_the_interceptor_cold_starts_are_unknown_and_the_threshold_is_a_separate_count(webui):
    outcomes = loadtest.run(plan(webui.url, 3, 1))
    assert loadtest.summarise(outcomes)["cold_starts"] is None
    assert loadtest.summarise(outcomes, cold_threshold_s=0)["slower_than_cold_threshold"] == 3
    assert loadtest.summarise(outcomes, cold_threshold_s=3600)["slower_than_cold_threshold"] == 0
    assert "unknown" in loadtest.report(loadtest.summarise(outcomes), None)


def test_wrong_credentials_are_errors_by_status(webui):
    summary = loadtest.summarise(loadtest.run(plan(webui.url, 4, 2, auth="sd:wrong")))
    assert summary["errors"] == {"HTTP 401": 4} and summary["succeeded"] == 0 and webui.txt2img_payloads == []


def test_a_model_that_never_loads_gives_server_errors():
    with FakeWebui(auth=AUTH, model_wait=0.01) as fake:
        summary = loadtest.summarise(loadtest.run(plan(fake.url, 2, 2)))
    assert summary["errors"] == {"HTTP 500": 2}


def test_nothing_listening_is_connection_refused():
    summary = loadtest.summarise(loadtest.run(plan("http://127.0.0.1:9", 3, 2)))
    assert summary["errors"] == {"connection refused": 3} and summary["sent"] == 3


def test_the_deadline_stops_sending_and_cuts_the_request_in_flight(interceptor):
    summary = loadtest.summarise(loadtest.run(plan(interceptor.url, 5, 1, deadline_s=0.5)))
    assert summary["errors"] == {"timeout": 1, loadtest.NOT_SENT: 4} and summary["sent"] == 1


def test_the_command_prints_the_report_reads_the_credentials_from_the_environment_and_never_prints_them(webui, tmp_path):
    out = tmp_path / "build" / "run.json"
    result = subprocess.run([sys.executable, "-m", "tools.loadtest", webui.url, "-n", "3", "-c", "2", "--json", str(out)],
                            cwd=ROOT, env={"SD_API_AUTH": AUTH, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "requests: 3  sent: 3  succeeded: 3" in result.stdout and "p99" in result.stdout
    assert "secret" not in result.stdout + result.stderr + out.read_text()
    assert [o["status"] for o in json.loads(out.read_text())["outcomes"]] == [200, 200, 200]


def test_the_command_exits_1_when_a_request_failed(webui, capsys):
    assert loadtest.main([webui.url, "-n", "2", "-c", "1", "--user", "sd:wrong"]) == 1
    assert "HTTP 401 x2" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["ftp://127.0.0.1/", "-n", "1", "-c", "1"], "url 'ftp://127.0.0.1/'"),
    (["http://127.0.0.1:9", "-n", "1", "-c", "1", "--user", "nocolon"], "--user: expected user:password"),
    (["http://127.0.0.1:9", "-n", "1", "-c", "1", "--payload", "[1]"], "--payload '[1]': expected a JSON object"),
])
def test_invalid_arguments_exit_2_naming_the_value(argv, message, capsys):
    assert loadtest.main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["-n", "-c"])
def test_request_and_concurrency_counts_must_be_positive(flag, capsys):
    argv = ["http://127.0.0.1:9", "-n", "1", "-c", "1"]
    argv[argv.index(flag) + 1] = "0"
    with pytest.raises(SystemExit) as exit_:
        loadtest.main(argv)
    assert exit_.value.code == 2 and "'0': expected a whole number >= 1" in capsys.readouterr().err
