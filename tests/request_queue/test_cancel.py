"""No GPU time for a request nobody waits for: a client gone is dropped or its generation interrupted, and a
worker that vanishes hands its job back."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.fakes.queue_worker import StandInWorker
from tests.request_queue.conftest import AUTH, run_async
from tests.request_queue.helpers import txt2img, until_demand

NOWHERE = "http://127.0.0.1:9"


@run_async
async def test_a_client_gone_while_waiting_is_dropped_from_the_buffer(start_queue):
    queue = start_queue(SD_API_AUTH=AUTH)
    async with aiohttp.ClientSession() as session:
        client = asyncio.create_task(txt2img(session, queue.url, "leaver"))
        await until_demand(session, queue.workers_url, waiting=1)
        client.cancel()
        await until_demand(session, queue.workers_url, waiting=0)
        assert await StandInWorker(session, queue.workers_url, "pod-a", NOWHERE).poll() is None


@run_async
async def test_a_client_gone_while_its_job_runs_is_cancelled_with_client_gone(start_queue):
    queue = start_queue(SD_API_AUTH=AUTH)
    async with aiohttp.ClientSession() as session:
        client = asyncio.create_task(txt2img(session, queue.url, "leaver"))
        worker = StandInWorker(session, queue.workers_url, "pod-a", NOWHERE)
        job = await worker.poll(wait=10)
        held = worker.hold_cancel(job)
        await until_demand(session, queue.workers_url, busy=1)
        client.cancel()
        assert await held == (200, "client gone")
        assert await worker.post_result(job, 200, b"{}") == 410


@run_async
async def test_a_job_without_a_result_within_the_result_wait_is_cancelled_as_expired(start_queue):
    # result wait = GENERATION_TIMEOUT_SECONDS + 2 x MARGIN_SECONDS (components/timeouts.py): 3 s here; the
    # margin is also how long the worker has to open `cancel`
    queue = start_queue(SD_API_AUTH=AUTH, GENERATION_TIMEOUT_SECONDS="1", MARGIN_SECONDS="1")
    async with aiohttp.ClientSession() as session:
        client = asyncio.create_task(txt2img(session, queue.url, "stuck"))
        worker = StandInWorker(session, queue.workers_url, "pod-a", NOWHERE)
        job = await worker.poll(wait=10)
        assert await worker.hold_cancel(job) == (200, "expired")
        status, _, _ = await client
    assert status == 504


@run_async
async def test_a_worker_that_vanishes_puts_its_job_back_at_the_head(start_queue):
    queue = start_queue(SD_API_AUTH=AUTH)
    async with aiohttp.ClientSession() as session:
        clients = [asyncio.create_task(txt2img(session, queue.url, tag)) for tag in ("first",)]
        await until_demand(session, queue.workers_url, waiting=1)
        clients.append(asyncio.create_task(txt2img(session, queue.url, "second")))
        await until_demand(session, queue.workers_url, waiting=2)
        async with aiohttp.ClientSession() as doomed_session:
            doomed = StandInWorker(doomed_session, queue.workers_url, "pod-a", NOWHERE)
            job = await doomed.poll()
            held = doomed.hold_cancel(job)
            await until_demand(session, queue.workers_url, busy=1, waiting=1)
            held.cancel()  # its connection drops: the pod died
        await until_demand(session, queue.workers_url, waiting=2, workers=0)
        survivor = StandInWorker(session, queue.workers_url, "pod-b", NOWHERE)
        again = await survivor.poll()
        assert (again["id"], again["headers"]["X-Loadtest-Request"]) == (job["id"], "first")
        await survivor.post_result(again, 200, b"{}")
        second = await survivor.poll()
        await survivor.post_result(second, 200, b"{}")
        assert [status for status, _, _ in await asyncio.gather(*clients)] == [200, 200]


@run_async
async def test_a_job_whose_worker_opens_no_cancel_within_the_margin_goes_to_another_worker(start_queue):
    # the result wait (G + 2 x margin) is 30.4 s here; the other worker's poll gives up after 10 s
    queue = start_queue(SD_API_AUTH=AUTH, MARGIN_SECONDS="0.2")
    async with aiohttp.ClientSession() as session:
        client = asyncio.create_task(txt2img(session, queue.url, "orphan"))
        silent = StandInWorker(session, queue.workers_url, "pod-a", NOWHERE)
        job = await silent.poll(wait=10)  # it dies, or this answer is lost, before it opens `cancel`
        survivor = StandInWorker(session, queue.workers_url, "pod-b", NOWHERE)
        again = await survivor.poll(wait=10)
        assert again is not None and again["id"] == job["id"]
        await survivor.post_result(again, 200, b"{}")
        assert (await client)[0] == 200


@run_async
async def test_a_worker_that_vanishes_past_the_clients_bound_gets_the_client_a_502(start_queue):
    queue = start_queue(SD_API_AUTH=AUTH, QUEUE_MAX_WAIT_SECONDS="0.3")
    async with aiohttp.ClientSession() as session:
        client = asyncio.create_task(txt2img(session, queue.url, "orphan"))
        async with aiohttp.ClientSession() as doomed_session:
            doomed = StandInWorker(doomed_session, queue.workers_url, "pod-a", NOWHERE)
            job = await doomed.poll(wait=10)
            held = doomed.hold_cancel(job)
            await until_demand(session, queue.workers_url, busy=1)
            await asyncio.sleep(0.5)  # past the client's bound in the buffer
            held.cancel()
        status, _, _ = await client
    assert status == 502


@run_async
async def test_cancel_of_an_unknown_job_answers_410(start_queue):
    queue = start_queue(SD_API_AUTH=AUTH)
    async with aiohttp.ClientSession() as session:
        worker = StandInWorker(session, queue.workers_url, "pod-a", NOWHERE)
        assert await worker.hold_cancel({"id": "no-such-job"}) == (410, None)
