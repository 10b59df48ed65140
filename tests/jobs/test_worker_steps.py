"""The worker's job path, step by step, in-process: which front it polls and for how long, how one job is run,
interrupted, handed back or reported, and what an operator reads in the log.

test_worker.py and test_worker_fronts.py run the worker as a process against the strict stand-in of the
workers port and show the protocol holds end to end; these pin down the details a process hides. The stand-ins
bind every call to the real `front.Front` and `upstream.Upstream` method signatures, and answer as the
protocol says (docs/request-queue.md, "The worker's loop")."""

from __future__ import annotations

import inspect
import logging
import threading

import pytest
from queue_agent import front, upstream, worker

JOB = front.Job(id="job-1", method="POST", path="/sdapi/v1/txt2img", query="", headers=[], body=b"{}",
                generation_timeout=5.0)
DONE = upstream.Outcome(200, "application/json", b'{"images": []}')


def bound(cls: type, name: str, *args, **kwargs) -> None:
    inspect.signature(getattr(cls, name)).bind(None, *args, **kwargs)


class Watch:
    """A held `cancel`: `cancel(reason)` is the request queue answering with a reason."""

    def __init__(self):
        self.cancelled, self.reason, self.closed = threading.Event(), None, 0

    def cancel(self, reason: str) -> None:
        self.reason = reason
        self.cancelled.set()

    def close(self) -> None:
        self.closed += 1


