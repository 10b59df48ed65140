"""The batch agent's commit, settle and release, step by step, in-process: what each Pub/Sub call carries,
what the result document records, what an operator reads in the log, and how the retries are spaced.

The emulator tests (test_agent.py, test_faults.py) show that jobs survive real Pub/Sub; these pin down the
details they cannot see. The stand-ins check each call as the real clients would: the subscriber's calls bind
to google-cloud-pubsub's own method signatures, the publisher refuses what `PublisherClient.publish` refuses
(data not bytes, an attribute not a string) and what Pub/Sub refuses (an attribute value over 1,024 bytes,
https://cloud.google.com/pubsub/quotas#resource_limits), and messages are the real `ReceivedMessage` type."""

from __future__ import annotations

import inspect
import json
import logging
import threading
import types

import pytest
from google.cloud import pubsub_v1

from tests.jobs.harness import agent, contract

JOB = {"prompt": "a lighthouse at dusk", "steps": 20}
ACK_ID = "ack-1"
IMAGE = b"\x89PNG stand-in"


class Subscriber:
    """Records acknowledge and modify_ack_deadline calls, each bound to the real client's signature; the first
    `failures` calls raise `fail_with`."""

    def __init__(self, fail_with: Exception | None = None, failures: int = 1_000):
        self.calls: list[tuple[str, dict]] = []
        self.fail_with, self.failures = fail_with, failures

    def _call(self, name: str, kwargs: dict) -> None:
        inspect.signature(getattr(pubsub_v1.SubscriberClient, name)).bind(self, **kwargs)
        self.calls.append((name, kwargs))
        if self.fail_with and len(self.calls) <= self.failures:
            raise self.fail_with

    def acknowledge(self, **kwargs) -> None:
        self._call("acknowledge", kwargs)

    def modify_ack_deadline(self, **kwargs) -> None:
        self._call("modify_ack_deadline", kwargs)


class Future:
    def __init__(self, error: Exception | None):
        self.error, self.timeouts = error, []

    def result(self, timeout=None):
        self.timeouts.append(timeout)
        if self.error:
            raise self.error
        return "message-id"


class Publisher:
    """Records what is published, refusing what the real client or Pub/Sub would; `failing` topics fail."""

    def __init__(self, failing: tuple[str, ...] = ()):
        self.published: list[tuple[str, bytes, dict, Future]] = []
        self.failing = failing

    def publish(self, topic: str, data: bytes, **attributes) -> Future:
        inspect.signature(pubsub_v1.PublisherClient.publish).bind(self, topic, data, **attributes)
        if not isinstance(data, bytes):
            raise TypeError("Data being published to Pub/Sub must be sent as a bytestring.")
        if not all(isinstance(value, str) for value in attributes.values()):
            raise TypeError("All attributes being published to Pub/Sub must be sent as text strings.")
        too_long = [key for key, value in attributes.items() if len(value.encode()) > 1024]
        assert not too_long, f"Pub/Sub refuses attribute values over 1024 bytes: {too_long}"
        future = Future(RuntimeError(f"publish to {topic} failed") if topic in self.failing else None)
        self.published.append((topic, data, attributes, future))
        return future

    def to(self, topic: str) -> list[tuple[bytes, dict]]:
        return [(data, attributes) for name, data, attributes, _ in self.published if name == topic]


class Results:
    def __init__(self, done: bool = False):
        self.done, self.commits = done, []

    def exists(self, job_id: str) -> bool:
        return self.done

    def commit(self, job_id: str, images: list[bytes], metadata: dict) -> bool:
        self.commits.append((job_id, images, metadata))
        return True


class Webui:
    """Answers txt2img (or raises `error`), after `release` is set; notes the thread each call runs in."""

    def __init__(self, error: Exception | None = None):
        self.error, self.calls, self.threads = error, [], []
        self.release = threading.Event()
        self.release.set()

    def txt2img(self, payload: dict, timeout: float):
        self.calls.append((payload, timeout))
        self.threads.append(threading.current_thread())
        self.release.wait(10)
        if self.error:
            raise self.error
        return [IMAGE], {"seed": 7}


