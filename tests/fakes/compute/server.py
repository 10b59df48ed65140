"""FakeCompute: the fake's resources served over HTTP on a loopback port, every exchange checked and recorded.

Every request is routed to its method in the compute.v1 discovery document (schema.py), its path and
query parameters and body are checked against that method's schemas, and so is every response the fake
sends. Problems land in `violations`; a bad request is also answered 400.
"""

from __future__ import annotations

import http
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from tests.fakes.compute.errors import ApiError, FakeLimitation
from tests.fakes.compute.faults import Faults
from tests.fakes.compute.operations import Operations, is_mutating
from tests.fakes.compute.resources import API_ROOT, ComputeResources, Mutation


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request the fake answered (times from time.monotonic)."""

    method: str
    path: str
    query: dict[str, list[str]]  # as parse_qs gives it: every value a list
    body: Any  # the JSON as sent, None without a body
    status: int
    mutating: bool
    started: float
    finished: float
    api_method: str | None  # discovery id, e.g. "compute.disks.insert"; None when no method matched


class _Handler(BaseHTTPRequestHandler):
    def _serve(self) -> None:
        self.server.fake._serve(self)  # type: ignore[attr-defined]

    do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging: `requests` holds the record."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class FakeCompute(ComputeResources):
    """The fake Compute Engine API server with realistic state, schema checks and fault injection."""

    def __init__(self, project: str = "sdgke-test", zones: tuple[str, ...] = ("us-central1-a", "us-central1-b"),
                 region: str = "us-central1"):
        super().__init__(project, zones, region)
        self.latency = 0.0
        self.operation_polls_until_done = 0
        self.requests: list[RecordedRequest] = []
        self.violations: list[str] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.operations = Operations(self)
        self._handlers: dict[str, Callable[..., Any]] = {
            **self.handlers(),
            "compute.zoneOperations.get": self.operations.poll, "compute.zoneOperations.wait": self.operations.poll,
            "compute.globalOperations.get": self.operations.poll, "compute.globalOperations.wait": self.operations.poll,
        }
        self.faults = Faults(self._lock, [m for m in self._handlers if is_mutating(self._schema.methods[m])])
        # The tests' fault controls are the Faults' own methods, reached on the fake as before.
        self.fail_next, self.fail_operation = self.faults.fail_next, self.faults.fail_operation
        self.hold, self.release = self.faults.hold, self.faults.release

    # ---- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("FakeCompute is already started")
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fake-compute", daemon=True)  # short poll: stop() returns fast
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is None:
            return
        try:
            server.shutdown()
        finally:
            server.server_close()
            if thread is not None:
                thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeCompute is not started: call start() or use it as a context manager")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def client(self, client_cls: type) -> Any:
        """A REST client of `client_cls` aimed at the fake whose ExtendedOperation.result() polls the fake too."""
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import compute_v1

        def make(cls: type) -> Any:
            return cls(credentials=AnonymousCredentials(), transport="rest",
                       client_options=ClientOptions(api_endpoint=self.url))

        made = make(client_cls)
        pollers = getattr(made._transport, "_extended_operations_services", None)  # absent on operations clients
        if pollers is not None:
            pollers.update(zone_operations=make(compute_v1.ZoneOperationsClient),
                           global_operations=make(compute_v1.GlobalOperationsClient),
                           region_operations=make(compute_v1.RegionOperationsClient))
        return made

    def assert_clean(self) -> None:
        if self.violations:
            raise AssertionError("compute.v1 violations:\n" + "\n".join(self.violations))

    # ---- HTTP dispatch ---------------------------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        started = time.monotonic()
        url = urlsplit(handler.path)
        query = parse_qs(url.query, keep_blank_values=True)
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        if not self.faults.wait_until_released():
            self.violations.append(f"request {handler.command} {url.path} held for {self.faults.HOLD_SECONDS:.0f}s: "
                                   "the test never called release()")
        if self.latency:
            time.sleep(self.latency)
        with self._lock:
            route = self._schema.route(handler.command, url.path)
            status, payload, body = self._respond(handler.command, url.path, route, query, raw)
            mutating = is_mutating(route[0]) if route else handler.command != "GET"
            self.requests.append(RecordedRequest(handler.command, url.path, query, body, status, mutating, started,
                                                 time.monotonic(), route[0]["id"] if route else None))
        data = json.dumps(payload).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json; charset=UTF-8")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout); nothing left to tell it

    def _respond(self, verb: str, path: str, route: tuple[dict[str, Any], dict[str, str]] | None,
                 query: dict[str, list[str]], raw: bytes) -> tuple[int, dict[str, Any], Any]:
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            self.violations.append(f"request {verb} {path}: body is not JSON: {raw[:80]!r}")
            return 400, ApiError(400, "parseError", "Invalid JSON payload received.").body(), raw.decode(
                errors="replace")
        if route is None:
            self.violations.append(f"request {verb} {path}: no compute.v1 method has this HTTP method and path")
            return 404, ApiError(404, "notFound", f"No API method for {verb} {path}").body(), body
        method, params = route
        problems = self._schema.check_request(method, params, query, body)
        if problems:
            self.violations.extend(problems)
            return 400, ApiError(400, "invalid", "; ".join(problems)).body(), body
        fault = self.faults.take_http_fault(verb, path)
        if fault:
            message = f"{http.HTTPStatus(fault.status).phrase} (fault injected by FakeCompute)"
            return fault.status, ApiError(fault.status, fault.reason, message).body(), body
        handler = self._handlers.get(method["id"])
        if handler is None:
            self.violations.append(f"fake limitation: {method['id']} is not implemented by FakeCompute")
            return 501, ApiError(501, "notImplemented", f"{method['id']} is not implemented").body(), body
        q = {k: v[0] for k, v in query.items()}
        request = self._schema.canonical(method["request"], body or {}) if "request" in method else {}
        try:
            response = self._call(method, handler, path, params, q, request)
        except FakeLimitation as error:
            self.violations.append(f"request {method['id']}: {error.message}")
            return error.status, error.body(), body
        except ApiError as error:
            return error.status, error.body(), body
        except Exception as error:  # noqa: BLE001 - a bug of the fake must fail the test, not hang up
            self.violations.append(f"fake bug in {method['id']}: {error!r}")
            return 500, ApiError(500, "backendError", f"fake bug: {error!r}").body(), body
        self.violations.extend(self._schema.check_response(method, response))
        return 200, response, body

    def _call(self, method: dict[str, Any], handler: Callable[..., Any], path: str, params: dict[str, str],
              q: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        if not is_mutating(method):
            return handler(params, q, body)
        self.require_scope(params)
        replayed = self.operations.replay(q.get("requestId"))
        if replayed is not None:
            return replayed
        fault = self.faults.take_operation_fault(method["id"], path)
        if fault:
            base = API_ROOT + path[len(self._schema.base_path):]
            name = method["id"].rsplit(".", 1)[-1]
            target = f"{base}/{body.get('name', '')}" if name == "insert" else (
                base if method["httpMethod"] == "DELETE" else base.rsplit("/", 1)[0])
            message = fault.message or f"{fault.code}: injected by FakeCompute for {method['id']}"
            mutation: Mutation = (target, None, None)
            error: tuple[str, str] | None = (fault.code, message)
        else:
            mutation, error = handler(params, q, body), None
        return self.operations.start(method, params.get("zone"), mutation, error, q.get("requestId"),
                                     self.operation_polls_until_done)
