"""A local fake of the Compute Engine REST API (compute.v1) that sd-gke's Google-facing code is tested against.

Why it checks everything: a fake that accepts anything hides exactly the bugs that hurt on GCP
(misspelt fields, wrong enum values, 64-bit integers in the wrong encoding). So every request is
routed to its method in the compute.v1 discovery document shipped with google-api-python-client,
its path/query parameters and body are checked against that method's schemas, and so is every
response the fake sends. Problems land in `violations`; a bad request is also answered 400.

Encoding rules (the proto3 JSON mapping, which the Compute REST front end implements):
- requests: 64-bit integers (int64/uint64) as decimal strings or JSON numbers, 32-bit integers as
  numbers or decimal strings, floats as numbers or "NaN"/"Infinity"/"-Infinity", null = unset.
  google-cloud-compute sends 64-bit integers as strings (json_format.MessageToJson).
- responses: only the canonical form the API emits: 64-bit integers as strings, 32-bit integers
  as numbers, no nulls. Enums by name. Unknown fields are violations both ways (the API rejects
  them in requests; the client silently drops them from responses, which would hide fake drift).
- a field the schema allows but the fake does not model, or a list filter it cannot evaluate, is
  answered 400 and recorded too, so a test never passes on something the fake ignored.

List filters: terms `FIELD = V`, `FIELD != V` (exact), `FIELD eq RE`, `FIELD ne RE` (full-match
regex); FIELD is a top-level field or `labels.KEY`; V may be quoted; terms joined by spaces or AND,
each optionally parenthesised. orderBy: `name` (default) or `creationTimestamp desc`.

State changes happen when a request is accepted; a created resource keeps its transitional status
(disk CREATING, instance PROVISIONING, image PENDING) until its operation is polled DONE, and the
API refuses to use a resource that is not READY. get and wait are both one poll. requestId makes
mutations idempotent, as on GCP. Errors follow GCP: missing things 404 notFound, an existing name
409 alreadyExists, a disk in use 400 with reason resourceInUseByAnotherResource, a stale label
fingerprint 412 conditionNotMet, an attachment READ_ONLY with autoDelete 400 (READ_ONLY disks cannot
be auto-deleted). A guest attribute (or namespace) without values is 404, which is how we read GCP
before the guest writes it: callers must take NotFound as "nothing yet". A seeded
instance has a boot disk of its own name, like a GKE node.

Library pitfall (google-cloud-compute 1.48): ExtendedOperation.result() polls through a
Zone/GlobalOperationsClient that the transport builds *without* the caller's client_options, i.e.
against https://compute.googleapis.com. Code under test should wait with its own operations client
built like its other clients; `FakeCompute.client()` gives test code clients whose result() polls
the fake.
"""

from __future__ import annotations

import base64
import copy
import difflib
import functools
import hashlib
import http
import importlib.resources
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

API_ROOT = "https://www.googleapis.com/compute/v1/"
_ROOTS = (API_ROOT, "https://compute.googleapis.com/compute/v1/")
DISK_TYPES = ("pd-standard", "pd-balanced", "pd-ssd", "pd-extreme", "hyperdisk-balanced", "hyperdisk-extreme",
              "hyperdisk-ml", "hyperdisk-throughput")
# Operation error code -> (httpErrorStatusCode, httpErrorMessage) as GCP reports them.
OPERATION_ERRORS = {
    "QUOTA_EXCEEDED": (403, "FORBIDDEN"),
    "RESOURCE_ALREADY_EXISTS": (409, "CONFLICT"),
    "RESOURCE_NOT_FOUND": (404, "NOT FOUND"),
    "RESOURCE_IN_USE_BY_ANOTHER_RESOURCE": (400, "BAD REQUEST"),
}
_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "uint32": (0, 2**32 - 1), "int64": (-(2**63), 2**63 - 1),
               "uint64": (0, 2**64 - 1), "fixed64": (0, 2**64 - 1)}
_INT64_FORMATS = ("int64", "uint64", "fixed64")
_DECIMAL = re.compile(r"-?[0-9]+")
_FLOAT = re.compile(r"-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?")
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")
_DATETIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
_DURATION = re.compile(r"-?\d+(\.\d{1,9})?s")
_NAME = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
_DISK_REF = re.compile(r"(?:projects/(?P<project>[^/]+)/)?zones/(?P<zone>[^/]+)/disks/(?P<name>[^/]+)")
_IMAGE_REF = re.compile(r"(?:projects/(?P<project>[^/]+)/)?global/images/(?:family/(?P<family>[^/]+)|(?P<name>[^/]+))")
_TYPE_REF = re.compile(r"(?:projects/(?P<project>[^/]+)/)?zones/(?P<zone>[^/]+)/(?P<kind>diskTypes|machineTypes)/"
                       r"(?P<name>[a-z][-a-z0-9]*)")
_FILTER_TERM = re.compile(
    r"""\s*(?P<open>\()?\s*(?P<field>[A-Za-z][\w.-]*)\s*(?P<op>!=|=|eq(?=\s)|ne(?=\s))\s*"""
    r"""(?P<value>"[^"]*"|'[^']*'|[^\s()"']+)\s*(?P<close>\))?\s*(?:AND(?:\s+|$))?""")


@functools.cache
def discovery_document(api: str = "compute.v1") -> dict[str, Any]:
    """A discovery document google-api-python-client ships, compute.v1 by default (parsed once per process)."""
    path = importlib.resources.files("googleapiclient") / "discovery_cache" / "documents" / f"{api}.json"
    return json.loads(path.read_text(encoding="utf-8"))


class ApiError(Exception):
    """An error the fake answers with Google's JSON error body (the client maps the status to an exception)."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.status, "message": self.message,
                          "errors": [{"message": self.message, "domain": "global", "reason": self.reason}]}}


class FakeLimitation(ApiError):
    """A valid request the fake cannot answer faithfully: answered 400 and recorded as a violation."""

    def __init__(self, message: str):
        super().__init__(400, "invalid", f"fake limitation: {message}")


def _not_found(resource: str) -> ApiError:
    return ApiError(404, "notFound", f"The resource '{resource}' was not found")


def _invalid(field: str, value: Any, why: str) -> ApiError:
    return ApiError(400, "invalid", f"Invalid value for field '{field}': '{value}'. {why}")


def _in_use(resource: str, user: str) -> ApiError:
    return ApiError(400, "resourceInUseByAnotherResource",
                    f"The disk resource '{resource}' is already being used by '{user}'")


def _read_only_auto_delete(resource: str) -> ApiError:
    """Compute Engine: "disks attached in READ_ONLY mode cannot be auto-deleted" (compute.v1 discovery document,
    StatefulPolicyPreservedStateDiskDevice.autoDelete and PreservedStatePreservedDisk.autoDelete; rendered at
    https://cloud.google.com/python/docs/reference/compute/latest/
    google.cloud.compute_v1.types.StatefulPolicyPreservedStateDiskDevice). What
    instances.attachDisk and instances.insert answer to READ_ONLY + autoDelete is not documented: refused
    here, so code that relies on it fails in the tests; the status, reason and text are this fake's, unverified."""
    return ApiError(400, "invalid", f"Invalid value for field 'autoDelete': 'true'. The disk '{resource}' is "
                                    "attached in READ_ONLY mode, and disks attached in READ_ONLY mode cannot be "
                                    "auto-deleted; attach it READ_WRITE to have it deleted with the instance.")


