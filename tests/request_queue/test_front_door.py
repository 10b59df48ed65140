"""What clients see besides the queue: WebUI's 401, calls passed straight to a pod, the starting page."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from aiohttp import web

from tests.fakes.queue_worker import StandInWorker
from tests.fakes.webui import FakeWebui
from tests.request_queue.conftest import AUTH, run_async
from tests.request_queue.helpers import TXT2IMG, auth_header, demand


@run_async
async def test_an_api_call_without_credentials_gets_webuis_401_before_it_is_queued(start_queue):
    queue = start_queue(SD_API_AUTH=AUTH)
    async with aiohttp.ClientSession() as session:
        async with session.post(queue.url + TXT2IMG, json={"prompt": "dog"}) as response:
            status, body = response.status, await response.json()
        assert (await demand(session, queue.workers_url))["waiting"] == 0
    assert status == 401
    assert body == {"error": "HTTPException", "detail": "Not authenticated", "body": "", "errors": "401: Not authenticated"}


@run_async
async def test_an_api_call_with_a_wrong_password_gets_webuis_401(start_queue):
    queue = start_queue(SD_API_AUTH=AUTH)
    async with aiohttp.ClientSession() as session:
        async with session.get(queue.url + "/sdapi/v1/options", headers=auth_header("sd:wrong")) as response:
            status, body = response.status, await response.json()
    assert (status, body["detail"]) == (401, "Incorrect username or password")


@run_async
async def test_a_call_that_takes_no_queue_lock_goes_straight_to_a_pod_waiting_through_a_cold_start(start_queue):
    queue = start_queue(SD_API_AUTH=AUTH)
    with FakeWebui(auth=AUTH, model_loaded=True) as pod:
        async with aiohttp.ClientSession() as session:
            call = asyncio.create_task(session.get(queue.url + "/sdapi/v1/options", headers=auth_header()))
            assert await StandInWorker(session, queue.workers_url, "pod-a", pod.url).poll() is None
            async with await call as response:
                status, body = response.status, await response.json()
            async with session.get(queue.url + "/sdapi/v1/no-such-call", headers=auth_header()) as response:
                missing = response.status
    assert (status, body) == (200, {"sd_model_checkpoint": "v1-5"})
    assert missing == 404


@run_async
async def test_a_browser_gets_the_starting_page_while_no_pod_is_registered_and_wants_one(start_queue):
    queue = start_queue(SD_API_AUTH=AUTH)
    async with aiohttp.ClientSession() as session:
        before = await demand(session, queue.workers_url)
        async with session.get(queue.url + "/") as response:
            status, headers, page = response.status, response.headers, await response.text()
        after = await demand(session, queue.workers_url)
    assert (status, headers["Content-Type"].split(";")[0]) == (503, "text/html")
    assert int(headers["Retry-After"]) >= 1 and "starting" in page
    assert (before["desired"], before["ui_active"]) == (0, False)
    assert (after["desired"], after["ui_active"]) == (1, True)


async def _page_server(name: str) -> tuple[web.AppRunner, str]:
    """A browser backend that says which pod it is."""
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=name, headers={"Set-Cookie": f"ui={name}"})

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


@run_async
async def test_a_browser_stays_on_the_pod_its_cookie_names(start_queue):
    queue = start_queue(SD_API_AUTH=AUTH)
    pages = [await _page_server(name) for name in ("pod-a", "pod-b")]
    try:
        async with aiohttp.ClientSession() as session:
            for name, (_, url) in zip(("pod-a", "pod-b"), pages, strict=True):
                await StandInWorker(session, queue.workers_url, name, url).poll()
            answers = []
            for _ in range(3):
                async with session.get(queue.url + "/", cookies={"sdgke-pod": "pod-b"}) as response:
                    answers.append((response.status, await response.text(), response.headers.getall("Set-Cookie")))
            async with session.get(queue.url + "/") as response:
                first_visit = response.cookies["sdgke-pod"].value
    finally:
        for runner, _ in pages:
            await runner.cleanup()
    assert [(status, text) for status, text, _ in answers] == [(200, "pod-b")] * 3
    assert answers[0][2] == ["ui=pod-b"], "the pod's own cookies pass through; a known pod needs no new one"
    assert first_visit in ("pod-a", "pod-b")


@run_async
async def test_demand_counts_waiting_busy_idle_and_batch_as_documented(start_queue):
    queue = start_queue(SD_API_AUTH=AUTH)
    async with aiohttp.ClientSession() as session:
        busy = StandInWorker(session, queue.workers_url, "pod-a", "http://127.0.0.1:9")
        batch = StandInWorker(session, queue.workers_url, "pod-b", "http://127.0.0.1:9")
        idle = StandInWorker(session, queue.workers_url, "pod-c", "http://127.0.0.1:9")
        for worker in (busy, batch, idle):
            assert await worker.poll() is None
        await batch.mark_batch()
        clients = [asyncio.create_task(session.post(queue.url + TXT2IMG, data=json.dumps({}), headers=auth_header()))
                   for _ in range(3)]
        seen = {}
        async with asyncio.timeout(20):
            while seen.get("waiting") != 3:
                seen = await demand(session, queue.workers_url)
        job = await busy.poll()
        seen = await demand(session, queue.workers_url)
        assert seen == {"desired": 4, "waiting": 2, "busy": 2, "idle": 1, "workers": 3, "ui_active": False}
        await idle.leave()
        assert (await demand(session, queue.workers_url))["workers"] == 2
        await busy.post_result(job, 200, b"{}")
        for client in clients:
            client.cancel()


@run_async
async def test_a_call_passed_to_a_pod_gets_503_with_retry_after_when_none_registers_within_the_max_wait(start_queue):
    queue = start_queue(SD_API_AUTH=AUTH, QUEUE_MAX_WAIT_SECONDS="0.3")
    async with aiohttp.ClientSession() as session:
        async with session.get(queue.url + "/sdapi/v1/options", headers=auth_header()) as response:
            status, retry_after = response.status, response.headers.get("Retry-After")
    assert status == 503 and int(retry_after) >= 1
