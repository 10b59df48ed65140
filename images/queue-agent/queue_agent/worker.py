"""The worker beside every WebUI (docs/request-queue.md, "The worker's loop"): it asks the request queue
for the next generation only while its WebUI has none in flight, so no request ever waits inside a pod.

1. A warm-up generation (the checkpoint is loaded), then `next` registers the worker.
2. With batch (JOBS_* set): `next` with wait 0; on 204 one short batch pull (none while a front says the pod
   runs a browser's generation, X-Queue-Webui-Busy, or its WebUI's progress says it runs one: then it waits
   until that ends); if none, `next` with a few seconds' wait. Only after
   BATCH_EVERY interactive jobs in a row with no 204 between them (sustained saturation) does one batch pull go
   first, so the batch progresses then too. Without batch: long polls.
3. A job is first checked against the WebUI's own state: one handed over while the WebUI runs a generation
   (a browser's event no front counted) is released back to the front at once, and the worker polls again only
   once its WebUI is idle. Otherwise it is forwarded to the WebUI while `cancel` is held open at the front that
   handed it out; a cancel or the job's own `generation_timeout` interrupts the WebUI, and the outcome is posted
   to that front's `result`. A generation still running after the interrupt's grace: `DELETE`, and warm up
   again once it has ended.
4. SIGTERM: `DELETE` at once, finish the job in flight within the drain or hand it back, exit.
While a rollout of the request queue lists two fronts (front.Fronts), each `next` above is a round over both,
SHORT_POLL_SECONDS at each, so the requests the draining one still holds are served within about that; one
front gets the full long poll. The worker polls one front at a time, so it never holds two jobs.
The request queue being unreachable is waited out with backoff (not ready meanwhile), never a crash.
"""

from __future__ import annotations

import dataclasses
import http.client
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from queue_agent import agent, alive, front
from queue_agent.upstream import Outcome, Upstream, failure

log = logging.getLogger("queue_agent.worker")

BATCH_EVERY = 20
"""Interactive jobs in a row, each handed over at once (no 204 between them), before one batch pull goes
first. Any 204 (the request queue had nothing for this worker) starts the count again: the batch gets its
turn then anyway. The forced turn is for sustained saturation only (every `next` finds work waiting, e.g.
at KEDA's maxReplicas), where the batch still gets one generation in BATCH_EVERY + 1. Below saturation a
run of jobs each finding the next already waiting happens by chance, roughly busy-fraction ** N (at 80%
busy, half the runs of 3, about 1% of runs of 20), and each forced turn then delays waiting interactive
requests by a batch generation: `make e2e` (issue 17 item 5, 60% load) measured interactive p95 +0.5 to
+1.3 s over no batch with 3, +0.15 to +0.20 s with 20, the same as with no forced turn at all."""
LONG_POLL_SECONDS = 20.0
"""Without batch: one long poll; well below the request queue's WORKER_TTL_SECONDS (60)."""
SHORT_POLL_SECONDS = 1.0
"""The longest poll at one front while there are several, or while the only one drains: a request waiting at
one front waits at most about this long for a worker parked at another (docs/request-queue.md, "Rollout")."""
BATCH_POLL_SECONDS = 5.0
"""With batch: the long poll after an empty batch pull, so a new batch job waits at most this long."""
BATCH_PULL_SECONDS = 2.0
"""One batch pull's timeout: an interactive request arriving meanwhile waits at most this long."""
INTERRUPT_GRACE_SECONDS = 10.0
"""After /sdapi/v1/interrupt the WebUI stops at its next sampling step and answers; this bounds that
wait, well inside the request queue's margin (30 s) for the worker's report. JOBS_INTERRUPT_GRACE_SECONDS
overrides it (the tests' WebUI that ignores the interrupt)."""
BUSY_POLL_SECONDS = 0.5
"""How often a worker that handed a job back asks its WebUI whether the generation it runs has ended."""
BUSY_WAIT_SECONDS = LONG_POLL_SECONDS
"""The longest a worker waits for its WebUI's generation without calling `next`: a front forgets a worker that has
not polled for WORKER_TTL_SECONDS (60), and with it the browser traffic to its pod. A job handed over when it polls
again while the generation still runs is released again."""
REPORT_SECONDS = 30.0
"""How long a report is retried while the request queue is unreachable (its MARGIN_SECONDS)."""
BACKOFF_SECONDS = front.BACKOFF_SECONDS
"""First and longest wait between attempts to reach the request queue."""


