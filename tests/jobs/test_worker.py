"""The worker beside a WebUI (`python -m queue_agent` with QUEUE_FRONT_URL), run as a real process against
the strict stand-in of the request queue's workers port (tests/fakes/workers_port.py), the stand-in WebUI
and, for batch work, the real Pub/Sub emulator (docs/request-queue.md, "The worker's loop")."""

from __future__ import annotations

import base64
import http.client
import json
import signal
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from queue_agent import alive, front, worker

from tests.fakes.workers_port import StrictWorkersPort
from tests.jobs import harness
from tests.jobs.harness import wait_until

AUTHORIZATION = {"Authorization": "Basic " + base64.b64encode(harness.AUTH.encode()).decode()}
PROMPT = {"prompt": "a lighthouse at dusk", "steps": 20}


@pytest.fixture
def port() -> Iterator[StrictWorkersPort]:
    with StrictWorkersPort() as stand_in:
        yield stand_in
        assert stand_in.problems == [], "requests the workers protocol does not allow"


@pytest.fixture
def heartbeat(tmp_path) -> str:
    return str(tmp_path / "heartbeat")


@pytest.fixture
def start(port, webui, heartbeat) -> Iterator:
    """Start the worker process (once per test); on exit it must have ended, or is killed."""
    started = []

    def run(**kwargs):
        process = harness.worker_process(port.url, webui.url, heartbeat, **kwargs)
        started.append(process)
        return process

    yield run
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def request(prompt: str, **fields) -> dict:
    return {"body": {**PROMPT, "prompt": prompt, **fields},
            "headers": {**AUTHORIZATION, "X-Loadtest-Request": prompt}}


def registered(port: StrictWorkersPort) -> bool:
    return any(event.startswith("next") for event in port.events())


def serving(port: StrictWorkersPort, process):
    """The worker process, once registered: its warm-up generation is over."""
    wait_until(lambda: registered(port), what="registration")
    return process


def stopped(process) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=60)


def test_the_worker_registers_only_after_its_webui_answers_a_warm_up_generation(port, webui, start):
    webui.model_loaded.clear()
    webui.model_wait = 0.05
    start()
    wait_until(lambda: len(webui.txt2img_payloads) >= 2, what="warm-up attempts")
    assert not registered(port)
    webui.model_loaded.set()
    wait_until(lambda: registered(port), what="the first next")
    assert port.urls == {"webui-0": f"http://127.0.0.1:{webui.port}"}


def test_a_job_reaches_the_webui_as_the_client_sent_it_and_its_answer_is_the_result(port, webui, start):
    job = port.submit(query="trace=1", **request("job one"))
    start()
    wait_until(lambda: job in port.results, what="the result")
    status, content_type, body = port.results[job]
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body)["images"] == [base64.b64encode(harness.PNG).decode()]
    assert webui.txt2img_payloads[-1] == {**PROMPT, "prompt": "job one"}
    assert webui.served[-1] == "job one" and webui.targets[-1] == "/sdapi/v1/txt2img?trace=1"


def test_a_refusal_from_the_webui_is_posted_with_its_status(port, webui, start):
    job = port.submit(method="GET", path="/sdapi/v1/no-such-route", headers=AUTHORIZATION)
    start()
    wait_until(lambda: job in port.results, what="the result")
    status, _, body = port.results[job]
    assert (status, body) == (404, b'{"detail":"Not Found"}')


def test_jobs_run_one_at_a_time_in_the_order_they_were_queued(port, webui, start):
    webui.generation_seconds = 0.05
    jobs = [port.submit(**request(f"job {i}")) for i in range(6)]
    start()
    wait_until(lambda: all(job in port.results for job in jobs), what="every result")
    assert webui.served[-6:] == [f"job {i}" for i in range(6)]
    assert webui.max_open_requests == 1
    steps = [e for e in port.events("webui-0") if not e.startswith(("next", "204"))]
    assert steps == [step for job in jobs for step in (f"job {job}", f"cancel {job}", f"result {job} 200")]


