"""Bounded, honest waiting: 429 at QUEUE_MAX_DEPTH at once, 503 past QUEUE_MAX_WAIT_SECONDS, both with Retry-After."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.fakes.queue_worker import StandInWorker
from tests.request_queue.conftest import AUTH, run_async
from tests.request_queue.helpers import demand, txt2img, until_demand


@run_async
async def test_a_request_past_the_depth_gets_429_with_retry_after_and_the_waiting_ones_stay(start_queue):
    queue = start_queue(SD_API_AUTH=AUTH, QUEUE_MAX_DEPTH="2")
    async with aiohttp.ClientSession() as session:
        waiting = [asyncio.create_task(txt2img(session, queue.url, tag)) for tag in ("a", "b")]
        await until_demand(session, queue.workers_url, waiting=2)
        status, headers, body = await txt2img(session, queue.url, "c")
        assert (status, body) == (429, b'{"detail": "queue full"}')
        assert int(headers["Retry-After"]) >= 1
        assert (await demand(session, queue.workers_url))["waiting"] == 2
        worker = StandInWorker(session, queue.workers_url, "pod-a", "http://127.0.0.1:9")
        served = []
        for _ in waiting:
            job = await worker.poll()
            served.append(job["headers"]["X-Loadtest-Request"])
            await worker.post_result(job, 200, b"{}")
        assert [status for status, _, _ in await asyncio.gather(*waiting)] == [200, 200]
    assert served == ["a", "b"]


@run_async
async def test_a_request_not_dispatched_within_the_max_wait_gets_503_with_retry_after(start_queue):
    queue = start_queue(SD_API_AUTH=AUTH, QUEUE_MAX_WAIT_SECONDS="0.3")
    async with aiohttp.ClientSession() as session:
        status, headers, _ = await txt2img(session, queue.url, "late")
        assert status == 503 and int(headers["Retry-After"]) >= 1
        assert headers["X-Queue-Cold-Start"] == "true"
        worker = StandInWorker(session, queue.workers_url, "pod-a", "http://127.0.0.1:9")
        assert await worker.poll() is None, "an expired request must not be run"


@run_async
async def test_a_request_dispatched_within_the_max_wait_completes_after_it(start_queue):
    queue = start_queue(SD_API_AUTH=AUTH, QUEUE_MAX_WAIT_SECONDS="0.3")
    async with aiohttp.ClientSession() as session:
        client = asyncio.create_task(txt2img(session, queue.url, "slow"))
        worker = StandInWorker(session, queue.workers_url, "pod-a", "http://127.0.0.1:9")
        job = await worker.poll(wait=10)
        await until_demand(session, queue.workers_url, busy=1)
        await asyncio.sleep(0.5)  # past the max wait while it runs: the wait bounds the buffer, not the generation
        await worker.post_result(job, 200, b'{"images": []}')
        status, _, body = await client
    assert (status, body) == (200, b'{"images": []}')
