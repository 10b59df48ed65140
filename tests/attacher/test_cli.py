"""`python -m attacher` as a process: exit codes, JSON-only output, readiness, SIGTERM."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest

from tests.attacher.conftest import (
    Harness,
    subprocess_env,
)

DESTRUCTIVE = {"compute.disks.delete", "compute.instances.detachDisk", "compute.instances.delete"}


class Agent:
    """A running `python -m attacher` whose JSON log lines are read as they come."""

    def __init__(self, harness: Harness, *args: str, **env: str):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "attacher", *args], env={**subprocess_env(harness), **env},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: queue.Queue[dict] = queue.Queue()
        self.seen: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(json.loads(line))

    def wait_for(self, predicate: Callable[[dict], bool], timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            self.seen.append(line)
            if predicate(line):
                return line
        raise AssertionError(f"no matching log line within {timeout}s; seen: {self.seen}")

    def health(self, port: int) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)

    def health_until(self, port: int, status: int, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code, body = self.health(port)
            if code == status:
                return body
            time.sleep(0.05)
        raise AssertionError(f"/healthz never answered {status} within {timeout}s")

    def stop(self) -> tuple[int, str]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=10)
        return code, self.process.stderr.read()


@pytest.fixture
def agents(harness: Harness):
    started: list[Agent] = []

    def start(*args: str, **env: str) -> Agent:
        started.append(Agent(harness, *args, **env))
        return started[-1]

    yield start
    for agent in started:
        if agent.process.poll() is None:
            agent.process.kill()
            agent.process.wait(timeout=10)


def test_once_exits_0_after_a_full_pass_and_prints_only_json(harness: Harness):
    result = subprocess.run([sys.executable, "-m", "attacher", "--once"], env=subprocess_env(harness),
                            capture_output=True, text=True, timeout=60, check=False)

    assert (result.returncode, result.stderr) == (0, "")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[-1]["event"] == "pass" and lines[-1]["status"] == "ok"
    harness.assert_converged()


def test_bad_settings_exit_2_with_every_problem_and_no_traceback(harness: Harness):
    env = {**subprocess_env(harness), "SDGKE_RUNTIME_HASH": "XYZ", "SDGKE_DISK_TYPE": "pd-fast",
           "SDGKE_RUNTIME_IMAGE": "projects/p/global/images/family/sd-runtime"}
    result = subprocess.run([sys.executable, "-m", "attacher", "--once"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)

    assert (result.returncode, result.stderr) == (2, "")
    (line,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert line["problems"] == [
        ("SDGKE_RUNTIME_IMAGE='projects/p/global/images/family/sd-runtime': an image family is not allowed "
        "(it moves); give the exact image, projects/PROJECT/global/images/NAME"),
        "SDGKE_RUNTIME_HASH='XYZ': must be 12 lowercase hex digits (the image's hash12)",
        "SDGKE_DISK_TYPE='pd-fast': allowed: pd-balanced, pd-ssd, pd-standard",
    ]
    assert harness.compute.requests == []


def test_serving_exits_0_on_sigterm_without_detaching_or_deleting(harness: Harness, agents):
    agent = agents()
    port = int(agent.wait_for(lambda line: line["event"] == "health_server")["address"].rsplit(":", 1)[1])
    agent.health_until(port, 200)

    code, stderr = agent.stop()

    assert (code, stderr) == (0, "")
    agent.wait_for(lambda line: line["event"] == "terminated")
    assert not DESTRUCTIVE & set(harness.compute_calls())
    harness.assert_converged()


def test_sigterm_during_a_pass_exits_without_detaching_or_deleting(harness: Harness, agents):
    harness.compute.latency = 0.3
    agent = agents("--once")
    agent.wait_for(lambda line: line.get("step") == "create_disk")

    code, stderr = agent.stop()

    assert (code, stderr) == (143, "")
    agent.wait_for(lambda line: line["event"] == "terminated")
    assert not DESTRUCTIVE & set(harness.compute_calls())
    assert len(harness.runtime_disks()) == 1  # kept: the next pass reuses it
    harness.compute.latency = 0
    assert harness.run_once() == 0
    harness.assert_converged()