@pytest.mark.parametrize("reason", ["client gone", "expired"])
def test_a_cancel_interrupts_the_generation_and_its_outcome_is_posted(port, webui, start, reason):
    serving(port, start())
    webui.generation_seconds = 60
    job = port.submit(**request("abandoned"))
    port.gone.add(job)  # the request queue answers the result 410: nobody waits for it
    wait_until(lambda: f"cancel {job}" in port.events() and webui.open_requests == 1, what="the generation")
    port.cancel(job, reason)
    wait_until(lambda: job in port.results, what="the outcome")
    assert webui.interrupted == ["abandoned"] and webui.interrupts == 1
    assert port.results[job][0] == 200  # WebUI answers an interrupted generation with what it has


def test_the_worker_goes_on_after_the_result_is_answered_410(port, webui, start):
    serving(port, start())
    webui.generation_seconds = 60
    first = port.submit(**request("abandoned"))
    port.gone.add(first)
    wait_until(lambda: f"cancel {first}" in port.events() and webui.open_requests == 1, what="the generation")
    port.cancel(first, "client gone")
    webui.generation_seconds = 0
    second = port.submit(**request("next one"))
    wait_until(lambda: second in port.results, what="the next job's result")
    assert port.results[second][0] == 200 and webui.served[-1] == "next one"


def test_a_generation_past_its_timeout_is_interrupted_and_reported_as_a_504(port, webui, start):
    serving(port, start())
    webui.generation_seconds = 60
    job = port.submit(generation_timeout=0.5, **request("too long"))
    wait_until(lambda: job in port.results, what="the outcome")
    status, content_type, body = port.results[job]
    assert (status, content_type) == (504, "application/json")
    assert "did not finish within 0.5s" in json.loads(body)["detail"]
    assert webui.interrupted == ["too long"]


def test_a_generation_that_outlives_its_interrupt_keeps_the_worker_out_of_the_request_queue_until_it_ends(
        port, heartbeat):
    with harness.StubbornWebui("stuck", auth=harness.AUTH, model_loaded=True, image=harness.PNG) as webui:
        process = harness.worker_process(port.url, webui.url, heartbeat, JOBS_INTERRUPT_GRACE_SECONDS="0.1")
        try:
            serving(port, process)
            stuck = port.submit(**request("stuck"))
            wait_until(lambda: f"cancel {stuck}" in port.events() and webui.holding.is_set(), what="the generation")
            waiting = port.submit(**request("waiting"))
            port.cancel(stuck, "client gone")
            wait_until(lambda: "delete" in port.events(), what="the leave")
            assert port.waiting() == [waiting] and webui.interrupts == 1
            webui.release.set()
            wait_until(lambda: waiting in port.results, what="the next job's result, once the WebUI is free")
        finally:
            process.kill()
            process.wait()
    assert port.results[stuck][0] == 504
    assert "did not stop within the interrupt's grace" in json.loads(port.results[stuck][2])["detail"]
    events = port.events("webui-0")
    start = events.index(f"job {stuck}")
    assert events[start:start + 9] == [
        f"job {stuck}", f"cancel {stuck}", f"cancelled {stuck}: client gone", f"result {stuck} 504", "delete",
        "next 0", f"job {waiting}", f"cancel {waiting}", f"result {waiting} 200"]
    assert [p["prompt"] for p in webui.txt2img_payloads] == ["warm-up", "stuck", "warm-up", "waiting"]
    assert webui.max_open_requests == 1  # nothing waited inside the WebUI behind the stuck generation


def test_an_unreachable_request_queue_is_waited_out_and_the_worker_serves_when_it_is_back(
        port, webui, start, heartbeat):
    process = start()
    wait_until(lambda: registered(port), what="registration")
    port.stop()
    wait_until(lambda: alive.main(["--ready"], {"JOBS_HEARTBEAT": heartbeat, "SD_API_URL": webui.url,
                                                "SD_API_AUTH": harness.AUTH}) == 1, what="not ready")
    assert process.poll() is None
    assert alive.main([], {"JOBS_HEARTBEAT": heartbeat}) == 0  # still alive: no restart, no crash loop
    port.start()
    job = port.submit(**request("after the outage"))
    wait_until(lambda: job in port.results, timeout=30, what="the job after the outage")
    assert port.results[job][0] == 200


def test_sigterm_leaves_at_once_and_finishes_the_job_in_flight(port, webui, start):
    process = serving(port, start())
    webui.generation_seconds = 1.0
    job = port.submit(**request("in flight"))
    wait_until(lambda: f"cancel {job}" in port.events() and webui.open_requests == 1, what="the generation")
    assert stopped(process) == 0
    events = port.events("webui-0")
    assert events.index("delete") < events.index(f"result {job} 200")
    assert events[-1] in ("delete", f"result {job} 200") and port.waiting() == []


