"""The load test against local servers: a stand-in WebUI (one generation at a time), a stand-in request
queue in front of it, and two small servers of known timing (one that trickles its answer, one that
answers the first requests and holds the rest).

Counts and ordering only: nothing here asserts how fast anything ran.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest

from tests.conftest import ROOT
from tests.fakes.queue_front import FakeQueueFront
from tests.fakes.server import LocalServer
from tests.fakes.webui import FakeWebui
from tools import loadtest

AUTH = "sd:secret"
SCRIPT = ROOT / "tools" / "loadtest.py"
BACKEND_POLICY = "kubernetes:networking.gke.io/v1:GCPBackendPolicy"


@pytest.fixture
def webui():
    with FakeWebui(auth=AUTH, generation_seconds=0.05, model_loaded=True) as fake:
        yield fake


@pytest.fixture
def queue_front(webui):
    with FakeQueueFront(webui.url) as fake:
        yield fake


class TricklingServer(LocalServer):
    """Answers 200 at once, then its body in `chunks` pieces `gap_s` apart: every read is quick, the whole is not."""

    METHODS = ("POST",)

    def __init__(self, chunks: int, gap_s: float):
        super().__init__()
        self.chunks, self.gap_s = chunks, gap_s
        self.sent_all = threading.Event()

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        request.rfile.read(int(request.headers["Content-Length"]))
        request.send_response(200)
        request.send_header("Content-Length", str(self.chunks))
        request.end_headers()
        try:
            for _ in range(self.chunks):
                time.sleep(self.gap_s)
                request.wfile.write(b" ")
                request.wfile.flush()
        except OSError:  # the client hung up
            return
        self.sent_all.set()


class HoldingServer(LocalServer):
    """Answers the first `answered` requests at once and holds every later one until it stops."""

    METHODS = ("POST",)

    def __init__(self, answered: int):
        super().__init__()
        self.answered = answered
        self.arrived = 0
        self.held = 0
        self._counts = threading.Lock()
        self._closing = threading.Event()

    def stop(self) -> None:
        self._closing.set()
        super().stop()

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        request.rfile.read(int(request.headers["Content-Length"]))
        with self._counts:
            self.arrived += 1
            hold = self.arrived > self.answered
            self.held += hold
        if hold:
            self._closing.wait(timeout=60)
            return
        request.send_response(200)
        request.send_header("Content-Length", "2")
        request.end_headers()
        request.wfile.write(b"{}")


def url_of(server: LocalServer) -> str:
    return f"http://127.0.0.1:{server.port}"


def plan(url: str, requests: int, concurrency: int, auth: str | None = AUTH, **overrides) -> loadtest.Plan:
    settings = {"timeout_s": 30.0, "deadline_s": 60.0, "payload": dict(loadtest.DEFAULT_PAYLOAD), **overrides}
    return loadtest.Plan(loadtest.endpoint(url), requests, concurrency, auth, **settings)


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


def outcomes_with(**fields_by_index) -> list[loadtest.Outcome]:
    return [loadtest.Outcome(i, status=200, **{k: v[i] for k, v in fields_by_index.items()})
            for i in range(len(next(iter(fields_by_index.values()))))]


# --- what is sent ------------------------------------------------------------------------------

def test_every_request_is_sent_once_with_the_credentials_and_the_payload(webui):
    summary = loadtest.summarise(loadtest.run(plan(webui.url, 6, 3)))
    assert summary["requests"] == summary["sent"] == summary["succeeded"] == 6 and summary["errors"] == {}
    assert len(webui.txt2img_payloads) == 6 and all(p == loadtest.DEFAULT_PAYLOAD for p in webui.txt2img_payloads)
    assert sorted(webui.served, key=int) == [str(i) for i in range(6)]


def test_with_arrival_times_no_request_is_sent_before_its_time(webui):
    arrivals = (0.0, 0.3, 0.3, 0.6)
    outcomes = loadtest.run(plan(webui.url, 4, 4, arrivals_s=arrivals))
    assert all(o.error is None for o in outcomes)
    assert all(o.started_s >= due for o, due in zip(outcomes, arrivals, strict=True))


def test_a_request_due_after_the_deadline_is_not_sent(webui):
    outcomes = loadtest.run(plan(webui.url, 2, 2, deadline_s=1.0, arrivals_s=(0.0, 5.0)))
    assert [o.error for o in outcomes] == [None, loadtest.NOT_SENT] and len(webui.served) == 1


def test_poisson_arrivals_start_at_zero_rise_and_repeat_with_the_seed():
    times = loadtest.poisson_arrivals(50, rate=4.0, seed=7)
    assert len(times) == 50 and times[0] == 0.0 and list(times) == sorted(times)
    assert times == loadtest.poisson_arrivals(50, rate=4.0, seed=7) != loadtest.poisson_arrivals(50, rate=4.0, seed=8)


def test_the_rate_flag_gives_the_plan_seeded_poisson_arrivals():
    args = loadtest.parser().parse_args(["http://127.0.0.1:9", "-n", "5", "-c", "5", "--rate", "2", "--seed", "3",
                                         "--timeout", "10"])
    built, problems = loadtest.plan_from(args)
    assert problems == [] and built.arrivals_s == loadtest.poisson_arrivals(5, 2.0, 3)


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


class AnswerWatchingWebui(FakeWebui):
    """Records how many requests the stand-in counts as open at the moment it writes each answer."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.open_while_answering: list[int] = []

    def _json(self, request, body):
        self.open_while_answering.append(self.open_requests)
        super()._json(request, body)


