"""The worker registry: who pulls from the buffer, what each holds, and the demand KEDA scales on.

A worker is registered from its first `next` until its DELETE, until its held `cancel` drops (it vanished),
or until it has neither polled nor held a job for WORKER_TTL_SECONDS (docs/request-queue.md, "Workers").
A batch job (PUT batch) holds it for up to GENERATION_TIMEOUT_SECONDS + MARGIN_SECONDS after the PUT: a
generation outlasts the TTL, and a worker forgotten mid-generation loses its browsers and its place in the demand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from request_queue.jobs import Job


@dataclass(eq=False)
class Worker:
    name: str
    url: str
    last_seen: float
    polls: int = 0
    """`next` calls open now."""
    job: Job | None = None
    batch_since: float | None = None
    """When it said it runs a batch job (PUT batch); None once it polls again."""
    left: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when it is no longer registered (DELETE, its `cancel` dropped, the TTL): its open `next` answers
    204 at once."""
    ui_events: int = 0
    """Browser (Gradio) events its pod runs now, each between `process_starts` and its end (ui_events.py)."""
    no_job: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while its `next` must not be handed a job: its pod runs a browser event, or it left. An open `next`
    stops waiting for a job then (Buffer.take)."""
    ui_done: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while ui_events == 0: a held `next` goes on."""

    def __post_init__(self) -> None:
        self.ui_done.set()

    @property
    def busy(self) -> bool:
        return self.job is not None or self.batch_since is not None or self.ui_events > 0

    def ui_event_started(self) -> None:
        self.ui_events += 1
        self.no_job.set()
        self.ui_done.clear()

    def ui_event_ended(self) -> None:
        self.ui_events -= 1
        if self.ui_events == 0:
            self.ui_done.set()
            if not self.left.is_set():
                self.no_job.clear()


class Registry:
    def __init__(self, ttl: float, batch_hold: float, clock: Callable[[], float]):
        self.ttl = ttl
        self.batch_hold = batch_hold
        """How long a PUT batch holds the worker: the longest its generation may take, plus a margin."""
        self.clock = clock
        self._workers: dict[str, Worker] = {}
        self.present = asyncio.Event()
        """Set while at least one worker is registered: API calls and browsers waiting through a cold start."""

    def seen(self, name: str, url: str) -> Worker:
        """Register `name` at `url`, or note that it is still there."""
        worker = self._workers.get(name)
        if worker is None:
            worker = self._workers[name] = Worker(name, url, self.clock())
        worker.url, worker.last_seen = url, self.clock()
        self.present.set()
        return worker

    def get(self, name: str) -> Worker | None:
        self.prune()
        return self._workers.get(name)

    def remove(self, name: str) -> Worker | None:
        worker = self._workers.pop(name, None)
        if worker is not None:
            worker.left.set()
            worker.no_job.set()
        if not self._workers:
            self.present.clear()
        return worker

    def started_batch(self, worker: Worker) -> None:
        worker.batch_since = worker.last_seen = self.clock()

    def prune(self) -> None:
        """Forget workers neither polling nor holding a job (a client's, or a batch one within its hold) for the
        TTL."""
        now = self.clock()
        for worker in list(self._workers.values()):
            holding = worker.job is not None and worker.job.held
            batching = worker.batch_since is not None and now - worker.batch_since <= self.batch_hold
            if worker.polls == 0 and not holding and not batching and now - worker.last_seen > self.ttl:
                self.remove(worker.name)

    def alive(self) -> list[Worker]:
        self.prune()
        return list(self._workers.values())

    def pick(self) -> Worker | None:
        """A worker for a call that is not queued: an idle one if there is one."""
        workers = self.alive()
        idle = [w for w in workers if not w.busy]
        return (idle or workers or [None])[0]


@dataclass
class UiActivity:
    """When a browser last used the UI: one pod stays wanted for UI_KEEPALIVE_SECONDS after it."""

    keepalive: float
    clock: Callable[[], float]
    last: float | None = None
    sockets: int = 0
    """WebSockets open now (Gradio's queue): an open tab in the middle of a generation."""

    def touch(self) -> None:
        self.last = self.clock()

    @property
    def active(self) -> bool:
        return self.sockets > 0 or (self.last is not None and self.clock() - self.last <= self.keepalive)


def demand(registry: Registry, waiting: int, ui: UiActivity) -> dict[str, int | bool]:
    """`GET /v1/demand` (docs/request-queue.md): `desired` = max(busy + waiting, 1 if ui_active else 0)."""
    workers = registry.alive()
    busy = sum(w.busy for w in workers)
    return {"desired": max(busy + waiting, 1 if ui.active else 0), "waiting": waiting, "busy": busy,
            "idle": len(workers) - busy, "workers": len(workers), "ui_active": ui.active}