def test_sigterm_hands_back_a_job_it_cannot_finish_within_the_drain(port, webui, start):
    process = serving(port, start(JOBS_DRAIN_SECONDS="0.2"))
    webui.generation_seconds = 60
    job = port.submit(**request("handed back"))
    wait_until(lambda: f"cancel {job}" in port.events() and webui.open_requests == 1, what="the generation")
    assert stopped(process) == 0
    assert f"handed back {job}" in port.events() and job not in port.results
    assert port.waiting() == [job]  # back at the head of the buffer, for another pod
    assert webui.interrupted == ["handed back"]


def test_readiness_needs_registration_and_a_webui_that_answers(port, webui, start, heartbeat):
    env = {"JOBS_HEARTBEAT": heartbeat, "SD_API_URL": webui.url, "SD_API_AUTH": harness.AUTH}
    webui.model_loaded.clear()
    webui.model_wait = 0.05
    start()
    wait_until(lambda: alive.main([], env) == 0, what="the first heartbeat")
    assert alive.main(["--ready"], env) == 1
    webui.model_loaded.set()
    wait_until(lambda: alive.main(["--ready"], env) == 0, what="ready")
    webui.stop()
    assert alive.main(["--ready"], env) == 1


# --- batch between interactive jobs (the real Pub/Sub emulator) ----------------------------------

def prompts(webui) -> list[str]:
    """What the WebUI generated, warm-ups left out."""
    return [p["prompt"] for p in webui.txt2img_payloads if p["prompt"] != "warm-up"]


def test_batch_jobs_run_while_no_interactive_request_waits(port, webui, bucket, queue, settings, start):
    for i in range(2):
        queue.publish(f"batch-{i}", {"prompt": f"batch {i}"})
    start(batch=settings, storage_host=bucket.url)
    wait_until(lambda: all(bucket.creates[("results", f"batch-{i}/result.json")] for i in range(2)),
               what="the batch results")
    assert port.events("webui-0").count("batch") == 2
    assert queue.backlog() == 0


def test_after_batch_every_interactive_jobs_in_a_row_with_none_idle_between_one_batch_job_goes_first(
        port, webui, bucket, queue, settings, start):
    webui.model_loaded.clear()
    webui.model_wait = 0.05
    for i in range(2):
        queue.publish(f"batch-{i}", {"prompt": f"batch {i}"})
    jobs = [port.submit(**request(f"api {i}")) for i in range(2 * worker.BATCH_EVERY + 1)]
    start(batch=settings, storage_host=bucket.url)
    wait_until(lambda: len(webui.txt2img_payloads) >= 1, what="the warm-up")
    webui.model_loaded.set()
    wait_until(lambda: all(job in port.results for job in jobs), what="every interactive result")
    wait_until(lambda: all(bucket.creates[("results", f"batch-{i}/result.json")] for i in range(2)),
               what="the batch results")
    api = [f"api {i}" for i in range(len(jobs))]
    every = worker.BATCH_EVERY
    assert prompts(webui) == [*api[:every], "batch 0", *api[every:2 * every], "batch 1", *api[2 * every:]]


def test_a_moment_with_no_interactive_request_waiting_starts_the_count_of_jobs_in_a_row_again(
        port, bucket, queue, settings, heartbeat):
    every = worker.BATCH_EVERY
    api = [f"api {i}" for i in range(every + 1)]
    for i in range(2):
        queue.publish(f"batch-{i}", {"prompt": f"batch {i}"})
    jobs = [port.submit(**request(prompt)) for prompt in api[:every - 1]]
    with harness.HoldingWebui("batch 0", auth=harness.AUTH, model_loaded=True, image=harness.PNG) as webui:
        process = harness.worker_process(port.url, webui.url, heartbeat, batch=settings, storage_host=bucket.url)
        try:
            wait_until(webui.holding.is_set, what="batch 0, taken when nothing waited")
            jobs += [port.submit(**request(prompt)) for prompt in api[every - 1:]]  # arrive during batch 0
            webui.release.set()
            wait_until(lambda: all(job in port.results for job in jobs), what="every interactive result")
            wait_until(lambda: bucket.creates[("results", "batch-1/result.json")], what="the second batch result")
        finally:
            process.kill()
            process.wait()
    assert prompts(webui) == [*api[:every - 1], "batch 0", *api[every - 1:], "batch 1"]


