"""A queued request's life: waiting in the buffer, dispatched to one worker, then answered or abandoned.

Each change of state sets `changed`, which the client's handler awaits; `ended` resolves for the worker's held
`cancel` call: with a reason when the generation is to be interrupted, with None once the result arrived.
"""

from __future__ import annotations

import asyncio
import base64
import enum
from dataclasses import dataclass, field


class State(enum.Enum):
    WAITING = "waiting"
    DISPATCHED = "dispatched"
    DONE = "done"
    """The worker posted the result."""
    EXPIRED = "expired"
    """Not dispatched within QUEUE_MAX_WAIT_SECONDS, or no result within the result wait."""
    GONE = "gone"
    """The client disconnected."""
    SHUT_DOWN = "shut down"
    """Still held when the drain ended: the client gets 503."""
    LOST = "lost"
    """The worker vanished with it past the client's bound: the client gets 502."""


CLIENT_GONE = "client gone"
EXPIRED = "expired"
"""The reasons a worker's held `cancel` call answers with (docs/request-queue.md, "Workers")."""


@dataclass(frozen=True)
class Result:
    status: int
    content_type: str
    body: bytes


@dataclass(eq=False)
class Job:
    id: str
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    arrived: float
    deadline: float
    """When a job still waiting in the buffer expires (arrival + QUEUE_MAX_WAIT_SECONDS)."""
    cold: bool
    """No worker was registered when it arrived: it waited through a cold start."""
    caller: str = ""
    """Who sent it (auth.caller): their progress, interrupt and skip calls go to its pod (callers.py)."""
    state: State = State.WAITING
    worker: str | None = None
    dispatched_at: float | None = None
    claimed: bool = False
    """Its worker opened `cancel` for this dispatch: from then on the held call tells whether it is alive."""
    result: Result | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Future[str | None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    @property
    def held(self) -> bool:
        """The client still waits for it."""
        return self.state in (State.WAITING, State.DISPATCHED)

    def move(self, state: State) -> None:
        self.state = state
        self.changed.set()

    def dispatch(self, worker: str, now: float) -> None:
        self.worker, self.dispatched_at = worker, now
        self.move(State.DISPATCHED)

    def requeued(self) -> None:
        self.worker, self.dispatched_at, self.claimed = None, None, False
        self.ended = asyncio.get_running_loop().create_future()
        self.move(State.WAITING)

    def finish(self, result: Result) -> None:
        self.result = result
        self.move(State.DONE)
        self.end(None)

    def end(self, reason: str | None) -> None:
        """Tell the worker holding `cancel` to interrupt (a reason) or that the job is over (None)."""
        if not self.ended.done():
            self.ended.set_result(reason)

    def as_message(self, generation_timeout: float) -> dict:
        return {"id": self.id, "method": self.method, "path": self.path, "query": self.query,
                "headers": self.headers, "body": base64.b64encode(self.body).decode(),
                "generation_timeout": generation_timeout}
