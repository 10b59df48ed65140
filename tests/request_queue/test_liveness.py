"""A pod or a browser lost without FIN or RST (issue 17, review finding 2): the relayed WebSocket pings both
sides every MARGIN_SECONDS and closes a side whose pong does not come, and a call passed to a pod that stops
answering ends after the generation timeout plus the margin. Each side here stays connected and silent."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from tests.fakes.queue_worker import StandInWorker
from tests.request_queue.conftest import AUTH, run_async

GUARD_SECONDS = 30
"""Only so that a failing test ends: far above what is awaited (1.5 s of heartbeat, 2 s of read bound here)."""


class SilentPod:
    """A pod whose WebSocket side answers no ping (as one whose node is gone) and whose `/run/predict` never
    answers; it records when the front closes its socket."""

    def __init__(self):
        self.closed = asyncio.Event()
        self.released = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> SilentPod:
        app = web.Application()
        app.router.add_get("/queue/join", self._join)
        app.router.add_post("/run/predict", self._never)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def _join(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(autoping=False)
        await socket.prepare(request)
        await self.released.wait()  # reads nothing meanwhile, so answers no ping
        return socket

    async def _never(self, request: web.Request) -> web.Response:
        await self.released.wait()
        return web.Response()

    async def stop(self) -> None:
        self.released.set()
        await self.runner.cleanup()


class AnsweringPod(SilentPod):
    """A pod that answers pings; it records when the front closes its socket."""

    async def _join(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        async for _ in socket:
            pass
        self.closed.set()
        return socket


async def _front_and(start_queue, pod: SilentPod, session: aiohttp.ClientSession):
    queue = start_queue(SD_API_AUTH=AUTH, MARGIN_SECONDS="1", GENERATION_TIMEOUT_SECONDS="1")
    await pod.start()
    await StandInWorker(session, queue.workers_url, "pod-a", pod.url).poll()
    return queue


@run_async
async def test_a_pod_that_stops_answering_pings_is_noticed_and_the_browsers_socket_closes(start_queue):
    pod = SilentPod()
    async with aiohttp.ClientSession() as session:
        queue = await _front_and(start_queue, pod, session)
        async with session.ws_connect(queue.url.replace("http://", "ws://") + "/queue/join") as socket:
            async with asyncio.timeout(GUARD_SECONDS):
                message = await socket.receive()
    await pod.stop()
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)


@run_async
async def test_a_browser_that_stops_answering_pings_is_noticed_and_its_pods_socket_closed(start_queue):
    pod = AnsweringPod()
    async with aiohttp.ClientSession() as session:
        queue = await _front_and(start_queue, pod, session)
        async with session.ws_connect(queue.url.replace("http://", "ws://") + "/queue/join", autoping=False):
            async with asyncio.timeout(GUARD_SECONDS):
                await pod.closed.wait()  # the browser reads nothing, so answers no ping
    await pod.stop()


@run_async
async def test_an_event_outside_gradios_queue_on_a_pod_that_stops_answering_ends_with_502(start_queue):
    pod = SilentPod()
    async with aiohttp.ClientSession() as session:
        queue = await _front_and(start_queue, pod, session)
        async with asyncio.timeout(GUARD_SECONDS):
            async with session.post(queue.url + "/run/predict", json={"data": [], "fn_index": 3}) as response:
                answer = (response.status, await response.json())
    await pod.stop()
    assert answer == (502, {"detail": "the WebUI pod did not answer: SocketTimeoutError"})
