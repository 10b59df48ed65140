"""A local Cloud Storage JSON API for the queue agent and the jobs client, checked against storage.v1.

The real google-cloud-storage client reaches it through STORAGE_EMULATOR_HOST. Every request is routed
to its method in the storage.v1 discovery document google-api-python-client ships and its path and
query parameters and metadata body are checked against that method's schemas (the SchemaChecker of
tests/fakes/compute/schema.py, built on the storage document); every JSON response is checked against the
method's response schema. A request that fails a check is answered 400 and recorded in `problems`,
which tests assert is empty. Media routes are the discovery document's own: the simple/multipart
upload path of objects.insert (mediaUpload.protocols.simple.path) and objects.get with alt=media
(supportsMediaDownload; the client sends it under /download, useMediaDownloadService).

Modelled: buckets.get, objects.insert (multipart), objects.get (metadata and media), objects.list (prefix), with
generations and the preconditions ifGenerationMatch / ifGenerationNotMatch (0: "no live object",
https://cloud.google.com/storage/docs/request-preconditions#special-case: 412 when it does not hold).
Faults: `fail(n)` answers the next n object requests 503 (a retryable error to the client);
`lose_replies(n, suffix)` applies the next n creations of objects whose names end with `suffix` and closes
the connection instead of answering (a reply lost on the way back: the client sees a disconnect, which
google-cloud-storage retries, and its retry meets the object the lost write created).
"""

from __future__ import annotations

import email.parser
import email.policy
import functools
import importlib.resources
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.compute.schema import SchemaChecker
from tests.fakes.server import LocalServer
from tests.fakes.webui import _reply

MEDIA_PREFIXES = ("/upload", "/download")


@functools.cache
def storage_checker() -> SchemaChecker:
    path = importlib.resources.files("googleapiclient") / "discovery_cache" / "documents" / "storage.v1.json"
    return SchemaChecker(json.loads(path.read_text()))


class FakeStorage(LocalServer):
    METHODS = ("GET", "POST")
    THREAD_NAME = "fake-storage"

    def __init__(self, buckets: tuple[str, ...] = ("results",)):
        super().__init__()
        self.objects: dict[str, dict[str, tuple[dict, bytes]]] = {b: {} for b in buckets}
        self.creates: Counter[tuple[str, str]] = Counter()  # successful creations per (bucket, object)
        self.problems: list[str] = []
        self.calls: list[tuple[str, str]] = []
        self._failures = 0
        self._lost_replies = 0
        self._lost_suffix = ""
        self.replies_lost = 0
        self._generation = 0
        self._lock = threading.Lock()
        self.schema = storage_checker()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail(self, count: int) -> None:
        """Answer the next `count` object requests with 503."""
        with self._lock:
            self._failures = count

    def lose_replies(self, count: int, suffix: str = "") -> None:
        """Apply the next `count` creations of objects named `...suffix`, then hang up without a reply."""
        with self._lock:
            self._lost_replies, self._lost_suffix = count, suffix

    def read(self, bucket: str, name: str) -> bytes:
        return self.objects[bucket][name][1]

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        url = urlsplit(request.path)
        query = parse_qs(url.query, keep_blank_values=True)
        path, media = url.path, None
        for prefix in MEDIA_PREFIXES:
            if path.startswith(prefix + "/"):
                path, media = path[len(prefix):], prefix
        routed = self.schema.route(request.command, path)
        if routed is None:
            return self._refuse(request, f"{request.command} {url.path}: no storage.v1 method has this path")
        method, params = routed
        self.calls.append((method['id'], url.path))
        body, content = self._body(request, method, media)
        problems = self.schema.check_request(method, params, query, body)
        if media == "/upload" and "mediaUpload" not in method:
            problems.append(f"{method['id']} takes no media upload")
        if problems:
            return self._refuse(request, *problems)
        with self._lock:
            if self._failures:
                self._failures -= 1
                return _reply(request, 503, b'{"error":{"code":503,"message":"injected"}}')
            status, answer = self._serve(method["id"], params, query, body, content)
            if self._loses_reply(method["id"], status, answer):
                request.close_connection = True
                return
        if isinstance(answer, bytes):
            return _reply(request, status, answer, {"Content-Type": "application/octet-stream"})
        if status == 200:
            self.problems += self.schema.check_response(method, answer)
        _reply(request, status, json.dumps(answer).encode(), {"Content-Type": "application/json"})

    def _loses_reply(self, method_id: str, status: int, answer: Any) -> bool:
        if not (self._lost_replies and method_id == "storage.objects.insert" and status == 200
                and answer["name"].endswith(self._lost_suffix)):
            return False
        self._lost_replies -= 1
        self.replies_lost += 1
        return True

    def _refuse(self, request: BaseHTTPRequestHandler, *problems: str) -> None:
        self.problems += problems
        _reply(request, 400, json.dumps({"error": {"code": 400, "message": "; ".join(problems)}}).encode())

    @staticmethod
    def _body(request: BaseHTTPRequestHandler, method: dict, media: str | None) -> tuple[Any, bytes]:
        raw = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        kind = request.headers.get("Content-Type", "")
        if media == "/upload" and kind.startswith("multipart/related"):
            parsed = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + kind.encode() + b"\r\n\r\n" + raw)
            metadata, payload = list(parsed.iter_parts())
            return json.loads(metadata.get_payload(decode=True)), payload.get_payload(decode=True)
        return (json.loads(raw) if raw else None), b""

    def _serve(self, method_id: str, params: dict, query: dict, body: Any, content: bytes) -> tuple[int, Any]:
        objects = self.objects.get(params["bucket"])
        if objects is None:
            return 404, {"error": {"code": 404, "message": f"bucket {params['bucket']} not found"}}
        if method_id == "storage.buckets.get":
            return 200, {"kind": "storage#bucket", "id": params["bucket"], "name": params["bucket"]}
        if method_id == "storage.objects.list":
            prefix = query.get("prefix", [""])[0]
            return 200, {"kind": "storage#objects",
                         "items": [meta for name, (meta, _) in sorted(objects.items()) if name.startswith(prefix)]}
        name = params.get("object") or (body or {}).get("name") or query.get("name", [""])[0]
        current = objects.get(name)
        failed = self._precondition(current, query)
        if failed:
            return 412, {"error": {"code": 412, "message": failed}}
        if method_id == "storage.objects.get":
            if current is None:
                return 404, {"error": {"code": 404, "message": f"No such object: {params['bucket']}/{name}"}}
            return 200, (current[1] if query.get("alt") == ["media"] else current[0])
        if method_id != "storage.objects.insert":
            self.problems.append(f"{method_id}: not modelled by the fake")
            return 501, {"error": {"code": 501, "message": f"{method_id} is not modelled"}}
        self._generation += 1
        meta = {"kind": "storage#object", "bucket": params["bucket"], "name": name,
                "generation": str(self._generation), "metageneration": "1", "size": str(len(content)),
                "contentType": (body or {}).get("contentType", "application/octet-stream"),
                "id": f"{params['bucket']}/{name}/{self._generation}"}
        objects[name] = (meta, content)
        self.creates[(params["bucket"], name)] += 1
        return 200, meta

    @staticmethod
    def _precondition(current: tuple[dict, bytes] | None, query: dict) -> str | None:
        generation = current[0]["generation"] if current else "0"
        if "ifGenerationMatch" in query and query["ifGenerationMatch"][0] != generation:
            return "At least one of the pre-conditions you specified did not hold."
        if "ifGenerationNotMatch" in query and query["ifGenerationNotMatch"][0] == generation:
            return "At least one of the pre-conditions you specified did not hold."
        return None
