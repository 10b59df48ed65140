"""A local stand-in for the request queue's client port (docs/request-queue.md, "Clients"), in front of a FakeWebui.

What the load test relies on, and nothing more:
- while no worker is registered (`workers_ready` clear) a request waits in the buffer: a cold start;
- with `max_depth` requests waiting, a new one gets 429 with Retry-After at once (QUEUE_MAX_DEPTH);
- setting `expire` answers every waiting request 503 with Retry-After, as QUEUE_MAX_WAIT_SECONDS would,
  without a test having to wait for a clock;
- every queued response carries `X-Queue-Wait` (seconds spent waiting) and `X-Queue-Cold-Start`.
Then the request goes to the backend, which serialises generations itself (FakeWebui).
"""

from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from tests.fakes.server import LocalServer
from tests.fakes.webui import _reply

COLD_START_HEADER = "X-Queue-Cold-Start"
QUEUE_WAIT_HEADER = "X-Queue-Wait"


class FakeQueueFront(LocalServer):
    METHODS = ("GET", "POST")
    THREAD_NAME = "fake-queue-front"

    def __init__(self, backend_url: str, max_depth: int | None = None, retry_after_seconds: int = 5):
        super().__init__()
        self.backend = urlsplit(backend_url)
        self.max_depth = max_depth
        self.retry_after_seconds = retry_after_seconds
        self.workers_ready = threading.Event()
        self.expire = threading.Event()
        self.waiting = 0
        self.refused = 0  # answered 429
        self.sent_waits: list[float] = []  # the X-Queue-Wait of every queued answer
        self._counts = threading.Lock()
        self._closing = threading.Event()

    def stop(self) -> None:
        self._closing.set()  # lets requests still waiting end without an answer
        super().stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        retry_after = {"Retry-After": str(self.retry_after_seconds)}
        with self._counts:
            if self.max_depth is not None and self.waiting >= self.max_depth:
                self.refused += 1
                _reply(request, 429, b'{"detail":"queue full"}', retry_after)
                return
            self.waiting += 1
        arrived = time.monotonic()
        cold = not self.workers_ready.is_set()
        try:
            while not self.workers_ready.wait(timeout=0.02):
                if self._closing.is_set():
                    return
                if self.expire.is_set():
                    _reply(request, 503, b'{"detail":"not dispatched in time"}', retry_after)
                    return
        finally:
            with self._counts:
                self.waiting -= 1
        waited = round(time.monotonic() - arrived, 3)
        upstream = http.client.HTTPConnection(self.backend.hostname, self.backend.port, timeout=60)
        try:
            headers = {key: value for key, value in request.headers.items() if key.lower() not in ("host", "connection")}
            upstream.request(request.command, request.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            answer = response.read()
            with self._counts:
                self.sent_waits.append(waited)
            _reply(request, response.status, answer,
                   {"Content-Type": response.getheader("Content-Type", "application/json"),
                    QUEUE_WAIT_HEADER: str(waited), COLD_START_HEADER: "true" if cold else "false"})
        finally:
            upstream.close()