class Front:
    """One front: `jobs` are what its `next` calls answer in turn (a Job, None, or an exception raised);
    `results` likewise for `result` (True: the client still waits, False: it is gone)."""

    def __init__(self, name: str, jobs=(), results=(True,), draining=False, webui_busy=False, due=True,
                 release_error: Exception | None = None, watch_error: Exception | None = None):
        self.name, self.jobs, self.results = name, list(jobs), list(results)
        self.draining, self.webui_busy, self.due = draining, webui_busy, due
        self.release_error, self.watch_error = release_error, watch_error
        self.calls: list[tuple] = []
        self.watch = Watch()

    def __repr__(self) -> str:
        return f"front {self.name}"

    def next(self, *args, **kwargs):
        bound(front.Front, "next", *args, **kwargs)
        self.calls.append(("next", *args))
        answer = self.jobs.pop(0) if self.jobs else None
        if isinstance(answer, Exception):
            raise answer
        return answer

    def watch_cancel(self, *args, **kwargs) -> Watch:
        bound(front.Front, "watch_cancel", *args, **kwargs)
        self.calls.append(("watch_cancel", args[0].id))
        if self.watch_error:
            raise self.watch_error
        return self.watch

    def result(self, *args, **kwargs) -> bool:
        bound(front.Front, "result", *args, **kwargs)
        job, status, content_type, body = args
        self.calls.append(("result", job.id, status, content_type, body))
        answer = self.results.pop(0) if len(self.results) > 1 else self.results[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def release(self, *args, **kwargs) -> bool:
        bound(front.Front, "release", *args, **kwargs)
        self.calls.append(("release", args[0].id))
        if self.release_error:
            raise self.release_error
        return True

    def leave(self) -> None:
        self.calls.append(("leave",))

    def called(self, name: str) -> list[tuple]:
        return [call for call in self.calls if call[0] == name]


class Fronts:
    def __init__(self, *fronts: Front):
        self.fronts = list(fronts)

    def in_turn(self) -> list[Front]:
        return list(self.fronts)

    def current(self) -> list[Front]:
        return list(self.fronts)


class Webui:
    """The WebUI beside the worker: `forward` answers `outcome` (or raises `error`) once `finish` is set, which
    `interrupt` does unless `obeys` is False; `generating` answers from `busy` in turn, then False."""

    def __init__(self, outcome=DONE, error: Exception | None = None, finish=True, obeys=True, busy=(),
                 grace=0.3):
        self.outcome, self.error, self.obeys, self.busy, self.grace = outcome, error, obeys, list(busy), grace
        self.finish = threading.Event()
        if finish:
            self.finish.set()
        self.forwarded: list[tuple[str, float]] = []
        self.threads: list[threading.Thread] = []
        self.interrupts = 0
        self.ended = threading.Event()

    def forward(self, *args, **kwargs):
        bound(upstream.Upstream, "forward", *args, **kwargs)
        job, timeout = args
        self.forwarded.append((job.id, timeout))
        self.threads.append(threading.current_thread())
        try:
            self.finish.wait(5)
            if self.error:
                raise self.error
            return self.outcome
        finally:
            self.ended.set()

    def generating(self) -> bool:
        return self.busy.pop(0) if self.busy else False

    def interrupt(self) -> None:
        self.interrupts += 1
        if self.obeys:
            self.finish.set()


def new_worker(*fronts: Front, webui: Webui | None = None, tmp_path=None, **overrides) -> worker.Worker:
    settings = worker.Settings(front_url="http://request-queue:8081", name="webui-0", own_url="http://10.0.0.7:7860",
                               heartbeat=str(tmp_path / "heartbeat") if tmp_path else None, **overrides)
    one = worker.Worker(settings, resolve=lambda: [("10.1.0.1", 8081)])
    one.fronts = Fronts(*fronts)
    one.upstream = webui or Webui()
    return one


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(worker, "BUSY_POLL_SECONDS", 0.01)


def job(timeout: float = 5.0, job_id: str = "job-1") -> front.Job:
    return front.Job(**{**JOB.__dict__, "generation_timeout": timeout, "id": job_id})


# --- one job -------------------------------------------------------------------------------------


def test_a_job_is_forwarded_with_its_timeout_plus_the_interrupt_grace():
    webui = Webui(grace=0.3)
    new_worker(webui=webui)._run_job(Front("a"), job(timeout=5.0), threading.Event())
    assert webui.forwarded == [("job-1", 5.3)]


def test_a_job_runs_in_a_daemon_thread_named_for_it_so_a_webui_that_never_answers_cannot_hold_the_exit():
    webui = Webui()
    new_worker(webui=webui)._run_job(Front("a"), JOB, threading.Event())
    assert [(thread.name, thread.daemon) for thread in webui.threads] == [("job-job-1", True)]


def test_a_job_is_run_only_once_its_cancel_is_held_at_the_front_that_handed_it_out():
    origin = Front("a")
    new_worker()._run_job(origin, JOB, threading.Event())
    assert [call[0] for call in origin.calls] == ["watch_cancel", "result"]


def test_the_webuis_answer_is_reported_to_the_front_that_handed_the_job_out():
    origin = Front("a")
    assert new_worker()._run_job(origin, JOB, threading.Event()) is True
    assert origin.called("result") == [("result", "job-1", 200, "application/json", b'{"images": []}')]


def test_the_cancel_is_closed_once_the_result_is_reported():
    origin = Front("a")
    new_worker()._run_job(origin, JOB, threading.Event())
    assert origin.watch.closed == 1


def test_a_delivered_result_is_counted_delivered():
    one = new_worker()
    one._run_job(Front("a"), JOB, threading.Event())
    assert one.outcomes["delivered"] == 1 and one.outcomes["client_gone"] == 0


def test_a_result_whose_client_has_gone_is_counted_client_gone():
    one = new_worker()
    one._run_job(Front("a", results=(False,)), JOB, threading.Event())
    assert one.outcomes["client_gone"] == 1 and one.outcomes["delivered"] == 0


def test_a_job_whose_cancel_cannot_be_held_is_not_run(caplog):
    webui = Webui()
    origin = Front("a", watch_error=front.Unavailable("GET cancel: refused"))
    assert new_worker(webui=webui)._run_job(origin, JOB, threading.Event()) is True
    assert webui.forwarded == [] and origin.called("result") == []
    assert "job job-1: could not hold its cancel, not running it: GET cancel: refused" in caplog.messages


def test_a_job_handed_over_while_the_webui_generates_is_released_unrun():
    webui, origin = Webui(busy=(True, True, False)), Front("a")
    one = new_worker(webui=webui)
    assert one._run_job(origin, JOB, threading.Event()) is True
    assert origin.calls == [("release", "job-1")] and webui.forwarded == []
    assert one.outcomes["released"] == 1


def test_after_releasing_a_job_the_worker_waits_until_the_webuis_generation_has_ended():
    webui = Webui(busy=(True, True, True, False))
    new_worker(webui=webui)._run_job(Front("a"), JOB, threading.Event())
    assert webui.busy == []


def test_a_release_the_front_does_not_answer_is_logged_and_still_counted(caplog):
    caplog.set_level(logging.INFO, "queue_agent.worker")
    one = new_worker(webui=Webui(busy=(True,)))
    one._run_job(Front("a", release_error=front.Unavailable("POST release: reset")), JOB, threading.Event())
    assert one.outcomes["released"] == 1
    assert "job job-1: could not release it: POST release: reset" in caplog.messages
    assert "job job-1 released: the WebUI runs another generation" in caplog.messages


def test_a_cancelled_job_is_interrupted_and_what_the_webui_answered_is_reported(caplog):
    webui, origin = Webui(finish=False), Front("a")
    one = new_worker(webui=webui)
    threading.Timer(0.1, origin.watch.cancel, args=("client disconnected",)).start()
    assert one._run_job(origin, JOB, threading.Event()) is True
    assert webui.interrupts == 1 and one.outcomes["interrupted"] == 1 and one.outcomes["timed_out"] == 0
    assert origin.called("result") == [("result", "job-1", 200, "application/json", b'{"images": []}')]
    assert "job job-1 interrupted: client disconnected" in caplog.messages


def test_a_job_past_its_generation_timeout_is_interrupted_and_answered_504():
    webui, origin = Webui(finish=False), Front("a")
    one = new_worker(webui=webui)
    assert one._run_job(origin, job(timeout=0.2), threading.Event()) is True
    assert webui.interrupts == 1 and one.outcomes["timed_out"] == 1 and one.outcomes["interrupted"] == 0
    assert origin.called("result") == [("result", "job-1", 504, "application/json",
                                        b'{"detail": "the generation did not finish within 0.2s; it was interrupted"}')]


def test_a_job_is_not_interrupted_before_its_generation_timeout():
    webui = Webui(finish=False)
    threading.Timer(0.3, webui.finish.set).start()
    one = new_worker(webui=webui)
    one._run_job(Front("a"), job(timeout=2.0), threading.Event())
    assert webui.interrupts == 0 and one.outcomes["delivered"] == 1


def test_a_webui_that_does_not_answer_is_reported_502_and_the_worker_stops_serving():
    origin = Front("a")
    one = new_worker(webui=Webui(error=ConnectionRefusedError(111, "Connection refused")))
    assert one._run_job(origin, JOB, threading.Event()) is False
    assert origin.called("result") == [("result", "job-1", 502, "application/json",
                                        b'{"detail": "the WebUI did not answer: [Errno 111] Connection refused"}')]


def test_a_webui_that_ignores_the_interrupt_is_reported_504_and_the_worker_leaves_until_it_ends(caplog):
    webui, origin = Webui(finish=False, obeys=False, grace=0.2), Front("a")
    one = new_worker(webui=webui)
    assert one._run_job(origin, job(timeout=0.1), threading.Event()) is False
    assert origin.called("result")[0][2] == 504
    assert one._unstopped is not None and not one._unstopped.is_set()
    assert "job job-1: the WebUI still generates 0.2s after the interrupt; leaving until it ends" in caplog.messages
    webui.finish.set()
    assert one._unstopped.wait(5)


def test_a_cancelled_job_whose_webui_ignores_the_interrupt_is_reported_504_for_that():
    webui, origin = Webui(finish=False, obeys=False, grace=0.2), Front("a")
    threading.Timer(0.1, origin.watch.cancel, args=("client disconnected",)).start()
    assert new_worker(webui=webui)._run_job(origin, JOB, threading.Event()) is False
    assert origin.called("result") == [("result", "job-1", 504, "application/json",
                                        b'{"detail": "the WebUI did not stop within the interrupt\'s grace"}')]
    webui.finish.set()


def test_a_job_that_stops_after_the_interrupts_grace_began_is_not_reported_as_ignoring_it():
    webui = Webui(finish=False, obeys=False, grace=1.0)
    threading.Timer(0.3, webui.finish.set).start()
    one = new_worker(webui=webui)
    assert one._run_job(Front("a"), job(timeout=0.1), threading.Event()) is True
    assert one._unstopped is None


def test_at_shutdown_a_job_still_running_past_the_drain_is_handed_back_unreported(caplog):
    webui, origin = Webui(finish=False), Front("a")
    stop = threading.Event()
    stop.set()
    one = new_worker(webui=webui, drain_seconds=0.1)
    assert one._run_job(origin, JOB, stop) is True
    assert webui.interrupts == 1 and origin.watch.closed == 1 and origin.called("result") == []
    assert one.outcomes["handed_back"] == 1
    assert "job job-1 handed back at shutdown" in caplog.messages


def test_every_job_handed_back_at_shutdown_is_counted():
    stop = threading.Event()
    stop.set()
    one = new_worker(drain_seconds=0.05)
    for job_id in ("job-1", "job-2"):
        one.upstream = Webui(finish=False)
        one._run_job(Front("a"), job(job_id=job_id), stop)
    assert one.outcomes["handed_back"] == 2


def test_at_shutdown_a_job_within_the_drain_is_finished_and_reported():
    webui, origin = Webui(finish=False), Front("a")
    threading.Timer(0.2, webui.finish.set).start()
    stop = threading.Event()
    stop.set()
    one = new_worker(webui=webui, drain_seconds=3.0)
    one._run_job(origin, JOB, stop)
    assert webui.interrupts == 0 and one.outcomes["delivered"] == 1


def test_at_shutdown_without_a_drain_a_job_runs_to_its_own_end():
    webui, origin = Webui(finish=False), Front("a")
    threading.Timer(0.3, webui.finish.set).start()
    stop = threading.Event()
    stop.set()
    one = new_worker(webui=webui)
    one._run_job(origin, job(timeout=2.0), stop)
    assert webui.interrupts == 0 and one.outcomes["delivered"] == 1 and one.outcomes["handed_back"] == 0


def cancelled_soon(origin: Front) -> Front:
    threading.Timer(0.05, origin.watch.cancel, args=("client disconnected",)).start()
    return origin


@pytest.mark.parametrize(("outcome", "webui", "origin", "timeout"), [
    ("delivered", lambda: Webui(), lambda: Front("a"), 5.0),
    ("client_gone", lambda: Webui(), lambda: Front("a", results=(False,)), 5.0),
    ("released", lambda: Webui(busy=(True,)), lambda: Front("a"), 5.0),
    ("interrupted", lambda: Webui(finish=False), lambda: cancelled_soon(Front("a")), 5.0),
    ("timed_out", lambda: Webui(finish=False), lambda: Front("a"), 0.05),
])
def test_each_outcome_is_counted_once_per_job(outcome, webui, origin, timeout):
    one = new_worker()
    for job_id in ("job-1", "job-2"):
        one.upstream = webui()
        one._run_job(origin(), job(timeout=timeout, job_id=job_id), threading.Event())
    assert one.outcomes[outcome] == 2


# --- the report ----------------------------------------------------------------------------------


class Clock:
    """time.monotonic and time.sleep for the report's retries: sleeping advances the clock."""

    def __init__(self):
        self.now, self.sleeps = 100.0, []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(worker, "time", fake)
    return fake


def test_a_report_the_front_does_not_answer_is_retried_with_doubling_backoff(clock):
    down = front.Unavailable("POST result: reset")
    origin = Front("a", results=(down, down, down, down, down, True))
    one = new_worker()
    one._report(origin, JOB, DONE)
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 5.0]
    assert one.outcomes["delivered"] == 1