@dataclass(frozen=True)
class Settings:
    front_url: str
    name: str
    own_url: str
    """The address the request queue sends this pod's browser traffic to: http://POD_IP:<WebUI port>."""
    webui_url: str = "http://127.0.0.1:7860"
    webui_auth: str | None = None
    heartbeat: str | None = None
    drain_seconds: float | None = None
    """SIGTERM: how long the job in flight may still run before it is handed back; None: its own timeout."""
    ready_poll_seconds: float = 2.0
    interrupt_grace_seconds: float = INTERRUPT_GRACE_SECONDS


def settings_from(env: dict[str, str]) -> Settings:
    missing = [key for key in ("QUEUE_FRONT_URL", "POD_NAME", "POD_IP") if not env.get(key)]
    if missing:
        raise SystemExit("queue agent: missing environment " + ", ".join(missing))
    numbers: dict[str, float] = {}
    for key in ("JOBS_DRAIN_SECONDS", "JOBS_READY_POLL_SECONDS", "JOBS_INTERRUPT_GRACE_SECONDS"):
        if env.get(key):
            try:
                numbers[key] = float(env[key])
            except ValueError:
                raise SystemExit(f"queue agent: {key}={env[key]!r} is not a number") from None
    webui_url = env.get("SD_API_URL", "http://127.0.0.1:7860")
    return Settings(front_url=env["QUEUE_FRONT_URL"], name=env["POD_NAME"],
                    own_url=f"http://{env['POD_IP']}:{urlsplit(webui_url).port or 7860}",
                    webui_url=webui_url, webui_auth=env.get("SD_API_AUTH") or None,
                    heartbeat=env.get("JOBS_HEARTBEAT") or None,
                    drain_seconds=numbers.get("JOBS_DRAIN_SECONDS"),
                    ready_poll_seconds=numbers.get("JOBS_READY_POLL_SECONDS", 2.0),
                    interrupt_grace_seconds=numbers.get("JOBS_INTERRUPT_GRACE_SECONDS", INTERRUPT_GRACE_SECONDS))


