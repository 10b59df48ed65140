"""A local stand-in for the WebUI API (the request queue in front of it: tests/fakes/queue_front.py).

FakeWebui answers like AUTOMATIC1111's API (v1.10.1, the recipe's pin):
- 401 on every route without the right basic auth (`--api-auth`);
- txt2img only once the model has loaded (it loads in a background thread: REFERENCE §5); a request
  that waits longer than `model_wait` gets a 500;
- one generation at a time, first come first served: WebUI serialises generations behind one FIFO
  lock (AUTOMATIC1111/stable-diffusion-webui@82a973c04367123ae98bd9abdf80d9eda9b910e2:
  modules/call_queue.py:8 `queue_lock = fifo_lock.FIFOLock()`, modules/api/api.py:467), so extra
  requests queue silently inside the pod. Each takes `generation_seconds`.
`POST /sdapi/v1/interrupt` ends the generation running now early, as WebUI's `shared.state.interrupt()`
does (modules/api/api.py `interruptapi`); the flag is cleared when the next generation begins
(modules/shared_state.py `State.begin`), so an interrupt with nothing running cuts nothing.
`GET /sdapi/v1/progress` tells the truth about `state.job_count`, as `progressapi` reads it from WebUI's
`shared.state` (modules/api/api.py): 0 while idle, the generation's `n_iter` while one runs (`State.begin` sets
-1, processing its batch count, `State.end` 0: modules/shared_state.py). `browser_generation()` runs a generation
as a browser's event does: outside the API, holding the same FIFO lock.
It counts what a test needs to check ordering and concurrency without timing anything: requests open
at once, generations at once, the order they were served in. Clearing `admit` holds requests
before they queue, so a test can see how many a client keeps open.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

from tests.fakes.server import LocalServer


def _reply(handler: BaseHTTPRequestHandler, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class FakeWebui(LocalServer):
    METHODS = ("GET", "POST")
    THREAD_NAME = "fake-webui"

    def __init__(self, auth: str = "sd:secret", generation_seconds: float = 0.0, model_loaded: bool = False,
                 model_wait: float = 1.0, image: bytes = b""):
        super().__init__()
        self.image = image  # non-empty: every generation returns batch_size * n_iter copies of it
        self.failures = 0  # the next this many generations answer 500 (an out-of-memory, a crash)
        self.auth = auth
        self.generation_seconds = generation_seconds
        self.model_wait = model_wait
        self.model_loaded = threading.Event()
        if model_loaded:
            self.model_loaded.set()
        self.admit = threading.Event()
        self.admit.set()
        self.job_count = 0  # a generation outside this stand-in (another process's), which progress reports too
        self._running_count = 0  # the running generation's batch count (WebUI's state.job_count), 0 while idle
        self.txt2img_payloads: list[dict] = []
        self.hosts: list[str | None] = []  # the Host header of each txt2img request
        self.targets: list[str] = []  # the request target (path and query) of each txt2img request
        self.served: list[str | None] = []  # X-Loadtest-Request of each finished generation, in order
        self.progress_calls = 0  # GET /sdapi/v1/progress calls
        self.interrupts = 0  # POST /sdapi/v1/interrupt calls
        self.interrupted: list[str | None] = []  # X-Loadtest-Request of each generation an interrupt cut short
        self._interrupt = threading.Event()
        self.open_requests = 0
        self.max_open_requests = 0
        self.max_generating = 0
        self._generating = 0
        self._counts = threading.Lock()
        self._turns = threading.Condition()
        self._next_ticket = 0
        self._now_serving = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        expected = "Basic " + base64.b64encode(self.auth.encode()).decode()
        if request.headers.get("Authorization") != expected:
            _reply(request, 401, b'{"detail":"Incorrect username or password"}', {"WWW-Authenticate": "Basic"})
            return
        path = request.path.split("?", 1)[0]  # FastAPI routes on the path; a query is the handler's
        if request.command == "GET" and path == "/sdapi/v1/options":
            self._json(request, {"sd_model_checkpoint": "v1-5"})
        elif request.command == "GET" and path == "/sdapi/v1/progress":
            with self._counts:
                self.progress_calls += 1
            self._json(request, {"progress": 0.5, "state": {"job_count": self.job_count or self._running_count}})
        elif request.command == "POST" and path == "/sdapi/v1/txt2img":
            self._txt2img(request)
        elif request.command == "POST" and path == "/sdapi/v1/interrupt":
            with self._counts:
                self.interrupts += 1
                self._interrupt.set()
            self._json(request, {})
        else:
            _reply(request, 404, b'{"detail":"Not Found"}')

    def _json(self, request: BaseHTTPRequestHandler, body: dict) -> None:
        _reply(request, 200, json.dumps(body).encode(), {"Content-Type": "application/json"})

    def _txt2img(self, request: BaseHTTPRequestHandler) -> None:
        """The request stops counting as open before its answer is written: a client that has its answer may
        send its next request at once, and must not find this one still counted."""
        payload = json.loads(request.rfile.read(int(request.headers["Content-Length"])))
        with self._counts:
            self.txt2img_payloads.append(payload)
            self.hosts.append(request.headers.get("Host"))
            self.targets.append(request.path)
            self.open_requests += 1
            self.max_open_requests = max(self.max_open_requests, self.open_requests)
        try:
            status, body = self._txt2img_answer(request, payload)
        finally:
            with self._counts:
                self.open_requests -= 1
        if status == 200:
            self._json(request, body)
        else:
            _reply(request, status, json.dumps(body).encode())

    def _txt2img_answer(self, request: BaseHTTPRequestHandler, payload: dict) -> tuple[int, dict]:
        self.admit.wait()
        if not self.model_loaded.wait(timeout=self.model_wait):
            return 500, {"error": "model not loaded"}
        with self._fifo_turn():
            with self._counts:
                if self.failures:
                    self.failures -= 1
                    return 500, {"error": "OutOfMemoryError"}
                self._generating += 1
                self.max_generating = max(self.max_generating, self._generating)
                self._interrupt.clear()
                self._running_count = payload.get("n_iter", 1)
            cut = self._generate(request)
            with self._counts:
                self._running_count = 0
                self._generating -= 1
                self.served.append(request.headers.get("X-Loadtest-Request"))
                if cut:
                    self.interrupted.append(request.headers.get("X-Loadtest-Request"))
        count = payload.get("batch_size", 1) * payload.get("n_iter", 1) if self.image else 0
        images = [base64.b64encode(self.image).decode()] * count
        return 200, {"images": images, "parameters": payload, "info": "{}"}

    def _generate(self, request: BaseHTTPRequestHandler) -> bool:
        """One generation, holding the FIFO turn: `generation_seconds`, or less when interrupted (True)."""
        return self._interrupt.wait(self.generation_seconds)

    @contextmanager
    def browser_generation(self) -> Iterator[None]:
        """A generation a browser started (Gradio's queue, straight to the pod): it holds the FIFO lock, and
        progress reports it, until the block ends."""
        with self._fifo_turn():
            with self._counts:
                self._running_count = 1
            try:
                yield
            finally:
                with self._counts:
                    self._running_count = 0

    @contextmanager
    def _fifo_turn(self) -> Iterator[None]:
        """A FIFO lock, like WebUI's queue_lock: generations run one at a time in arrival order."""
        with self._turns:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._turns.wait_for(lambda: self._now_serving == ticket)
        try:
            yield
        finally:
            with self._turns:
                self._now_serving += 1
                self._turns.notify_all()
