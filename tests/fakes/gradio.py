"""A stand-in for the Gradio 3.41 app WebUI v1.10.1 serves its UI with: the page and the queue's WebSocket.

The queue follows gradio-app/gradio@v3.41.2, read from the released wheel (gradio==3.41.2):
- `gradio/routes.py` `queue_join` (`@app.websocket("/queue/join")`): accept, send `{"msg": "send_hash"}`,
  receive `{"session_hash", "fn_index"}`, push the event and send its estimation (`msg: "estimation"`, the
  queue's `Estimation` fields);
- `gradio/queueing.py` `gather_event_data`: send `{"msg": "send_data"}`, receive the PredictBody (`data`,
  `fn_index`, `session_hash`); `process_events`: send `{"msg": "process_starts"}`, run the function, send
  `{"msg": "process_completed", "output": {"data": [...]}, "success": true}`.
An event outside the queue (`queue=False`) is `@app.post("/run/{api_name}")` and its `/api/` spellings
(`gradio/routes.py` `predict`): a PredictBody in, `{"data": [...], "is_generating", "duration",
"average_duration"}` out (`gradio/blocks.py` `process_api`), held by `finish` as a queued event is.
`join_hosts` records the Host each queue socket was opened with: Gradio's queue posts every prediction to the
server URL it reads from the first one (`get_server_url_from_ws_url`, `Queue.set_url`, `call_prediction`).
Strict about that order: a client message out of turn, or missing a field, closes the socket with 1008
(policy violation) and is recorded in `violations`. As in Gradio, an event whose browser left after
`process_starts` still runs to its end (`process_events` runs it in a background task; only `send_message` to
the gone socket fails): `delivered` lists the events whose `process_completed` reached an open socket. Two
gates hold an event for a test: `queue_open` before `send_data` (the event waits in Gradio's queue), `finish`
between `process_starts` and `process_completed` (the generation runs). A message may be as large as WebUI's server takes: Gradio
runs on uvicorn, whose `--ws-max-size` defaults to 16 MiB (www.uvicorn.org/settings, "Implementation").
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import WSCloseCode, WSMsgType, web

UVICORN_WS_MAX_SIZE = 16 * 1024 * 1024
PAGE = "<!doctype html><html><head><title>Stable Diffusion</title></head><body><gradio-app></gradio-app></body></html>"


class FakeGradio:
    def __init__(self) -> None:
        self.generated: list[str] = []
        self.violations: list[str] = []
        self.delivered: list[str] = []
        self.join_hosts: list[str | None] = []
        self.queue_open = asyncio.Event()
        self.queue_open.set()
        self.finish = asyncio.Event()
        self.finish.set()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> FakeGradio:
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/queue/join", self._join)
        for route in ("/run/{api_name}", "/run/{api_name}/", "/api/{api_name}", "/api/{api_name}/"):
            app.router.add_post(route, self._predict)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def _receive(self, socket: web.WebSocketResponse, fields: set[str], step: str) -> dict | None:
        message = await socket.receive()
        try:
            body = json.loads(message.data) if message.type is WSMsgType.TEXT else None
        except json.JSONDecodeError:
            body = None
        if not isinstance(body, dict) or not fields <= set(body):
            self.violations.append(f"{step}: got {message.data!r}, want a JSON object with {sorted(fields)}")
            await socket.close(code=WSCloseCode.POLICY_VIOLATION)
            return None
        return body

    async def _predict(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            body = None
        if not isinstance(body, dict) or not {"data", "fn_index", "session_hash"} <= set(body):
            self.violations.append(f"predict: got {body!r}, want a PredictBody")
            return web.json_response({"detail": "Unprocessable Entity"}, status=422)
        await self.finish.wait()
        prompt = body["data"][0]
        self.generated.append(prompt)
        return web.json_response({"data": [f"image of {prompt}"], "is_generating": False, "duration": 0.0,
                                  "average_duration": 0.0})

    async def _join(self, request: web.Request) -> web.WebSocketResponse:
        self.join_hosts.append(request.headers.get("Host"))
        socket = web.WebSocketResponse(max_msg_size=UVICORN_WS_MAX_SIZE)
        await socket.prepare(request)
        await socket.send_json({"msg": "send_hash"})
        if await self._receive(socket, {"session_hash", "fn_index"}, "after send_hash") is None:
            return socket
        await socket.send_json({"msg": "estimation", "rank": 0, "queue_size": 1, "avg_event_process_time": None,
                                "avg_event_concurrent_process_time": None, "rank_eta": None, "queue_eta": 0})
        await self.queue_open.wait()
        await socket.send_json({"msg": "send_data"})
        body = await self._receive(socket, {"data", "fn_index", "session_hash"}, "after send_data")
        if body is None:
            return socket
        await socket.send_json({"msg": "process_starts"})
        prompt = body["data"][0]
        await self.finish.wait()
        self.generated.append(prompt)
        try:
            await socket.send_json({"msg": "process_completed", "output": {"data": [f"image of {prompt}"]},
                                    "success": True})
            self.delivered.append(prompt)
        except ConnectionError:
            pass  # the socket is gone, as Gradio's send_message finds
        await socket.close()
        return socket