def settings(**overrides) -> agent.Settings:
    values = {"subscription": "projects/p/subscriptions/jobs", "completions_topic": "projects/p/topics/completions",
              "dead_letter_topic": "projects/p/topics/dead-letter", "bucket": "results", "max_attempts": 5,
              "generation_timeout_seconds": 42.0, "drain_seconds": 5.0, **overrides}
    return agent.Settings(**values)


def received(job_id: str | None = "job-1", attempt: int = 1, data: bytes | None = None, **attributes: str):
    if job_id is not None:
        attributes["job_id"] = job_id
    message = pubsub_v1.types.PubsubMessage(data=json.dumps(JOB).encode() if data is None else data,
                                            attributes=attributes, message_id="m-17")
    return pubsub_v1.types.ReceivedMessage(ack_id=ACK_ID, message=message, delivery_attempt=attempt)


def new_agent(subscriber=None, publisher=None, results=None, webui=None, **overrides):
    return agent.Agent(settings(**overrides), subscriber or Subscriber(), publisher or Publisher(),
                       results or Results(), webui or Webui())


def completions(publisher: Publisher) -> list[tuple[dict, dict]]:
    return [(json.loads(data), attributes) for data, attributes in publisher.to(settings().completions_topic)]


def test_a_job_is_generated_within_the_configured_generation_timeout():
    webui = Webui()
    new_agent(webui=webui)._process(received())
    assert webui.calls == [(JOB, 42.0)]


def test_the_result_document_records_the_job_its_delivery_and_its_timing():
    results = Results()
    new_agent(results=results)._process(received(attempt=3, batch_id="b-1"))
    [(job_id, images, metadata)] = results.commits
    assert (job_id, images) == ("job-1", [IMAGE])
    assert sorted(metadata) == ["batch_id", "delivery_attempt", "finished", "job_id", "message_id", "parameters",
                                "payload", "started"]
    assert {key: metadata[key] for key in ("job_id", "batch_id", "message_id", "delivery_attempt", "payload",
                                           "parameters")} == {
        "job_id": "job-1", "batch_id": "b-1", "message_id": "m-17", "delivery_attempt": 3, "payload": JOB,
        "parameters": {"seed": 7}}
    assert isinstance(metadata["started"], float) and metadata["started"] <= metadata["finished"]


def test_a_delivery_without_an_attempt_count_is_recorded_as_the_first():
    results = Results()
    new_agent(results=results)._process(received(attempt=0))
    assert results.commits[0][2]["delivery_attempt"] == 1


def test_a_completed_job_is_announced_with_its_result_then_acked():
    subscriber, publisher = Subscriber(), Publisher()
    outcome = new_agent(subscriber, publisher)._process(received(batch_id="b-1"))
    assert outcome == "completed"
    assert completions(publisher) == [({"job_id": "job-1", "status": "succeeded", "result": "gs://results/job-1/result.json"},
                                       {"job_id": "job-1", "batch_id": "b-1", "status": "succeeded"})]
    assert subscriber.calls == [("acknowledge", {"subscription": "projects/p/subscriptions/jobs", "ack_ids": [ACK_ID],
                                                 "retry": None, "timeout": agent.PUBSUB_CALL_SECONDS})]


def test_a_job_whose_result_exists_is_announced_with_that_result_without_generating():
    publisher, webui = Publisher(), Webui()
    outcome = new_agent(publisher=publisher, results=Results(done=True), webui=webui)._process(received())
    assert outcome == "already_done" and webui.calls == []
    assert completions(publisher)[0][0] == {"job_id": "job-1", "status": "succeeded",
                                            "result": "gs://results/job-1/result.json"}


