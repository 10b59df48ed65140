"""Which pods run a browser's generation now, read from the Gradio queue messages the front already relays.

A generation started from the browser goes straight to its pod and takes WebUI's `queue_lock`
(AUTOMATIC1111/stable-diffusion-webui v1.10.1 `modules/call_queue.py` `wrap_gradio_gpu_call`), so while it
runs the pod must not be handed a job: the job would wait inside the pod, and the worker's interrupt on a
timeout (`/sdapi/v1/interrupt` sets WebUI's one global flag) would stop the browser's generation instead.

Gradio 3.41.2 (the version WebUI v1.10.1 pins) runs one event per queue socket (`/queue/join`): its front end
opens a socket per event and closes it on completion (`submit` in the client bundled into the gradio==3.41.2
wheel, `templates/frontend/assets/index-2519a27e.js`, source `client/js/dist/index.js`), and the server sends
`{"msg": "process_starts"}` once the event's data is in, then runs it, then sends `{"msg": "process_completed",
...}`, and closes the socket in a `finally` whatever happened (`gradio/queueing.py` `Queue.process_events`).
So an event runs from `process_starts` until `process_completed` or the end of the socket from the pod's side.
Every message is a dict Gradio builds with "msg" as its first key (`queueing.py`), so the head of the text
tells the kind without parsing a message that may carry megabytes of images.

A browser that leaves mid-event does not stop it: the server runs the prediction in a background task and
only its messages to the gone socket fail (`process_events`, `send_message`). The front then keeps the
pod's side of the socket open and reads on until `process_completed`, so the pod stays busy exactly as long.

Which events count: all of them. WebUI sends every UI event through this one Gradio queue (`shared.demo.queue`
in v1.10.1 `webui.py`); the generations (txt2img, img2img, extras, training, the checkpoint merger) take
`queue_lock` through `wrap_gradio_gpu_call`, others take it indirectly (the quicksettings checkpoint
dropdown runs `opts.set`, whose `sd_model_checkpoint` onchange is `wrap_queued_call(reload_model_weights)`:
v1.10.1 `modules/initialize_util.py` `configure_opts_onchange`), and the rest run without it
(`wrap_gradio_call`, plain lambdas). Telling them apart would need WebUI's table of events, which every
extension changes (the socket only names an `fn_index`); counting all of them never hands a job to a pod
whose lock a browser holds, and costs the few milliseconds most lock-free events take.
"""

from __future__ import annotations

import asyncio
import re

from request_queue.buffer import Buffer
from request_queue.jobs import Job
from request_queue.workers import Worker

STARTS = "process_starts"
COMPLETED = "process_completed"
GENERATING = "process_generating"
_KIND = re.compile(r'\s*\{\s*"msg"\s*:\s*"([a-z_]+)"')
_HEAD = 64
"""Enough of a message to read its "msg" (the longest kind, with spaces, fits)."""

BUSY = "X-Queue-Webui-Busy"
"""On every `next` answer: `true` while the worker's pod runs a browser's event. A worker with batch on takes a
204 as leave to pull a batch job, which would wait inside the pod then: it polls again instead."""
UI_HOLD_SECONDS = 5.0
"""How long past its `wait` a `next` is held while the worker's pod runs a browser's event. The worker waits
for `next`'s answer `wait` + 10 s (images/queue-agent/queue_agent/front.py, CONNECT_SECONDS); held longer,
it would take the request queue for unreachable."""


def kind(text: str) -> str | None:
    """The "msg" of one Gradio queue message, read from its head; None when it has none there."""
    match = _KIND.match(text, 0, _HEAD)
    return match.group(1) if match else None


class UiSocket:
    """One browser's queue socket on one pod: whether its event runs there now."""

    def __init__(self, worker: Worker):
        self.worker = worker
        self.running = False
        self.completed = False
        self.cut = asyncio.Event()
        """Set when the front drains while no generation runs for it: the browser's side is cut at once."""

    def saw(self, text: str) -> str | None:
        """Note one message from the pod; its kind. A `process_generating` ends the busy count too: only a
        generator function streams (`Queue.process_events`), e.g. a Gradio `every=` event that runs as long as
        its tab is open, and none of WebUI's `queue_lock` wrappers is one (v1.10.1 `modules/call_queue.py`:
        each returns once, after releasing the lock)."""
        seen = kind(text)
        if seen == STARTS and not self.running:
            self.running = True
            self.worker.ui_event_started()
        elif seen in (COMPLETED, GENERATING) and self.running:
            self.end()
        self.completed = self.completed or seen == COMPLETED
        return seen

    def drain(self) -> None:
        """The front stops. A socket whose event has not started, or streams, is cut now; one whose generation
        runs goes on to its end, and Gradio closes it then (`Queue.process_events`, `finally`), as it closes a
        completed one."""
        if not self.running and not self.completed:
            self.cut.set()

    def end(self) -> None:
        """The event is over (completed, or the pod closed the socket)."""
        if self.running:
            self.running = False
            self.worker.ui_event_ended()


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def take_when_free(buffer: Buffer, worker: Worker, wait: float) -> Job | None:
    """The next job for `worker`'s `next`, handed over only while its pod runs no browser event: until that ends
    the call is held, not answered 204, up to `wait` + UI_HOLD_SECONDS; a 204 then says BUSY, so that a worker
    with batch on does not start a batch job, which would wait inside the pod behind the browser's generation.
    A held call answers 204 at once when the front starts draining, as every open `next` without a job does."""
    clock = asyncio.get_running_loop().time
    until = clock() + wait
    while True:
        if worker.ui_events:
            try:
                async with asyncio.timeout(until + UI_HOLD_SECONDS - clock()):
                    await _first(worker.ui_done, worker.left, buffer.released)
            except TimeoutError:
                return None
            if buffer.released.is_set() and worker.ui_events:
                return None
        job = await buffer.take(max(0.0, until - clock()), worker.no_job)
        if job is not None or worker.left.is_set() or not worker.ui_events:
            return job
