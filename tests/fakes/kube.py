"""A local fake of the Kubernetes API for what the disk attacher does: GET and PATCH a node.

Strict on purpose. The only PATCH it accepts is a JSON patch (application/json-patch+json) made of
pairs `test /spec/taints/N/key` + `remove /spec/taints/N`: the attacher may remove a taint and must
touch nothing else. Any other content type, op, path or shape is a violation (and answered like
the API server would refuse it). A failed `test` is answered 422 like kube-apiserver does, with the
node unchanged (JSON patches are atomic). Requests need `Authorization: Bearer <token>`.

One more PATCH shape: setting one node label (`test` + `replace`, or `add`, of /metadata/labels/KEY),
which the agent does on a node that holds another runtime's disk.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler

from tests.fakes.server import LocalServer

_NODE_PATH = re.compile(r"^/api/v1/nodes/(?P<name>[a-z0-9]([-a-z0-9.]*[a-z0-9])?)$")
_TAINT_KEY_PATH = re.compile(r"^/spec/taints/(?P<index>0|[1-9][0-9]*)/key$")
_TAINT_PATH = re.compile(r"^/spec/taints/(?P<index>0|[1-9][0-9]*)$")
_TAINT_FIELDS = {"key", "value", "effect", "timeAdded"}
_EFFECTS = {"NoSchedule", "PreferNoSchedule", "NoExecute"}
_LABEL_PATH = re.compile(r"^/metadata/labels/(?P<key>[^/]+)$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
"""Kubernetes label value syntax: at most 63 characters, alphanumeric at both ends, `-_.` between
(https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#syntax-and-character-set)."""


@dataclass(frozen=True)
class KubeRequest:
    method: str
    path: str
    content_type: str | None
    body: object
    status: int
    started: float
    finished: float


@dataclass
class _Fault:
    method: str | None
    path_regex: str
    status: int
    times: int


class FakeKube(LocalServer):
    METHODS = ("GET", "PATCH", "PUT", "POST", "DELETE")
    THREAD_NAME = "fake-kube"
    def __init__(self, *, token: str = "kube-fake-token"):
        self.token = token
        self.latency = 0.0
        self.requests: list[KubeRequest] = []
        self.violations: list[str] = []
        self._nodes: dict[str, dict] = {}
        self._faults: list[_Fault] = []
        self._before_patch: list[Callable[[dict], None]] = []
        self._lock = threading.Lock()
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_kubeconfig(self, path: str) -> str:
        """A kubeconfig (JSON is YAML) pointing at this fake with its bearer token."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": self.token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        }
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(config, handle)
        return path

    # seeding and inspection
    def add_node(self, name: str, *, taints: list[dict] | None = None, labels: dict[str, str] | None = None) -> dict:
        for taint in taints or []:
            assert set(taint) <= _TAINT_FIELDS and taint.get("effect") in _EFFECTS and taint.get("key"), taint
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "uid": str(uuid.uuid4()), "resourceVersion": "1", "labels": dict(labels or {})},
            "spec": {"taints": copy.deepcopy(taints or [])},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }
        with self._lock:
            self._nodes[name] = node
            return copy.deepcopy(node)

    def node(self, name: str) -> dict:
        with self._lock:
            return copy.deepcopy(self._nodes[name])

    def taints(self, name: str) -> list[dict]:
        return self.node(name)["spec"].get("taints") or []

    def before_next_patch(self, change: Callable[[dict], None]) -> None:
        """Mutate the stored node just before the next PATCH is applied (someone else wrote it)."""
        with self._lock:
            self._before_patch.append(change)

    def fail_next(self, *, method: str | None = None, path_regex: str = ".*", status: int = 503, times: int = 1) -> None:
        with self._lock:
            self._faults.append(_Fault(method, path_regex, status, times))

    def assert_clean(self) -> None:
        with self._lock:
            violations = list(self.violations)
        assert not violations, "Kubernetes API violations:\n" + "\n".join(violations)

    def calls(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(request.method, request.path) for request in self.requests]

    # serving
    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        started = time.monotonic()
        if self.latency:
            time.sleep(self.latency)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        content_type = handler.headers.get("Content-Type")
        body: object = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
        status, answer = self._answer(handler.command, handler.path, handler.headers.get("Authorization"),
                                      content_type, raw, body)
        with self._lock:  # recorded before answering: once the caller has its answer, the record is there
            self.requests.append(
                KubeRequest(handler.command, handler.path, content_type, body, status, started, time.monotonic())
            )
        payload = json.dumps(answer).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    @staticmethod
    def _status(code: int, reason: str, message: str) -> tuple[int, dict]:
        return code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code}

    def _violation(self, code: int, reason: str, message: str) -> tuple[int, dict]:
        with self._lock:
            self.violations.append(message)
        return self._status(code, reason, message)

    def _answer(self, method: str, path: str, authorization: str | None, content_type: str | None,
                raw: bytes, body: object) -> tuple[int, dict]:
        if authorization != f"Bearer {self.token}":
            return self._violation(401, "Unauthorized", f"{method} {path}: missing or wrong bearer token")
        match = _NODE_PATH.match(path)
        if not match:
            return self._violation(404, "NotFound", f"{method} {path}: the fake serves only /api/v1/nodes/NAME")
        if method not in ("GET", "PATCH"):
            return self._violation(405, "MethodNotAllowed", f"{method} {path}: the attacher may only GET and PATCH nodes")
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and (fault.method in (None, method)) and re.fullmatch(fault.path_regex, path):
                    fault.times -= 1
                    return self._status(fault.status, "InternalError", f"injected HTTP {fault.status}")
        name = match["name"]
        if method == "GET":
            if raw:
                return self._violation(400, "BadRequest", f"GET {path} with a body")
            with self._lock:
                node = self._nodes.get(name)
                return (200, copy.deepcopy(node)) if node else self._status(404, "NotFound", f'nodes "{name}" not found')
        return self._patch(path, name, content_type, body)

    def _patch(self, path: str, name: str, content_type: str | None, body: object) -> tuple[int, dict]:
        if (content_type or "").split(";")[0].strip() != "application/json-patch+json":
            return self._violation(
                415, "UnsupportedMediaType",
                f"PATCH {path}: Content-Type {content_type!r}; the attacher must send application/json-patch+json "
                "(a merge patch would replace the whole taint list)",
            )
        if _is_label_patch(body):
            return self._patch_label(path, name, body)
        problem = _check_taint_removal(body)
        if problem:
            return self._violation(422, "Invalid", f"PATCH {path}: {problem}; body={json.dumps(body)}")
        with self._lock:
            self._apply_before_patch(name)
            node = self._nodes.get(name)
            if node is None:
                return self._status(404, "NotFound", f'nodes "{name}" not found')
            taints = copy.deepcopy(node["spec"].get("taints") or [])
            for operation in body:
                index_match = _TAINT_KEY_PATH.match(operation["path"]) or _TAINT_PATH.match(operation["path"])
                index = int(index_match["index"])
                if index >= len(taints):
                    return self._status(422, "Invalid", f"the server rejected our request: {operation['path']} out of range")
                if operation["op"] == "test" and taints[index].get("key") != operation["value"]:
                    return self._status(
                        422, "Invalid",
                        f"the server rejected our request: testing value /spec/taints/{index}/key failed",
                    )
                if operation["op"] == "remove":
                    del taints[index]
            node["spec"]["taints"] = taints
            node["metadata"]["resourceVersion"] = str(int(node["metadata"]["resourceVersion"]) + 1)
            return 200, copy.deepcopy(node)

    def _apply_before_patch(self, name: str) -> None:
        """Under the lock: what `before_next_patch` queued happens now, once."""
        for change in self._before_patch:
            if name in self._nodes:
                change(self._nodes[name])
        self._before_patch.clear()

    def _patch_label(self, path: str, name: str, body: list) -> tuple[int, dict]:
        """JSON patch semantics (RFC 6902, https://www.rfc-editor.org/rfc/rfc6902#section-4): `test`
        compares, `replace` needs the member to exist, `add` sets it either way; all or nothing."""
        problem = _check_label_patch(body)
        if problem:
            return self._violation(422, "Invalid", f"PATCH {path}: {problem}; body={json.dumps(body)}")
        key = _LABEL_PATH.match(body[0]["path"])["key"].replace("~1", "/").replace("~0", "~")
        with self._lock:
            self._apply_before_patch(name)
            node = self._nodes.get(name)
            if node is None:
                return self._status(404, "NotFound", f'nodes "{name}" not found')
            labels = node["metadata"]["labels"]
            if body[0]["op"] == "test" and labels.get(key) != body[0]["value"]:
                return self._status(422, "Invalid", f"the server rejected our request: testing value {body[0]['path']} failed")
            if body[-1]["op"] == "replace" and key not in labels:
                return self._status(422, "Invalid", f"the server rejected our request: replace of missing {body[-1]['path']}")
            labels[key] = body[-1]["value"]
            node["metadata"]["resourceVersion"] = str(int(node["metadata"]["resourceVersion"]) + 1)
            return 200, copy.deepcopy(node)

    def labels(self, name: str) -> dict[str, str]:
        return self.node(name)["metadata"]["labels"]


def _is_label_patch(body: object) -> bool:
    return isinstance(body, list) and any(isinstance(op, dict) and str(op.get("path", "")).startswith("/metadata/labels")
                                          for op in body)


def _check_label_patch(body: list) -> str | None:
    """None if body sets one label: [test, replace] of the same path, or [add]; values are valid label values."""
    shapes = [tuple(op.get("op") for op in body if isinstance(op, dict))]
    if shapes[0] not in (("test", "replace"), ("add",)) or len(body) != len(shapes[0]):
        return f"a label patch must be [test, replace] or [add] of one label, got ops {shapes[0]}"
    if len({op.get("path") for op in body}) != 1 or not _LABEL_PATH.match(str(body[0].get("path"))):
        return "a label patch must address one /metadata/labels/KEY (with / in KEY escaped as ~1)"
    for op in body:
        if set(op) != {"op", "path", "value"} or not isinstance(op["value"], str):
            return f"operation {op!r} must be exactly {{op, path, value}} with a string value"
        if not _LABEL_VALUE.match(op["value"]):
            return f"label value {op['value']!r} is not a valid label value"
    return None


def _check_taint_removal(body: object) -> str | None:
    """None if body is a list of (test key, remove) pairs on the same taint index, descending."""
    if not isinstance(body, list) or not body:
        return "a JSON patch must be a non-empty JSON array of operations"
    if len(body) % 2:
        return "operations must come in pairs: test /spec/taints/N/key then remove /spec/taints/N"
    previous_index: int | None = None
    for position in range(0, len(body), 2):
        test, remove = body[position], body[position + 1]
        if not isinstance(test, dict) or set(test) != {"op", "path", "value"} or test["op"] != "test":
            return f"operation {position} must be exactly {{op: test, path, value}}, got {test!r}"
        if not isinstance(remove, dict) or set(remove) != {"op", "path"} or remove["op"] != "remove":
            return f"operation {position + 1} must be exactly {{op: remove, path}}, got {remove!r}"
        test_path = _TAINT_KEY_PATH.match(str(test["path"]))
        remove_path = _TAINT_PATH.match(str(remove["path"]))
        if not test_path or not remove_path or test_path["index"] != remove_path["index"]:
            return f"pair {position // 2} must test /spec/taints/N/key and remove /spec/taints/N for the same N"
        if not isinstance(test["value"], str) or not test["value"]:
            return f"operation {position} must test the taint key (a non-empty string)"
        index = int(remove_path["index"])
        if previous_index is not None and index >= previous_index:
            return "pairs must go from the highest index down so earlier removals do not shift later ones"
        previous_index = index
    return None
