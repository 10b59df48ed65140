"""A strict stand-in for the request queue's workers port (docs/request-queue.md, "Workers"): it serves the
jobs a test submits, first in first out, and refuses, in `problems`, every request the protocol does not
allow, so a worker that talks to it cleanly follows the protocol.

What it checks: `next`'s body is exactly {"url": "http://...", "wait": 0 <= seconds < WORKER_TTL}; no `next`
and no `PUT batch` while the worker holds a job; `cancel`, `release` and `result` only for a job dispatched to
that worker, `cancel` held once and open when the result comes, `release` only before `cancel` (it puts the job
back first in line), `result` once, with an integer `X-Upstream-Status` and a `Content-Type`; no other path.
A `cancel` that drops before the result hands the job back to the head of the buffer, as the request queue
does for a worker that is gone.
`log` records, in order, (worker, event) for everything that happened; several stand-ins (the fronts of a
rollout) may share one `ledger` of (front, worker, event), which shows the order across them. `draining` is
what its `next` answers say in X-Queue-Draining, `webui_busy` what they say in X-Queue-Webui-Busy (the pod runs
a browser's generation).
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import select
import socket
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

from tests.fakes.server import LocalServer
from tests.fakes.webui import _reply

WORKER_TTL_SECONDS = 60
CANCEL_ON_ITS_WAY_SECONDS = 2.0
"""A worker sends `cancel` before it runs the job, but on its own connection, so this server's threads may
take the result first: a result waits this long for its cancel before it counts as a problem."""
ROUTES = {
    ("POST", re.compile(r"^/v1/workers/(?P<worker>[^/]+)/next$")): "_next",
    ("GET", re.compile(r"^/v1/workers/(?P<worker>[^/]+)/jobs/(?P<job>[^/]+)/cancel$")): "_cancel",
    ("POST", re.compile(r"^/v1/workers/(?P<worker>[^/]+)/jobs/(?P<job>[^/]+)/result$")): "_result",
    ("POST", re.compile(r"^/v1/workers/(?P<worker>[^/]+)/jobs/(?P<job>[^/]+)/release$")): "_release",
    ("PUT", re.compile(r"^/v1/workers/(?P<worker>[^/]+)/batch$")): "_batch",
    ("DELETE", re.compile(r"^/v1/workers/(?P<worker>[^/]+)$")): "_delete",
}


class StrictWorkersPort(LocalServer):
    METHODS = ("GET", "POST", "PUT", "DELETE")
    THREAD_NAME = "workers-port"

    def __init__(self, label: str = "front", ledger: list[tuple[str, str, str]] | None = None) -> None:
        super().__init__()
        self.label = label
        self.ledger = ledger if ledger is not None else []
        self.draining = False
        self.webui_busy = False
        self.log: list[tuple[str, str]] = []
        self.problems: list[str] = []
        self.results: dict[str, tuple[int, str, bytes]] = {}  # job id -> (X-Upstream-Status, Content-Type, body)
        self.urls: dict[str, str] = {}  # worker -> the url it registered
        self.gone: set[str] = set()  # jobs whose client left: their result is answered 410
        self._jobs: deque[dict] = deque()
        self._held: dict[str, str] = {}  # worker -> the job it runs
        self._dispatched: dict[str, dict] = {}
        self._cancel_open: set[str] = set()
        self._reasons: dict[str, str] = {}
        self._ids = itertools.count(1)
        self._changed = threading.Condition()
        self._closing = threading.Event()
        self._fixed_port = 0

    # --- what a test does ----------------------------------------------------------------------

    def submit(self, method: str = "POST", path: str = "/sdapi/v1/txt2img", body: dict | None = None,
               headers: dict[str, str] | None = None, query: str = "", generation_timeout: float = 60.0) -> str:
        job_id = f"job-{next(self._ids)}"
        data = json.dumps(body).encode() if body is not None else b""
        job = {"id": job_id, "method": method, "path": path, "query": query,
               "headers": {"Content-Type": "application/json", **(headers or {})},
               "body": base64.b64encode(data).decode(), "generation_timeout": generation_timeout}
        with self._changed:
            self._jobs.append(job)
            self._changed.notify_all()
        return job_id

    def cancel(self, job_id: str, reason: str) -> None:
        """Answer the job's held `cancel` with this reason ("client gone" or "expired")."""
        with self._changed:
            self._reasons[job_id] = reason
            self._changed.notify_all()

    def waiting(self) -> list[str]:
        with self._changed:
            return [job["id"] for job in self._jobs]

    def events(self, worker: str | None = None) -> list[str]:
        with self._changed:
            return [event for who, event in self.log if worker in (None, who)]

    def start(self) -> Self:
        """On the port of the first start, so a test can take the request queue away and bring it back."""
        fake = self
        handlers = {f"do_{verb}": (lambda handler: fake._handle(handler)) for verb in self.METHODS}
        handler = type("Handler", (BaseHTTPRequestHandler,), {**handlers, "log_message": lambda *args: None})
        self._closing.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", self._fixed_port), handler)
        self._server.daemon_threads = True
        self._fixed_port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name=self.THREAD_NAME, daemon=True).start()
        return self

    def stop(self) -> None:
        """Every held request ends without an answer, as when the request queue's process dies."""
        self._closing.set()
        with self._changed:
            self._changed.notify_all()
        super().stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._fixed_port}"

    # --- the protocol --------------------------------------------------------------------------

    def _problem(self, request: BaseHTTPRequestHandler, status: int, text: str) -> None:
        with self._changed:
            self.problems.append(f"{request.command} {request.path}: {text}")
        _reply(request, status, json.dumps({"detail": text}).encode(), {"Content-Type": "application/json"})

    def _record(self, worker: str, event: str) -> None:
        self.log.append((worker, event))  # callers hold self._changed
        self.ledger.append((self.label, worker, event))  # one append: atomic across the stand-ins' threads

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        for (method, pattern), name in ROUTES.items():
            match = pattern.match(request.path)
            if match and request.command == method:
                try:
                    getattr(self, name)(request, body, **match.groupdict())
                except OSError:
                    pass  # the worker closed its side: what that means is recorded by the route
                return
        self._problem(request, 404, "not a route of the workers port")

    def _next(self, request: BaseHTTPRequestHandler, body: bytes, worker: str) -> None:
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        wait = document.get("wait") if isinstance(document, dict) else None
        if (not isinstance(document, dict) or set(document) != {"url", "wait"}
                or not isinstance(document["url"], str) or not document["url"].startswith("http://")
                or isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait < WORKER_TTL_SECONDS):
            self._problem(request, 400, f"next body {body[:200]!r} is not {{\"url\": \"http://...\", \"wait\": seconds}}")
            return
        with self._changed:
            held = self._held.get(worker)
            job = None
            if held is None:
                self.urls[worker] = document["url"]
                self._record(worker, f"next {wait:g}")
                self._changed.wait_for(lambda: self._jobs or self._closing.is_set(), timeout=wait)
                if self._closing.is_set():
                    return
                if self._jobs:
                    job = self._jobs.popleft()
                    self._held[worker] = job["id"]
                    self._dispatched[job["id"]] = job
                    self._record(worker, f"job {job['id']}")
                else:
                    self._record(worker, "204")
        if held is not None:
            self._problem(request, 409, f"next while holding {held}")
            return
        draining = {"X-Queue-Draining": "true" if self.draining else "false",
                    "X-Queue-Webui-Busy": "true" if self.webui_busy else "false"}
        if job is None:
            _reply(request, 204, headers=draining)
        else:
            _reply(request, 200, json.dumps(job).encode(), {"Content-Type": "application/json", **draining})

    def _cancel(self, request: BaseHTTPRequestHandler, body: bytes, worker: str, job: str) -> None:
        with self._changed:
            allowed = self._held.get(worker) == job and job not in self._cancel_open and job not in self.results
            if allowed:
                self._cancel_open.add(job)
                self._record(worker, f"cancel {job}")
                self._changed.notify_all()
        if not allowed:
            self._problem(request, 410, f"cancel of {job}, which {worker} does not hold (or holds open already)")
            return
        connection: socket.socket = request.connection
        while True:
            with self._changed:
                self._changed.wait_for(lambda: job in self._reasons or job in self.results or self._closing.is_set(),
                                       timeout=0.02)
                if self._closing.is_set():
                    return
                if job in self.results:
                    self._cancel_open.discard(job)
                    answer = 204
                    break
                if job in self._reasons:
                    reason = self._reasons[job]
                    self._record(worker, f"cancelled {job}: {reason}")
                    answer = 200
                    break
                if _dropped(connection):
                    self._cancel_open.discard(job)
                    del self._held[worker]
                    self._jobs.appendleft(self._dispatched.pop(job))
                    self._record(worker, f"handed back {job}")
                    self._changed.notify_all()
                    return
        if answer == 200:
            _reply(request, 200, json.dumps({"reason": reason}).encode(), {"Content-Type": "application/json"})
        else:
            _reply(request, 204)  # the result arrived: nothing to interrupt

    def _result(self, request: BaseHTTPRequestHandler, body: bytes, worker: str, job: str) -> None:
        status, content_type = request.headers.get("X-Upstream-Status", ""), request.headers.get("Content-Type")
        with self._changed:
            problem = None
            if self._held.get(worker) != job or job in self.results:
                problem = (410, f"result of {job}, which {worker} does not hold")
            elif not self._changed.wait_for(lambda: job in self._cancel_open, timeout=CANCEL_ON_ITS_WAY_SECONDS):
                problem = (400, f"result of {job} without its cancel held open")
            elif not status.isdigit() or not 100 <= int(status) <= 599 or not content_type:
                problem = (400, f"result of {job} needs X-Upstream-Status and Content-Type; got {status!r}, {content_type!r}")
            else:
                self.results[job] = (int(status), content_type, body)
                del self._held[worker]
                self._dispatched.pop(job)
                self._record(worker, f"result {job} {status}")
                self._changed.notify_all()
        if problem:
            self._problem(request, *problem)
        else:
            _reply(request, 410 if job in self.gone else 204)

    def _release(self, request: BaseHTTPRequestHandler, body: bytes, worker: str, job: str) -> None:
        """The worker hands the job back unrun: first in line again, the worker free. Only for a job it holds,
        before its `cancel` (a job it has started running is reported, not released)."""
        with self._changed:
            allowed = self._held.get(worker) == job and job not in self._cancel_open and job not in self.results
            if allowed:
                del self._held[worker]
                self._jobs.appendleft(self._dispatched.pop(job))
                self._record(worker, f"released {job}")
                self._changed.notify_all()
        if allowed:
            _reply(request, 204)
        else:
            self._problem(request, 410, f"release of {job}, which {worker} does not hold unstarted")

    def _batch(self, request: BaseHTTPRequestHandler, body: bytes, worker: str) -> None:
        with self._changed:
            held = self._held.get(worker)
            if held is None:
                self._record(worker, "batch")
        if held is not None:
            self._problem(request, 409, f"a batch job while holding {held}")
        else:
            _reply(request, 204)

    def _delete(self, request: BaseHTTPRequestHandler, body: bytes, worker: str) -> None:
        with self._changed:
            self.urls.pop(worker, None)
            self._record(worker, "delete")
        _reply(request, 204)


def _dropped(connection: socket.socket) -> bool:
    """The peer closed its side: readable, and nothing to read."""
    readable, _, _ = select.select([connection], [], [], 0)
    if not readable:
        return False
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True
