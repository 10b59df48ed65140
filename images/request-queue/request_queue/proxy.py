"""Calls that are not queued, passed straight to a WebUI pod: the API's other calls and the browser UI.

An API call that does not take queue_lock (routes.py) goes to any registered pod, an idle one first, waiting
through a cold start within QUEUE_MAX_WAIT_SECONDS. The browser UI goes to one pod per browser, kept by a
cookie, WebSocket upgrades included: Gradio 3.41's queue (WebUI v1.10.1's UI) joins over a WebSocket at
`/queue/join` (gradio-app/gradio@v3.41.2 gradio/routes.py `queue_join`); the events those sockets run make their
pod busy (ui_events.py). While no pod is registered, `/` gets
an inline "starting" page (503, Retry-After) and every browser request keeps one pod wanted
(UI_KEEPALIVE_SECONDS), which is what wakes a pod from zero.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from request_queue.clients import refusal, retry_after
from request_queue.headers import passed
from request_queue.state import Front
from request_queue.ui_events import COMPLETED, UiSocket
from request_queue.workers import Worker

CLIENT_MAX_BYTES = 64 * 1024 * 1024
"""The largest request body or WebSocket message a client may send: img2img and inpaint inputs are base64 images,
in the API's body and, from the browser, in the Gradio queue socket's `send_data` answer. aiohttp's own limit on
a WebSocket message is 4 MiB on both ends (`max_msg_size`, docs.aiohttp.org/en/stable/client_reference.html
`ClientSession.ws_connect`, web_reference.html `WebSocketResponse`), which would close the socket with 1009."""
GRADIO_PREDICT = re.compile(r"/(run|api)/[^/]+/?")
"""Gradio 3.41.2's HTTP route for an event outside its queue (`queue=False`): `@app.post("/run/{api_name}")` and
its `/api/` spellings (`gradio/routes.py` `predict`), which the front end posts to for such an event (`post_data`
to `/run/predict` in `templates/frontend/assets/index-2519a27e.js`). The queue's own calls to that route
(`call_prediction` in `gradio/queueing.py`) never cross the front: they go to `server_path`, which
`Blocks.launch` sets to the server's local URL (`self._queue.set_url(self.local_url)` in `gradio/blocks.py`)."""
COOKIE = "sdgke-pod"
"""Which pod this browser's UI session lives on: Gradio keeps session state in the pod's memory."""
STARTING_RETRY_AFTER = 10
STARTING_PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="10"><title>Starting</title></head>
<body><h1>Stable Diffusion is starting</h1>
<p>A GPU is being started for you. This page reloads by itself; it takes a minute or two.</p></body></html>
"""


async def _worker_within(front: Front, until: float) -> Worker | None:
    while (worker := front.registry.pick()) is None:
        try:
            async with asyncio.timeout(until - front.now()):
                await front.registry.present.wait()
        except TimeoutError:
            return None
    return worker


async def forward(front: Front, request: web.Request, worker: Worker, body: bytes | None = None) -> web.StreamResponse:
    """One HTTP exchange with the pod, status, headers and body passed through as they are."""
    assert front.session is not None
    body = await request.read() if body is None else body
    url = worker.url.rstrip("/") + request.rel_url.raw_path_qs
    try:
        async with front.session.request(request.method, url, headers=passed(request.headers.items()),
                                         data=body or None, allow_redirects=False) as upstream:
            answer = await upstream.read()
            return web.Response(status=upstream.status, body=answer, headers=passed(upstream.headers.items()))
    except (aiohttp.ClientError, TimeoutError) as error:
        return web.json_response({"detail": f"the WebUI pod did not answer: {type(error).__name__}"}, status=502)


async def passed_api(front: Front, request: web.Request) -> web.StreamResponse:
    """An API call WebUI runs beside a generation: any pod, waiting through a cold start within the bound."""
    if front.draining:
        return refusal(503, "the request queue is shutting down", retry_after(front))
    return await _counted(front, lambda: _api_call(front, request))


async def _api_call(front: Front, request: web.Request) -> web.StreamResponse:
    worker = await _worker_within(front, front.now() + front.settings.max_wait)
    if worker is None:
        return refusal(503, "no WebUI pod became ready in time", retry_after(front))
    return await forward(front, request, worker)


async def _counted(front: Front, call: Callable[[], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    front.passing += 1
    front.settle()
    try:
        return await call()
    finally:
        front.passing -= 1
        front.settle()


def _browser_worker(front: Front, request: web.Request) -> Worker | None:
    name = request.cookies.get(COOKIE)
    worker = front.registry.get(name) if name else None
    return worker or front.registry.pick()


async def browser(front: Front, request: web.Request) -> web.StreamResponse:
    front.ui.touch()
    if front.draining:
        return refusal(503, "the request queue is shutting down", retry_after(front))
    worker = _browser_worker(front, request)
    if worker is None:
        if request.path == "/":
            return web.Response(status=503, body=STARTING_PAGE, content_type="text/html",
                                headers={"Retry-After": str(STARTING_RETRY_AFTER), "Cache-Control": "no-store"})
        return refusal(503, "the WebUI is starting", STARTING_RETRY_AFTER)
    if request.headers.get("Upgrade", "").lower() == "websocket":
        response = await _counted(front, lambda: _websocket(front, request, worker))
    elif request.method == "POST" and GRADIO_PREDICT.fullmatch(request.path):
        response = await _counted(front, lambda: _event_over_http(front, request, worker))
    else:
        response = await _counted(front, lambda: forward(front, request, worker))
    if request.cookies.get(COOKIE) != worker.name and not response.prepared:
        response.set_cookie(COOKIE, worker.name, path="/", httponly=True, samesite="Lax")
    return response


async def _event_over_http(front: Front, request: web.Request, worker: Worker) -> web.StreamResponse:
    """A browser's event outside Gradio's queue: its pod is busy until the pod answers, as with a queued event
    (ui_events.py), past the browser's leaving too, since Gradio runs the event to its end whatever the client."""
    body = await request.read()

    async def exchange() -> web.StreamResponse:
        worker.ui_event_started()
        try:
            return await forward(front, request, worker, body)
        finally:
            worker.ui_event_ended()

    return await asyncio.shield(asyncio.ensure_future(exchange()))


