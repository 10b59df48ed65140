"""The queue agent against the real Pub/Sub emulator, the storage fake and the stand-in WebUI."""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time

import pytest
from google.api_core import exceptions

from tests.jobs import harness
from tests.jobs.harness import AgentThread, agent, wait_until

JOB = {"prompt": "a lighthouse at dusk", "steps": 20, "batch_size": 2}


class FailingCalls:
    """A real Pub/Sub client whose `method` raises `error` (ServiceUnavailable unless given) on its first `count`
    calls that match `when` (an error injected where the emulator cannot fail on cue), and records every call."""

    def __init__(self, client, method: str, count: int, when=lambda *args, **kwargs: True, error=None):
        self.client, self.method, self.left, self.when = client, method, count, when
        self.error = error or exceptions.ServiceUnavailable(f"injected: {method} failed")
        self.calls: list[tuple[str, tuple, dict]] = []

    def __getattr__(self, name: str):
        real = getattr(self.client, name)

        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            if name == self.method and self.left and self.when(*args, **kwargs):
                self.left -= 1
                raise self.error
            return real(*args, **kwargs)
        return call


def result(bucket: harness.FakeStorage, job_id: str) -> dict:
    return json.loads(bucket.read("results", f"{job_id}/result.json"))


def result_commits(bucket: harness.FakeStorage, job_id: str) -> int:
    return bucket.creates[("results", f"{job_id}/result.json")]


def test_a_job_becomes_its_images_a_metadata_document_and_a_completion(queue, webui, bucket, settings):
    queue.publish("job-1", JOB, batch_id="b")
    with AgentThread(settings):
        wait_until(lambda: result_commits(bucket, "job-1"), what="the result")
        completions = []
        wait_until(lambda: completions.extend(queue.drain(queue.completions)) or completions, what="the completion")
    document = result(bucket, "job-1")
    assert document["payload"] == JOB and document["batch_id"] == "b" and document["delivery_attempt"] == 1
    assert [bucket.read("results", name) for name in document["images"]] == [harness.PNG, harness.PNG]
    assert [json.loads(m.data) for m in completions] == [
        {"job_id": "job-1", "status": "succeeded", "result": "gs://results/job-1/result.json"}]
    assert queue.backlog() == 0


def test_the_agent_pulls_nothing_until_the_model_has_loaded(queue, webui, bucket, settings):
    webui.model_loaded.clear()
    webui.model_wait = 0.05
    queue.publish("job-1", JOB)
    with AgentThread(settings) as running:
        wait_until(lambda: len(webui.txt2img_payloads) >= 3, what="readiness checks")
        assert queue.backlog() == 1 and running.agent.outcomes["completed"] == 0
        webui.model_loaded.set()
        wait_until(lambda: result_commits(bucket, "job-1"), what="the result")
    assert [p["prompt"] for p in webui.txt2img_payloads].count(JOB["prompt"]) == 1


def test_a_redelivered_job_whose_result_exists_is_acked_without_generating(queue, webui, bucket, settings):
    queue.publish("job-1", JOB)
    with AgentThread(settings) as running:
        wait_until(lambda: running.agent.outcomes["completed"] == 1, what="the first delivery")
        queue.publish("job-1", JOB)  # the same job again: a redelivery after a lost ack looks just like this
        wait_until(lambda: running.agent.outcomes["already_done"] == 1, what="the redelivery")
    assert [p["prompt"] for p in webui.txt2img_payloads].count(JOB["prompt"]) == 1
    assert result_commits(bucket, "job-1") == 1 and queue.backlog() == 0


def test_duplicate_deliveries_to_two_agents_commit_one_result(queue, webui, bucket, settings):
    webui.generation_seconds = 0.3
    for _ in range(2):
        queue.publish("job-1", JOB)
    with AgentThread(settings) as first, AgentThread(settings) as second:
        wait_until(lambda: sum(a.agent.outcomes["completed"] + a.agent.outcomes["already_done"]
                               for a in (first, second)) == 2, what="both deliveries")
    assert result_commits(bucket, "job-1") == 1 and queue.backlog() == 0