def test_a_report_is_given_up_once_another_wait_would_pass_the_request_queues_margin(clock, caplog):
    origin = Front("a", results=(front.Unavailable("POST result: refused"),))
    one = new_worker()
    one._report(origin, JOB, DONE)
    assert sum(clock.sleeps) <= worker.REPORT_SECONDS < sum(clock.sleeps) + 5.0
    assert one.outcomes["unreported"] == 1 and one.outcomes["delivered"] == 0
    assert "job job-1: the result could not be reported: POST result: refused" in caplog.messages


def test_a_wait_that_ends_exactly_at_the_margin_is_still_taken(clock, monkeypatch):
    monkeypatch.setattr(worker, "REPORT_SECONDS", 7.5)
    new_worker()._report(Front("a", results=(front.Unavailable("POST result: refused"),)), JOB, DONE)
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0]


def test_every_unreported_result_is_counted(clock):
    one = new_worker()
    for _ in range(2):
        one._report(Front("a", results=(front.Unavailable("POST result: refused"),)), JOB, DONE)
    assert one.outcomes["unreported"] == 2


def test_a_report_answered_at_once_is_not_retried(clock):
    one = new_worker()
    one._report(Front("a"), JOB, DONE)
    assert clock.sleeps == []


# --- polling ---------------------------------------------------------------------------------------