def test_a_failed_attempt_is_logged_with_its_number_and_reason_and_handed_back_at_once(caplog):
    subscriber = Subscriber()
    webui = Webui(error=agent.RetryableError("WebUI unreachable: refused"))
    with caplog.at_level(logging.WARNING, logger="queue_agent"):
        outcome = new_agent(subscriber, webui=webui)._process(received(attempt=2))
    assert outcome == "retried"
    assert caplog.messages == ["job job-1 attempt 2 failed: RetryableError: WebUI unreachable: refused"]
    assert subscriber.calls == [("modify_ack_deadline", {
        "subscription": "projects/p/subscriptions/jobs", "ack_ids": [ACK_ID], "ack_deadline_seconds": 0,
        "retry": None, "timeout": agent.PUBSUB_CALL_SECONDS})]


def test_a_hand_back_pubsub_refuses_is_logged_and_left_to_the_lapsing_deadline(caplog):
    subscriber = Subscriber(fail_with=RuntimeError("unavailable"))
    with caplog.at_level(logging.WARNING, logger="queue_agent"):
        new_agent(subscriber)._nack(received())
    assert caplog.messages == ["job job-1: handed back when its ack deadline lapses, not at once: unavailable"]


def test_the_last_attempt_is_dead_lettered_with_its_reason_announced_and_acked(caplog):
    subscriber, publisher = Subscriber(), Publisher()
    webui = Webui(error=agent.RetryableError("WebUI answered HTTP 500: boom"))
    with caplog.at_level(logging.WARNING, logger="queue_agent"):
        outcome = new_agent(subscriber, publisher, webui=webui, max_attempts=3)._process(received(attempt=3, batch_id="b-1"))
    reason = "failed 3 attempts; last: RetryableError: WebUI answered HTTP 500: boom"
    assert outcome == "dead_lettered"
    assert publisher.to(settings().dead_letter_topic) == [(json.dumps(JOB).encode(), {
        "job_id": "job-1", "batch_id": "b-1", "reason": reason, "delivery_attempt": "3"})]
    assert completions(publisher) == [({"job_id": "job-1", "status": "dead_lettered", "reason": reason},
                                       {"job_id": "job-1", "batch_id": "b-1", "status": "dead_lettered"})]
    assert caplog.messages == [f"job job-1 dead-lettered: {reason}"]
    assert [name for name, _ in subscriber.calls] == ["acknowledge"]
    assert subscriber.calls[0][1]["timeout"] == agent.PUBSUB_CALL_SECONDS


def test_a_dead_letter_without_an_attempt_count_says_attempt_1():
    publisher = Publisher()
    new_agent(publisher=publisher)._process(received(attempt=0, data=b"not json"))
    [(_, attributes)] = publisher.to(settings().dead_letter_topic)
    assert attributes["delivery_attempt"] == "1"


def test_a_reason_longer_than_an_attribute_may_be_is_cut_to_1024_bytes_between_characters():
    publisher = Publisher()
    reason = "x" + "é" * 600  # 1,201 bytes of UTF-8: byte 1,024 is the first half of the 512th "é"
    new_agent(publisher=publisher)._dead_letter(received(), reason)
    [(_, attributes)] = publisher.to(settings().dead_letter_topic)
    assert attributes["reason"] == "x" + "é" * 511
    assert completions(publisher)[0][0]["reason"] == "x" + "é" * 511


def test_a_reason_of_exactly_1024_bytes_is_kept_whole():
    publisher = Publisher()
    new_agent(publisher=publisher)._dead_letter(received(), "r" * 1024)
    assert publisher.to(settings().dead_letter_topic)[0][1]["reason"] == "r" * 1024


def test_a_job_without_a_job_id_is_dead_lettered_and_announced_with_an_empty_one():
    publisher = Publisher()
    new_agent(publisher=publisher)._process(received(job_id=None))
    [(body, attributes)] = completions(publisher)
    assert body["job_id"] == "" and attributes == {"job_id": "", "batch_id": "", "status": "dead_lettered"}


def test_each_publish_is_waited_for_at_most_30_s():
    publisher = Publisher()
    new_agent(publisher=publisher)._process(received(data=b"not json"))
    assert [future.timeouts for *_, future in publisher.published] == [[30], [30]]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the job thread's end, on purpose
def test_an_attempt_that_ends_unhandled_counts_as_retried():
    publisher = Publisher(failing=(settings().dead_letter_topic,))
    worker = new_agent(publisher=publisher)
    worker._work(received(data=b"not json"), threading.Event())
    assert worker.outcomes["retried"] == 1 and worker.outcomes["dead_lettered"] == 0