def test_the_stand_in_stops_counting_a_request_as_open_before_it_answers():
    """A client that has its answer may send its next request at once: the count must not race it."""
    with AnswerWatchingWebui(auth=AUTH, model_loaded=True) as webui:
        loadtest.run(plan(webui.url, 3, 1))
    assert webui.open_while_answering == [0, 0, 0]


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


# --- the URL -----------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["", "/", "/sdapi/v1/txt2img", "/sdapi/v1/txt2img/"])
def test_a_base_url_and_the_full_endpoint_url_both_reach_txt2img(webui, suffix):
    summary = loadtest.summarise(loadtest.run(plan(webui.url + suffix, 2, 1)))
    assert summary["succeeded"] == 2 and len(webui.served) == 2


@pytest.mark.parametrize("url, endpoint", [
    ("https://sd.example.com/prefix", "https://sd.example.com/prefix/sdapi/v1/txt2img"),
    ("https://sd.example.com/prefix/sdapi/v1/txt2img", "https://sd.example.com/prefix/sdapi/v1/txt2img"),
    ("http://127.0.0.1:7860/sdapi/v1/img2img", None),
    ("http://127.0.0.1:7860/sdapi", None),
])
def test_the_endpoint_is_appended_once_and_never_to_another_api_path(url, endpoint):
    assert loadtest.endpoint(url) == endpoint


def test_another_api_path_is_refused_naming_the_url(capsys):
    assert loadtest.main(["http://127.0.0.1:9/sdapi/v1/img2img", "-n", "1", "-c", "1", "--timeout", "1"]) == 2
    assert "url 'http://127.0.0.1:9/sdapi/v1/img2img': expected the WebUI's base URL or its txt2img endpoint" \
        in capsys.readouterr().err


def test_a_404_says_which_url_was_posted_to_and_which_urls_work(webui, capsys):
    assert loadtest.main([webui.url + "/wrong", "-n", "1", "-c", "1", "--user", AUTH, "--timeout", "30"]) == 1
    out = capsys.readouterr().out
    assert f"HTTP 404: nothing answers POST {webui.url}/wrong/sdapi/v1/txt2img" in out and "full txt2img URL" in out


# --- latency and percentiles -------------------------------------------------------------------

def test_percentiles_are_taken_over_the_successful_requests():
    outcomes = outcomes_with(latency_s=[float(i + 1) for i in range(10)])
    outcomes.append(loadtest.Outcome(10, latency_s=99.0, status=500, error="HTTP 500"))
    summary = loadtest.summarise(outcomes)
    assert summary["latency_s"] == {"n": 10, "p50": 5.0, "p95": 10.0, "p99": 10.0, "max": 10.0}
    assert summary["errors"] == {"HTTP 500": 1}


def test_below_100_results_the_report_gives_n_and_says_p99_is_the_maximum():
    text = loadtest.report(loadtest.summarise(outcomes_with(latency_s=[1.0] * 99)), None)
    assert "(s, n=99)" in text and "n < 100: p99 is the maximum" in text


