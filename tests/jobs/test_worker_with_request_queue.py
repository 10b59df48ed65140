"""The worker against the real request queue (images/request-queue, `python -m request_queue` on loopback):
clients of the request queue are served by the stand-in WebUI through the worker, one generation at a time.
The protocol itself is checked strictly by tests/jobs/test_worker.py's stand-in; this shows the two agree."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from urllib.parse import urlsplit

from queue_agent import front, worker

from tests.jobs import harness
from tests.jobs.harness import wait_until
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


def started_queue() -> tuple[subprocess.Popen, str, str]:
    """A real request queue on loopback: (process, clients URL, workers URL)."""
    process = spawn(queue_env(SD_API_AUTH=harness.AUTH))
    listening = json.loads(process.stdout.readline())
    return process, *(f"http://127.0.0.1:{listening[key]}" for key in ("http_port", "worker_port"))


def shows(workers_url: str, **expected: int) -> bool:
    """The front's demand (GET /v1/demand) has these values."""
    with urllib.request.urlopen(workers_url + "/v1/demand", timeout=10) as answer:
        seen = json.loads(answer.read())
    return all(seen[key] == value for key, value in expected.items())


def test_a_rollout_of_the_request_queue_serves_every_request_held_by_the_draining_front(monkeypatch):
    """Two real request queues, the old one draining (SIGTERM), and two real worker loops beside stand-in
    WebUIs that resolve both fronts, as the workers' headless Service lists both pods during a rollout: the
    requests still waiting in the old front and those sent to the new one are all served, each generated once,
    each result at the front that handed out its job (its client's answer), and no WebUI runs two at once."""
    monkeypatch.setattr(front, "RESOLVE_SECONDS", 0.0)  # every round sees the list as it is now
    old, old_url, old_workers = started_queue()
    new = None
    listed = [urlsplit(old_workers).port]
    with ExitStack() as stack:
        webuis = [stack.enter_context(harness.FakeWebui(auth=harness.AUTH, model_loaded=True, image=harness.PNG))
                  for _ in range(2)]
        stop = threading.Event()
        loops = []
        for index, webui in enumerate(webuis):
            settings = worker.Settings(front_url=old_workers, name=f"pod-{index}", own_url=webui.url,
                                       webui_url=webui.url, webui_auth=harness.AUTH, ready_poll_seconds=0.05)
            loop = worker.Worker(settings, resolve=lambda: [("127.0.0.1", port) for port in listed])
            loops.append(threading.Thread(target=loop.run, args=(stop,), daemon=True))
            loops[-1].start()
        try:
            wait_until(lambda: shows(old_workers, idle=2), what="both workers registered")
            for webui in webuis:
                webui.admit.clear()  # the generations in flight hold until the rollout has begun
            with ThreadPoolExecutor(10) as pool:
                at_old = [pool.submit(client_call, old_url, f"old {i}") for i in range(6)]
                wait_until(lambda: shows(old_workers, busy=2, waiting=4), what="2 running, 4 waiting at the old front")
                new, new_url, new_workers = started_queue()
                listed.append(urlsplit(new_workers).port)  # the new pod is listed from its start
                old.send_signal(signal.SIGTERM)
                wait_until(lambda: urllib_status(old_url + "/healthz") == 503, what="the old front draining")
                at_new = [pool.submit(client_call, new_url, f"new {i}") for i in range(4)]
                wait_until(lambda: shows(new_workers, waiting=4), what="4 waiting at the new front")
                for webui in webuis:
                    webui.admit.set()
                answers = [call.result() for call in at_old + at_new]
            assert [status for status, _ in answers] == [200] * 10
            assert all(body["parameters"]["prompt"] == prompt for (_, body), prompt in zip(
                answers, [f"old {i}" for i in range(6)] + [f"new {i}" for i in range(4)], strict=True))
            generated = sorted(p for webui in webuis for p in webui.served if p is not None)
            assert generated == sorted([f"old {i}" for i in range(6)] + [f"new {i}" for i in range(4)])
            assert [webui.max_open_requests for webui in webuis] == [1, 1]
            out, _ = old.communicate(timeout=30)
            events = [json.loads(line)["event"] for line in out.splitlines() if line.strip()]
            assert events[-2:] == ["draining", "stopped"], "the old front's drain ended with nothing left in it"
        finally:
            stop.set()
            for loop in loops:
                loop.join(timeout=60)
            for process in (old, new):
                if process is not None and process.poll() is None:
                    process.kill()
                if process is not None:
                    process.communicate(timeout=30)


def urllib_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def test_a_job_handed_to_a_pod_running_a_browsers_generation_no_front_counted_is_generated_once_by_another():
    """A browser's generation the front did not see (it began at another front, or before this front knew the
    worker): the worker asks its own WebUI before it forwards the job, releases it, and the request queue hands
    it to the other worker first in line; its client gets that worker's 200."""
    queue, clients_url, workers_url = started_queue()
    stop = threading.Event()
    loops = []

    def run_worker(name: str, webui: harness.FakeWebui) -> None:
        settings = worker.Settings(front_url=workers_url, name=name, own_url=webui.url, webui_url=webui.url,
                                   webui_auth=harness.AUTH, ready_poll_seconds=0.05)
        loops.append(threading.Thread(target=worker.Worker(settings).run, args=(stop,), daemon=True))
        loops[-1].start()

    with ExitStack() as stack:
        busy, idle = (stack.enter_context(harness.FakeWebui(auth=harness.AUTH, model_loaded=True, image=harness.PNG))
                      for _ in range(2))
        try:
            run_worker("pod-busy", busy)
            wait_until(lambda: shows(workers_url, idle=1), what="the first worker registered")
            with busy.browser_generation(), ThreadPoolExecutor(1) as pool:
                seen = busy.progress_calls
                answer = pool.submit(client_call, clients_url, "behind a browser")
                wait_until(lambda: busy.progress_calls >= seen + 2 and shows(workers_url, waiting=1, busy=0),
                           what="the job released while the first worker waits for its WebUI")
                run_worker("pod-idle", idle)
                status, body = answer.result()
            assert (status, body["parameters"]["prompt"]) == (200, "behind a browser")
            assert (idle.served.count("behind a browser"), busy.served.count("behind a browser")) == (1, 0)
        finally:
            stop.set()
            for loop in loops:
                loop.join(timeout=60)
            if queue.poll() is None:
                queue.kill()
            queue.communicate(timeout=30)
