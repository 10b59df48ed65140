"""The process: bad settings refused clearly, forgotten workers, and the drain on SIGTERM."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.fakes.queue_worker import StandInWorker
from tests.request_queue.conftest import AUTH, queue_env, run_async, spawn
from tests.request_queue.helpers import txt2img, until_demand

NOWHERE = "http://127.0.0.1:9"


def test_a_bad_setting_exits_2_naming_the_variable_the_value_and_what_is_allowed_without_a_traceback():
    process = spawn(queue_env(QUEUE_MAX_DEPTH="lots", WORKER_PORT=None))
    out, err = process.communicate(timeout=30)
    assert process.returncode == 2 and out == ""
    assert "QUEUE_MAX_DEPTH='lots' is not an integer; want an integer >= 1" in err
    assert "WORKER_PORT is not set" in err
    assert "Traceback" not in err


@run_async
async def test_a_worker_neither_polling_nor_holding_a_job_is_forgotten_after_its_ttl(start_queue):
    queue = start_queue(SD_API_AUTH=AUTH, WORKER_TTL_SECONDS="1")
    async with aiohttp.ClientSession() as session:
        assert await StandInWorker(session, queue.workers_url, "pod-a", NOWHERE).poll() is None
        assert (await until_demand(session, queue.workers_url, workers=1))["idle"] == 1
        await until_demand(session, queue.workers_url, workers=0)


@run_async
async def test_delete_answers_the_workers_open_poll_with_204_at_once(start_queue):
    queue = start_queue(SD_API_AUTH=AUTH)
    async with aiohttp.ClientSession() as session:
        worker = StandInWorker(session, queue.workers_url, "pod-a", NOWHERE)
        poll = asyncio.create_task(worker.poll(wait=60))
        await until_demand(session, queue.workers_url, workers=1)
        await worker.leave()
        async with asyncio.timeout(30):  # half the poll's own wait: it ends because of DELETE, not its wait
            assert await poll is None
        client = asyncio.create_task(txt2img(session, queue.url, "after DELETE"))
        assert (await until_demand(session, queue.workers_url, waiting=1))["workers"] == 0
        other = StandInWorker(session, queue.workers_url, "pod-b", NOWHERE)
        job = await other.poll()
        await other.post_result(job, 200, b"{}")
        assert (await client)[0] == 200


async def _draining(session: aiohttp.ClientSession, queue) -> None:
    """SIGTERM, then until its readiness answers 503."""
    queue.terminate()
    async with asyncio.timeout(20):
        while (await session.get(queue.url + "/healthz")).status != 503:
            await asyncio.sleep(0.02)


@run_async
async def test_on_sigterm_it_refuses_new_work_and_finishes_what_it_holds(start_queue):
    queue = start_queue(SD_API_AUTH=AUTH)
    async with aiohttp.ClientSession() as session:
        held = asyncio.create_task(txt2img(session, queue.url, "held"))
        await until_demand(session, queue.workers_url, waiting=1)
        await _draining(session, queue)
        assert (await session.get(queue.workers_url + "/healthz")).status == 200, "liveness holds while draining"
        status, headers, _ = await txt2img(session, queue.url, "new")
        assert status == 503 and "Retry-After" in headers
        worker = StandInWorker(session, queue.workers_url, "pod-a", NOWHERE)
        job = await worker.poll()
        await worker.post_result(job, 200, b"{}")
        assert (await held)[0] == 200
    events = [event["event"] for event in queue.events()]
    assert queue.process.returncode == 0 and events[-2:] == ["draining", "stopped"]


def test_past_drain_seconds_it_answers_what_it_still_holds_503_and_stops(start_queue):
    async def scenario() -> int:
        async with aiohttp.ClientSession() as session:
            held = asyncio.create_task(txt2img(session, queue.url, "never served"))
            await until_demand(session, queue.workers_url, waiting=1)
            queue.terminate()
            status, _, _ = await held
            return status

    queue = start_queue(SD_API_AUTH=AUTH, DRAIN_SECONDS="0.5")
    assert asyncio.run(scenario()) == 503
    assert [event["event"] for event in queue.events()][-3:] == ["draining", "drain-timeout", "stopped"]


async def _poll(session: aiohttp.ClientSession, workers_url: str, wait: float) -> tuple[int, str]:
    """`next` as pod-a: (status, X-Queue-Draining)."""
    async with session.post(f"{workers_url}/v1/workers/pod-a/next", json={"url": NOWHERE, "wait": wait}) as answer:
        return answer.status, answer.headers["X-Queue-Draining"]


@run_async
async def test_next_answers_say_whether_the_front_drains(start_queue):
    queue = start_queue(SD_API_AUTH=AUTH)
    async with aiohttp.ClientSession() as session:
        assert await _poll(session, queue.workers_url, 0) == (204, "false")
        held = asyncio.create_task(txt2img(session, queue.url, "held"))  # keeps it draining, not stopped
        await until_demand(session, queue.workers_url, waiting=1)
        await _draining(session, queue)
        assert await _poll(session, queue.workers_url, 0) == (200, "true"), "it still hands out what it holds"
        held.cancel()


@run_async
async def test_on_sigterm_a_poll_parked_at_the_front_answers_204_at_once(start_queue):
    """Its worker goes on to poll the other front of a rollout instead of waiting out its long poll here."""
    queue = start_queue(SD_API_AUTH=AUTH)
    async with aiohttp.ClientSession() as session:
        parked = asyncio.create_task(_poll(session, queue.workers_url, 60))
        await until_demand(session, queue.workers_url, workers=1)
        queue.terminate()
        async with asyncio.timeout(30):  # half the poll's own wait: it ends because of the drain, not its wait
            assert await parked == (204, "true")