def test_a_webui_failure_is_retried_on_the_next_delivery(queue, webui, bucket, settings):
    with AgentThread(settings) as running:
        running.agent.ready.wait(10)  # its readiness check generates too
        webui.failures = 2
        queue.publish("job-1", JOB)
        wait_until(lambda: result_commits(bucket, "job-1"), what="the result")
    assert result(bucket, "job-1")["delivery_attempt"] == 3


def test_a_job_that_fails_every_attempt_is_dead_lettered_with_its_reason(queue, webui, bucket, settings):
    with AgentThread(settings) as running:
        running.agent.ready.wait(10)
        webui.failures = 100
        queue.publish("job-1", JOB)
        wait_until(lambda: running.agent.outcomes["dead_lettered"] == 1, what="the dead letter")
    [dead] = queue.drain(queue.dead_letters)
    assert dead.attributes["job_id"] == "job-1" and dead.attributes["delivery_attempt"] == "5"
    assert "failed 5 attempts" in dead.attributes["reason"] and "HTTP 500" in dead.attributes["reason"]
    assert json.loads(dead.data) == JOB
    statuses = [json.loads(m.data)["status"] for m in queue.drain(queue.completions)]
    assert statuses == ["dead_lettered"] and queue.backlog() == 0


def test_a_job_no_attempt_can_run_is_dead_lettered_at_once(queue, webui, bucket, settings):
    queue.publish("job-1", {"prompt": "x", "stepz": 20})
    queue.publish("job-2", b"not json")
    queue.publish("bad id!", JOB)
    with AgentThread(settings) as running:
        wait_until(lambda: running.agent.outcomes["dead_lettered"] == 3, what="three dead letters")
    reasons = {m.attributes["job_id"]: m.attributes for m in queue.drain(queue.dead_letters)}
    assert "stepz: unknown field" in reasons["job-1"]["reason"]
    assert "not JSON" in reasons["job-2"]["reason"]
    assert "job_id: \"bad id!\" is not allowed" in reasons["bad id!"]["reason"]
    assert {r["delivery_attempt"] for r in reasons.values()} == {"1"}
    assert [p["prompt"] for p in webui.txt2img_payloads].count("x") == 0


def test_a_failing_bucket_hands_the_job_back_and_a_later_attempt_commits(queue, webui, bucket, settings):
    bucket.fail(10_000)
    queue.publish("job-1", JOB)
    with AgentThread(settings) as running:
        wait_until(lambda: running.agent.outcomes["retried"] >= 1, what="a failed attempt")
        bucket.fail(0)
        wait_until(lambda: result_commits(bucket, "job-1"), what="the result")
    assert result(bucket, "job-1")["delivery_attempt"] >= 2


def test_an_image_write_applied_whose_reply_was_lost_still_commits_the_result(queue, webui, bucket, settings):
    bucket.lose_replies(1, ".png")
    queue.publish("job-1", JOB)
    with AgentThread(settings) as running:
        wait_until(lambda: running.agent.outcomes["completed"] + running.agent.outcomes["retried"], what="an attempt")
    assert bucket.replies_lost == 1
    assert result_commits(bucket, "job-1") == 1 and len(result(bucket, "job-1")["images"]) == 2


def test_a_result_write_applied_whose_reply_was_lost_counts_as_this_attempts_commit(queue, webui, bucket, settings):
    """The client's retry must fit in the attempt's storage budget: its first wait is drawn from 0 to 1 s and a retry
    whose next wait would pass the budget gives up (google-api-core 2.x retry/retry_base.py
    `exponential_sleep_generator`, `_retry_error_helper`), so the harness's 1 s budget made the retry a coin toss."""
    bucket.lose_replies(1, "/result.json")
    queue.publish("job-1", JOB)
    with AgentThread(dataclasses.replace(settings, storage_retry_seconds=10.0)) as running:
        wait_until(lambda: running.agent.outcomes["completed"], what="the job")
    assert bucket.replies_lost == 1 and result_commits(bucket, "job-1") == 1
    assert [json.loads(m.data)["status"] for m in queue.drain(queue.completions)] == ["succeeded"]
    assert [p["prompt"] for p in webui.txt2img_payloads].count(JOB["prompt"]) == 1 and queue.backlog() == 0