def test_the_only_front_gets_the_whole_wait():
    alone = Front("a")
    new_worker(alone)._next(20.0, threading.Event())
    assert alone.called("next") == [("next", 20.0)]


def test_a_draining_only_front_gets_a_short_poll():
    alone = Front("a", draining=True)
    new_worker(alone)._next(20.0, threading.Event())
    assert alone.called("next") == [("next", worker.SHORT_POLL_SECONDS)]


def test_with_two_fronts_each_gets_a_short_poll_in_turn():
    first, second = Front("a"), Front("b")
    new_worker(first, second)._next(20.0, threading.Event())
    assert first.called("next") == second.called("next") == [("next", worker.SHORT_POLL_SECONDS)]


def test_a_wait_shorter_than_a_short_poll_is_kept_with_two_fronts():
    first, second = Front("a"), Front("b")
    new_worker(first, second)._next(0.0, threading.Event())
    assert first.called("next") == second.called("next") == [("next", 0.0)]


def test_the_first_front_with_a_job_hands_it_out_and_the_rest_are_not_polled():
    first, second = Front("a", jobs=(JOB,)), Front("b")
    assert new_worker(first, second)._next(20.0, threading.Event()) == (first, JOB)
    assert second.calls == []


def test_no_job_at_any_front_is_none():
    assert new_worker(Front("a"), Front("b"))._next(1.0, threading.Event()) is None


