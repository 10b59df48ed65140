"""One job at a time: pull, lease, generate on the WebUI beside it, commit the result, notify, ack.

Delivery is at least once (a lease can lapse, a pod can die after the result and before the ack), so
results are exactly once instead: the commit is the creation of `<job_id>/result.json` with
ifGenerationMatch=0 ("only if no live object exists",
https://cloud.google.com/storage/docs/request-preconditions#special-case), and a redelivered job whose
result exists is acked without generating again.

Pub/Sub calls (https://cloud.google.com/pubsub/docs/pull): synchronous pull of one message, so the
pod never holds a job it is not working on; modifyAckDeadline while the job runs (lease) and with 0
to hand a job back at once ("nack"); deliveryAttempt is set only on subscriptions with a dead-letter
policy (https://cloud.google.com/pubsub/docs/handling-failures#track-delivery-attempts). On the last
attempt the agent itself publishes the job to the dead-letter topic with its reason (Pub/Sub's own
forwarding carries no reason) and acks; Pub/Sub's forwarding remains for an agent that dies on every
attempt.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from queue_agent import alive, contract

log = logging.getLogger("queue_agent")

READY_PAYLOAD = {"prompt": "warm-up", "steps": 1, "width": 64, "height": 64, "batch_size": 1,
                 "save_images": False, "send_images": False}
"""The startup probe's warm-up generation (images/webui/probe.py WARM_PAYLOAD): it returns only once
the checkpoint is loaded, which an API that merely answers does not show."""


PULL_BACKOFF_CAP_SECONDS = 30.0
"""The longest wait between pulls that failed: half the heartbeat's 60 s limit (components/worker.py)."""

PUBSUB_CALL_SECONDS = 10.0
"""The most one acknowledge or modifyAckDeadline may take. Called with the client's defaults, one call to an
unreachable Pub/Sub retries for 60 s ("Timeout of 60.0s exceeded") and would hold a SIGTERM past the drain;
the agent's own loops (the lease's next tick, `_persist`) do the retrying instead."""

ATTRIBUTE_VALUE_BYTES = 1024
"""Pub/Sub's limit on one attribute's value, in bytes (https://cloud.google.com/pubsub/quotas#resource_limits):
a dead letter's reason is cut to it, so a long or non-ASCII reason cannot make the dead letter unpublishable."""


class RetryableError(Exception):
    """This attempt failed; another may succeed."""


@dataclass(frozen=True)
class Settings:
    subscription: str
    completions_topic: str
    dead_letter_topic: str
    bucket: str
    max_attempts: int
    ack_deadline_seconds: int = 60
    generation_timeout_seconds: float = 120.0
    drain_seconds: float = 120.0
    webui_url: str = "http://127.0.0.1:7860"
    webui_auth: str | None = None
    ready_poll_seconds: float = 2.0
    storage_retry_seconds: float = 60.0
    pull_timeout_seconds: float = 10.0
    """How long one pull waits for a job: also how long SIGTERM may wait for an idle agent."""
    heartbeat: str | None = None
    """A file the agent touches while its loop runs; `python -m queue_agent.alive` reads its age."""


class Results(Protocol):
    def exists(self, job_id: str) -> bool: ...
    def commit(self, job_id: str, images: list[bytes], metadata: dict[str, Any]) -> bool: ...