def test_a_completion_that_fails_to_publish_after_the_commit_is_retried_not_nacked(queue, webui, bucket, settings):
    queue.publish("job-1", JOB)
    running = AgentThread(settings)
    running.agent.publisher = FailingCalls(running.agent.publisher, "publish", 2,
                                           when=lambda topic, *a, **k: topic == settings.completions_topic)
    with running:
        wait_until(lambda: sum(running.agent.outcomes.values()), what="the job's outcome")
    assert running.agent.outcomes["completed"] == 1 and running.agent.outcomes["retried"] == 0
    assert [json.loads(m.data)["status"] for m in queue.drain(queue.completions)] == ["succeeded"]
    assert queue.drain(queue.dead_letters) == [] and queue.backlog() == 0
    assert [p["prompt"] for p in webui.txt2img_payloads].count(JOB["prompt"]) == 1


def test_an_ack_that_fails_after_the_commit_is_retried_not_nacked(queue, webui, bucket, settings):
    queue.publish("job-1", JOB)
    running = AgentThread(settings)
    running.agent.subscriber = subscriber = FailingCalls(running.agent.subscriber, "acknowledge", 2)
    with running:
        wait_until(lambda: sum(running.agent.outcomes.values()), what="the job's outcome")
    assert running.agent.outcomes["completed"] == 1
    assert [c for c in subscriber.calls if c[2].get("ack_deadline_seconds") == 0] == []  # no nack
    assert [name for name, *_ in subscriber.calls].count("acknowledge") == 3 and queue.backlog() == 0


def test_a_completion_still_failing_after_an_ack_deadline_is_left_to_the_redelivery(queue, webui, bucket, settings):
    # a 2 s deadline: three tries (0, 0.5, 1.5 s) fail, the fourth would be past it
    running = AgentThread(queue.settings("results", webui_url=webui.url, ack_deadline_seconds=2))
    running.agent.publisher = FailingCalls(running.agent.publisher, "publish", 3,
                                           when=lambda topic, *a, **k: topic == settings.completions_topic)
    queue.publish("job-1", JOB)
    with running:
        wait_until(lambda: running.agent.outcomes["already_done"], what="the redelivery")
    assert running.agent.outcomes["unsettled"] == 1 and running.agent.outcomes["retried"] == 0
    assert [json.loads(m.data)["status"] for m in queue.drain(queue.completions)] == ["succeeded"]
    assert result_commits(bucket, "job-1") == 1 and queue.drain(queue.dead_letters) == [] and queue.backlog() == 0
    assert [p["prompt"] for p in webui.txt2img_payloads].count(JOB["prompt"]) == 1


def test_the_agent_waits_for_a_subscription_created_after_it_started(queue, webui, bucket, settings):
    late = settings.subscription + "-late"
    running = AgentThread(queue.settings("results", webui_url=webui.url, subscription=late))
    running.agent.subscriber = subscriber = FailingCalls(running.agent.subscriber, "pull", 0)
    with running:
        wait_until(lambda: [name for name, *_ in subscriber.calls].count("pull") >= 3, what="pulls refused")
        assert running.thread.is_alive() and not running.agent.ready.is_set()
        queue.subscriber.create_subscription(request={"name": late, "topic": queue.topic})
        queue.publish("job-1", JOB)
        wait_until(lambda: result_commits(bucket, "job-1"), what="the result")
        assert running.agent.ready.is_set()