def _not_ready(resource: str) -> ApiError:
    return ApiError(400, "resourceNotReady", f"The resource '{resource}' is not ready")


def _show(value: Any) -> str:
    kind = {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}
    return f"{kind.get(type(value), type(value).__name__)} {json.dumps(value)[:80]}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _fingerprint(value: Any) -> str:
    """An opaque 8-byte base64 fingerprint like GCP's, changing whenever the value changes."""
    return base64.b64encode(hashlib.sha256(json.dumps(value, sort_keys=True).encode()).digest()[:8]).decode()


def _relative(reference: str) -> str:
    for root in _ROOTS:
        if reference.startswith(root):
            return reference[len(root):]
    return reference


@dataclass(frozen=True)
class _Route:
    method: dict[str, Any]
    pattern: re.Pattern[str]
    literal_chars: int


class SchemaChecker:
    """Routes HTTP requests to a discovery document's methods (compute.v1 for the fake) and checks values
    against the methods' schemas; tests/test_observability.py checks monitoring and logging bodies with it."""

    def __init__(self, document: dict[str, Any]):
        self.schemas: dict[str, Any] = document["schemas"]
        self.global_parameters: dict[str, Any] = document["parameters"]
        self.base_path: str = document["basePath"]
        self.methods: dict[str, dict[str, Any]] = {}
        self._routes: dict[str, list[_Route]] = {}
        pending = list(document["resources"].values())
        while pending:
            resource = pending.pop()
            pending.extend(resource.get("resources", {}).values())
            for method in resource.get("methods", {}).values():
                self.methods[method["id"]] = method
                parts = re.split(r"\{(\w+)\}", method.get("flatPath", method["path"]))
                regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts))
                route = _Route(method, re.compile(regex), sum(len(p) for p in parts[::2]))
                self._routes.setdefault(method["httpMethod"], []).append(route)

    def route(self, http_method: str, path: str) -> tuple[dict[str, Any], dict[str, str]] | None:
        """The method whose template matches most specifically, and its (decoded) path parameters."""
        if not path.startswith(self.base_path):
            return None
        rest = path[len(self.base_path):]
        matches = [(r, m) for r in self._routes.get(http_method, []) if (m := r.pattern.fullmatch(rest))]
        if not matches:
            return None
        route, match = max(matches, key=lambda pair: pair[0].literal_chars)
        return route.method, {k: unquote(v) for k, v in match.groupdict().items()}

    def check_request(self, method: dict[str, Any], path_params: dict[str, str], query: dict[str, list[str]],
                      body: Any) -> list[str]:
        where = f"request {method['id']}"
        params = method.get("parameters", {})
        problems = []
        for name, value in path_params.items():
            pattern = params.get(name, {}).get("pattern")
            if pattern and not re.fullmatch(pattern, value):
                problems.append(f"{where}: path parameter {name}={value!r} does not match {pattern}")
        own_query = {k: v for k, v in params.items() if v["location"] == "query"}
        for name, values in query.items():
            spec = own_query.get(name) or self.global_parameters.get(name)
            if spec is None:
                allowed = ", ".join(sorted(own_query)) or "none besides the standard ones"
                problems.append(f"{where}: unknown query parameter {name!r} (allowed: {allowed})")
                continue
            if len(values) > 1 and not spec.get("repeated"):
                problems.append(f"{where}: query parameter {name!r} given {len(values)} times, allowed once")
            problems += [p for v in values for p in self._check_query_value(spec, v, f"{where}: query {name}")]
        problems += [f"{where}: required query parameter {name!r} is missing"
                     for name, spec in own_query.items() if spec.get("required") and name not in query]
        if "request" in method:
            problems += self._check(method["request"], {} if body is None else body, f"{where}: body", method["id"])
        elif body not in (None, {}):
            problems.append(f"{where}: the method takes no request body, got {_show(body)}")
        return problems

    def check_response(self, method: dict[str, Any], body: Any) -> list[str]:
        return self._check(method["response"], body, f"response {method['id']}: body", None)

    def canonical(self, schema: dict[str, Any], value: Any) -> Any:
        """A valid request value in the form the API stores and emits (64-bit integers as strings, no nulls)."""
        if "$ref" in schema:
            schema = self.schemas[schema["$ref"]]
        kind, fmt = schema.get("type"), schema.get("format")
        if kind == "object" and isinstance(value, dict):
            props, extra = schema.get("properties") or {}, schema.get("additionalProperties")
            return {k: self.canonical(props.get(k) or extra or {}, v) for k, v in value.items() if v is not None}
        if kind == "array" and isinstance(value, list):
            return [self.canonical(schema["items"], item) for item in value]
        if fmt in _INT64_FORMATS:
            return str(int(value))
        if fmt in _INT_RANGES:
            return int(value)
        if kind == "number" and isinstance(value, str) and value not in ("NaN", "Infinity", "-Infinity"):
            return float(value)
        return value

    @staticmethod
    def _check_query_value(spec: dict[str, Any], value: str, where: str) -> list[str]:
        if "enum" in spec and value not in spec["enum"]:
            return [f"{where}={value!r} is not one of {', '.join(spec['enum'])}"]
        if spec.get("type") == "boolean" and value not in ("true", "false"):
            return [f"{where}={value!r} must be true or false"]
        if spec.get("type") == "integer" or spec.get("format") in _INT_RANGES:
            return _check_integer(value, spec.get("format", "int32"), where, request=True)
        return []

    def _check(self, schema: dict[str, Any], value: Any, where: str, method_id: str | None) -> list[str]:
        """Problems of `value` against `schema`; method_id is set for requests, None for responses."""
        if "$ref" in schema:
            schema = self.schemas[schema["$ref"]]
        if value is None:
            return [] if method_id else [f"{where}: null (the API omits unset fields)"]
        kind, fmt = schema.get("type"), schema.get("format")
        if kind == "any" or fmt == "google.protobuf.Any":
            return []
        if kind == "object":
            return self._check_object(schema, value, where, method_id)
        if kind == "array":
            if not isinstance(value, list):
                return [f"{where}: expected an array, got {_show(value)}"]
            return [p for i, item in enumerate(value) for p in self._check(schema["items"], item, f"{where}[{i}]",
                                                                           method_id)]
        if kind == "boolean":
            return [] if isinstance(value, bool) else [f"{where}: expected true or false, got {_show(value)}"]
        if kind == "integer" or fmt in _INT_RANGES:
            return _check_integer(value, fmt or "int32", where, request=method_id is not None)
        if kind == "number":
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return []
            if isinstance(value, str) and (value in ("NaN", "Infinity", "-Infinity")
                                           or (method_id and _FLOAT.fullmatch(value))):
                return []
            return [f"{where}: expected {fmt} as a JSON number, got {_show(value)}"]
        if not isinstance(value, str):
            return [f"{where}: expected a string, got {_show(value)}"]
        if "enum" in schema and value not in schema["enum"]:
            return [f"{where}: {value!r} is not one of {', '.join(schema['enum'])}"]
        if "pattern" in schema and not re.fullmatch(schema["pattern"], value):
            return [f"{where}: {value!r} does not match {schema['pattern']}"]
        checks = {"byte": (_BASE64, "base64"), "google-datetime": (_DATETIME, "an RFC 3339 time"),
                  "google-duration": (_DURATION, "a duration like '3.5s'")}
        if fmt in checks and not checks[fmt][0].fullmatch(value):
            return [f"{where}: {value!r} is not {checks[fmt][1]}"]
        return []

    def _check_object(self, schema: dict[str, Any], value: Any, where: str, method_id: str | None) -> list[str]:
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {_show(value)}"]
        props, extra = schema.get("properties"), schema.get("additionalProperties")
        problems = []
        for key, item in value.items():
            if props and key in props:
                problems += self._check(props[key], item, f"{where}.{key}", method_id)
            elif extra is not None:
                problems += self._check(extra, item, f"{where}[{key!r}]", method_id)
            elif props is not None:
                hint = difflib.get_close_matches(key, props, n=1)
                known = f"did you mean {hint[0]!r}?" if hint else f"not a field of {schema.get('id', 'this object')}"
                problems.append(f"{where}: unknown field {key!r} ({known})")
        for key, prop in (props or {}).items() if method_id else ():
            if method_id in prop.get("annotations", {}).get("required", ()) and value.get(key) in (None, ""):
                problems.append(f"{where}.{key}: required by {method_id} but missing")
        return problems