def test_from_100_results_p99_is_not_called_the_maximum():
    text = loadtest.report(loadtest.summarise(outcomes_with(latency_s=[1.0] * 100)), None)
    assert "(s, n=100)" in text and "p99 is the maximum" not in text


# --- the request queue's marks -----------------------------------------------------------------

def test_requests_that_waited_for_a_worker_count_as_cold_starts(queue_front):
    thread, outcomes = in_background(plan(queue_front.url, 4, 4))
    wait_until(lambda: queue_front.waiting == 4, "four waiting requests")
    queue_front.workers_ready.set()
    thread.join(timeout=30)
    summary = loadtest.summarise(outcomes)
    assert summary["succeeded"] == 4 and summary["cold_starts"] == 4


def test_requests_to_a_queue_with_a_worker_are_warm(queue_front):
    queue_front.workers_ready.set()
    summary = loadtest.summarise(loadtest.run(plan(queue_front.url, 3, 3)))
    assert summary["cold_starts"] == 0 and summary["responses_with_cold_start_header"] == 3


def test_the_queue_wait_is_read_from_every_queued_response(queue_front):
    thread, outcomes = in_background(plan(queue_front.url, 3, 3))
    wait_until(lambda: queue_front.waiting == 3, "three waiting requests")
    queue_front.workers_ready.set()
    thread.join(timeout=30)
    assert sorted(o.queue_wait_s for o in outcomes) == sorted(queue_front.sent_waits)
    assert loadtest.summarise(outcomes)["queue_wait_s"]["n"] == 3


def test_queue_wait_percentiles_are_nearest_rank():
    summary = loadtest.summarise(outcomes_with(latency_s=[1.0] * 10, queue_wait_s=[float(i) for i in range(10)]))
    assert summary["queue_wait_s"] == {"n": 10, "p50": 4.0, "p95": 9.0, "p99": 9.0, "max": 9.0}
    assert "wait in the request queue (X-Queue-Wait) (s, n=10): p50 4.00" in loadtest.report(summary, None)


def test_without_the_queue_cold_starts_are_unknown_and_the_threshold_is_a_separate_count(webui):
    outcomes = loadtest.run(plan(webui.url, 3, 1))
    assert loadtest.summarise(outcomes)["cold_starts"] is None
    assert loadtest.summarise(outcomes, cold_threshold_s=0)["slower_than_cold_threshold"] == 3
    assert loadtest.summarise(outcomes, cold_threshold_s=3600)["slower_than_cold_threshold"] == 0
    assert "unknown" in loadtest.report(loadtest.summarise(outcomes), None)


def test_a_full_queue_is_reported_as_its_own_kind_with_its_retry_after(webui):
    with FakeQueueFront(webui.url, max_depth=1, retry_after_seconds=7) as front:
        thread, outcomes = in_background(plan(front.url, 3, 3))
        wait_until(lambda: front.refused == 2, "two refusals")
        front.workers_ready.set()
        thread.join(timeout=30)
    summary = loadtest.summarise(outcomes)
    assert summary["errors"] == {loadtest.QUEUE_FULL: 2} and summary["succeeded"] == 1
    assert summary["retry_after_s"] == {loadtest.QUEUE_FULL: {"min": 7.0, "max": 7.0}}
    assert f"{loadtest.QUEUE_FULL}: Retry-After 7-7 s" in loadtest.report(summary, None)


def test_a_request_not_dispatched_in_time_is_reported_as_its_own_kind_with_its_retry_after(webui):
    with FakeQueueFront(webui.url, retry_after_seconds=3) as front:
        thread, outcomes = in_background(plan(front.url, 2, 2))
        wait_until(lambda: front.waiting == 2, "two waiting requests")
        front.expire.set()
        thread.join(timeout=30)
    summary = loadtest.summarise(outcomes)
    assert summary["errors"] == {loadtest.QUEUE_WAIT_LIMIT: 2}
    assert summary["retry_after_s"] == {loadtest.QUEUE_WAIT_LIMIT: {"min": 3.0, "max": 3.0}}


# --- errors, limits and Ctrl-C -----------------------------------------------------------------

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