class Webui:
    """The WebUI API on localhost (stdlib HTTP: the sidecar needs nothing more)."""

    def __init__(self, url: str, auth: str | None):
        self.url = url.rstrip("/")
        self.auth = auth

    def call(self, path: str, payload: dict | None, timeout: float) -> dict:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(self.url + path, data=data, method="POST" if data else "GET",
                                         headers={"Content-Type": "application/json"})
        if self.auth:
            request.add_header("Authorization", "Basic " + base64.b64encode(self.auth.encode()).decode())
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"{}")

    def ready(self) -> bool:
        try:
            self.call("/sdapi/v1/options", None, timeout=5.0)
            self.call("/sdapi/v1/txt2img", READY_PAYLOAD, timeout=60.0)
            return True
        except (OSError, ValueError):
            return False

    def txt2img(self, payload: dict, timeout: float) -> tuple[list[bytes], dict]:
        """The images and the parameters WebUI used; contract.JobError for a payload WebUI refuses."""
        try:
            answer = self.call("/sdapi/v1/txt2img", payload, timeout)
        except urllib.error.HTTPError as err:
            body = err.read()[:300].decode(errors="replace")
            # 422: FastAPI's validation error for the request body; no retry makes it valid.
            if err.code in (400, 404, 422):
                raise contract.JobError(f"WebUI refused the job: HTTP {err.code}: {body}") from None
            raise RetryableError(f"WebUI answered HTTP {err.code}: {body}") from None
        except (OSError, ValueError) as err:
            raise RetryableError(f"WebUI unreachable: {err}") from None
        try:
            images = [base64.b64decode(image, validate=True) for image in answer["images"]]
        except (KeyError, TypeError, ValueError) as err:
            raise RetryableError(f"WebUI answered without images: {err}") from None
        return images, answer.get("parameters") or {}