@functools.cache
def _schema_checker() -> SchemaChecker:
    """One checker per process: building the routes of ~900 methods costs more than a test should."""
    return SchemaChecker(discovery_document())


def _check_integer(value: Any, fmt: str, where: str, *, request: bool) -> list[str]:
    as_string = fmt in _INT64_FORMATS
    number: int | None = None
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        number = value if request or not as_string else None
    elif isinstance(value, float):
        number = int(value) if request and value.is_integer() else None
    elif isinstance(value, str) and _DECIMAL.fullmatch(value):
        number = int(value) if request or as_string else None
    if number is None:
        wanted = "a decimal string or a JSON integer" if request else (
            "a decimal string" if as_string else "a JSON integer")
        return [f"{where}: expected {fmt} as {wanted}, got {_show(value)}"]
    low, high = _INT_RANGES[fmt]
    return [] if low <= number <= high else [f"{where}: {number} is outside the {fmt} range {low}..{high}"]


def _lookup(resource: dict[str, Any], field: str) -> Any:
    value: Any = resource
    for part in field.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _parse_filter(text: str) -> list[tuple[str, str, str]]:
    terms, pos, text = [], 0, text.strip()
    while pos < len(text):
        match = _FILTER_TERM.match(text, pos)
        if not match or bool(match["open"]) != bool(match["close"]) or match.end() == pos:
            raise FakeLimitation(f"filter {text!r} is not supported; use terms FIELD =|!=|eq|ne VALUE joined by "
                                 "spaces or AND")
        terms.append((match["field"], match["op"], match["value"].strip("\"'")))
        pos = match.end()
    return terms


def _matches(resource: dict[str, Any], terms: list[tuple[str, str, str]]) -> bool:
    for field, op, expected in terms:
        actual = _lookup(resource, field)
        shown = None if actual is None else str(actual).lower() if isinstance(actual, bool) else str(actual)
        hit = shown == expected if op in ("=", "!=") else shown is not None and bool(re.fullmatch(expected, shown))
        if hit == (op in ("!=", "ne")):
            return False
    return True


def _check_labels(labels: dict[str, str], field: str) -> None:
    if len(labels) > 64:
        raise _invalid(field, len(labels), "At most 64 labels are allowed.")
    for key, value in labels.items():
        if not _LABEL_KEY.fullmatch(key):
            raise _invalid(f"{field}.{key}", key, f"Label keys must match {_LABEL_KEY.pattern}.")
        if not _LABEL_VALUE.fullmatch(value):
            raise _invalid(f"{field}.{key}", value, f"Label values must match {_LABEL_VALUE.pattern}.")


def _only_modelled(obj: dict[str, Any], modelled: set[str], where: str) -> None:
    extra = sorted(set(obj) - modelled)
    if extra:
        raise FakeLimitation(f"{where} fields {extra} are valid but not modelled (modelled: {sorted(modelled)})")


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


@dataclass
class _HttpFault:
    method: str | None
    path: re.Pattern[str]
    status: int
    reason: str
    remaining: int


@dataclass
class _OperationFault:
    kind: str
    path: re.Pattern[str]
    code: str
    message: str | None
    remaining: int


@dataclass
class _Operation:
    resource: dict[str, Any]
    polls_left: int
    on_done: Callable[[], None] | None
    error: tuple[str, str] | None


@dataclass
class _GuestScript:
    namespace: str
    steps: list[dict[str, str]]
    revealed: int = 0


# A mutating handler's result: the operation's target link, target id, and what completes when it is DONE.
_Mutation = tuple[str, str | None, Callable[[], None] | None]