def test_no_batch_job_is_pulled_while_the_request_queue_says_the_webui_runs_a_browsers_generation(
        port, webui, bucket, queue, settings, start):
    port.webui_busy = True
    queue.publish("batch-0", {"prompt": "batch 0"})
    start(batch=settings, storage_host=bucket.url)
    wait_until(lambda: port.events("webui-0").count("204") >= 3, what="three empty polls")
    while_busy = port.events("webui-0")
    port.webui_busy = False
    wait_until(lambda: bucket.creates[("results", "batch-0/result.json")], what="the batch result")
    assert "batch" not in while_busy
    assert prompts(webui) == ["batch 0"]


def test_a_batch_job_is_announced_to_the_request_queue_before_it_runs(port, webui, bucket, queue, settings, start):
    queue.publish("batch-0", {"prompt": "batch 0"})
    start(batch=settings, storage_host=bucket.url)
    wait_until(lambda: bucket.creates[("results", "batch-0/result.json")], what="the batch result")
    events = port.events("webui-0")
    assert events[events.index("batch") - 1] == "204"  # only when the request queue had nothing


def test_sigterm_during_a_batch_job_leaves_at_once_and_releases_the_job_it_cannot_finish(
        port, webui, bucket, queue, settings, start):
    process = serving(port, start(batch=settings, storage_host=bucket.url, JOBS_DRAIN_SECONDS="0.2"))
    webui.generation_seconds = 60
    queue.publish("batch-0", {"prompt": "batch 0"})
    wait_until(lambda: "batch" in port.events() and webui.open_requests == 1, what="the batch generation")
    assert stopped(process) == 0
    assert port.events("webui-0")[-1] == "delete"
    assert queue.backlog() == 1  # released to another pod, not left to its lease


# --- configuration ------------------------------------------------------------------------------

def test_missing_settings_are_named():
    with pytest.raises(SystemExit, match="missing environment POD_NAME, POD_IP"):
        worker.settings_from({"QUEUE_FRONT_URL": "http://front:8081"})


def test_a_job_the_protocol_does_not_allow_is_refused_with_what_is_wrong():
    with pytest.raises(front.Unavailable, match="KeyError: 'generation_timeout'"):
        front.Job.parse(json.dumps({"id": "j", "method": "POST", "path": "/x", "headers": {}, "body": ""}).encode())


def test_a_webui_that_does_not_answer_gets_a_502_and_the_worker_leaves_the_request_queue(port, webui, start):
    serving(port, start())
    webui.stop()
    job = port.submit(**request("nobody home"))
    wait_until(lambda: job in port.results and "delete" in port.events(), what="the 502 and the leave")
    status, _, body = port.results[job]
    assert status == 502 and "the WebUI did not answer" in json.loads(body)["detail"]
    events = port.events("webui-0")
    assert events.index(f"result {job} 502") < events.index("delete")


# --- the stand-in itself: it refuses what the protocol does not allow ---------------------------