@pytest.mark.parametrize("error", [
    exceptions.PermissionDenied("injected: the role is not effective yet"),
    exceptions.RetryError("injected: Pub/Sub unreachable", cause=exceptions.ServiceUnavailable("injected")),
    exceptions.ServiceUnavailable("injected: Pub/Sub unreachable"),
], ids=lambda error: type(error).__name__)
def test_the_agent_waits_out_a_pull_error_not_ready_meanwhile(queue, webui, bucket, settings, error):
    running = AgentThread(settings)
    running.agent.subscriber = subscriber = FailingCalls(running.agent.subscriber, "pull", 1_000_000, error=error)
    queue.publish("job-1", JOB)
    with running:
        wait_until(lambda: [name for name, *_ in subscriber.calls].count("pull") >= 3, what="failed pulls")
        assert running.thread.is_alive() and not running.agent.ready.is_set()
        subscriber.left = 0
        wait_until(lambda: result_commits(bucket, "job-1"), what="the result")
        assert running.agent.ready.is_set()


def test_the_agent_waits_out_a_pubsub_stopped_and_restarted(webui, bucket):
    host = f"127.0.0.1:{harness.free_port()}"
    with harness.pubsub_emulator(host):
        queue = harness.Queue()
        running = AgentThread(queue.settings("results", webui_url=webui.url)).__enter__()
        wait_until(lambda: running.agent.ready.is_set(), what="the agent pulling")
    try:
        wait_until(lambda: not running.agent.ready.is_set(), what="the agent reporting not ready")
        with harness.pubsub_emulator(host):  # a restarted emulator keeps nothing: the queue is made again
            queue = harness.Queue(number=queue.number)
            queue.publish("job-1", JOB)
            wait_until(lambda: running.agent.outcomes["completed"] == 1, what="the job settled")
            assert result_commits(bucket, "job-1") == 1
            assert running.thread.is_alive() and running.agent.ready.is_set()
    finally:
        running.__exit__()


def test_sigterm_while_pubsub_is_gone_stops_the_agent_within_its_drain(webui, bucket):
    """The result is committed, then Pub/Sub goes away before the ack: SIGTERM must not wait out the client's
    one-minute retries of the ack and of the lease's extension, nor end in a traceback."""
    with harness.pubsub_emulator():
        queue = harness.Queue()
        running = AgentThread(queue.settings("results", webui_url=webui.url, drain_seconds=1.0)).__enter__()
        wait_until(lambda: running.agent.ready.is_set(), what="the agent pulling")
        webui.admit.clear()
        queue.publish("job-1", JOB)
        wait_until(lambda: webui.open_requests == 1 and webui.txt2img_payloads[-1] == JOB, what="the generation")
    failures: list[threading.ExceptHookArgs] = []
    previous_hook, threading.excepthook = threading.excepthook, failures.append
    try:
        webui.admit.set()
        wait_until(lambda: result_commits(bucket, "job-1"), what="the result")
        stopping = time.monotonic()
        running.stop.set()
        running.thread.join(timeout=60)
        took = time.monotonic() - stopping
    finally:
        threading.excepthook = previous_hook
    assert not running.thread.is_alive() and failures == []
    assert took < 1.0 + 2 * agent.PUBSUB_CALL_SECONDS + 5
    assert running.agent.outcomes["released"] == 1


def test_a_job_pulled_as_sigterm_arrives_is_handed_back_not_run(queue, webui, bucket, settings):
    queue.publish("job-1", JOB)
    running = AgentThread(settings)
    real_pull = running.agent.subscriber.pull

    def pull_then_sigterm(**kwargs):
        response = real_pull(**kwargs)
        if response.received_messages:
            running.stop.set()
        return response
    running.agent.subscriber.pull = pull_then_sigterm
    with running:
        running.thread.join(timeout=30)
    assert running.agent.outcomes["released"] == 1 and running.agent.outcomes["completed"] == 0
    assert [p["prompt"] for p in webui.txt2img_payloads].count(JOB["prompt"]) == 0
    assert queue.backlog() == 1  # back on the queue at once, not after its ack deadline


