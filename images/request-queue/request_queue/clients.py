"""The clients' side of a queued call (docs/request-queue.md, "Clients"): admit, wait, answer.

A call that takes WebUI's queue_lock (routes.py) waits in the buffer until a worker pulls it, then for the
worker's result. At QUEUE_MAX_DEPTH it gets 429 at once; not dispatched within QUEUE_MAX_WAIT_SECONDS, 503;
both with Retry-After. A client that disconnects (aiohttp cancels its handler: the server runs with
handler_cancellation) is dropped from the buffer, or its worker's `cancel` answers "client gone".
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid

from aiohttp import web

from request_queue import auth
from request_queue.headers import COLD_START, QUEUE_WAIT, passed
from request_queue.jobs import CLIENT_GONE, EXPIRED, Job, State
from request_queue.state import Front


def refusal(status: int, detail: str, retry_after: float, extra: dict[str, str] | None = None) -> web.Response:
    """A refusal the client can act on: when to try again, and why."""
    headers = {"Retry-After": str(max(1, math.ceil(retry_after))), **(extra or {})}
    return web.Response(status=status, body=json.dumps({"detail": detail}).encode(),
                        content_type="application/json", headers=headers)


def retry_after(front: Front) -> float:
    """A hint, not a promise: about one margin (components/timeouts.py MARGIN_SECONDS)."""
    return front.settings.margin


async def queued(front: Front, request: web.Request) -> web.StreamResponse:
    if front.draining:
        return refusal(503, "the request queue is shutting down", retry_after(front))
    now = front.now()
    body = await request.read()
    job = Job(id=uuid.uuid4().hex, method=request.method, path=request.path, query=request.query_string,
              headers=dict(passed(request.headers.items())), body=body, arrived=now,
              deadline=now + front.settings.max_wait, cold=not front.registry.alive(),
              caller=auth.caller(request, front.settings.forwarded_for_entries))
    if not front.buffer.admit(job):
        return refusal(429, "queue full", retry_after(front))
    front.held[job.id] = job
    front.settle()
    try:
        return await _await_answer(front, job)
    except asyncio.CancelledError:
        _client_gone(front, job)
        raise
    finally:
        front.held.pop(job.id, None)
        front.settle()


def _marks(front: Front, job: Job) -> dict[str, str]:
    waited = (job.dispatched_at if job.dispatched_at is not None else front.now()) - job.arrived
    return {QUEUE_WAIT: f"{waited:.3f}", COLD_START: "true" if job.cold else "false"}


async def _await_answer(front: Front, job: Job) -> web.Response:
    while True:
        now = front.now()
        if job.state is State.WAITING:
            if now >= job.deadline:
                front.buffer.drop(job)
                job.move(State.EXPIRED)
                return refusal(503, "not dispatched in time", retry_after(front), _marks(front, job))
            until = job.deadline
        elif job.state is State.DISPATCHED:
            until = job.dispatched_at + front.settings.result_wait
            if now >= until:
                job.move(State.EXPIRED)
                job.end(EXPIRED)
                return refusal(504, "no result from the WebUI pod in time", retry_after(front), _marks(front, job))
        elif job.state is State.DONE:
            result = job.result
            return web.Response(status=result.status, body=result.body,
                                headers={"Content-Type": result.content_type, **_marks(front, job)})
        elif job.state is State.SHUT_DOWN:
            return refusal(503, "the request queue is shutting down", retry_after(front), _marks(front, job))
        else:  # LOST: its worker vanished and the client's bound has passed
            return refusal(502, "the WebUI pod running it went away", retry_after(front), _marks(front, job))
        job.changed.clear()
        try:
            async with asyncio.timeout(until - now):
                await job.changed.wait()
        except TimeoutError:
            pass


def _client_gone(front: Front, job: Job) -> None:
    if job.state is State.WAITING:
        front.buffer.drop(job)
    elif job.state is State.DISPATCHED:
        job.end(CLIENT_GONE)
    if job.held:
        job.move(State.GONE)
