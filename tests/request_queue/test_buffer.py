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
        poll = asyncio.create_task(buffer.take(10))
        await asyncio.sleep(0)  # one turn of the loop: the poll is parked
        first, second = _job(jobs, "first"), _job(jobs, "second")
        assert buffer.admit(first) and len(buffer) == 0, "a parked poll takes the job at once"
        assert buffer.admit(second)
        poll.cancel()  # its worker's connection drops before the poll sees the job
        with pytest.raises(asyncio.CancelledError):
            await poll
        return [await buffer.take(0), await buffer.take(0)]

    first, second = asyncio.run(scenario())
    assert (first.id, second.id) == ("first", "second")


def test_a_poll_skips_a_job_whose_client_left_after_it_was_handed_over(service_module):
    buffer_module, jobs = service_module("buffer"), service_module("jobs")

    async def scenario():
        buffer = buffer_module.Buffer(max_depth=10)
        poll = asyncio.create_task(buffer.take(0.5))
        await asyncio.sleep(0)
        gone = _job(jobs, "gone")
        buffer.admit(gone)
        gone.move(jobs.State.GONE)
        buffer.admit(_job(jobs, "next"))
        return await poll

    assert asyncio.run(scenario()).id == "next"


def test_a_poll_that_no_job_reaches_returns_none_after_its_wait(service_module):
    buffer_module = service_module("buffer")

    async def scenario():
        buffer = buffer_module.Buffer(max_depth=10)
        return await buffer.take(0.01), len(buffer)

    assert asyncio.run(scenario()) == (None, 0)


def test_a_job_handed_to_a_poll_in_the_instant_its_wait_ends_is_returned_not_lost(service_module, monkeypatch):
    """The poll's timeout and the admission fire in one turn of the loop: the job is already the poll's."""
    buffer_module, jobs = service_module("buffer"), service_module("jobs")
    timeouts = []
    real_timeout = asyncio.timeout

    def recorded_timeout(delay):
        timeouts.append(real_timeout(delay))
        return timeouts[-1]

    monkeypatch.setattr(asyncio, "timeout", recorded_timeout)

    async def scenario():
        buffer = buffer_module.Buffer(max_depth=10)
        poll = asyncio.create_task(buffer.take(0.05))
        await asyncio.sleep(0)  # one turn of the loop: the poll is parked, its timeout set
        job = _job(jobs, "at-the-deadline")
        asyncio.get_running_loop().call_at(timeouts[0].when(), buffer.admit, job)
        return await poll, len(buffer)

    taken, left = asyncio.run(scenario())
    assert (taken.id, left) == ("at-the-deadline", 0)