class _Handler(BaseHTTPRequestHandler):
    def _serve(self) -> None:
        self.server.fake._serve(self)  # type: ignore[attr-defined]

    do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging: `requests` holds the record."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class FakeCompute:
    """The fake Compute Engine API server with realistic state, schema checks and fault injection."""

    def __init__(self, project: str = "sdgke-test", zones: tuple[str, ...] = ("us-central1-a", "us-central1-b"),
                 region: str = "us-central1"):
        self.project, self.zones, self.region = project, tuple(zones), region
        self.latency = 0.0
        self.operation_polls_until_done = 0
        self._open = threading.Event()  # cleared by hold(): requests wait until release()
        self._open.set()
        self.requests: list[RecordedRequest] = []
        self.violations: list[str] = []
        self._schema = _schema_checker()
        self._lock = threading.RLock()
        self._ids = itertools.count(4_000_000_000_000_000_001)
        self._disks: dict[tuple[str, str], dict[str, Any]] = {}
        self._instances: dict[tuple[str, str], dict[str, Any]] = {}
        self._images: dict[tuple[str, str], dict[str, Any]] = {}
        self._operations: dict[tuple[str, str], _Operation] = {}
        self._request_ids: dict[str, tuple[str, str]] = {}
        self._guest_values: dict[tuple[str, str], dict[tuple[str, str], str]] = {}
        self._guest_scripts: dict[tuple[str, str], list[_GuestScript]] = {}
        self._serial: dict[tuple[str, str], bytes] = {}
        self._http_faults: list[_HttpFault] = []
        self._operation_faults: list[_OperationFault] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._handlers: dict[str, Callable[..., Any]] = {
            "compute.disks.get": self._disks_get, "compute.disks.list": self._disks_list,
            "compute.disks.insert": self._disks_insert, "compute.disks.delete": self._disks_delete,
            "compute.disks.setLabels": self._disks_set_labels,
            "compute.images.get": self._images_get, "compute.images.getFromFamily": self._images_get_from_family,
            "compute.images.list": self._images_list, "compute.images.insert": self._images_insert,
            "compute.images.delete": self._images_delete, "compute.images.setLabels": self._images_set_labels,
            "compute.images.deprecate": self._images_deprecate,
            "compute.instances.get": self._instances_get, "compute.instances.list": self._instances_list,
            "compute.instances.insert": self._instances_insert, "compute.instances.delete": self._instances_delete,
            "compute.instances.attachDisk": self._instances_attach_disk,
            "compute.instances.detachDisk": self._instances_detach_disk,
            "compute.instances.setDiskAutoDelete": self._instances_set_disk_auto_delete,
            "compute.instances.stop": self._instances_stop,
            "compute.instances.getGuestAttributes": self._instances_get_guest_attributes,
            "compute.instances.getSerialPortOutput": self._instances_get_serial_port_output,
            "compute.zoneOperations.get": self._poll, "compute.zoneOperations.wait": self._poll,
            "compute.globalOperations.get": self._poll, "compute.globalOperations.wait": self._poll,
        }

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

    # ---- seeding and inspection ------------------------------------------------------------------------------

    def add_image(self, name: str, *, family: str | None = None, labels: dict[str, str] | None = None,
                  disk_size_gb: int = 20, status: str = "READY", project: str | None = None,
                  deprecated: str | None = None) -> dict[str, Any]:
        """Seed an image (in another project too, e.g. a public boot image); deprecated is a DeprecationStatus state."""
        _require_enum("status", status, self._schema.schemas["Image"]["properties"]["status"]["enum"])
        project = project or self.project
        with self._lock:
            if (project, name) in self._images:
                raise ValueError(f"image {name!r} already exists in project {project!r}")
            image = self._new_image(project, name, family=family, labels=labels or {}, size_gb=disk_size_gb,
                                    status=status)
            if deprecated:
                _require_enum("deprecated", deprecated,
                              self._schema.schemas["DeprecationStatus"]["properties"]["state"]["enum"])
                image["deprecated"] = {"state": deprecated}
            self._images[(project, name)] = image
            return copy.deepcopy(image)

    def add_instance(self, name: str, *, zone: str, labels: dict[str, str] | None = None, status: str = "RUNNING",
                     machine_type: str = "g2-standard-8") -> dict[str, Any]:
        """Seed a VM like a GKE node: with a boot disk of its own name (autoDelete, deviceName persistent-disk-0)."""
        self._require_zone(zone)
        _require_enum("status", status, self._schema.schemas["Instance"]["properties"]["status"]["enum"])
        with self._lock:
            if (zone, name) in self._instances or (zone, name) in self._disks:
                raise ValueError(f"instance or disk {name!r} already exists in zone {zone!r}")
            boot = self._new_disk(zone, name, size_gb=100, type_name="pd-balanced", image=None, labels={})
            boot["status"] = "READY"
            self._disks[(zone, name)] = boot
            instance = self._new_instance(zone, name, machine_type=self._type_link(zone, "machineTypes", machine_type),
                                          labels=labels or {}, status=status)
            self._instances[(zone, name)] = instance
            self._attach(instance, boot, device_name="persistent-disk-0", mode="READ_WRITE", auto_delete=True,
                         boot=True)
            return copy.deepcopy(instance)

    def remove_instance(self, name: str, *, zone: str) -> None:
        """The node vanishes as in a scale-down: its autoDelete disks go, its other disks are detached."""
        with self._lock:
            if (zone, name) not in self._instances:
                raise ValueError(f"no instance {name!r} in zone {zone!r}; instances: {sorted(self._instances)}")
            self._delete_instance(zone, name)

    def disks(self, zone: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy([d for (z, _), d in sorted(self._disks.items()) if zone in (None, z)])

    def instances(self, zone: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy([i for (z, _), i in sorted(self._instances.items()) if zone in (None, z)])

    def images(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy([i for _, i in sorted(self._images.items())])

    def set_guest_attributes(self, instance: str, *, zone: str, namespace: str, values: dict[str, str]) -> None:
        """Merge guest attribute values; works before the instance exists (tests set them for VMs the code creates)."""
        self._require_zone(zone)
        with self._lock:
            current = self._guest_values.setdefault((zone, instance), {})
            current.update({(namespace, k): str(v) for k, v in values.items()})

    def script_guest_attributes(self, instance: str, *, zone: str, namespace: str,
                                steps: list[dict[str, str]]) -> None:
        """Each getGuestAttributes call on the instance reveals the next step's values (cumulatively)."""
        self._require_zone(zone)
        with self._lock:
            self._guest_scripts.setdefault((zone, instance), []).append(_GuestScript(namespace, list(steps)))

    def set_serial_output(self, instance: str, *, zone: str, text: str) -> None:
        self._require_zone(zone)
        with self._lock:
            self._serial[(zone, instance)] = text.encode()

    def assert_clean(self) -> None:
        if self.violations:
            raise AssertionError("compute.v1 violations:\n" + "\n".join(self.violations))

    # ---- faults ----------------------------------------------------------------------------------------------

    def fail_next(self, *, method: str | None = None, path_regex: str = ".*", status: int = 503, times: int = 1,
                  reason: str = "backendError") -> None:
        """The next `times` matching requests answer `status` with a Google error body."""
        if not 400 <= status <= 599 or times < 1:
            raise ValueError(f"fail_next needs an HTTP error status 400..599 and times >= 1, got {status}, {times}")
        with self._lock:
            self._http_faults.append(_HttpFault(method and method.upper(), re.compile(path_regex), status, reason,
                                                times))

    def fail_operation(self, *, kind: str, path_regex: str = ".*", code: str = "QUOTA_EXCEEDED",
                       message: str | None = None, times: int = 1) -> None:
        """The next matching mutating call returns an operation that ends DONE with error.errors=[{code, message}]."""
        if code not in OPERATION_ERRORS:
            raise ValueError(f"fail_operation code {code!r} is not one of {sorted(OPERATION_ERRORS)}")
        mutating = [m for m in self._handlers if self._is_mutating(self._schema.methods[m])]
        if not any(kind in (m, m.rsplit(".", 1)[-1]) for m in mutating):
            raise ValueError(f"fail_operation kind {kind!r} names no mutating method of the fake: {mutating}")
        with self._lock:
            self._operation_faults.append(_OperationFault(kind, re.compile(path_regex), code, message, times))

    def hold(self) -> None:
        """Requests arriving from now on wait (at most HOLD_SECONDS) until release(): a state the caller is
        in while it waits for the API lasts until the test has seen it, however slow the test is."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    # ---- HTTP dispatch ---------------------------------------------------------------------------------------

    HOLD_SECONDS = 30.0

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        started = time.monotonic()
        url = urlsplit(handler.path)
        query = parse_qs(url.query, keep_blank_values=True)
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        if not self._open.wait(self.HOLD_SECONDS):
            self.violations.append(f"request {handler.command} {url.path} held for {self.HOLD_SECONDS:.0f}s: "
                                   "the test never called release()")
        if self.latency:
            time.sleep(self.latency)
        with self._lock:
            route = self._schema.route(handler.command, url.path)
            status, payload, body = self._respond(handler.command, url.path, route, query, raw)
            mutating = self._is_mutating(route[0]) if route else handler.command != "GET"
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
        fault = self._take_http_fault(verb, path)
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
        if not self._is_mutating(method):
            return handler(params, q, body)
        self._require_scope(params)
        if q.get("requestId") in self._request_ids:
            return copy.deepcopy(self._operations[self._request_ids[q["requestId"]]].resource)
        fault = self._take_operation_fault(method["id"], path)
        if fault:
            base = API_ROOT + path[len(self._schema.base_path):]
            name = method["id"].rsplit(".", 1)[-1]
            target = f"{base}/{body.get('name', '')}" if name == "insert" else (
                base if method["httpMethod"] == "DELETE" else base.rsplit("/", 1)[0])
            message = fault.message or f"{fault.code}: injected by FakeCompute for {method['id']}"
            mutation: _Mutation = (target, None, None)
            error: tuple[str, str] | None = (fault.code, message)
        else:
            mutation, error = handler(params, q, body), None
        return self._start_operation(method, params.get("zone"), mutation, error, q.get("requestId"))

    @staticmethod
    def _is_mutating(method: dict[str, Any]) -> bool:
        return method.get("response", {}).get("$ref") == "Operation" and "Operations." not in method["id"]

    def _take_http_fault(self, verb: str, path: str) -> _HttpFault | None:
        for fault in self._http_faults:
            if fault.method in (None, verb) and fault.path.search(path):
                fault.remaining -= 1
                if not fault.remaining:
                    self._http_faults.remove(fault)
                return fault
        return None

    def _take_operation_fault(self, method_id: str, path: str) -> _OperationFault | None:
        for fault in self._operation_faults:
            if fault.kind in (method_id, method_id.rsplit(".", 1)[-1]) and fault.path.search(path):
                fault.remaining -= 1
                if not fault.remaining:
                    self._operation_faults.remove(fault)
                return fault
        return None

    # ---- operations ------------------------------------------------------------------------------------------

    def _start_operation(self, method: dict[str, Any], zone: str | None, mutation: _Mutation,
                         error: tuple[str, str] | None, request_id: str | None) -> dict[str, Any]:
        target_link, target_id, on_done = mutation
        scope = f"zones/{zone}" if zone else "global"
        name = f"operation-{int(time.time() * 1000)}-{uuid.uuid4().hex[:13]}-{uuid.uuid4().hex[:8]}"
        now = _now()
        resource = {"kind": "compute#operation", "id": str(next(self._ids)), "name": name,
                    "operationType": method["id"].rsplit(".", 1)[-1], "targetLink": target_link,
                    "status": "RUNNING", "progress": 0, "user": f"sdgke@{self.project}.iam.gserviceaccount.com",
                    "insertTime": now, "startTime": now,
                    "selfLink": f"{API_ROOT}projects/{self.project}/{scope}/operations/{name}"}
        if target_id:
            resource["targetId"] = target_id
        if zone:
            resource["zone"] = self._zone_link(zone)
        if request_id:
            resource["clientOperationId"] = request_id
            self._request_ids[request_id] = (scope, name)
        self._operations[(scope, name)] = _Operation(resource, self.operation_polls_until_done, on_done, error)
        return copy.deepcopy(resource)

    def _poll(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        self._require_scope(p)
        scope = f"zones/{p['zone']}" if "zone" in p else "global"
        operation = self._operations.get((scope, p["operation"]))
        if operation is None:
            raise _not_found(f"projects/{self.project}/{scope}/operations/{p['operation']}")
        resource = operation.resource
        if resource["status"] != "DONE":
            if operation.polls_left > 0:
                operation.polls_left -= 1
            else:
                resource.update(status="DONE", progress=100, endTime=_now())
                if operation.error:
                    code, message = operation.error
                    resource["error"] = {"errors": [{"code": code, "message": message}]}
                    resource["httpErrorStatusCode"], resource["httpErrorMessage"] = OPERATION_ERRORS[code]
                elif operation.on_done:
                    operation.on_done()
        return copy.deepcopy(resource)

    # ---- references and scope --------------------------------------------------------------------------------

    def _require_zone(self, zone: str) -> None:
        if zone not in self.zones:
            raise ValueError(f"zone {zone!r} is not one of the fake's zones {self.zones}")

    def _require_scope(self, p: dict[str, str]) -> None:
        if p["project"] != self.project and not any(proj == p["project"] for proj, _ in self._images):
            raise _not_found(f"projects/{p['project']}")
        if "zone" in p and p["zone"] not in self.zones:
            raise _not_found(f"projects/{p['project']}/zones/{p['zone']}")

    def _zone_link(self, zone: str) -> str:
        return f"{API_ROOT}projects/{self.project}/zones/{zone}"

    def _type_link(self, zone: str, kind: str, name: str) -> str:
        return f"{self._zone_link(zone)}/{kind}/{name}"

    def _resolve_type(self, reference: str, field: str, kind: str, zone: str) -> str:
        match = _TYPE_REF.fullmatch(_relative(reference))
        if not match or match["kind"] != kind or match["project"] not in (None, self.project):
            raise _invalid(field, reference, f"Expected zones/{zone}/{kind}/NAME or its full URL.")
        if match["zone"] != zone:
            raise _invalid(field, reference, f"The {kind} must be in the resource's zone {zone}.")
        if kind == "diskTypes" and match["name"] not in DISK_TYPES:
            raise _invalid(field, reference, f"Disk type must be one of {', '.join(DISK_TYPES)}.")
        return self._type_link(zone, kind, match["name"])

    def _resolve_image(self, reference: str, field: str) -> dict[str, Any]:
        match = _IMAGE_REF.fullmatch(_relative(reference))
        if not match:
            raise _invalid(field, reference, "Expected projects/P/global/images/NAME, "
                                             "projects/P/global/images/family/FAMILY or a global/images/... form.")
        project = match["project"] or self.project
        if match["family"]:
            return self._image_from_family(project, match["family"])
        image = self._images.get((project, match["name"]))
        if image is None:
            raise _not_found(f"projects/{project}/global/images/{match['name']}")
        return image

    def _image_from_family(self, project: str, family: str) -> dict[str, Any]:
        candidates = [(i, image) for i, image in enumerate(self._images.values())
                      if image["selfLink"].startswith(f"{API_ROOT}projects/{project}/")
                      and image.get("family") == family and image["status"] == "READY"
                      and image.get("deprecated", {}).get("state", "ACTIVE") == "ACTIVE"]
        if not candidates:
            raise _not_found(f"projects/{project}/global/images/family/{family}")
        return max(candidates, key=lambda pair: (pair[1]["creationTimestamp"], pair[0]))[1]

    def _resolve_disk(self, reference: str, field: str, zone: str | None = None) -> dict[str, Any]:
        match = _DISK_REF.fullmatch(_relative(reference))
        if not match or match["project"] not in (None, self.project):
            raise _invalid(field, reference, f"Expected projects/{self.project}/zones/ZONE/disks/NAME or its URL.")
        if zone and match["zone"] != zone:
            raise _invalid(field, reference, f"The disk must be in zone {zone}.")
        return self._disk(match["zone"], match["name"])

    def _disk(self, zone: str, name: str) -> dict[str, Any]:
        disk = self._disks.get((zone, name))
        if disk is None:
            raise _not_found(f"projects/{self.project}/zones/{zone}/disks/{name}")
        return disk

    def _instance(self, p: dict[str, str]) -> dict[str, Any]:
        self._require_scope(p)
        instance = self._instances.get((p["zone"], p["instance"]))
        if instance is None:
            raise _not_found(f"projects/{self.project}/zones/{p['zone']}/instances/{p['instance']}")
        return instance

    def _list(self, kind: str, resources: list[dict[str, Any]], link: str, q: dict[str, str]) -> dict[str, Any]:
        terms = _parse_filter(q.get("filter", ""))
        items = sorted((r for r in resources if _matches(r, terms)), key=lambda r: r["name"])
        order = q.get("orderBy", "name")
        if order not in ("name", "creationTimestamp desc"):
            raise _invalid("orderBy", order, "Sorting is supported by 'name' or 'creationTimestamp desc' only.")
        if order != "name":
            items.sort(key=lambda r: r["creationTimestamp"], reverse=True)
        page_size = min(int(q.get("maxResults", "500")) or 500, 500)
        token = q.get("pageToken", "0")
        if not token.isdigit():
            raise _invalid("pageToken", token, "Not a page token this list returned.")
        start = int(token)
        out: dict[str, Any] = {"kind": kind, "id": _relative(link), "selfLink": link}
        if items[start:start + page_size]:
            out["items"] = copy.deepcopy(items[start:start + page_size])
        if start + page_size < len(items):
            out["nextPageToken"] = str(start + page_size)
        return out

    # ---- disks -----------------------------------------------------------------------------------------------

    def _new_disk(self, zone: str, name: str, *, size_gb: Any, type_name: str, image: dict[str, Any] | None,
                  labels: dict[str, str], description: str | None = None) -> dict[str, Any]:
        minimum = int(image["diskSizeGb"]) if image else 1
        size = int(size_gb) if size_gb is not None else (minimum if image else 500)
        if size < minimum:
            raise _invalid("sizeGb", size, f"Requested disk size cannot be smaller than the image size ({minimum} GB).")
        disk = {"kind": "compute#disk", "id": str(next(self._ids)), "creationTimestamp": _now(), "name": name,
                "sizeGb": str(size), "zone": self._zone_link(zone), "status": "CREATING",
                "selfLink": f"{self._zone_link(zone)}/disks/{name}",
                "type": self._type_link(zone, "diskTypes", type_name), "labelFingerprint": _fingerprint(labels),
                "physicalBlockSizeBytes": "4096"}
        if labels:
            disk["labels"] = dict(labels)
        if description:
            disk["description"] = description
        if image:
            disk.update(sourceImage=image["selfLink"], sourceImageId=image["id"])
        return disk

    def _disks_get(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        self._require_scope(p)
        return copy.deepcopy(self._disk(p["zone"], p["disk"]))

    def _disks_list(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        self._require_scope(p)
        disks = [d for (zone, _), d in self._disks.items() if zone == p["zone"]]
        return self._list("compute#diskList", disks, f"{self._zone_link(p['zone'])}/disks", q)

    def _disks_insert(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> _Mutation:
        zone, name = p["zone"], body["name"]
        _only_modelled(body, {"name", "sizeGb", "type", "sourceImage", "labels", "description"}, "Disk")
        _check_labels(body.get("labels", {}), "labels")
        if (zone, name) in self._disks:
            raise ApiError(409, "alreadyExists", f"The resource 'projects/{self.project}/zones/{zone}/disks/{name}' "
                                                 "already exists")
        source = body.get("sourceImage") or q.get("sourceImage")
        image = self._resolve_image(source, "sourceImage") if source else None
        if image and image["status"] != "READY":
            raise _not_ready(_relative(image["selfLink"]))
        type_link = self._resolve_type(body.get("type", f"zones/{zone}/diskTypes/pd-standard"), "type", "diskTypes",
                                       zone)
        disk = self._new_disk(zone, name, size_gb=body.get("sizeGb"), type_name=type_link.rsplit("/", 1)[-1],
                              image=image, labels=body.get("labels", {}), description=body.get("description"))
        self._disks[(zone, name)] = disk
        return disk["selfLink"], disk["id"], lambda: disk.update(status="READY")

    def _disks_delete(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> _Mutation:
        disk = self._disk(p["zone"], p["disk"])
        if disk.get("users"):
            raise _in_use(_relative(disk["selfLink"]), _relative(disk["users"][0]))
        del self._disks[(p["zone"], p["disk"])]
        return disk["selfLink"], disk["id"], None

    def _disks_set_labels(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> _Mutation:
        disk = self._disk(p["zone"], p["resource"])
        self._set_labels(disk, body)
        return disk["selfLink"], disk["id"], None

    def _set_labels(self, resource: dict[str, Any], body: dict[str, Any]) -> None:
        if not body.get("labelFingerprint"):
            raise ApiError(400, "required", "Required field 'labelFingerprint' not specified")
        if body["labelFingerprint"] != resource["labelFingerprint"]:
            raise ApiError(412, "conditionNotMet", "Labels fingerprint either invalid or resource labels have changed")
        labels = body.get("labels") or {}
        _check_labels(labels, "labels")
        resource.pop("labels", None)
        if labels:
            resource["labels"] = dict(labels)
        resource["labelFingerprint"] = _fingerprint(labels)

    # ---- images ----------------------------------------------------------------------------------------------

    def _new_image(self, project: str, name: str, *, family: str | None, labels: dict[str, str], size_gb: int,
                   status: str, description: str | None = None) -> dict[str, Any]:
        image = {"kind": "compute#image", "id": str(next(self._ids)), "creationTimestamp": _now(), "name": name,
                 "sourceType": "RAW", "status": status, "archiveSizeBytes": str(int(size_gb) * 2**30 // 4),
                 "diskSizeGb": str(int(size_gb)), "labelFingerprint": _fingerprint(labels),
                 "selfLink": f"{API_ROOT}projects/{project}/global/images/{name}", "storageLocations": ["us"]}
        for key, value in (("family", family), ("labels", dict(labels)), ("description", description)):
            if value:
                image[key] = value
        return image

    def _image(self, p: dict[str, str]) -> dict[str, Any]:
        self._require_scope(p)
        image = self._images.get((p["project"], p["image"]))
        if image is None:
            raise _not_found(f"projects/{p['project']}/global/images/{p['image']}")
        return image

    def _images_get(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        return copy.deepcopy(self._image(p))

    def _images_get_from_family(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        self._require_scope(p)
        return copy.deepcopy(self._image_from_family(p["project"], p["family"]))

    def _images_list(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        self._require_scope(p)
        images = [i for (project, _), i in self._images.items() if project == p["project"]]
        return self._list("compute#imageList", images, f"{API_ROOT}projects/{p['project']}/global/images", q)

    def _images_insert(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> _Mutation:
        name = body["name"]
        _only_modelled(body, {"name", "sourceDisk", "sourceImage", "family", "labels", "description",
                              "storageLocations"}, "Image")
        _check_labels(body.get("labels", {}), "labels")
        if p["project"] != self.project:
            raise ApiError(403, "forbidden", f"Required 'compute.images.create' permission for "
                                             f"'projects/{p['project']}/global/images/{name}'")
        if (self.project, name) in self._images:
            raise ApiError(409, "alreadyExists", f"The resource 'projects/{self.project}/global/images/{name}' "
                                                 "already exists")
        if bool(body.get("sourceDisk")) == bool(body.get("sourceImage")):
            raise _invalid("sourceDisk", body.get("sourceDisk", ""), "Exactly one of sourceDisk or sourceImage "
                                                                     "must be given (the fake models these two).")
        if body.get("sourceDisk"):
            source = self._resolve_disk(body["sourceDisk"], "sourceDisk")
            for instance, entry in self._attachments(source["selfLink"]):
                if entry["mode"] == "READ_WRITE" and instance["status"] == "RUNNING" and q.get("forceCreate") != "true":
                    raise _in_use(_relative(source["selfLink"]), _relative(instance["selfLink"]))
            size = source["sizeGb"]
        else:
            source = self._resolve_image(body["sourceImage"], "sourceImage")
            size = source["diskSizeGb"]
        if source["status"] != "READY":
            raise _not_ready(_relative(source["selfLink"]))
        image = self._new_image(self.project, name, family=body.get("family"), labels=body.get("labels", {}),
                                size_gb=int(size), status="PENDING", description=body.get("description"))
        kind = "Disk" if body.get("sourceDisk") else "Image"
        image.update({f"source{kind}": source["selfLink"], f"source{kind}Id": source["id"]})
        if body.get("storageLocations"):
            image["storageLocations"] = list(body["storageLocations"])
        self._images[(self.project, name)] = image
        return image["selfLink"], image["id"], lambda: image.update(status="READY")

    def _images_delete(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> _Mutation:
        image = self._image(p)
        del self._images[(p["project"], p["image"])]
        return image["selfLink"], image["id"], None

    def _images_deprecate(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> _Mutation:
        """ACTIVE clears the status; any other state is recorded (getFromFamily skips them)."""
        image = self._image(p)
        _only_modelled(body, {"state", "replacement", "deprecated", "obsolete", "deleted"}, "DeprecationStatus")
        state = body.get("state", "ACTIVE")
        if state == "ACTIVE":
            image.pop("deprecated", None)
        else:
            image["deprecated"] = {k: v for k, v in body.items() if k in ("state", "replacement", "deprecated",
                                                                          "obsolete", "deleted")}
        return image["selfLink"], image["id"], None

    def _images_set_labels(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> _Mutation:
        image = self._image({**p, "image": p["resource"]})
        self._set_labels(image, body)
        return image["selfLink"], image["id"], None

    # ---- instances -------------------------------------------------------------------------------------------

    def _new_instance(self, zone: str, name: str, *, machine_type: str, labels: dict[str, str], status: str,
                      metadata: list[dict[str, str]] | None = None) -> dict[str, Any]:
        instance = {"kind": "compute#instance", "id": str(next(self._ids)), "creationTimestamp": _now(),
                    "name": name, "machineType": machine_type, "status": status, "zone": self._zone_link(zone),
                    "disks": [], "selfLink": f"{self._zone_link(zone)}/instances/{name}",
                    "cpuPlatform": "Intel Cascade Lake", "labelFingerprint": _fingerprint(labels),
                    "fingerprint": _fingerprint(name), "startRestricted": False, "deletionProtection": False,
                    "metadata": {"kind": "compute#metadata", "fingerprint": _fingerprint(metadata or [])}}
        if metadata:
            instance["metadata"]["items"] = copy.deepcopy(metadata)
        if labels:
            instance["labels"] = dict(labels)
        return instance

    def _attachments(self, disk_link: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(instance, attachedDisk entry) for every instance the disk is attached to."""
        return [(instance, entry) for instance in self._instances.values() for entry in instance["disks"]
                if entry["source"] == disk_link]

    def _check_attachable(self, instance: dict[str, Any], disk: dict[str, Any], device_name: str, mode: str,
                          auto_delete: bool) -> None:
        disk_path = _relative(disk["selfLink"])
        if mode == "READ_ONLY" and auto_delete:
            raise _read_only_auto_delete(disk_path)
        if disk["status"] != "READY":
            raise _not_ready(disk_path)
        if not _NAME.fullmatch(device_name):
            raise _invalid("deviceName", device_name, f"Device names must match {_NAME.pattern}.")
        if any(entry["deviceName"] == device_name for entry in instance["disks"]):
            raise _invalid("deviceName", device_name, f"The device name is already in use on instance "
                                                      f"'{_relative(instance['selfLink'])}'.")
        if any(entry["source"] == disk["selfLink"] for entry in instance["disks"]):
            raise _invalid("source", disk_path, f"The disk is already attached to '{_relative(instance['selfLink'])}'.")
        for user, entry in self._attachments(disk["selfLink"]):
            if user is not instance and (mode == "READ_WRITE" or entry["mode"] == "READ_WRITE"):
                raise _in_use(disk_path, _relative(user["selfLink"]))

    def _attach(self, instance: dict[str, Any], disk: dict[str, Any], *, device_name: str, mode: str,
                auto_delete: bool, boot: bool, interface: str = "SCSI") -> None:
        index = max((entry["index"] for entry in instance["disks"]), default=-1) + 1
        instance["disks"].append({"kind": "compute#attachedDisk", "type": "PERSISTENT", "mode": mode,
                                  "source": disk["selfLink"], "deviceName": device_name, "index": index,
                                  "boot": boot, "autoDelete": auto_delete, "interface": interface,
                                  "diskSizeGb": disk["sizeGb"]})
        disk["users"] = [*disk.get("users", []), instance["selfLink"]]
        disk["lastAttachTimestamp"] = _now()

    def _detach(self, instance: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any] | None:
        """Remove the attachment; return the disk if nothing else uses it any more."""
        instance["disks"].remove(entry)
        zone, name = _DISK_REF.fullmatch(_relative(entry["source"])).group("zone", "name")  # type: ignore[union-attr]
        disk = self._disks.get((zone, name))
        if disk is None:
            return None
        users = [u for u in disk.get("users", []) if u != instance["selfLink"]]
        disk.pop("users", None)
        if users:
            disk["users"] = users
        disk["lastDetachTimestamp"] = _now()
        return None if users else disk

    def _delete_instance(self, zone: str, name: str) -> dict[str, Any]:
        instance = self._instances.pop((zone, name))
        for entry in list(instance["disks"]):
            disk = self._detach(instance, entry)
            if disk is not None and entry["autoDelete"]:
                del self._disks[(zone, disk["name"])]
        return instance

    def _instances_get(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        return copy.deepcopy(self._instance(p))

    def _instances_list(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        self._require_scope(p)
        instances = [i for (zone, _), i in self._instances.items() if zone == p["zone"]]
        return self._list("compute#instanceList", instances, f"{self._zone_link(p['zone'])}/instances", q)

    def _instances_insert(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> _Mutation:
        zone, name = p["zone"], body["name"]
        stored_as_given = {"networkInterfaces", "guestAccelerators", "scheduling", "tags", "serviceAccounts",
                           "shieldedInstanceConfig", "minCpuPlatform", "description"}
        _only_modelled(body, {"name", "machineType", "disks", "metadata", "labels", *stored_as_given}, "Instance")
        _check_labels(body.get("labels", {}), "labels")
        if (zone, name) in self._instances:
            raise ApiError(409, "alreadyExists", f"The resource 'projects/{self.project}/zones/{zone}/instances/{name}'"
                                                 " already exists")
        if not body.get("machineType"):
            raise ApiError(400, "required", "Required field 'resource.machineType' not specified")
        machine_type = self._resolve_type(body["machineType"], "machineType", "machineTypes", zone)
        specs = body.get("disks", [])
        if not specs or not specs[0].get("boot") or any(s.get("boot") for s in specs[1:]):
            raise _invalid("disks", len(specs), "Exactly one boot disk is needed and it must be disks[0].")
        instance = self._new_instance(zone, name, machine_type=machine_type, labels=body.get("labels", {}),
                                      status="PROVISIONING", metadata=body.get("metadata", {}).get("items"))
        instance.update({k: copy.deepcopy(v) for k, v in body.items() if k in stored_as_given})
        for i, nic in enumerate(instance.get("networkInterfaces", [])):
            nic.setdefault("kind", "compute#networkInterface")
            nic.setdefault("name", f"nic{i}")
        planned: list[tuple[dict[str, Any], dict[str, Any], bool]] = []  # (spec, disk, created here)
        for i, spec in enumerate(specs):
            _only_modelled(spec, {"boot", "autoDelete", "deviceName", "mode", "source", "initializeParams", "type",
                                  "interface"}, f"disks[{i}]")
            if spec.get("type", "PERSISTENT") != "PERSISTENT":
                raise FakeLimitation(f"disks[{i}].type {spec['type']!r}: only PERSISTENT disks are modelled")
            params = spec.get("initializeParams")
            if bool(params) == bool(spec.get("source")):
                raise _invalid(f"disks[{i}]", "", "Give exactly one of source or initializeParams.")
            if spec.get("source"):
                planned.append((spec, self._resolve_disk(spec["source"], f"disks[{i}].source", zone), False))
                continue
            _only_modelled(params, {"diskName", "sourceImage", "diskSizeGb", "diskType", "labels", "description"},
                           f"disks[{i}].initializeParams")
            _check_labels(params.get("labels", {}), f"disks[{i}].initializeParams.labels")
            disk_name = params.get("diskName", name)
            existing = self._disks.get((zone, disk_name)) or next(
                (d for _, d, _ in planned if d["name"] == disk_name), None)
            if existing:  # documented: an existing disk of that name is attached instead of creating one
                planned.append((spec, existing, False))
                continue
            if spec.get("boot") and not params.get("sourceImage"):
                raise ApiError(400, "required", "Required field 'disks[0].initializeParams.sourceImage' not specified")
            image = self._resolve_image(params["sourceImage"], f"disks[{i}].initializeParams.sourceImage") if (
                params.get("sourceImage")) else None
            if image and image["status"] != "READY":
                raise _not_ready(_relative(image["selfLink"]))
            disk_type = self._resolve_type(params.get("diskType", f"zones/{zone}/diskTypes/pd-standard"),
                                           f"disks[{i}].initializeParams.diskType", "diskTypes", zone)
            disk = self._new_disk(zone, disk_name, size_gb=params.get("diskSizeGb"), image=image,
                                  type_name=disk_type.rsplit("/", 1)[-1], labels=params.get("labels", {}),
                                  description=params.get("description"))
            disk["status"] = "READY"  # the instance's operation covers the disk; attachability is checked below
            planned.append((spec, disk, True))
        probe = {**instance, "disks": []}
        for i, (spec, disk, _) in enumerate(planned):
            device = spec.get("deviceName", f"persistent-disk-{i}")
            self._check_attachable(probe, disk, device, spec.get("mode", "READ_WRITE"), spec.get("autoDelete", False))
            probe["disks"].append({"deviceName": device, "source": disk["selfLink"], "index": i})
        self._instances[(zone, name)] = instance
        for i, (spec, disk, created) in enumerate(planned):
            if created:
                self._disks[(zone, disk["name"])] = disk
            self._attach(instance, disk, device_name=spec.get("deviceName", f"persistent-disk-{i}"),
                         mode=spec.get("mode", "READ_WRITE"), auto_delete=spec.get("autoDelete", False),
                         boot=spec.get("boot", False), interface=spec.get("interface", "SCSI"))
        return instance["selfLink"], instance["id"], lambda: instance.update(status="RUNNING",
                                                                              lastStartTimestamp=_now())

    def _instances_delete(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> _Mutation:
        instance = self._instance(p)
        self._delete_instance(p["zone"], p["instance"])
        return instance["selfLink"], instance["id"], None

    def _instances_attach_disk(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> _Mutation:
        instance = self._instance(p)
        _only_modelled(body, {"source", "deviceName", "mode", "autoDelete", "type", "interface"}, "AttachedDisk")
        if not body.get("source"):
            raise ApiError(400, "required", "Required field 'source' not specified")
        if body.get("type", "PERSISTENT") != "PERSISTENT":
            raise FakeLimitation(f"AttachedDisk.type {body['type']!r}: only PERSISTENT disks are modelled")
        disk = self._resolve_disk(body["source"], "source", p["zone"])
        index = max((entry["index"] for entry in instance["disks"]), default=-1) + 1
        device, mode = body.get("deviceName", f"persistent-disk-{index}"), body.get("mode", "READ_WRITE")
        self._check_attachable(instance, disk, device, mode, body.get("autoDelete", False))
        self._attach(instance, disk, device_name=device, mode=mode, auto_delete=body.get("autoDelete", False),
                     boot=False, interface=body.get("interface", "SCSI"))
        return instance["selfLink"], instance["id"], None

    def _attached(self, instance: dict[str, Any], device_name: str) -> dict[str, Any]:
        for entry in instance["disks"]:
            if entry["deviceName"] == device_name:
                return entry
        names = [entry["deviceName"] for entry in instance["disks"]]
        raise _invalid("deviceName", device_name, f"No attached disk found with this device name; attached: {names}.")

    def _instances_detach_disk(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> _Mutation:
        instance = self._instance(p)
        self._detach(instance, self._attached(instance, q["deviceName"]))
        return instance["selfLink"], instance["id"], None

    def _instances_set_disk_auto_delete(self, p: dict[str, str], q: dict[str, str],
                                        body: dict[str, Any]) -> _Mutation:
        instance = self._instance(p)
        self._attached(instance, q["deviceName"])["autoDelete"] = q["autoDelete"] == "true"
        return instance["selfLink"], instance["id"], None

    def _instances_stop(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> _Mutation:
        instance = self._instance(p)
        instance["status"] = "STOPPING"
        return instance["selfLink"], instance["id"], lambda: instance.update(status="TERMINATED",
                                                                              lastStopTimestamp=_now())

    def _instances_get_guest_attributes(self, p: dict[str, str], q: dict[str, str],
                                        body: dict[str, Any]) -> dict[str, Any]:
        instance = self._instance(p)
        key = (p["zone"], p["instance"])
        values = self._guest_values.setdefault(key, {})
        for script in self._guest_scripts.get(key, []):
            if script.revealed < len(script.steps):
                values.update({(script.namespace, k): str(v) for k, v in script.steps[script.revealed].items()})
                script.revealed += 1
        link = f"{instance['selfLink']}/guestAttributes/"
        missing = _not_found(f"{_relative(link)}{q.get('variableKey') or q.get('queryPath', '')}")
        if "variableKey" in q:
            namespace, _, name = q["variableKey"].partition("/")
            if (namespace, name) not in values:
                raise missing
            return {"kind": "compute#guestAttributes", "variableKey": q["variableKey"],
                    "variableValue": values[(namespace, name)], "selfLink": link + q["variableKey"]}
        if "queryPath" not in q:
            raise _invalid("queryPath", "", "Give queryPath (NAMESPACE/ or NAMESPACE/KEY) or variableKey.")
        namespace, _, name = q["queryPath"].partition("/")
        items = [{"namespace": ns, "key": k, "value": v} for (ns, k), v in sorted(values.items())
                 if ns == namespace and name in ("", k)]
        if not items:
            raise missing
        return {"kind": "compute#guestAttributes", "queryPath": q["queryPath"], "queryValue": {"items": items},
                "selfLink": link + q["queryPath"]}

    def _instances_get_serial_port_output(self, p: dict[str, str], q: dict[str, str],
                                          body: dict[str, Any]) -> dict[str, Any]:
        instance = self._instance(p)
        port = int(q.get("port", "1"))
        if not 1 <= port <= 4:
            raise _invalid("port", port, "Serial ports are 1 to 4.")
        output = self._serial.get((p["zone"], p["instance"]), b"") if port == 1 else b""
        start = int(q.get("start", "0"))
        start = max(len(output) + start, 0) if start < 0 else min(start, len(output))
        return {"kind": "compute#serialPortOutput", "contents": output[start:].decode(errors="replace"),
                "start": str(start), "next": str(len(output)), "selfLink": f"{instance['selfLink']}/serialPort"}


def _require_enum(name: str, value: str, allowed: list[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} {value!r} is not one of {', '.join(allowed)}")