def test_the_job_runs_in_a_daemon_thread_named_job():
    webui = Webui()
    new_agent(webui=webui)._work(received(), threading.Event())
    [thread] = webui.threads
    assert thread.name == "job" and thread.daemon


class RecordedStop(threading.Event):
    def __init__(self):
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout=None):
        self.waits.append(timeout)
        return super().wait(timeout)


def test_a_running_job_is_checked_on_every_50_ms():
    webui, stop = Webui(), RecordedStop()
    webui.release.clear()
    threading.Timer(0.2, webui.release.set).start()
    new_agent(webui=webui)._work(received(), stop)
    assert stop.waits and set(stop.waits) == {0.05}


def test_a_job_unfinished_at_shutdown_is_released_and_logged(caplog):
    subscriber, webui, stop = Subscriber(), Webui(), threading.Event()
    webui.release.clear()
    stop.set()
    worker = new_agent(subscriber, webui=webui, drain_seconds=0.1)
    with caplog.at_level(logging.WARNING, logger="queue_agent"):
        worker._work(received(), stop)
    at_shutdown = list(subscriber.calls)  # the job's thread still waits in the WebUI: nothing after the release
    webui.release.set()
    webui.threads[0].join(5)  # the released job's thread ends here, not inside a later test
    assert caplog.messages == ["released job job-1 at shutdown"]
    assert [(name, kwargs["ack_deadline_seconds"]) for name, kwargs in at_shutdown] == [("modify_ack_deadline", 0)]
    assert worker.outcomes["released"] == 1 and worker.outcomes["retried"] == 0


def test_every_release_is_counted():
    worker = new_agent()
    worker._release(received())
    worker._release(received())
    assert worker.outcomes["released"] == 2


class Clock:
    """Stands in for the module's `time` and `threading` in `_persist`: each wait moves the clock on."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def Event(self):  # noqa: N802 - named as threading.Event, which it replaces
        return types.SimpleNamespace(wait=self.advance)

    def advance(self, seconds: float) -> bool:
        self.now += seconds
        return False


def test_a_failing_settle_step_is_retried_doubling_from_half_a_second_to_8_s_for_one_ack_deadline(monkeypatch, caplog):
    clock = Clock()
    monkeypatch.setattr(agent, "time", clock)
    monkeypatch.setattr(agent, "threading", clock)
    publisher = Publisher(failing=(settings().completions_topic,))
    with caplog.at_level(logging.WARNING, logger="queue_agent"):
        outcome = new_agent(publisher=publisher, ack_deadline_seconds=60)._settle(received(), "job-1", "completed")
    error = f"publish to {settings().completions_topic} failed"
    assert outcome == "unsettled"
    assert caplog.messages == [f"job job-1: retrying in {delay} s: {error}"
                               for delay in ("0.5", "1.0", "2.0", "4.0", "8.0", "8.0", "8.0", "8.0", "8.0", "8.0")] + [
        f"job job-1: giving up until its redelivery: {error}"]
    assert clock.now == 1000.0 + 55.5


def test_a_settle_step_that_succeeds_on_a_retry_settles_the_job(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(agent, "time", clock)
    monkeypatch.setattr(agent, "threading", clock)
    subscriber = Subscriber(fail_with=RuntimeError("unavailable"), failures=1)
    assert new_agent(subscriber)._settle(received(), "job-1", "completed") == "completed"
    assert [name for name, _ in subscriber.calls] == ["acknowledge", "acknowledge"]
    assert clock.now == 1000.0 + 0.5


def test_a_job_id_the_contract_refuses_is_dead_lettered_with_the_contracts_words():
    publisher = Publisher()
    new_agent(publisher=publisher)._process(received(job_id="../etc"))
    [(_, attributes)] = publisher.to(settings().dead_letter_topic)
    with pytest.raises(contract.JobError) as refused:
        contract.check_job_id("../etc")
    assert attributes["reason"] == str(refused.value)
