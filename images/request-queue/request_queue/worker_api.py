"""The workers' port (docs/request-queue.md, "Workers"): long-poll `next`, held `cancel`, `result`, `release`,
`batch`, `DELETE`, and the demand KEDA's metrics-api trigger reads.

The worker's `cancel` call is how the request queue knows the worker is alive while it generates: if it
drops before the result, or is not opened within MARGIN_SECONDS of the dispatch (the worker died, or the
`next` answer was lost, before it could), the job goes back to the head of the buffer while its client may
still wait, and the client gets 502 otherwise.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from request_queue import ui_events
from request_queue.jobs import Job, Result, State
from request_queue.state import FRONT, Front
from request_queue.workers import demand

DRAINING = "X-Queue-Draining"
"""On every `next` answer: `true` while this front drains (SIGTERM). A worker then polls it only briefly, so the
requests it still holds are served while the new front gets the long polls (docs/request-queue.md, "Rollout")."""
MAX_POLL_SECONDS = 60.0
"""The longest `wait` a worker may ask for; it stays below WORKER_TTL_SECONDS in practice (timeouts.py)."""


def _bad_request(detail: str) -> web.Response:
    return web.json_response({"detail": detail}, status=400)


async def _poll_request(request: web.Request) -> tuple[str, float] | web.Response:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _bad_request('want a JSON body {"url": "http://POD_IP:7860", "wait": SECONDS}')
    url, wait = (body.get("url"), body.get("wait", 0)) if isinstance(body, dict) else (None, None)
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return _bad_request(f"url={url!r}: want the worker's WebUI address, http://POD_IP:7860")
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= MAX_POLL_SECONDS:
        return _bad_request(f"wait={wait!r}: want seconds, 0 to {MAX_POLL_SECONDS:g}")
    return url, float(wait)


def _vanished(front: Front, job: Job) -> None:
    """The worker let go of `job` without a result: back to the head if its client may still wait."""
    if job.state is not State.DISPATCHED:
        return
    if front.now() < job.deadline:
        front.buffer.requeue(job)
    else:
        job.move(State.LOST)


def _let_go(front: Front, name: str, job: Job) -> None:
    """The worker `name` vanished holding `job`: forget it, and hand the job back."""
    worker = front.registry.remove(name)
    if worker is not None and worker.job is job:
        worker.job = None
    _vanished(front, job)


def _unclaimed(front: Front, name: str, job: Job, dispatched_at: float) -> None:
    """A margin after the dispatch: a worker that has not opened `cancel` for the job yet is taken as gone."""
    if job.state is State.DISPATCHED and job.dispatched_at == dispatched_at and not job.claimed:
        _let_go(front, name, job)


async def next_job(request: web.Request) -> web.StreamResponse:
    front = request.app[FRONT]
    parsed = await _poll_request(request)
    if isinstance(parsed, web.Response):
        return parsed
    url, wait = parsed
    name = request.match_info["worker"]
    worker = front.registry.seen(name, url)
    if worker.job is not None:  # it asks for more while holding one: it let that one go
        _vanished(front, worker.job)
        worker.job = None
    worker.batch_since = None
    worker.polls += 1
    try:
        job = await ui_events.take_when_free(front.buffer, worker, wait)
    finally:
        worker.polls -= 1
        worker.last_seen = front.now()
    marks = {DRAINING: "true" if front.draining else "false",
             ui_events.BUSY: "true" if worker.ui_events else "false"}
    if job is None:  # none came, it left (DELETE) while it polled, or the front started draining
        return web.Response(status=204, headers=marks)
    worker.job = job
    job.dispatch(name, front.now())
    asyncio.get_running_loop().call_later(front.settings.margin, _unclaimed, front, name, job, job.dispatched_at)
    return web.json_response(job.as_message(front.settings.generation_timeout), headers=marks)


def _job(front: Front, request: web.Request) -> Job | None:
    """The job named in the path if it runs on the worker named in the path, its client still waiting.

    Looked up by id rather than through the registry: a worker that sent DELETE on SIGTERM still finishes
    (and reports) the job it holds."""
    job = front.held.get(request.match_info["job"])
    if job is None or job.worker != request.match_info["worker"] or job.state is not State.DISPATCHED:
        return None
    return job


def _release(front: Front, name: str, job_id: str) -> None:
    """The worker is done with the job: it is idle (or leaving) again."""
    worker = front.registry.get(name)
    if worker is not None:
        worker.last_seen = front.now()
        if worker.job is not None and worker.job.id == job_id:
            worker.job = None


def _abandoned(front: Front, request: web.Request) -> Job | None:
    """The job the worker named holds though its client left or its budget expired: the worker still
    learns why when its `cancel` call comes late."""
    worker = front.registry.get(request.match_info["worker"])
    job = worker.job if worker is not None else None
    if job is None or job.id != request.match_info["job"] or not job.ended.done():
        return None
    return job


async def cancel(request: web.Request) -> web.StreamResponse:
    front = request.app[FRONT]
    job = _job(front, request) or _abandoned(front, request)
    if job is None:
        return web.json_response({"detail": "no such job in flight"}, status=410)
    job.claimed = True
    ended = job.ended
    try:
        reason = await asyncio.shield(ended)
    except asyncio.CancelledError:
        if not ended.done():
            _let_go(front, request.match_info["worker"], job)
        raise
    if reason is None:
        return web.Response(status=204)
    return web.json_response({"reason": reason})


async def result(request: web.Request) -> web.StreamResponse:
    front = request.app[FRONT]
    body = await request.read()
    _release(front, request.match_info["worker"], request.match_info["job"])
    job = _job(front, request)
    if job is None:
        return web.json_response({"detail": "the client is gone"}, status=410)
    try:
        status = int(request.headers["X-Upstream-Status"])
    except (KeyError, ValueError):
        return _bad_request("X-Upstream-Status: want WebUI's HTTP status, e.g. 200")
    job.finish(Result(status, request.headers.get("Content-Type", "application/octet-stream"), body))
    return web.Response(status=204)


async def release(request: web.Request) -> web.StreamResponse:
    """The worker hands a job back unrun: its WebUI runs a generation the fronts did not count (a browser's event
    started at another front, or before this front knew the worker). The job goes first in line while its client
    waits, and the worker is free again."""
    front = request.app[FRONT]
    job = _job(front, request)
    if job is None:
        return web.json_response({"detail": "no such job in flight"}, status=410)
    _release(front, request.match_info["worker"], job.id)
    front.buffer.requeue(job)
    return web.Response(status=204)


async def batch(request: web.Request) -> web.StreamResponse:
    front = request.app[FRONT]
    worker = front.registry.get(request.match_info["worker"])
    if worker is None:
        return web.json_response({"detail": "unknown worker: call next first"}, status=404)
    front.registry.started_batch(worker)
    return web.Response(status=204)


async def leave(request: web.Request) -> web.StreamResponse:
    front = request.app[FRONT]
    front.registry.remove(request.match_info["worker"])  # its job in flight, if any, still reports
    return web.Response(status=204)


async def current_demand(request: web.Request) -> web.StreamResponse:
    front = request.app[FRONT]
    return web.json_response(demand(front.registry, len(front.buffer), front.ui))


async def alive(request: web.Request) -> web.StreamResponse:
    """Liveness: 200 while draining too, since results of accepted requests still arrive here."""
    return web.json_response({"draining": request.app[FRONT].draining})


def routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/workers/{worker}/next", next_job),
        web.get("/v1/workers/{worker}/jobs/{job}/cancel", cancel),
        web.post("/v1/workers/{worker}/jobs/{job}/result", result),
        web.post("/v1/workers/{worker}/jobs/{job}/release", release),
        web.put("/v1/workers/{worker}/batch", batch),
        web.delete("/v1/workers/{worker}", leave),
        web.get("/v1/demand", current_demand),
        web.get("/healthz", alive),
    ]