def call(stand_in: StrictWorkersPort, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", stand_in.port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        return connection.getresponse().status
    finally:
        connection.close()


def poll(stand_in: StrictWorkersPort, body: dict | bytes) -> int:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return call(stand_in, "POST", "/v1/workers/w/next", data, {"Content-Type": "application/json"})


@pytest.mark.parametrize(("body", "problem"), [
    ({"url": "http://127.0.0.1:7860"}, "is not"),
    ({"url": "http://127.0.0.1:7860", "wait": 60}, "is not"),
    ({"url": "127.0.0.1:7860", "wait": 0}, "is not"),
    ({"url": "http://127.0.0.1:7860", "wait": 0, "extra": 1}, "is not"),
    (b"not json", "is not"),
])
def test_the_stand_in_refuses_a_next_the_protocol_does_not_allow(body, problem):
    with StrictWorkersPort() as stand_in:
        assert poll(stand_in, body) == 400
        assert len(stand_in.problems) == 1 and problem in stand_in.problems[0]


def test_the_stand_in_refuses_next_batch_and_a_bare_result_while_a_job_is_held():
    with StrictWorkersPort() as stand_in:
        job = stand_in.submit(**request("held"))
        assert poll(stand_in, {"url": "http://127.0.0.1:7860", "wait": 0}) == 200
        assert poll(stand_in, {"url": "http://127.0.0.1:7860", "wait": 0}) == 409
        assert call(stand_in, "PUT", "/v1/workers/w/batch") == 409
        assert call(stand_in, "POST", f"/v1/workers/w/jobs/{job}/result", b"{}",
                    {"X-Upstream-Status": "200", "Content-Type": "application/json"}) == 400  # no cancel held
        assert call(stand_in, "GET", f"/v1/workers/other/jobs/{job}/cancel") == 410
        assert call(stand_in, "GET", "/v1/demand") == 404
        assert [p.split(": ", 1)[1] for p in stand_in.problems] == [
            f"next while holding {job}", f"a batch job while holding {job}",
            f"result of {job} without its cancel held open",
            f"cancel of {job}, which other does not hold (or holds open already)", "not a route of the workers port"]


def test_a_job_handed_over_while_the_webui_runs_a_browsers_generation_is_released_and_run_once_it_ends(
        port, webui, start):
    serving(port, start())
    with webui.browser_generation():
        job = port.submit(**request("behind a browser"))
        wait_until(lambda: f"released {job}" in port.events(), what="the release")
        seen = webui.progress_calls
        wait_until(lambda: webui.progress_calls >= seen + 2, what="the worker asking whether the WebUI is idle")
        after_release = port.events("webui-0")[port.events("webui-0").index(f"released {job}") + 1:]
        assert after_release == [] and job not in port.results
    wait_until(lambda: job in port.results, what="the result")
    assert port.results[job][0] == 200
    assert webui.served.count("behind a browser") == 1
    steps = [e for e in port.events("webui-0") if not e.startswith(("next", "204"))]
    assert steps == [f"job {job}", f"released {job}", f"job {job}", f"cancel {job}", f"result {job} 200"]


def test_a_job_handed_over_while_the_webui_is_idle_asks_its_progress_once_and_runs(port, webui, start):
    serving(port, start())
    seen = webui.progress_calls
    job = port.submit(**request("straight through"))
    wait_until(lambda: job in port.results, what="the result")
    assert webui.progress_calls == seen + 1
    assert not any(event.startswith("released") for event in port.events())


def test_no_batch_job_is_pulled_while_the_webui_runs_a_browsers_generation_no_front_counted(
        port, webui, bucket, queue, settings, start):
    start(batch=settings, storage_host=bucket.url)
    wait_until(lambda: port.events("webui-0").count("204") >= 1, what="the first empty poll")
    with webui.browser_generation():
        wait_until(lambda: webui.progress_calls >= 2, what="the worker asking whether the WebUI is idle")
        queue.publish("batch-0", {"prompt": "batch 0"})
        seen = webui.progress_calls
        wait_until(lambda: webui.progress_calls >= seen + 2, what="the worker asking again")
        while_busy = port.events("webui-0")
    wait_until(lambda: bucket.creates[("results", "batch-0/result.json")], what="the batch result")
    assert "batch" not in while_busy
    assert prompts(webui) == ["batch 0"]


def test_a_worker_waiting_for_a_long_browsers_generation_polls_again_within_the_ttl_and_releases_again(
        port, webui, monkeypatch):
    monkeypatch.setattr(worker, "BUSY_WAIT_SECONDS", 0.2)  # stands for LONG_POLL_SECONDS, below the front's TTL
    settings = worker.Settings(front_url=port.url, name="webui-0", own_url=webui.url, webui_url=webui.url,
                               webui_auth=harness.AUTH, ready_poll_seconds=0.05)
    stop = threading.Event()
    loop = threading.Thread(target=worker.Worker(settings, resolve=lambda: [("127.0.0.1", urlsplit(port.url).port)]
                                                 ).run, args=(stop,), daemon=True)
    loop.start()
    try:
        wait_until(lambda: registered(port), what="registration")
        with webui.browser_generation():
            job = port.submit(**request("behind a long browser generation"))
            wait_until(lambda: port.events("webui-0").count(f"released {job}") >= 2, what="a second release")
        wait_until(lambda: job in port.results, what="the result")
        assert port.results[job][0] == 200
        assert webui.served.count("behind a long browser generation") == 1
    finally:
        stop.set()
        loop.join(timeout=60)