class Worker:
    def __init__(self, settings: Settings, batch: Any = None,
                 resolve: Callable[[], list[tuple[str, int]]] | None = None):
        """`batch`: an agent.Agent whose `try_one` pulls and works one batch job; None without batch.
        `resolve`: the fronts' addresses; None: those QUEUE_FRONT_URL's host name resolves to."""
        self.settings = settings
        self.fronts = front.Fronts(settings.front_url, settings.name, settings.own_url, resolve)
        self.upstream = Upstream(settings.webui_url, settings.webui_auth, settings.interrupt_grace_seconds)
        self.warm_up = agent.Webui(settings.webui_url, settings.webui_auth)
        self.batch = batch
        self.outcomes: dict[str, int] = {"delivered": 0, "client_gone": 0, "interrupted": 0, "timed_out": 0,
                                         "handed_back": 0, "released": 0, "unreported": 0,
                                         "batch": 0}
        self._last_beat = 0.0
        self._polls = 0  # `next` calls started; with _left_after, tells whether one re-registered after DELETE
        self._left_after: int | None = None
        self._count = threading.Lock()
        self._unstopped: threading.Event | None = None  # set when a generation that outlived its interrupt ends

    # --- the loop ------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        leaver = threading.Thread(target=self._leave_on, args=(stop,), name="leave", daemon=True)
        leaver.start()
        try:
            while not stop.is_set():
                if self._wait_for_webui(stop):
                    self._serve(stop)
        finally:
            self._mark_ready(False)
            stop.set()
            leaver.join()
            with self._count:
                rejoined = self._left_after is not None and self._polls > self._left_after
            if rejoined:  # a `next` started just as SIGTERM came: leave once more
                self._leave()

    def _leave_on(self, stop: threading.Event) -> None:
        stop.wait()
        with self._count:
            self._left_after = self._polls
        self._mark_ready(False)
        self._leave()

    def _leave(self) -> None:
        """DELETE at every front: each may have it registered (a front forgets it after its TTL otherwise)."""
        self._tell_every_front("leave", front.Front.leave)

    def _tell_every_front(self, what: str, call: Callable[[front.Front], None]) -> None:
        try:
            fronts = self.fronts.current()
        except front.Unavailable as err:
            log.warning("could not %s: %s", what, err)
            return
        for one in fronts:
            try:
                call(one)
            except front.Unavailable as err:
                log.warning("could not %s at %s: %s", what, one, err)

    def _wait_for_webui(self, stop: threading.Event) -> bool:
        """Until the WebUI answers a warm-up generation (its checkpoint is loaded), or stop. After a generation
        that did not stop when interrupted, first until that call returns: warm-ups sent meanwhile would
        only queue behind it (WebUI's FIFO `queue_lock`: AUTOMATIC1111/stable-diffusion-webui@
        82a973c04367123ae98bd9abdf80d9eda9b910e2 modules/call_queue.py, taken by modules/api/api.py txt2img)."""
        while self._unstopped is not None and not stop.is_set():
            self._beat()
            if self._unstopped.wait(0.05):
                self._unstopped = None
        while not stop.is_set():
            self._beat()
            if self.warm_up.ready():
                log.info("WebUI ready; serving the request queue at %s as %s", self.settings.front_url,
                         self.settings.name)
                return True
            stop.wait(self.settings.ready_poll_seconds)
        return False

    def _serve(self, stop: threading.Event) -> None:
        """Jobs one at a time until stop, or until the WebUI stops answering (then warm up again)."""
        streak = 0  # interactive jobs in a row, each handed over at once
        backoff = BACKOFF_SECONDS[0]
        registered = False  # the first `next` (and the first after an outage) answers at once: ready sooner
        while not stop.is_set():
            self._beat()
            try:
                if self.batch is not None and streak >= BATCH_EVERY:
                    streak = 0
                    if self._try_batch(stop):
                        continue
                handed = self._next(0.0 if self.batch is not None or not registered else LONG_POLL_SECONDS, stop)
                registered = True
                if handed is None and self.batch is not None and not self.fronts.webui_busy():
                    streak = 0
                    if self.upstream.generating():  # a browser's generation no front counted: no batch job now
                        self._wait_while_generating(stop)
                        continue
                    if self._try_batch(stop):
                        continue
                    handed = self._next(BATCH_POLL_SECONDS, stop)
            except front.Unavailable as err:
                registered = False
                self._mark_ready(False)
                log.warning("request queue unavailable, retrying in %.1fs: %s", backoff, err)
                self._beat()
                stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_SECONDS[1])
                continue
            backoff = BACKOFF_SECONDS[0]
            if handed is None:
                streak = 0
                continue
            streak += 1
            if not self._run_job(*handed, stop):
                self._mark_ready(False)
                self._leave()  # no browser traffic to a WebUI that does not answer
                return

    def _next(self, wait: float, stop: threading.Event) -> tuple[front.Front, front.Job] | None:
        """One round of `next`: the job and the front that handed it out, or None when no front had one.
        The only front, not draining, gets the whole `wait`; with several, each gets at most
        SHORT_POLL_SECONDS, one after the other, until stop; a front backing off after it did not answer is
        left out while another is due. Unavailable only when no front polled answered."""
        fronts = self.fronts.in_turn()
        alone = len(fronts) == 1 and not fronts[0].draining
        due = [one for one in fronts if one.due] or fronts  # one that did not answer waits out its back-off
        # A front that relays this pod's browser generation says so (X-Queue-Webui-Busy) and holds `next` till it
        # ends; another front does not see it and would hand a job that waits inside the pod.
        due = [one for one in due if one.webui_busy] or due
        failures = []
        for one in due:
            if stop.is_set():  # leaving: no `next` after the DELETEs at the fronts already polled
                return None
            with self._count:
                self._polls += 1
            try:
                job = one.next(wait if alone else min(wait, SHORT_POLL_SECONDS))
            except front.Unavailable as err:
                failures.append(str(err))
                continue
            self._mark_ready(True)
            if job is not None:
                return one, job
        if len(failures) == len(due):
            raise front.Unavailable("; ".join(failures))
        if failures:
            log.info("polled the other fronts; not answering: %s", "; ".join(failures))
        return None

    def _try_batch(self, stop: threading.Event) -> bool:
        try:
            took = self.batch.try_one(stop, started=self._batch_started)
        except Exception as err:  # noqa: BLE001 - a batch fault must not stop interactive service
            log.error("batch pull failed: %s: %s", type(err).__name__, err)
            return False
        if took:
            self.outcomes["batch"] += 1
        return took

    def _batch_started(self) -> None:
        """Every front counts the worker busy (and keeps it registered) while it runs a batch job."""
        self._tell_every_front("announce a batch job", front.Front.batch_started)

    # --- one job -------------------------------------------------------------------------------

    def _run_job(self, origin: front.Front, job: front.Job, stop: threading.Event) -> bool:
        """Run, watch, report one job at `origin`, the front that handed it out. False when the WebUI did not
        answer at all, or did not stop when interrupted: then the worker leaves until its WebUI is free, so no
        job waits inside the pod."""
        if self.upstream.generating():
            self._hand_back(origin, job)
            self._wait_while_generating(stop)
            return True
        try:
            watch = origin.watch_cancel(job)
        except front.Unavailable as err:
            log.warning("job %s: could not hold its cancel, not running it: %s", job.id, err)
            return True
        answer: dict[str, Any] = {}
        done = threading.Event()

        def call() -> None:
            try:
                answer["outcome"] = self.upstream.forward(job, job.generation_timeout + self.upstream.grace)
            except (OSError, http.client.HTTPException) as err:
                answer["error"] = err
            finally:
                done.set()

        threading.Thread(target=call, name=f"job-{job.id}", daemon=True).start()
        deadline = time.monotonic() + job.generation_timeout
        drain_end = math.inf
        reason = None
        while not done.wait(0.05):
            self._beat()
            now = time.monotonic()
            if watch.cancelled.is_set():
                reason = watch.reason
                break
            if now >= deadline:
                reason = "timeout"
                break
            if stop.is_set() and drain_end == math.inf and self.settings.drain_seconds is not None:
                drain_end = now + self.settings.drain_seconds
            if now >= drain_end:
                # Leaving before it ends: drop `cancel` without a result, and the request queue puts the job
                # back at the head of its buffer for another pod.
                self.upstream.interrupt()
                watch.close()
                self._await(done)
                self.outcomes["handed_back"] += 1
                log.warning("job %s handed back at shutdown", job.id)
                return True
        if reason is not None:
            self.upstream.interrupt()
            self._await(done)
            self.outcomes["timed_out" if reason == "timeout" else "interrupted"] += 1
            log.warning("job %s interrupted: %s", job.id, reason)
        if reason == "timeout":
            outcome = failure(504, f"the generation did not finish within {job.generation_timeout:g}s; "
                                   "it was interrupted")
        elif "outcome" in answer:
            outcome = answer["outcome"]
        elif "error" in answer:
            outcome = failure(502, f"the WebUI did not answer: {answer['error']}")
        else:
            outcome = failure(504, "the WebUI did not stop within the interrupt's grace")
        self._report(origin, job, outcome)
        watch.close()
        if not done.is_set():
            self._unstopped = done
            log.warning("job %s: the WebUI still generates %.3gs after the interrupt; leaving until it ends",
                        job.id, self.upstream.grace)
            return False
        return "error" not in answer

    def _hand_back(self, origin: front.Front, job: front.Job) -> None:
        """Release the job unrun: it would wait inside the pod behind the generation running there, and an
        interrupt on its timeout would stop that generation (WebUI's one global flag)."""
        try:
            origin.release(job)
        except front.Unavailable as err:  # no `cancel` opened: the front hands it back after its margin
            log.warning("job %s: could not release it: %s", job.id, err)
        self.outcomes["released"] += 1
        log.info("job %s released: the WebUI runs another generation", job.id)

    def _wait_while_generating(self, stop: threading.Event) -> None:
        """Called once the WebUI said it generates: no `next` until that generation has ended, stop, or
        BUSY_WAIT_SECONDS. It asks again only after a wait, never twice in a row."""
        end = time.monotonic() + BUSY_WAIT_SECONDS
        while True:
            self._beat()
            if stop.wait(BUSY_POLL_SECONDS) or time.monotonic() >= end or not self.upstream.generating():
                return

    def _await(self, done: threading.Event) -> None:
        """Wait, beating, for the interrupted call to return, so the next job never queues inside the WebUI."""
        end = time.monotonic() + self.upstream.grace
        while not done.wait(0.05) and time.monotonic() < end:
            self._beat()

    def _report(self, origin: front.Front, job: front.Job, outcome: Outcome) -> None:
        end = time.monotonic() + REPORT_SECONDS
        backoff = BACKOFF_SECONDS[0]
        while True:
            try:
                delivered = origin.result(job, outcome.status, outcome.content_type, outcome.body)
                self.outcomes["delivered" if delivered else "client_gone"] += 1
                return
            except front.Unavailable as err:
                if time.monotonic() + backoff > end:
                    self.outcomes["unreported"] += 1
                    log.error("job %s: the result could not be reported: %s", job.id, err)
                    return
                self._beat()
                time.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_SECONDS[1])

    # --- probes --------------------------------------------------------------------------------

    def _beat(self) -> None:
        now = time.time()
        if self.settings.heartbeat and now - self._last_beat >= 1.0:
            alive.beat(self.settings.heartbeat)
            self._last_beat = now

    def _mark_ready(self, ready: bool) -> None:
        if self.settings.heartbeat:
            alive.mark_registered(self.settings.heartbeat, ready)


def batch_agent(batch_settings: agent.Settings) -> agent.Agent:
    """The batch part of the worker: Pub/Sub pulls that give up after BATCH_PULL_SECONDS, results to the bucket."""
    from google.cloud import pubsub_v1, storage

    from queue_agent.results import BucketResults

    batch_settings = dataclasses.replace(batch_settings, pull_timeout_seconds=BATCH_PULL_SECONDS)
    return agent.Agent(batch_settings, pubsub_v1.SubscriberClient(), pubsub_v1.PublisherClient(),
                       BucketResults(storage.Client(), batch_settings.bucket, batch_settings.storage_retry_seconds),
                       agent.Webui(batch_settings.webui_url, batch_settings.webui_auth))


def main(env: dict[str, str], stop: threading.Event, batch_settings: agent.Settings | None) -> int:
    """`python -m queue_agent` with QUEUE_FRONT_URL set; `batch_settings` when the JOBS_* settings are too."""
    settings = settings_from(env)
    batch = batch_agent(batch_settings) if batch_settings is not None else None
    worker = Worker(settings, batch)
    worker.run(stop)
    log.info("stopped: %s%s", worker.outcomes, f", batch {batch.outcomes}" if batch is not None else "")
    return 0
