"""A local fake of the metadata server as a Workload Identity pod on GKE sees it.

That is the GKE metadata server, which serves a subset of the GCE metadata server: project-id,
numeric-project-id, instance/hostname, instance/id, instance/zone and the service account's token,
but not instance/name (a known trap: code that works on a VM fails in the pod), so neither does
this fake. Strict like the real one: a request without `Metadata-Flavor: Google` or with
`X-Forwarded-For` is refused (403); every answer carries `Metadata-Flavor: Google`. A path it does
not serve is answered 404 *and* recorded as a violation, so code under test cannot silently depend
on something the pod would not get. Point code at it with GCE_METADATA_HOST=<fake.host>.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from tests.fakes.server import LocalServer

ROOT = "/computeMetadata/v1/"


@dataclass(frozen=True)
class MetadataRequest:
    method: str
    path: str  # below /computeMetadata/v1/
    query: dict[str, list[str]]
    status: int


@dataclass
class _Fault:
    path_regex: str
    status: int
    times: int


class FakeMetadata(LocalServer):
    METHODS = ("GET", "POST")
    THREAD_NAME = "fake-metadata"
    def __init__(
        self,
        *,
        project: str = "sdgke-test",
        project_number: str = "123456789012",
        zone: str = "us-central1-a",
        instance: str = "gke-sdgke-gpu-pool-0a1b2c3d-x7k2",
        service_account: str = "sd-attacher@sdgke-test.iam.gserviceaccount.com",
        token: str = "ya29.fake-metadata-token",
        instance_id: str = "5126638520193811201",
    ):
        self.project = project
        self.project_number = project_number
        self.zone = zone
        self.instance = instance
        self.service_account = service_account
        self.token = token
        self.instance_id = instance_id
        self.requests: list[MetadataRequest] = []
        self.violations: list[str] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        super().__init__()

    @property
    def host(self) -> str:
        """host:port, the form GCE_METADATA_HOST takes."""
        return f"127.0.0.1:{self.port}"

    # faults and checks
    def fail_next(self, *, path_regex: str = ".*", status: int = 503, times: int = 1) -> None:
        with self._lock:
            self._faults.append(_Fault(path_regex, status, times))

    def assert_clean(self) -> None:
        with self._lock:
            violations = list(self.violations)
        assert not violations, "metadata server violations:\n" + "\n".join(violations)

    def paths(self) -> list[str]:
        with self._lock:
            return [request.path for request in self.requests]

    # serving
    def _values(self) -> dict[str, tuple[str, str]]:
        token = json.dumps({"access_token": self.token, "expires_in": 3599, "token_type": "Bearer"})
        account = json.dumps(
            {"aliases": ["default"], "email": self.service_account,
             "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}
        )
        return {
            "project/project-id": ("text/plain", self.project),
            "project/numeric-project-id": ("text/plain", self.project_number),
            "instance/hostname": ("text/plain", f"{self.instance}.{self.zone}.c.{self.project}.internal"),
            "instance/id": ("text/plain", self.instance_id),
            "instance/zone": ("text/plain", f"projects/{self.project_number}/zones/{self.zone}"),
            "instance/service-accounts/default/token": ("application/json", token),
            "instance/service-accounts/default/": ("application/json", account),
        }

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        path = url.path.removeprefix(ROOT)
        query = parse_qs(url.query)
        status, content_type, body = self._answer(handler, url.path, path)
        with self._lock:
            self.requests.append(MetadataRequest(handler.command, path, query, status))
        payload = body.encode()
        handler.send_response(status)
        handler.send_header("Metadata-Flavor", "Google")
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def _answer(self, handler: BaseHTTPRequestHandler, full_path: str, path: str) -> tuple[int, str, str]:
        def refuse(status: int, why: str) -> tuple[int, str, str]:
            with self._lock:
                self.violations.append(f"{handler.command} {full_path}: {why}")
            return status, "text/plain", why

        if handler.headers.get("Metadata-Flavor") != "Google":
            return refuse(403, "missing header Metadata-Flavor: Google")
        if handler.headers.get("X-Forwarded-For"):
            return refuse(403, "X-Forwarded-For is refused by the metadata server")
        if handler.command != "GET":
            return refuse(405, f"{handler.command} is not served; the metadata server is read with GET")
        if not full_path.startswith(ROOT):
            return refuse(404, f"not under {ROOT}")
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and re.fullmatch(fault.path_regex, path):
                    fault.times -= 1
                    return fault.status, "text/plain", f"injected HTTP {fault.status}"
        values = self._values()
        if path == "instance/name":
            return refuse(404, "instance/name is not served by the GKE metadata server (Workload Identity); "
                               "use instance/hostname")
        if path not in values:
            return refuse(404, f"path {path!r} is not served by the fake; served: {sorted(values)}")
        return 200, *values[path]