def test_sigterm_finishes_the_job_in_flight_before_stopping(queue, webui, bucket, settings):
    webui.generation_seconds = 1.0
    queue.publish("job-1", JOB)
    with AgentThread(settings) as running:
        wait_until(lambda: webui.open_requests == 1 and webui.txt2img_payloads[-1] == JOB, what="the generation")
        running.stop.set()
        running.thread.join(timeout=30)
    assert running.agent.outcomes["completed"] == 1 and result_commits(bucket, "job-1") == 1
    assert queue.backlog() == 0


def test_sigterm_releases_a_job_it_cannot_finish_in_time_to_another_pod(queue, webui, bucket, settings):
    webui.generation_seconds = 2.0
    queue.publish("job-1", JOB)
    with AgentThread(queue.settings("results", webui_url=webui.url, drain_seconds=0.1)) as leaving:
        wait_until(lambda: webui.open_requests == 1 and webui.txt2img_payloads[-1] == JOB, what="the generation")
        leaving.stop.set()
        leaving.thread.join(timeout=30)
    assert leaving.agent.outcomes["released"] == 1
    webui.generation_seconds = 0.0
    with AgentThread(settings) as staying:
        # released, not left to its lease: the next pod gets it long before the 10 s ack deadline
        wait_until(lambda: staying.agent.outcomes["completed"] + staying.agent.outcomes["already_done"] == 1,
                   timeout=5, what="the released job")
    assert result_commits(bucket, "job-1") == 1


def test_the_lease_keeps_a_job_longer_than_its_ack_deadline(queue, webui, bucket, settings):
    webui.generation_seconds = queue.ack_deadline_seconds + 3
    queue.publish("job-1", JOB)
    with AgentThread(settings) as first, AgentThread(settings) as second:
        wait_until(lambda: result_commits(bucket, "job-1"), timeout=60, what="the result")
    outcomes = [a.agent.outcomes for a in (first, second)]
    assert sum(o["completed"] for o in outcomes) == 1 and sum(o["already_done"] for o in outcomes) == 0
    assert [p["prompt"] for p in webui.txt2img_payloads].count(JOB["prompt"]) == 1


def test_an_agent_killed_mid_job_loses_nothing(queue, webui, bucket, settings):
    webui.generation_seconds = 1.0
    queue.publish("job-1", JOB)
    killed = harness.agent_process(settings, bucket.url)
    try:
        wait_until(lambda: webui.open_requests == 1 and webui.txt2img_payloads[-1] == JOB, what="the generation")
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=10)
    finally:
        killed.kill()
    webui.generation_seconds = 0.0
    with AgentThread(settings):
        wait_until(lambda: result_commits(bucket, "job-1"), timeout=30, what="the redelivered job's result")
    assert result(bucket, "job-1")["delivery_attempt"] == 2 and queue.backlog() == 0


class RecordedStop:
    """A stop event that records every wait instead of sleeping: a wait is where the worker would stall."""

    def __init__(self):
        self.waits: list[float | None] = []

    def is_set(self) -> bool:
        return False

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return False


def test_the_worker_goes_back_to_interactive_work_while_pubsub_cannot_be_pulled_from(queue, webui, bucket):
    """Between interactive jobs the batch pull must not sleep out its backoff: requests in the request queue would
    wait behind it. The failed pull clears readiness, and no pull is tried again before the backoff (60 s) passes."""
    running = AgentThread(queue.settings("results", webui_url=webui.url, ready_poll_seconds=60.0))
    running.agent.subscriber = subscriber = FailingCalls(running.agent.subscriber, "pull", 5)
    stop = RecordedStop()

    took = [running.agent.try_one(stop, started=lambda: pytest.fail("no job was pulled")) for _ in range(3)]

    assert took == [False, False, False]
    assert stop.waits == []
    assert [name for name, _, _ in subscriber.calls] == ["pull"]
    assert not running.agent.ready.is_set()