class Lease:
    """Keeps a message's ack deadline ahead of the work until stopped."""

    def __init__(self, subscriber: Any, subscription: str, ack_id: str, deadline_seconds: int):
        self._stop = threading.Event()
        self._args = (subscriber, subscription, ack_id, deadline_seconds)
        self._thread = threading.Thread(target=self._run, name="lease", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(PUBSUB_CALL_SECONDS)  # an extension in flight is bounded; the thread is a daemon

    def _run(self) -> None:
        subscriber, subscription, ack_id, deadline = self._args
        while not self._stop.wait(deadline / 3):
            try:
                subscriber.modify_ack_deadline(subscription=subscription, ack_ids=[ack_id],
                                               ack_deadline_seconds=deadline, retry=None,
                                               timeout=min(PUBSUB_CALL_SECONDS, deadline / 3))
            except Exception as err:  # noqa: BLE001 - a missed extension is retried; the job is not lost
                log.warning("lease extension failed: %s", err)


class Agent:
    def __init__(self, settings: Settings, subscriber: Any, publisher: Any, results: Results, webui: Webui):
        self.settings = settings
        self.subscriber = subscriber
        self.publisher = publisher
        self.results = results
        self.webui = webui
        self.ready = threading.Event()
        self._last_beat = 0.0
        self._pull_failures = 0
        self._pulls_resume_at = 0.0
        self.outcomes: dict[str, int] = {"completed": 0, "already_done": 0, "retried": 0,
                                         "dead_lettered": 0, "released": 0, "unsettled": 0}

    def run(self, stop: threading.Event) -> None:
        """Wait for the WebUI, then work jobs one at a time until `stop` (SIGTERM)."""
        while not stop.is_set() and not self.webui.ready():
            self._beat()
            stop.wait(self.settings.ready_poll_seconds)
        if stop.is_set():
            return
        log.info("WebUI ready")
        while not stop.is_set():
            self._beat()
            received = self._pull(stop)
            if received is not None and stop.is_set():
                # pulled as SIGTERM came: hand it back now rather than start what the drain may cut short
                self._release(received)
            elif received is not None:
                self._work(received, stop)

    def try_one(self, stop: threading.Event, started: Callable[[], None]) -> bool:
        """One pull; a job received is announced with `started()` and worked. The worker's loop
        (queue_agent/worker.py) calls this between interactive jobs; True when there was a job.

        It never waits out a Pub/Sub that cannot be pulled from: the worker goes straight back to the
        request queue, whose requests must not wait behind the batch's backoff, and the batch is tried
        again once that backoff has passed."""
        if time.monotonic() < self._pulls_resume_at:
            return False
        received = self._pull(stop, block=False)
        if received is None:
            return False
        started()
        self._work(received, stop)
        return True

    def _beat(self) -> None:
        now = time.time()
        if self.settings.heartbeat and now - self._last_beat >= 1.0:
            alive.beat(self.settings.heartbeat)
            self._last_beat = now

    def _pull(self, stop: threading.Event, block: bool = True) -> Any:
        """One job, or None after an empty poll or an error waited out (not ready meanwhile).

        The client's own retry is off (retry=None) so that the loop, which beats the heartbeat, does the
        waiting: with it, an unreachable Pub/Sub holds one pull for a minute before RetryError. A
        subscription not yet created (NotFound) or a role not yet effective (PermissionDenied: IAM changes
        take minutes to propagate, https://cloud.google.com/iam/docs/access-change-propagation) are waited
        out the same way rather than ending the process, which would repeat the warm-up generation."""
        from google.api_core import exceptions

        try:
            response = self.subscriber.pull(subscription=self.settings.subscription, max_messages=1,
                                            timeout=self.settings.pull_timeout_seconds, retry=None)
        except exceptions.DeadlineExceeded:
            response = None  # a long poll that found nothing
        except (exceptions.RetryError, exceptions.NotFound, exceptions.PermissionDenied,
                exceptions.ServiceUnavailable, exceptions.InternalServerError, exceptions.Unknown) as err:
            self._wait_out(err, stop, block)
            return None
        if not self.ready.is_set():
            log.info("pulling from %s", self.settings.subscription)
        self._pull_failures = 0
        self.ready.set()
        return response.received_messages[0] if response and response.received_messages else None

    def _wait_out(self, err: Exception, stop: threading.Event, block: bool) -> None:
        """Back off (doubling, capped): sleeping here (`block`), or, for the worker, by pulling again only after it."""
        if self.ready.is_set() or not self._pull_failures:
            log.warning("cannot pull from %s, not ready until it can: %s", self.settings.subscription, err)
        self.ready.clear()
        delay = min(self.settings.ready_poll_seconds * 2 ** min(self._pull_failures, 10), PULL_BACKOFF_CAP_SECONDS)
        self._pull_failures += 1
        if block:
            stop.wait(delay)
        else:
            self._pulls_resume_at = time.monotonic() + delay

    def _work(self, received: Any, stop: threading.Event) -> None:
        """Run the job in a worker thread; on `stop`, give it drain_seconds, then hand it back."""
        outcome: list[str] = []
        with Lease(self.subscriber, self.settings.subscription, received.ack_id, self.settings.ack_deadline_seconds):
            worker = threading.Thread(target=lambda: outcome.append(self._process(received)), name="job", daemon=True)
            worker.start()
            while worker.is_alive() and not stop.wait(0.05):
                self._beat()
            worker.join(self.settings.drain_seconds)
        if worker.is_alive():
            # Shutting down with the job unfinished: release it now rather than when its lease lapses.
            # Should this attempt still commit later, the result's precondition keeps it the only one.
            self._release(received)
            log.warning("released job %s at shutdown", received.message.attributes.get("job_id"))
            return
        self.outcomes[outcome[0] if outcome else "retried"] += 1

    def _process(self, received: Any) -> str:
        message = received.message
        job_id = message.attributes.get("job_id")
        attempt = received.delivery_attempt or 1
        try:
            contract.check_job_id(job_id)
            payload = contract.decode_job(message.data)
            if self.results.exists(job_id):
                return self._settle(received, job_id, "already_done")
            started = time.time()
            images, parameters = self.webui.txt2img(payload, self.settings.generation_timeout_seconds)
            metadata = {"job_id": job_id, "batch_id": message.attributes.get("batch_id"),
                        "message_id": message.message_id, "delivery_attempt": attempt, "payload": payload,
                        "parameters": parameters, "started": started, "finished": time.time()}
            self.results.commit(job_id, images, metadata)
        except contract.JobError as err:
            self._dead_letter(received, str(err))
            return "dead_lettered"
        except Exception as err:  # noqa: BLE001 - every other failure is this attempt's, with its reason
            reason = f"{type(err).__name__}: {err}"
            if attempt >= self.settings.max_attempts:
                self._dead_letter(received, f"failed {attempt} attempts; last: {reason}")
                return "dead_lettered"
            log.warning("job %s attempt %d failed: %s", job_id, attempt, reason)
            self._nack(received)
            return "retried"
        return self._settle(received, job_id, "completed")

    def _settle(self, received: Any, job_id: str, outcome: str) -> str:
        """Announce and ack a job whose result exists. Nothing here can fail the job: each step is retried
        with backoff for one ack deadline (the lease holds the message meanwhile); a step still failing then
        leaves the message unacked, not nacked, and its redelivery (an unacked message is "eventually
        redelivered", Subscription.ack_deadline_seconds in google.pubsub.v1) finds the result and settles it."""
        for step in (lambda: self._complete(job_id, received.message), lambda: self._ack(received)):
            if not self._persist(step, f"job {job_id}"):
                return "unsettled"
        return outcome

    def _persist(self, step: Any, what: str) -> bool:
        deadline, delay = time.monotonic() + self.settings.ack_deadline_seconds, 0.5
        while True:
            try:
                step()
                return True
            except Exception as err:  # noqa: BLE001 - Pub/Sub errors and timeouts alike: retried, then left
                if time.monotonic() + delay > deadline:
                    log.warning("%s: giving up until its redelivery: %s", what, err)
                    return False
                log.warning("%s: retrying in %.1f s: %s", what, delay, err)
                threading.Event().wait(delay)
                delay = min(delay * 2, 8.0)

    def _complete(self, job_id: str, message: Any) -> None:
        self._notify(message, "succeeded", result=f"gs://{self.settings.bucket}/{contract.result_name(job_id)}")

    def _notify(self, message: Any, status: str, **fields: str) -> None:
        """A completion message (at least once: a job acked after a crash is announced again)."""
        job_id = message.attributes.get("job_id", "")
        body = {"job_id": job_id, "status": status, **fields}
        self.publisher.publish(self.settings.completions_topic, json.dumps(body).encode(), job_id=job_id,
                               batch_id=message.attributes.get("batch_id", ""), status=status).result(timeout=30)

    def _dead_letter(self, received: Any, reason: str) -> None:
        message = received.message
        attributes = {**message.attributes, "reason": _fits_an_attribute(reason),
                      "delivery_attempt": str(received.delivery_attempt or 1)}
        self.publisher.publish(self.settings.dead_letter_topic, message.data, **attributes).result(timeout=30)
        self._notify(message, "dead_lettered", reason=attributes["reason"])
        log.error("job %s dead-lettered: %s", message.attributes.get("job_id"), reason)
        self._ack(received)

    def _ack(self, received: Any) -> None:
        self.subscriber.acknowledge(subscription=self.settings.subscription, ack_ids=[received.ack_id],
                                    retry=None, timeout=PUBSUB_CALL_SECONDS)

    def _nack(self, received: Any) -> None:
        """Hand a job back at once, trying once and briefly: should Pub/Sub not take it, the job comes back
        anyway when its ack deadline lapses, the lease having stopped with the work."""
        try:
            self.subscriber.modify_ack_deadline(subscription=self.settings.subscription, ack_ids=[received.ack_id],
                                                ack_deadline_seconds=0, retry=None, timeout=PUBSUB_CALL_SECONDS)
        except Exception as err:  # noqa: BLE001 - the lapsing deadline hands it back instead
            log.warning("job %s: handed back when its ack deadline lapses, not at once: %s",
                        received.message.attributes.get("job_id"), err)

    def _release(self, received: Any) -> None:
        self._nack(received)
        self.outcomes["released"] += 1


def _fits_an_attribute(text: str) -> str:
    """`text` cut to ATTRIBUTE_VALUE_BYTES of UTF-8, never inside a character."""
    return text.encode()[:ATTRIBUTE_VALUE_BYTES].decode(errors="ignore")


def new_attempt() -> str:
    """A prefix of this attempt's own for its images."""
    return uuid.uuid4().hex[:12]
