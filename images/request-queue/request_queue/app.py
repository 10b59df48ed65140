"""The two ports, their lifecycle, and the drain on SIGTERM.

Clients (HTTP_PORT): queued calls, other API calls and the browser UI, with `/healthz` answering 503 while
draining so the load balancer and the Service stop sending (the readiness probe). Workers and KEDA
(WORKER_PORT): the worker protocol, the demand, and `/healthz` answering 200 while draining (the liveness
probe: results of accepted requests still arrive here).

Both servers run with handler_cancellation: aiohttp cancels a handler whose client disconnected
(aiohttp 3.14 web_protocol.py RequestHandler.connection_lost), which is how a client gone from the buffer,
or a worker gone from its held `cancel`, is noticed at once.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import aiohttp
from aiohttp import web

from request_queue import auth, callers, clients, proxy, routes, worker_api
from request_queue.config import Settings
from request_queue.jobs import EXPIRED, State
from request_queue.state import FRONT, Front

SHUTDOWN_SECONDS = 2.0


def log(event: str, **fields: object) -> None:
    """One JSON line on stdout: what Cloud Logging parses, and what the tests read the bound ports from."""
    print(json.dumps({"event": event, **fields}), flush=True)


async def _client_call(request: web.Request) -> web.StreamResponse:
    front = request.app[FRONT]
    if request.path == "/healthz":
        return web.json_response({"draining": front.draining}, status=503 if front.draining else 200)
    if routes.is_api(request.path):
        refused = auth.check(request, front.settings.api_auth)
        if refused is not None:
            return refused
        if routes.is_queued(request.method, request.path):
            return await clients.queued(front, request)
        if callers.is_per_job(request.method, request.path):
            return await callers.per_job(front, request)
        swap = await callers.model_swap(front, request)
        if swap is not None:
            return swap
        return await proxy.passed_api(front, request)
    return await proxy.browser(front, request)


def client_app(front: Front) -> web.Application:
    app = web.Application(client_max_size=proxy.CLIENT_MAX_BYTES)
    app[FRONT] = front
    app.router.add_route("*", "/{tail:.*}", _client_call)
    return app


def worker_app(front: Front) -> web.Application:
    app = web.Application(client_max_size=256 * 1024 * 1024)  # a result carries every image of a batch
    app[FRONT] = front
    app.add_routes(worker_api.routes())
    return app


class Service:
    """Both servers on their ports; `drain()` stops accepting and lets held requests finish."""

    def __init__(self, settings: Settings, host: str = "0.0.0.0"):
        self.settings = settings
        self.host = host
        self.front: Front | None = None
        self._runners: list[web.AppRunner] = []
        self.ports: dict[str, int] = {}

    async def start(self) -> None:
        self.front = front = Front.create(self.settings)
        # No total: the result wait and the client's bound are enforced by the queue. A read bound, so that a pod
        # lost without FIN or RST fails the call passed to it; WebSockets take no read timeout from it (aiohttp
        # 3.14 ClientSession._ws_connect sets the connection's read_timeout to ws_receive, None) and have their
        # heartbeat instead (proxy._websocket).
        front.session = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(
            total=None, sock_read=self.settings.pod_read))
        for role, app, port in (("http_port", client_app(front), self.settings.http_port),
                                ("worker_port", worker_app(front), self.settings.worker_port)):
            # Past the drain, answered handlers get SHUTDOWN_SECONDS to write; the rest are cut.
            runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=SHUTDOWN_SECONDS)
            await runner.setup()
            site = web.TCPSite(runner, self.host, port)
            await site.start()
            self._runners.append(runner)
            self.ports[role] = runner.addresses[0][1]

    async def drain(self) -> None:
        """Refuse new requests; cut the browsers' queue sockets whose event has not started; wait up to
        DRAIN_SECONDS for those held (waiting or running, browser events included) to be answered."""
        assert self.front is not None
        self.front.draining = True
        for socket in list(self.front.ui_sockets):
            socket.drain()
        self.front.buffer.release_polls()  # workers parked here look at the other fronts (a rollout)
        log("draining", held=len(self.front.held), drain_seconds=self.settings.drain)
        try:
            async with asyncio.timeout(self.settings.drain):
                await self.front.idle.wait()
        except TimeoutError:
            log("drain-timeout", held=len(self.front.held))
            for job in list(self.front.held.values()):
                self.front.buffer.drop(job)
                job.end(EXPIRED)  # a running generation is interrupted
                job.move(State.SHUT_DOWN)

    async def stop(self) -> None:
        if self.front is not None:
            for task in list(self.front.background):
                task.cancel()
        for runner in reversed(self._runners):
            await runner.cleanup()
        if self.front is not None and self.front.session is not None:
            await self.front.session.close()


async def serve(settings: Settings) -> None:
    service = Service(settings)
    await service.start()
    log("listening", **service.ports)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await service.drain()
    await service.stop()
    log("stopped")


def main() -> int:
    from request_queue.config import ConfigError, load

    try:
        settings = load()
    except ConfigError as error:
        print(f"request-queue: {error}", file=sys.stderr)
        return 2
    asyncio.run(serve(settings))
    return 0