async def _websocket(front: Front, request: web.Request, worker: Worker) -> web.StreamResponse:
    """Both directions of one WebSocket, until either side closes; a Gradio event the pod runs for it makes the pod
    busy (ui_events.py), past the browser's leaving too. Both sides are pinged (Settings.heartbeat): a pod or a
    browser lost without FIN or RST would otherwise hold the socket, its pod's busy state and the drain for hours.
    Both answer pings by themselves: a browser as RFC 6455 section 5.5.2 requires, Gradio's uvicorn through its
    WebSocket library."""
    assert front.session is not None
    url = worker.url.rstrip("/") + request.rel_url.raw_path_qs
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    forwarded = CIMultiDict((k, v) for k, v in passed(request.headers.items()).items()
                            if not k.lower().startswith("sec-websocket"))
    try:
        upstream = await front.session.ws_connect(url, headers=forwarded, protocols=protocols, autoping=True,
                                                 heartbeat=front.settings.heartbeat, max_msg_size=CLIENT_MAX_BYTES)
    except (aiohttp.ClientError, TimeoutError) as error:
        return web.json_response({"detail": f"the WebUI pod refused the WebSocket: {type(error).__name__}"},
                                 status=502)
    client = web.WebSocketResponse(protocols=protocols, autoping=True, heartbeat=front.settings.heartbeat,
                                   max_msg_size=CLIENT_MAX_BYTES)
    socket = UiSocket(worker)
    front.ui.sockets += 1
    front.ui_sockets.add(socket)
    try:
        await client.prepare(request)
        await _relay(client, upstream, socket, front)
    finally:
        front.ui.sockets -= 1
        front.ui_sockets.discard(socket)
        front.ui.touch()
        if socket.cut.is_set() and request.transport is not None:
            # No close frame: Gradio 3.41's front end reports a socket closed without one as "Connection errored
            # out." and ends the event (its `websocket.onclose`, `!evt.wasClean`), so the user can try again; a
            # clean close before the event completed would leave the browser waiting for it.
            request.transport.abort()
        await client.close()
        if socket.running:  # the browser left mid-event; the pod runs it to the end all the same
            front.keep(_until_completed(upstream, socket))
        else:
            await upstream.close()
    return client


async def _relay(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse, socket: UiSocket,
                 front: Front) -> None:
    async def to_pod() -> None:
        async for message in client:
            front.ui.touch()
            if message.type is aiohttp.WSMsgType.TEXT:
                await upstream.send_str(message.data)
            elif message.type is aiohttp.WSMsgType.BINARY:
                await upstream.send_bytes(message.data)
            else:
                break

    async def to_browser() -> None:
        async for message in upstream:
            front.ui.touch()
            if message.type is aiohttp.WSMsgType.TEXT:
                socket.saw(message.data)
                await client.send_str(message.data)
            elif message.type is aiohttp.WSMsgType.BINARY:
                await client.send_bytes(message.data)
            else:
                break
        socket.end()  # the pod closed the socket: Gradio does so once the event is over

    tasks = [asyncio.create_task(to_pod()), asyncio.create_task(to_browser()), asyncio.create_task(socket.cut.wait())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _until_completed(upstream: aiohttp.ClientWebSocketResponse, socket: UiSocket) -> None:
    """Read the pod's side of a socket whose browser left mid-event until the event completes."""
    try:
        async for message in upstream:
            if message.type is not aiohttp.WSMsgType.TEXT or socket.saw(message.data) == COMPLETED:
                break
    finally:
        socket.end()
        await upstream.close()
