"""The buffer in-process, where the point is an instant no process test can aim at: a job handed to a
worker's poll in the same instant that worker vanishes."""

from __future__ import annotations

import asyncio

import pytest


def _job(jobs, tag: str):
    return jobs.Job(id=tag, method="POST", path="/sdapi/v1/txt2img", query="", headers={}, body=b"", arrived=0.0,
                    deadline=60.0, cold=False)


def test_a_job_handed_to_a_poll_whose_worker_vanished_goes_back_to_the_head(service_module):
    buffer_module, jobs = service_module("buffer"), service_module("jobs")

    async def scenario():
        buffer = buffer_module.Buffer(max_depth=10)
        poll = asyncio.create_task(buffer.take(10, asyncio.Event()))
        await asyncio.sleep(0)  # one turn of the loop: the poll is parked
        first, second = _job(jobs, "first"), _job(jobs, "second")
        assert buffer.admit(first) and len(buffer) == 0, "a parked poll takes the job at once"
        assert buffer.admit(second)
        poll.cancel()  # its worker's connection drops before the poll sees the job
        with pytest.raises(asyncio.CancelledError):
            await poll
        return [await buffer.take(0, asyncio.Event()), await buffer.take(0, asyncio.Event())]

    first, second = asyncio.run(scenario())
    assert (first.id, second.id) == ("first", "second")


def test_a_poll_skips_a_job_whose_client_left_after_it_was_handed_over(service_module):
    buffer_module, jobs = service_module("buffer"), service_module("jobs")

    async def scenario():
        buffer = buffer_module.Buffer(max_depth=10)
        poll = asyncio.create_task(buffer.take(0.5, asyncio.Event()))
        await asyncio.sleep(0)
        gone = _job(jobs, "gone")
        buffer.admit(gone)
        gone.move(jobs.State.GONE)
        buffer.admit(_job(jobs, "next"))
        return await poll

    assert asyncio.run(scenario()).id == "next"


def test_a_poll_ends_empty_when_its_worker_leaves_and_a_job_admitted_in_that_instant_stays_first(service_module):
    buffer_module, jobs = service_module("buffer"), service_module("jobs")

    async def scenario():
        buffer = buffer_module.Buffer(max_depth=10)
        left = asyncio.Event()
        poll = asyncio.create_task(buffer.take(60, left))
        await asyncio.sleep(0)  # one turn of the loop: the poll is parked
        buffer.admit(_job(jobs, "first"))  # handed to the parked poll ...
        left.set()  # ... as its worker sends DELETE, before the poll sees the job
        buffer.admit(_job(jobs, "second"))
        return await poll, await buffer.take(0, asyncio.Event()), len(buffer)

    handed, head, still_waiting = asyncio.run(scenario())
    assert handed is None
    assert (head.id, still_waiting) == ("first", 1)


def test_a_poll_that_no_job_reaches_returns_none_after_its_wait(service_module):
    buffer_module = service_module("buffer")

    async def scenario():
        buffer = buffer_module.Buffer(max_depth=10)
        return await buffer.take(0.01, asyncio.Event()), len(buffer)

    assert asyncio.run(scenario()) == (None, 0)
