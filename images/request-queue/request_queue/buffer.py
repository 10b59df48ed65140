"""The one FIFO buffer: admission at QUEUE_MAX_DEPTH, and hand-over to workers that long-poll for work.

A worker polling while nothing waits parks a future here; the next admitted job goes straight to the oldest
parked worker, so a job never waits while a worker is free. A poll ends at once when its worker leaves
(DELETE) or its pod starts a browser's generation, and, with no job, when the front starts draining; a job handed
to a poll in that same instant, or to one whose worker vanished, goes back to the head.
"""

from __future__ import annotations

import asyncio
from collections import deque

from request_queue.jobs import Job, State


class Buffer:
    def __init__(self, max_depth: int):
        self.max_depth = max_depth
        self._waiting: deque[Job] = deque()
        self._polls: deque[asyncio.Future[Job | None]] = deque()
        self.released = asyncio.Event()
        """Set once the front drains (release_polls): a `next` held for a browser's event answers 204 then too."""

    def __len__(self) -> int:
        return len(self._waiting)

    def admit(self, job: Job) -> bool:
        """Queue `job` at the tail, or refuse it (False) with QUEUE_MAX_DEPTH requests already waiting."""
        if len(self._waiting) >= self.max_depth:
            return False
        self._offer(job, head=False)
        return True

    def requeue(self, job: Job) -> None:
        """Put a job whose worker vanished back at the head: it has waited longest."""
        job.requeued()
        self._offer(job, head=True)

    def drop(self, job: Job) -> None:
        """Take a job whose client left, or whose wait expired, out of the buffer."""
        try:
            self._waiting.remove(job)
        except ValueError:
            pass  # already handed to a poll: the poll skips it, its state is no longer WAITING

    def release_polls(self) -> None:
        """End every parked poll with no job: the front drains, and its workers look at the other fronts."""
        self.released.set()
        while self._polls:
            poll = self._polls.popleft()
            if not poll.done():
                poll.set_result(None)

    def _offer(self, job: Job, head: bool) -> None:
        while self._polls:
            poll = self._polls.popleft()
            if not poll.done():
                poll.set_result(job)
                return
        if head:
            self._waiting.appendleft(job)
        else:
            self._waiting.append(job)

    async def take(self, wait: float, *ends: asyncio.Event) -> Job | None:
        """The next waiting job, waiting up to `wait` seconds for one; None if none came, or at once when one of
        `ends` is set: the worker sent DELETE (it is leaving), or its pod started a browser's generation
        (ui_events.py); either way it must not be handed a job now."""
        loop = asyncio.get_running_loop()
        until = loop.time() + wait
        while True:
            job = await self._take_once(until - loop.time(), ends)
            if job is None or job.state is State.WAITING:
                return job

    async def _take_once(self, wait: float, ends: tuple[asyncio.Event, ...]) -> Job | None:
        if any(end.is_set() for end in ends):
            return None
        if self._waiting:
            return self._waiting.popleft()
        if wait <= 0:
            return None
        poll: asyncio.Future[Job | None] = asyncio.get_running_loop().create_future()
        self._polls.append(poll)
        ending = [asyncio.ensure_future(end.wait()) for end in ends]
        try:
            await asyncio.wait((poll, *ending), timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            if not poll.done():
                return None
            job = poll.result()
            if job is not None and any(end.is_set() for end in ends):  # handed a job in the same instant: first again
                if job.state is State.WAITING:
                    self._offer(job, head=True)
                return None
            return job
        except asyncio.CancelledError:
            if poll.done():  # handed a job as the worker vanished: it goes back first in line
                job = poll.result()
                if job is not None and job.state is State.WAITING:
                    self._offer(job, head=True)
            raise
        finally:
            for waiter in ending:
                waiter.cancel()
            poll.cancel()
            if poll in self._polls:
                self._polls.remove(poll)
