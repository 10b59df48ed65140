"""The worker across several fronts of the request queue (docs/request-queue.md, "Rollout"): while a rollout
lists two, it polls each briefly in turn, reports every job to the front that handed it out, never holds two
jobs, and leaves every front. The worker's real loop (queue_agent/worker.py) runs in a thread, its fronts
resolved to strict stand-ins of the workers port (tests/fakes/workers_port.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from queue_agent import front, worker

from tests.fakes.workers_port import StrictWorkersPort
from tests.jobs import harness
from tests.jobs.harness import wait_until
from tests.jobs.test_worker import request


@pytest.fixture
def ledger() -> list[tuple[str, str, str]]:
    return []


@pytest.fixture
def two_fronts(ledger) -> Iterator[tuple[StrictWorkersPort, StrictWorkersPort]]:
    with StrictWorkersPort("old", ledger) as old, StrictWorkersPort("new", ledger) as new:
        yield old, new
        assert old.problems == [] and new.problems == [], "requests the workers protocol does not allow"


def at(*ports: StrictWorkersPort) -> Callable[[], list[tuple[str, int]]]:
    """What DNS would answer for the workers' headless Service: these fronts' addresses."""
    return lambda: [("127.0.0.1", port.port) for port in ports]


@contextmanager
def serving(webui, resolve: Callable[[], list[tuple[str, int]]], batch=None) -> Iterator[threading.Event]:
    """The worker's loop (with `batch`, an agent.Agent, its batch part) in a thread until the block ends (or its
    stop event is set), then stopped as on SIGTERM."""
    settings = worker.Settings(front_url=f"http://127.0.0.1:{resolve()[0][1]}", name="webui-0",
                               own_url=webui.url, webui_url=webui.url, webui_auth=harness.AUTH,
                               ready_poll_seconds=0.05)
    loop = worker.Worker(settings, batch, resolve=resolve)
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), name="worker-loop", daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(timeout=60)
        assert not thread.is_alive(), "the worker's loop did not stop"


def polls(port: StrictWorkersPort) -> list[str]:
    return [event for event in port.events("webui-0") if event.startswith("next")]


def test_the_only_front_gets_the_full_long_poll(webui):
    with StrictWorkersPort() as only, serving(webui, at(only)):
        wait_until(lambda: len(polls(only)) >= 2, what="the second poll")
        only.stop()  # ends the long poll, so the worker stops without waiting it out
    assert polls(only) == ["next 0", f"next {worker.LONG_POLL_SECONDS:g}"]


def test_two_fronts_are_each_polled_briefly_in_turn(webui, two_fronts):
    old, new = two_fronts
    with serving(webui, at(old, new)):
        wait_until(lambda: len(polls(old)) >= 3 and len(polls(new)) >= 3, what="three rounds")
    brief = f"next {worker.SHORT_POLL_SECONDS:g}"
    assert polls(old)[1:3] == polls(new)[1:3] == [brief, brief]


def test_while_one_front_says_the_webui_runs_a_browsers_generation_the_other_front_is_not_polled(webui, two_fronts):
    old, new = two_fronts
    new.webui_busy = True  # the browser's socket goes through the new front
    with serving(webui, at(old, new)):
        wait_until(lambda: new.events("webui-0").count("204") >= 2, what="the new front's busy answers")
        job = old.submit(**request("api"))
        polled = len(new.events("webui-0"))
        wait_until(lambda: len(new.events("webui-0")) >= polled + 6, what="three more polls of the new front")
        while_busy = old.events("webui-0")
        new.webui_busy = False
        wait_until(lambda: job in old.results, what="the job, once the browser's generation ended")
    assert f"job {job}" not in while_busy


def test_the_only_front_while_it_drains_is_polled_briefly(webui):
    """DNS may still list only the draining front for a while after the new one is ready."""
    with StrictWorkersPort() as draining:
        draining.draining = True
        with serving(webui, at(draining)):
            wait_until(lambda: len(polls(draining)) >= 3, what="three polls")
    assert polls(draining)[:3] == ["next 0", f"next {worker.SHORT_POLL_SECONDS:g}", f"next {worker.SHORT_POLL_SECONDS:g}"]


def test_jobs_waiting_at_both_fronts_are_served_each_reported_to_the_front_that_handed_it_out(webui, two_fronts):
    old, new = two_fronts
    jobs = {port: [port.submit(**request(f"{port.label} {i}")) for i in range(3)] for port in two_fronts}
    with serving(webui, at(old, new)):
        wait_until(lambda: all(job in port.results for port, ids in jobs.items() for job in ids), what="every result")
    for port, ids in jobs.items():
        assert [port.results[job][0] for job in ids] == [200, 200, 200]
        assert [e for e in port.events("webui-0") if e.startswith("result")] == [f"result {j} 200" for j in ids]
    assert sorted(webui.served[1:]) == sorted(f"{p.label} {i}" for p in two_fronts for i in range(3))


def test_the_worker_polls_no_front_while_it_holds_a_job(webui, two_fronts, ledger):
    old, new = two_fronts
    webui.generation_seconds = 0.05
    for port in two_fronts:
        for i in range(3):
            port.submit(**request(f"{port.label} {i}"))
    with serving(webui, at(old, new)):
        wait_until(lambda: len(old.results) == len(new.results) == 3, what="every result")
    holding = None
    for label, _, event in ledger:
        if event.startswith("job "):
            assert holding is None, f"{event} at {label} while holding {holding}"
            holding = event.split()[1]
        elif event.startswith("next"):
            assert holding is None, f"a poll at {label} while holding {holding}"
        elif event.startswith("result "):
            assert event.split()[1] == holding
            holding = None
    assert webui.max_open_requests == 1


def test_a_front_that_does_not_answer_leaves_the_worker_serving_the_other(webui, ledger):
    with StrictWorkersPort("gone", ledger) as gone, StrictWorkersPort("new", ledger) as new:
        listed = at(gone, new)()
        gone.stop()  # a drained front that DNS still lists
        jobs = [new.submit(**request(f"served {i}")) for i in range(3)]
        with serving(webui, lambda: listed):
            wait_until(lambda: all(job in new.results for job in jobs), what="the jobs at the front that answers")
        assert [new.results[job][0] for job in jobs] == [200, 200, 200] and new.problems == []
        brief = f"next {worker.SHORT_POLL_SECONDS:g}"
        assert set(polls(new)[1:]) <= {brief}, "two fronts listed: brief polls, though one does not answer"


def test_on_stop_the_worker_leaves_every_front(webui, two_fronts):
    old, new = two_fronts
    with serving(webui, at(old, new)):
        wait_until(lambda: polls(old) and polls(new), what="registration at both")
    for port in two_fronts:
        events = port.events("webui-0")
        assert "delete" in events and not [e for e in events[events.index("delete"):] if e.startswith("next")]


def test_once_stopped_the_worker_polls_no_other_front(webui, two_fronts, ledger):
    """It leaves every front at once; the round under way goes no further, so it registers nowhere again."""
    old, new = two_fronts
    brief = f"next {worker.SHORT_POLL_SECONDS:g}"
    first_of_a_round = [("old", "webui-0", "204"), ("old", "webui-0", brief)]  # the last round ended at old
    with serving(webui, at(old, new)) as stop:
        wait_until(lambda: ledger[-2:] == first_of_a_round, what="a round that starts at old")
        stop.set()
        stopped_at = len(ledger)
    assert sorted(ledger[stopped_at:]) == [("new", "webui-0", "delete"), ("old", "webui-0", "204"),
                                          ("old", "webui-0", "delete")]


def test_a_batch_job_waits_for_a_round_in_which_no_front_has_work_and_every_front_counts_it(
        webui, two_fronts, ledger, bucket, queue, settings):
    old, new = two_fronts
    queue.publish("batch-0", {"prompt": "batch 0"})
    interactive = new.submit(**request("interactive"))  # the first round asks old first, which has none
    with serving(webui, at(old, new), batch=worker.batch_agent(settings)):
        wait_until(lambda: bucket.creates[("results", "batch-0/result.json")] and interactive in new.results,
                   what="both results")
    assert [p["prompt"] for p in webui.txt2img_payloads] == ["warm-up", "interactive", "batch 0"]
    assert new.results[interactive][0] == 200
    assert sorted(label for label, _, event in ledger if event == "batch") == ["new", "old"]


# --- the fronts' list ----------------------------------------------------------------------------

@pytest.fixture
def resolved_every_call(monkeypatch):
    monkeypatch.setattr(front, "RESOLVE_SECONDS", 0.0)


def test_each_round_starts_one_front_further(resolved_every_call):
    fronts = front.Fronts("http://queue:8081", "w", "http://10.0.0.9:7860",
                          lambda: [("10.0.0.1", 8081), ("10.0.0.2", 8081)])
    starts = [fronts.in_turn()[0].host for _ in range(3)]
    assert starts == ["10.0.0.1", "10.0.0.2", "10.0.0.1"]


def test_a_front_listed_again_keeps_its_state_and_a_new_one_is_added(resolved_every_call):
    listed = [("10.0.0.1", 8081)]
    fronts = front.Fronts("http://queue:8081", "w", "http://10.0.0.9:7860", lambda: list(listed))
    [old] = fronts.current()
    old.draining = True
    listed.append(("10.0.0.2", 8081))
    again, new = fronts.current()
    assert again is old and again.draining and (new.host, new.draining) == ("10.0.0.2", False)


def test_a_failed_lookup_keeps_the_last_list_and_a_first_one_is_unavailable(resolved_every_call):
    answers: list = [front.Unavailable("queue: cannot resolve")]

    def resolve() -> list[tuple[str, int]]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    fronts = front.Fronts("http://queue:8081", "w", "http://10.0.0.9:7860", resolve)
    with pytest.raises(front.Unavailable, match="cannot resolve"):
        fronts.current()
    answers += [[("10.0.0.1", 8081)], front.Unavailable("queue: cannot resolve")]
    assert [f.host for f in fronts.current()] == [f.host for f in fronts.current()] == ["10.0.0.1"]


def test_a_front_that_did_not_answer_is_not_due_until_its_back_off_has_passed():
    """The worker leaves a front that is not due out of its rounds while another is due (worker._next)."""
    with StrictWorkersPort() as port:
        one = front.Front("127.0.0.1", port.port, "w", "http://127.0.0.1:7860")
        assert one.due
        port.stop()
        with pytest.raises(front.Unavailable, match="ConnectionRefusedError"):
            one.next(0)
        assert not one.due
        port.start()
        wait_until(lambda: one.due, what="the end of its back-off")
        assert one.next(0) is None and one.due


def test_the_host_name_resolves_to_every_address_with_the_port():
    assert ("127.0.0.1", 8081) in front.addresses("http://localhost:8081")
    assert front.addresses("http://127.0.0.1:8081") == [("127.0.0.1", 8081)]


def test_a_front_url_that_is_not_http_host_port_is_refused():
    with pytest.raises(ValueError, match="QUEUE_FRONT_URL='queue:8081': expected http://HOST:PORT"):
        front.Fronts("queue:8081", "w", "http://10.0.0.9:7860")
