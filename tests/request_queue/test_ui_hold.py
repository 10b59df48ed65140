"""A worker's `next` while its pod runs a browser's generation, in-process, where the point is an instant no
process test can aim at (the generation starting while the poll is parked) or a bound no test should wait
for (UI_HOLD_SECONDS)."""

from __future__ import annotations

import asyncio


def _job(jobs, tag: str):
    return jobs.Job(id=tag, method="POST", path="/sdapi/v1/txt2img", query="", headers={}, body=b"", arrived=0.0,
                    deadline=60.0, cold=False)


def test_a_parked_poll_lets_go_when_its_pod_starts_a_browsers_generation_and_takes_the_job_once_it_ends(
        service_module):
    buffer_module, jobs, ui_events, workers = (service_module(name) for name in ("buffer", "jobs", "ui_events",
                                                                                 "workers"))

    async def scenario():
        buffer = buffer_module.Buffer(max_depth=10)
        worker = workers.Worker("pod-a", "http://10.0.0.1:7860", 0.0)
        poll = asyncio.create_task(ui_events.take_when_free(buffer, worker, 10))
        await asyncio.sleep(0)  # one turn of the loop: the poll is parked
        worker.ui_event_started()
        buffer.admit(_job(jobs, "api"))  # handed to the parked poll in that same instant, or left waiting
        async with asyncio.timeout(5):
            while len(buffer) == 0 and not poll.done():
                await asyncio.sleep(0)
        waiting_while_busy = (len(buffer), poll.done())
        worker.ui_event_ended()
        return waiting_while_busy, await poll

    waiting_while_busy, job = asyncio.run(scenario())
    assert waiting_while_busy == (1, False)
    assert job.id == "api"


def test_a_poll_held_past_its_wait_and_the_hold_answers_none_and_leaves_the_job_first_in_line(service_module,
                                                                                              monkeypatch):
    buffer_module, jobs, ui_events, workers = (service_module(name) for name in ("buffer", "jobs", "ui_events",
                                                                                 "workers"))
    monkeypatch.setattr(ui_events, "UI_HOLD_SECONDS", 0.01)

    async def scenario():
        buffer = buffer_module.Buffer(max_depth=10)
        worker = workers.Worker("pod-a", "http://10.0.0.1:7860", 0.0)
        worker.ui_event_started()
        buffer.admit(_job(jobs, "api"))
        return await ui_events.take_when_free(buffer, worker, 0), len(buffer)

    assert asyncio.run(scenario()) == (None, 1)


def test_a_poll_held_for_a_browsers_event_answers_none_at_once_when_the_front_starts_draining(service_module):
    buffer_module, jobs, ui_events, workers = (service_module(name) for name in ("buffer", "jobs", "ui_events",
                                                                                 "workers"))

    async def scenario():
        buffer = buffer_module.Buffer(max_depth=10)
        worker = workers.Worker("pod-a", "http://10.0.0.1:7860", 0.0)
        worker.ui_event_started()
        poll = asyncio.create_task(ui_events.take_when_free(buffer, worker, 10))
        await asyncio.sleep(0)  # one turn of the loop: the poll is held
        held = not poll.done()
        buffer.release_polls()  # the front drains (app.py, on SIGTERM)
        async with asyncio.timeout(5):  # a guard, not a measure: unfixed, the hold lasts 10 + UI_HOLD_SECONDS
            return held, await poll

    assert asyncio.run(scenario()) == (True, None)
