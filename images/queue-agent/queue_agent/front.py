"""The request queue's workers port, as a worker sees it (docs/request-queue.md, "Workers").

Plain HTTP/1.1 on the cluster network, stdlib only: the worker needs nothing more than long polls,
one held GET per job, and small POSTs. QUEUE_FRONT_URL may resolve to several fronts (a rollout):
`Fronts` lists them, and a job's `cancel` and `result` go to the front that handed it out. Any answer
the protocol does not list, and any connection error, is `Unavailable`: the loop waits it out with
backoff instead of crashing.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import math
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

CONNECT_SECONDS = 10.0
"""How long a call other than the long poll and the held cancel may take on the cluster network."""
DIAL_SECONDS = 2.0
"""How long opening a connection to a front may take: a pod that is gone may drop packets rather than refuse."""
RESOLVE_SECONDS = 1.0
"""How often the fronts' addresses are looked up again (a rollout adds one and, once drained, removes one)."""
BACKOFF_SECONDS = (0.5, 5.0)
"""First and longest wait before polling again a front that did not answer."""
DRAINING = "X-Queue-Draining"
"""The `next` answer's header saying the front drains (request_queue/worker_api.py)."""
WEBUI_BUSY = "X-Queue-Webui-Busy"
"""The `next` answer's header saying the front sees this pod run a browser's generation (request_queue/
ui_events.py): a batch job pulled now would wait inside the pod behind it."""


class Unavailable(Exception):
    """The request queue did not answer as the protocol says (unreachable, restarting, or a bug)."""


@dataclass(frozen=True)
class Job:
    """One client request to run on the WebUI beside the worker, as the request queue hands it out."""

    id: str
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    generation_timeout: float

    @property
    def target(self) -> str:
        return self.path + ("?" + self.query if self.query else "")

    @classmethod
    def parse(cls, document: bytes) -> Job:
        """A job from `next`'s 200 body; Unavailable naming the field when it is not one."""
        try:
            job = json.loads(document)
            headers = job["headers"]
            pairs = list(headers.items()) if isinstance(headers, dict) else [(k, v) for k, v in headers]
            parsed = cls(id=job["id"], method=job["method"], path=job["path"], query=job.get("query") or "",
                         headers=pairs, body=base64.b64decode(job.get("body") or "", validate=True),
                         generation_timeout=float(job["generation_timeout"]))
        except (ValueError, KeyError, TypeError, binascii.Error) as err:
            raise Unavailable(f"next answered a job the protocol does not allow ({type(err).__name__}: {err}): "
                              f"{document[:200]!r}") from None
        if not (isinstance(parsed.id, str) and parsed.id and isinstance(parsed.method, str)
                and isinstance(parsed.path, str) and parsed.path.startswith("/") and parsed.generation_timeout > 0):
            raise Unavailable(f"next answered a job the protocol does not allow: {document[:200]!r}")
        return parsed


class Front:
    """`POST next`, `GET cancel`, `POST result`, `POST release`, `PUT batch` and `DELETE` for one worker at one front (one request
    queue pod, by its own address: a job's `cancel` and `result` go to the pod that handed it out)."""

    def __init__(self, host: str, port: int, worker: str, own_url: str):
        self.host, self.port = host, port
        self.base = f"/v1/workers/{quote(worker, safe='')}"
        self.own_url = own_url
        self.draining = False
        """What its last `next` answer said (X-Queue-Draining): it holds only what it accepted before SIGTERM."""
        self.webui_busy = False
        """What its last `next` answer said (X-Queue-Webui-Busy): the pod runs a browser's generation."""
        self.retry_at = 0.0
        """When a front that did not answer is polled again (time.monotonic()); others are polled meanwhile."""
        self._backoff = BACKOFF_SECONDS[0]

    @property
    def due(self) -> bool:
        """Not backing off after a `next` it did not answer."""
        return self.retry_at <= time.monotonic()

    def __repr__(self) -> str:
        return f"front {self.host}:{self.port}"

    def _call(self, method: str, path: str, timeout: float, body: bytes | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, bytes, http.client.HTTPMessage]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=DIAL_SECONDS)
        try:
            connection.connect()
            connection.sock.settimeout(timeout)
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read(), response.headers
        except (OSError, http.client.HTTPException) as err:
            raise Unavailable(f"{method} {self.host}:{self.port}{path}: {type(err).__name__}: {err}") from None
        finally:
            connection.close()

    def next(self, wait: float) -> Job | None:
        """The next job, or None when none came within `wait` seconds (204). Registers the worker."""
        body = json.dumps({"url": self.own_url, "wait": wait}).encode()
        try:
            status, answer, headers = self._call("POST", self.base + "/next", wait + CONNECT_SECONDS, body,
                                                 {"Content-Type": "application/json"})
        except Unavailable:
            self.retry_at = time.monotonic() + self._backoff
            self._backoff = min(2 * self._backoff, BACKOFF_SECONDS[1])
            raise
        self.retry_at, self._backoff = 0.0, BACKOFF_SECONDS[0]
        self.draining = headers.get(DRAINING, "false") == "true"
        self.webui_busy = headers.get(WEBUI_BUSY, "false") == "true"
        if status == 204:
            return None
        if status == 200:
            return Job.parse(answer)
        raise Unavailable(f"POST {self.host}:{self.port}{self.base}/next answered {status}: {answer[:200]!r}")

    def watch_cancel(self, job: Job) -> CancelWatch:
        return CancelWatch(self.host, self.port, f"{self.base}/jobs/{quote(job.id, safe='')}/cancel")

    def result(self, job: Job, status: int, content_type: str, body: bytes) -> bool:
        """Report the outcome: True delivered (204), False the client is gone (410)."""
        path = f"{self.base}/jobs/{quote(job.id, safe='')}/result"
        answer, text, _ = self._call("POST", path, CONNECT_SECONDS, body,
                                     {"X-Upstream-Status": str(status), "Content-Type": content_type})
        if answer in (204, 410):
            return answer == 204
        raise Unavailable(f"POST {self.host}:{self.port}{path} answered {answer}: {text[:200]!r}")

    def release(self, job: Job) -> bool:
        """Hand the job back unrun: True it is first in line again (204), False it was no longer in flight (410)."""
        path = f"{self.base}/jobs/{quote(job.id, safe='')}/release"
        status, text, _ = self._call("POST", path, CONNECT_SECONDS)
        if status in (204, 410):
            return status == 204
        raise Unavailable(f"POST {self.host}:{self.port}{path} answered {status}: {text[:200]!r}")

    def batch_started(self) -> None:
        status, text, _ = self._call("PUT", self.base + "/batch", CONNECT_SECONDS)
        if not 200 <= status < 300:
            raise Unavailable(f"PUT {self.host}:{self.port}{self.base}/batch answered {status}: {text[:200]!r}")

    def leave(self) -> None:
        status, text, _ = self._call("DELETE", self.base, CONNECT_SECONDS)
        if not 200 <= status < 300:
            raise Unavailable(f"DELETE {self.host}:{self.port}{self.base} answered {status}: {text[:200]!r}")


