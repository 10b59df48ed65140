"""Dispatch: one FIFO buffer, a job only to a worker that asked for one, WebUI's answer passed through."""

from __future__ import annotations

import asyncio
import base64
import json

import aiohttp

from tests.fakes.queue_worker import StandInWorker
from tests.fakes.webui import FakeWebui
from tests.request_queue.conftest import AUTH, run_async
from tests.request_queue.helpers import TXT2IMG, auth_header, txt2img, until_demand


@run_async
async def test_requests_are_dispatched_first_in_first_out(start_queue):
    queue = start_queue(SD_API_AUTH=AUTH)
    async with aiohttp.ClientSession() as session:
        clients = []
        for n, tag in enumerate(["first", "second", "third"], start=1):
            clients.append(asyncio.create_task(txt2img(session, queue.url, tag)))
            await until_demand(session, queue.workers_url, waiting=n)
        worker = StandInWorker(session, queue.workers_url, "pod-a", "http://127.0.0.1:9")
        order = []
        for _ in clients:
            job = await worker.poll()
            order.append(job["headers"]["X-Loadtest-Request"])
            await worker.post_result(job, 200, b"{}")
        await asyncio.gather(*clients)
    assert order == ["first", "second", "third"]


@run_async
async def test_a_worker_holding_a_job_gets_no_other_until_it_asks(start_queue):
    queue = start_queue(SD_API_AUTH=AUTH)
    async with aiohttp.ClientSession() as session:
        clients = [asyncio.create_task(txt2img(session, queue.url, tag)) for tag in ("one", "two")]
        await until_demand(session, queue.workers_url, waiting=2)
        busy = StandInWorker(session, queue.workers_url, "pod-a", "http://127.0.0.1:9")
        job = await busy.poll()
        seen = await until_demand(session, queue.workers_url, busy=1, waiting=1)
        assert seen["idle"] == 0
        free = StandInWorker(session, queue.workers_url, "pod-b", "http://127.0.0.1:9")
        other = await free.poll()
        assert other is not None and other["id"] != job["id"]
        for worker, held in ((busy, job), (free, other)):
            await worker.post_result(held, 200, b"{}")
        await asyncio.gather(*clients)


@run_async
async def test_each_webui_runs_one_generation_at_a_time_and_every_request_is_served(start_queue):
    queue = start_queue(SD_API_AUTH=AUTH)
    with FakeWebui(auth=AUTH, model_loaded=True, generation_seconds=0.05) as pod_a, \
            FakeWebui(auth=AUTH, model_loaded=True, generation_seconds=0.05) as pod_b:
        async with aiohttp.ClientSession() as session:
            clients = [asyncio.create_task(txt2img(session, queue.url, f"r{n}")) for n in range(8)]
            workers = [StandInWorker(session, queue.workers_url, name, pod.url)
                       for name, pod in (("pod-a", pod_a), ("pod-b", pod_b))]

            async def serve(worker: StandInWorker) -> None:
                while not all(c.done() for c in clients):
                    await worker.serve_one(wait=0.2)

            await asyncio.gather(*(serve(w) for w in workers))
            answers = await asyncio.gather(*clients)
    assert [status for status, _, _ in answers] == [200] * 8
    assert pod_a.max_open_requests == 1 and pod_b.max_open_requests == 1
    assert sorted(pod_a.served + pod_b.served) == sorted(f"r{n}" for n in range(8))


@run_async
async def test_the_job_carries_the_clients_method_path_query_headers_and_body(start_queue):
    queue = start_queue(SD_API_AUTH=AUTH)
    payload = json.dumps({"prompt": "cat", "steps": 3}).encode()
    async with aiohttp.ClientSession() as session:
        client = asyncio.create_task(session.post(queue.url + TXT2IMG + "?trace=1", data=payload,
                                                  headers={**auth_header(), "X-Custom": "kept"}))
        worker = StandInWorker(session, queue.workers_url, "pod-a", "http://127.0.0.1:9")
        job = await worker.poll(wait=10)
        await worker.post_result(job, 200, b"{}")
        (await client).release()
    assert (job["method"], job["path"], job["query"]) == ("POST", TXT2IMG, "trace=1")
    assert base64.b64decode(job["body"]) == payload
    assert job["headers"]["X-Custom"] == "kept"
    assert job["generation_timeout"] == 30


@run_async
async def test_webuis_status_content_type_and_body_reach_the_client_unchanged(start_queue):
    queue = start_queue(SD_API_AUTH=AUTH)
    answer = b'{"error":"OutOfMemoryError","detail":"CUDA out of memory"}'
    async with aiohttp.ClientSession() as session:
        client = asyncio.create_task(txt2img(session, queue.url, "oom"))
        worker = StandInWorker(session, queue.workers_url, "pod-a", "http://127.0.0.1:9")
        job = await worker.poll(wait=10)
        assert await worker.post_result(job, 500, answer, "application/json; charset=utf-8") == 204
        status, headers, body = await client
    assert (status, headers["Content-Type"], body) == (500, "application/json; charset=utf-8", answer)


@run_async
async def test_a_queued_answer_says_how_long_it_waited_and_whether_it_came_through_a_cold_start(start_queue):
    queue = start_queue(SD_API_AUTH=AUTH)
    async with aiohttp.ClientSession() as session:
        cold = asyncio.create_task(txt2img(session, queue.url, "cold"))
        await until_demand(session, queue.workers_url, waiting=1)
        worker = StandInWorker(session, queue.workers_url, "pod-a", "http://127.0.0.1:9")
        job = await worker.poll()
        await worker.post_result(job, 200, b"{}")
        _, cold_headers, _ = await cold
        warm = asyncio.create_task(txt2img(session, queue.url, "warm"))
        job = await worker.poll(wait=10)
        await worker.post_result(job, 200, b"{}")
        _, warm_headers, _ = await warm
    assert cold_headers["X-Queue-Cold-Start"] == "true" and warm_headers["X-Queue-Cold-Start"] == "false"
    assert float(cold_headers["X-Queue-Wait"]) >= 0 and float(warm_headers["X-Queue-Wait"]) >= 0
