"""The worker against the real request queue (images/request-queue, `python -m request_queue` on loopback):
clients of the request queue are served by the stand-in WebUI through the worker, one generation at a time.
The protocol itself is checked strictly by tests/jobs/test_worker.py's stand-in; this shows the two agree."""

from __future__ import annotations

import base64
import json
import signal
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from tests.jobs import harness
from tests.request_queue.conftest import queue_env, spawn


def client_call(url: str, prompt: str) -> tuple[int, dict]:
    request = urllib.request.Request(url + "/sdapi/v1/txt2img", data=json.dumps({"prompt": prompt}).encode(),
                                     headers={"Content-Type": "application/json", "X-Loadtest-Request": prompt,
                                              "Authorization": "Basic " + base64.b64encode(harness.AUTH.encode()).decode()})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, json.loads(response.read())


def test_clients_of_the_real_request_queue_are_served_by_the_worker_one_generation_at_a_time(webui, tmp_path):
    webui.generation_seconds = 0.05
    queue = spawn(queue_env(SD_API_AUTH=harness.AUTH))
    worker = None
    try:
        listening = json.loads(queue.stdout.readline())
        front, workers = (f"http://127.0.0.1:{listening[key]}" for key in ("http_port", "worker_port"))
        worker = harness.worker_process(workers, webui.url, str(tmp_path / "heartbeat"))
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda i: client_call(front, f"request {i}"), range(4)))
        assert [status for status, _ in answers] == [200] * 4
        assert all(body["images"] == [base64.b64encode(harness.PNG).decode()] for _, body in answers)
        assert sorted(webui.served[-4:]) == [f"request {i}" for i in range(4)] and webui.max_open_requests == 1
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    finally:
        for process in (worker, queue):
            if process is not None and process.poll() is None:
                process.kill()
        queue.communicate(timeout=30)