def test_a_front_backing_off_is_left_out_while_another_is_due():
    resting, due = Front("a", due=False), Front("b")
    new_worker(resting, due)._next(1.0, threading.Event())
    assert resting.calls == [] and len(due.called("next")) == 1


def test_when_no_front_is_due_every_front_is_polled():
    first, second = Front("a", due=False), Front("b", due=False)
    new_worker(first, second)._next(1.0, threading.Event())
    assert len(first.called("next")) == len(second.called("next")) == 1


def test_a_front_relaying_this_pods_browser_generation_is_the_only_one_polled():
    other, relaying = Front("a"), Front("b", webui_busy=True)
    new_worker(other, relaying)._next(1.0, threading.Event())
    assert other.calls == [] and len(relaying.called("next")) == 1


def test_no_front_is_polled_once_stop_is_set():
    alone = Front("a")
    stop = threading.Event()
    stop.set()
    one = new_worker(alone)
    assert one._next(20.0, stop) is None
    assert alone.calls == [] and one._polls == 0


def test_every_next_started_is_counted():
    one = new_worker(Front("a"), Front("b"))
    one._next(1.0, threading.Event())
    assert one._polls == 2


def test_when_no_front_answers_the_request_queue_is_unavailable_naming_every_failure():
    first = Front("a", jobs=(front.Unavailable("a: refused"),))
    second = Front("b", jobs=(front.Unavailable("b: reset"),))
    with pytest.raises(front.Unavailable, match=r"^a: refused; b: reset$"):
        new_worker(first, second)._next(1.0, threading.Event())


def test_a_front_that_does_not_answer_beside_one_that_does_is_logged_not_raised(caplog):
    caplog.set_level(logging.INFO, "queue_agent.worker")
    first, second = Front("a", jobs=(front.Unavailable("a: refused"),)), Front("b", jobs=(front.Unavailable("b: reset"),))
    assert new_worker(first, second, Front("c"))._next(1.0, threading.Event()) is None
    assert "polled the other fronts; not answering: a: refused; b: reset" in caplog.messages


def test_an_answered_next_marks_the_worker_registered(tmp_path):
    new_worker(Front("a"), tmp_path=tmp_path)._next(1.0, threading.Event())
    assert (tmp_path / "heartbeat.registered").exists()


def test_a_next_no_front_answered_does_not_mark_the_worker_registered(tmp_path):
    with pytest.raises(front.Unavailable):
        new_worker(Front("a", jobs=(front.Unavailable("a: refused"),)), tmp_path=tmp_path)._next(
            1.0, threading.Event())
    assert not (tmp_path / "heartbeat.registered").exists()
