"""What the two ports share: the settings, the buffer, the worker registry, the browser activity, the drain."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from request_queue.buffer import Buffer
from request_queue.config import Settings
from request_queue.jobs import Job
from request_queue.ui_events import UiSocket
from request_queue.workers import Registry, UiActivity


@dataclass(eq=False)
class Front:
    settings: Settings
    buffer: Buffer
    registry: Registry
    ui: UiActivity
    held: dict[str, Job] = field(default_factory=dict)
    """Queued requests whose client still waits, by job id: the drain waits for them."""
    passing: int = 0
    """Calls being passed straight to a pod (API calls that are not queued, browser requests)."""
    draining: bool = False
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when nothing is held or passing: the drain may end early."""
    session: aiohttp.ClientSession | None = None
    ui_sockets: set[UiSocket] = field(default_factory=set)
    """The browsers' Gradio queue sockets open now: the drain cuts those whose event has not started."""
    background: set[asyncio.Task] = field(default_factory=set)
    """Work no client waits for (a browser's event read to its end after the browser left): not drained,
    cancelled at stop."""

    @classmethod
    def create(cls, settings: Settings) -> Front:
        clock = asyncio.get_running_loop().time
        batch_hold = settings.generation_timeout + settings.margin
        front = cls(settings, Buffer(settings.max_depth), Registry(settings.worker_ttl, batch_hold, clock),
                    UiActivity(settings.ui_keepalive, clock))
        front.idle.set()
        return front

    def now(self) -> float:
        return self.registry.clock()

    def keep(self, work: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def settle(self) -> None:
        """Re-check whether anything is in flight (after a request ends)."""
        if self.held or self.passing:
            self.idle.clear()
        else:
            self.idle.set()


FRONT: web.AppKey[Front] = web.AppKey("front", Front)
