"""The WebUI beside the worker: the job's own request forwarded as the client sent it, WebUI's own word on
whether it generates now, and the interrupt. The calls go to localhost with the stdlib's HTTP client."""

from __future__ import annotations

import base64
import http.client
import json
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from queue_agent import front

log = logging.getLogger("queue_agent.worker")

PROGRESS_SECONDS = 5.0
"""How long the WebUI may take to answer `/sdapi/v1/progress`, which it answers without its `queue_lock`."""
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "host", "content-length"}
"""Headers that belong to one connection, not to the request (RFC 9110 section 7.6.1), plus Host and
Content-Length, which the call to the WebUI sets for itself."""


@dataclass(frozen=True)
class Outcome:
    status: int
    content_type: str
    body: bytes


def failure(status: int, detail: str) -> Outcome:
    """An answer of the worker's own, shaped like FastAPI's errors ({"detail": ...}) as WebUI's are."""
    return Outcome(status, "application/json", json.dumps({"detail": detail}).encode())


class Upstream:
    """The WebUI beside the worker: the job's own request, and the interrupt."""

    def __init__(self, url: str, auth: str | None, grace: float):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 7860
        self.auth = auth
        self.grace = grace

    def forward(self, job: front.Job, timeout: float) -> Outcome:
        """The job's method, path, query, headers and body as the client sent them (the client's own basic
        auth included: WebUI checks it). Raises OSError or HTTPException when the WebUI does not answer."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            connection.putrequest(job.method, job.target, skip_host=True, skip_accept_encoding=True)
            connection.putheader("Host", f"{self.host}:{self.port}")
            for key, value in job.headers:
                if key.lower() not in HOP_BY_HOP:
                    connection.putheader(key, value)
            connection.putheader("Content-Length", str(len(job.body)))
            connection.endheaders(job.body)
            response = connection.getresponse()
            return Outcome(response.status, response.getheader("Content-Type") or "application/octet-stream",
                           response.read())
        finally:
            connection.close()

    def generating(self) -> bool:
        """Whether the WebUI runs a generation now, from its own state rather than the fronts' count (a browser's
        event can start at a front that did not hand out this job, or before the front knew this worker).

        WebUI v1.10.1 `modules/api/api.py` `progressapi` (a plain `def`: FastAPI runs it in its thread pool, not
        behind `queue_lock`) answers `state.job_count` from `shared.state`. `State.begin()`
        (`modules/shared_state.py`) sets it to -1, processing then to the count of its batches, and `State.end()`
        back to 0; both the API's txt2img (`text2imgapi`: `shared.state.begin(job="scripts_txt2img")` inside
        `queue_lock`, `shared.state.end()` in its `finally`) and a UI generation (`modules/call_queue.py`
        `wrap_gradio_gpu_call`: `begin` and `end` inside `queue_lock`) do so, so an idle WebUI answers 0 and a
        running generation anything else. A WebUI that does not answer counts idle: forwarding the job then
        fails the way the worker already handles (a 502, and warm up again)."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=PROGRESS_SECONDS)
        try:
            connection.request("GET", "/sdapi/v1/progress?skip_current_image=true", headers=self._auth_header())
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200:
                return False
            return json.loads(answer)["state"]["job_count"] != 0
        except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError) as err:
            log.warning("WebUI did not tell its progress: %s", err)
            return False
        finally:
            connection.close()

    def _auth_header(self) -> dict[str, str]:
        if not self.auth:
            return {}
        return {"Authorization": "Basic " + base64.b64encode(self.auth.encode()).decode()}

    def interrupt(self) -> None:
        """WebUI v1.10.1 (AUTOMATIC1111/stable-diffusion-webui@82a973c04367123ae98bd9abdf80d9eda9b910e2)
        `modules/api/api.py`: `POST /sdapi/v1/interrupt` -> `shared.state.interrupt()`, which sets
        `interrupted`; the sampler stops at its next step and the request returns what it has. The flag is
        reset by `State.begin()` (`modules/shared_state.py`) when the next generation starts, so an
        interrupt that arrives just after a generation ended cannot cut the next one."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.grace)
        try:
            connection.request("POST", "/sdapi/v1/interrupt", headers={"Content-Length": "0", **self._auth_header()})
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                log.warning("WebUI answered the interrupt with %d", response.status)
        except (OSError, http.client.HTTPException) as err:
            log.warning("WebUI did not take the interrupt: %s", err)
        finally:
            connection.close()