def test_the_timeout_limits_the_whole_request_not_each_read():
    """2.8 s of answer, no read slower than 0.4 s: `--timeout 1` must still cut it."""
    with TricklingServer(chunks=7, gap_s=0.4) as slow:
        summary = loadtest.summarise(loadtest.run(plan(url_of(slow), 1, 1, timeout_s=1.0)))
        assert not slow.sent_all.is_set(), "the request ran until the answer was complete"
    assert summary["errors"] == {loadtest.TIMEOUT: 1} and summary["succeeded"] == 0


def test_a_timeout_within_the_deadline_is_a_timeout(queue_front):
    summary = loadtest.summarise(loadtest.run(plan(queue_front.url, 2, 2, timeout_s=0.2, deadline_s=60.0)))
    assert summary["errors"] == {loadtest.TIMEOUT: 2}


def test_the_deadline_stops_sending_and_counts_the_request_it_cut_apart_from_timeouts(queue_front):
    summary = loadtest.summarise(loadtest.run(plan(queue_front.url, 5, 1, timeout_s=30.0, deadline_s=0.5)))
    assert summary["errors"] == {loadtest.CUT_BY_DEADLINE: 1, loadtest.NOT_SENT: 4} and summary["sent"] == 1


def _sees_ctrl_c() -> None:
    """In the child: SIGINT at its default, as a terminal's foreground command has it. A runner started in the
    background (`cmd &` in a script) ignores SIGINT, a child inherits that and Python keeps it ignored
    (https://docs.python.org/3/library/signal.html#signal.SIG_IGN), so the Ctrl-C below would never arrive."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_prints_and_writes_what_was_measured_and_exits_130(tmp_path):
    out = tmp_path / "run.json"
    with HoldingServer(answered=2) as server:
        process = subprocess.Popen([sys.executable, str(SCRIPT), url_of(server), "-n", "5", "-c", "2", "--timeout", "30",
                                    "--json", str(out)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, env={"PATH": "/usr/bin:/bin"}, preexec_fn=_sees_ctrl_c)
        try:
            wait_until(lambda: server.held == 2, "two held requests")
            process.send_signal(signal.SIGINT)
            stdout, stderr = process.communicate(timeout=30)
        finally:
            process.kill()
    assert process.returncode == loadtest.EXIT_INTERRUPTED and "Traceback" not in stderr, stderr
    assert "interrupted (Ctrl-C)" in stdout and "requests: 5  sent: 4  succeeded: 2" in stdout
    summary = json.loads(out.read_text())["summary"]
    assert summary["errors"] == {loadtest.INTERRUPTED: 2, loadtest.NOT_SENT_INTERRUPTED: 1} and summary["interrupted"]


# --- the command -------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [[str(SCRIPT)], ["-m", "tools.loadtest"]], ids=["script", "module"])
def test_the_command_prints_the_report_reads_the_credentials_from_the_environment_and_never_prints_them(
        webui, tmp_path, command):
    out = tmp_path / "build" / "run.json"
    result = subprocess.run([sys.executable, *command, webui.url, "-n", "3", "-c", "2", "--json", str(out)],
                            cwd=ROOT if "-m" in command else tmp_path, env={"SD_API_AUTH": AUTH, "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "requests: 3  sent: 3  succeeded: 3" in result.stdout and "p99" in result.stdout
    assert "secret" not in result.stdout + result.stderr + out.read_text()
    assert [o["status"] for o in json.loads(out.read_text())["outcomes"]] == [200, 200, 200]


def test_the_default_timeout_is_the_load_balancers_timeout_of_the_stack(runs):
    policies = [r.inputs for r in runs["dev"].resources if r.type == BACKEND_POLICY]
    assert len(policies) == 1
    test_plan, problems = loadtest.plan_from(loadtest.parser().parse_args(["http://127.0.0.1:9", "-n", "1", "-c", "1"]))
    assert problems == [] and test_plan.timeout_s == policies[0]["spec"]["default"]["timeoutSec"]


def test_an_unknown_stack_is_refused_naming_the_stacks_there(capsys):
    assert loadtest.main(["http://127.0.0.1:9", "-n", "1", "-c", "1", "--stack", "nope"]) == 2
    assert "--stack 'nope': no stack file Pulumi.nope.yaml; stacks here: dev, prod" in capsys.readouterr().err


def test_the_command_exits_1_when_a_request_failed(webui, capsys):
    assert loadtest.main([webui.url, "-n", "2", "-c", "1", "--user", "sd:wrong", "--timeout", "30"]) == 1
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
