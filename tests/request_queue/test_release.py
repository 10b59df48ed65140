"""`release`: a worker whose WebUI turns out to be busy (a generation no front counted) hands its job back unrun;
the job goes first in line while its client waits, and the worker is free (docs/request-queue.md, "Workers")."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.fakes.queue_worker import StandInWorker
from tests.request_queue.conftest import AUTH, run_async
from tests.request_queue.helpers import txt2img, until_demand

NOWHERE = "http://127.0.0.1:9"


async def _leave(client: asyncio.Task) -> None:
    """The client disconnects before the test ends."""
    client.cancel()
    await asyncio.gather(client, return_exceptions=True)


@run_async
async def test_a_released_job_goes_back_first_in_line_and_its_client_gets_the_result_from_another_worker(
        start_queue):
    queue = start_queue(SD_API_AUTH=AUTH)
    async with aiohttp.ClientSession() as session:
        first = asyncio.create_task(txt2img(session, queue.url, "first"))
        await until_demand(session, queue.workers_url, waiting=1)
        second = asyncio.create_task(txt2img(session, queue.url, "second"))
        await until_demand(session, queue.workers_url, waiting=2)
        busy_pod = StandInWorker(session, queue.workers_url, "pod-a", NOWHERE)
        job = await busy_pod.poll()
        assert await busy_pod.release(job) == 204
        await until_demand(session, queue.workers_url, waiting=2, busy=0, workers=1)
        other = StandInWorker(session, queue.workers_url, "pod-b", NOWHERE)
        again = await other.poll()
        assert (again["id"], again["headers"]["X-Loadtest-Request"]) == (job["id"], "first")
        assert await other.post_result(again, 200, b"{}") == 204
        assert (await first)[0] == 200
        await _leave(second)


@run_async
async def test_a_worker_that_released_its_job_counts_idle(start_queue):
    queue = start_queue(SD_API_AUTH=AUTH)
    async with aiohttp.ClientSession() as session:
        client = asyncio.create_task(txt2img(session, queue.url, "only"))
        worker = StandInWorker(session, queue.workers_url, "pod-a", NOWHERE)
        job = await worker.poll(wait=10)
        await until_demand(session, queue.workers_url, busy=1, waiting=0)
        await worker.release(job)
        await until_demand(session, queue.workers_url, busy=0, idle=1, waiting=1)
        await _leave(client)


@run_async
async def test_releasing_a_job_not_in_flight_at_that_worker_answers_410(start_queue):
    queue = start_queue(SD_API_AUTH=AUTH)
    async with aiohttp.ClientSession() as session:
        client = asyncio.create_task(txt2img(session, queue.url, "only"))
        holder = StandInWorker(session, queue.workers_url, "pod-a", NOWHERE)
        job = await holder.poll(wait=10)
        stranger = StandInWorker(session, queue.workers_url, "pod-b", NOWHERE)
        assert await stranger.release(job) == 410
        assert await holder.release({"id": "no-such-job"}) == 410
        assert await holder.release(job) == 204
        assert await holder.release(job) == 410
        await _leave(client)