def addresses(url: str) -> list[tuple[str, int]]:
    """Every address QUEUE_FRONT_URL's host name resolves to, with its port. In the cluster it names a headless
    Service that publishes not-ready addresses, so it resolves to every request queue pod, draining ones too
    (components/request_queue.py)."""
    parts = urlsplit(url)
    try:
        found = socket.getaddrinfo(parts.hostname, parts.port or 80, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as err:
        raise Unavailable(f"{parts.hostname}: cannot resolve: {err}") from None
    return sorted({(info[4][0], info[4][1]) for info in found})


class Fronts:
    """The request queue's fronts: one pod, or two for the span of a rollout (maxSurge 1). Re-resolved at most
    every RESOLVE_SECONDS; a front keeps its state (draining, back-off) while it stays listed. `in_turn()`
    starts each round at the next front, so no front's requests wait behind another's."""

    def __init__(self, url: str, worker: str, own_url: str,
                 resolve: Callable[[], list[tuple[str, int]]] | None = None):
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"QUEUE_FRONT_URL={url!r}: expected http://HOST:PORT")
        self.url = url
        self.worker, self.own_url = worker, own_url
        self._resolve = resolve or (lambda: addresses(url))
        self._known: dict[tuple[str, int], Front] = {}
        self._resolved_at = -math.inf
        self._turn = 0
        self._lock = threading.Lock()  # the loop and the SIGTERM thread both read the list

    def current(self) -> list[Front]:
        """Every front now listed; the last list when resolution fails; Unavailable when there never was one."""
        with self._lock:
            now = time.monotonic()
            if now - self._resolved_at >= RESOLVE_SECONDS:
                try:
                    listed = self._resolve()
                except Unavailable:
                    if not self._known:
                        raise
                    listed = list(self._known)
                if not listed:
                    raise Unavailable(f"{self.url}: no request queue address listed")
                self._known = {address: self._known.get(address) or Front(*address, self.worker, self.own_url)
                               for address in listed}
                self._resolved_at = now
            return list(self._known.values())

    def in_turn(self) -> list[Front]:
        """Every front listed, this round starting one further than the last round."""
        fronts = self.current()
        with self._lock:
            start = self._turn % len(fronts)
            self._turn += 1
        return fronts[start:] + fronts[:start]

    def webui_busy(self) -> bool:
        """A front's last `next` said this pod runs a browser's generation: no batch pull now."""
        return any(front.webui_busy for front in self.current())


class CancelWatch:
    """The `cancel` request held open while a job runs. The request is sent before the constructor returns,
    so the request queue knows the worker holds the job. `cancelled` is set when it answers with a reason
    to interrupt, with anything but the 204 that follows the result, or drops (the request queue has given
    the job up: nobody waits for this run any more). `close()` ends it from this side, without a reason:
    the job was reported, or is being handed back."""

    def __init__(self, host: str, port: int, path: str):
        self.path = path
        self.reason: str | None = None
        self.cancelled = threading.Event()
        self._closing = threading.Event()
        self._connection = http.client.HTTPConnection(host, port, timeout=CONNECT_SECONDS)
        try:
            self._connection.request("GET", path)
        except (OSError, http.client.HTTPException) as err:
            self._connection.close()
            raise Unavailable(f"GET {path}: {type(err).__name__}: {err}") from None
        self._connection.sock.settimeout(None)  # held for the whole generation; close() ends it
        self._thread = threading.Thread(target=self._wait, name="cancel", daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        try:
            response = self._connection.getresponse()
            answer = response.read()
            if response.status == 204:  # the result arrived: the job is over, nothing to interrupt
                return
            if response.status == 200:
                self.reason = str(json.loads(answer).get("reason") or "cancelled")
            else:
                self.reason = f"cancel answered {response.status}"
        except (OSError, ValueError, http.client.HTTPException) as err:
            self.reason = f"cancel dropped: {type(err).__name__}: {err}"
        if not self._closing.is_set():
            self.cancelled.set()

    def close(self) -> None:
        self._closing.set()
        sock = self._connection.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._connection.close()
        self._thread.join(timeout=CONNECT_SECONDS)
