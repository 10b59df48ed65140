"""Long-running mode in-process: readiness follows the runtime's state."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from attacher import __main__ as cli
from attacher.config import agent_config_from_env
from attacher.retry import RetryPolicy
from attacher.server import serve

from tests.attacher.conftest import (
    GPU_TAINT,
    HASH12,
    IMAGE,
    NODE,
    STARTUP_TAINT,
    Harness,
    RuntimeContent,
    log_lines,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Serving:
    def __init__(self, port: int):
        self.port = port

    def health(self) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)
        except urllib.error.URLError:
            return 0, {}  # not listening yet

    def until(self, status: int, timeout: float = 20) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code, body = self.health()
            if code == status:
                return body
            time.sleep(0.02)
        raise AssertionError(f"/healthz never answered {status} within {timeout}s; last: {self.health()}")


@pytest.fixture
def serving(harness: Harness, monkeypatch) -> Iterator[Serving]:
    port = free_port()
    monkeypatch.setenv("SDGKE_HEALTH_ADDRESS", f"127.0.0.1:{port}")
    monkeypatch.setenv("SDGKE_RECHECK_SECONDS", "0.1")
    stop = threading.Event()
    cfg = agent_config_from_env(os.environ)
    deps = cli.build_deps(cfg, RetryPolicy(initial_seconds=0.01, max_delay_seconds=0.05))
    thread = threading.Thread(target=serve, args=(cfg, deps, stop), daemon=True)
    thread.start()
    served = Serving(port)
    deadline = time.monotonic() + 10
    while served.health()[0] == 0 and time.monotonic() < deadline:  # listening (and logged) before the test
        time.sleep(0.01)
    try:
        yield served
    finally:
        stop.set()
        thread.join(timeout=10)
        assert not thread.is_alive()


def test_readiness_is_503_before_the_first_pass_ends(harness: Harness, monkeypatch):
    harness.compute.hold()  # the first pass waits at its first Compute call until the test has looked
    port = free_port()
    monkeypatch.setenv("SDGKE_HEALTH_ADDRESS", f"127.0.0.1:{port}")
    stop = threading.Event()
    cfg = agent_config_from_env(os.environ)
    thread = threading.Thread(target=serve, args=(cfg, cli.build_deps(cfg, RetryPolicy()), stop), daemon=True)
    thread.start()
    try:
        first = Serving(port).until(503)
        assert first == {"ready": False, "reason": "first pass not finished"}
    finally:
        harness.compute.release()
        stop.set()
        thread.join(timeout=10)


def test_readiness_turns_200_once_mounted_verified_and_untainted(harness: Harness, serving: Serving):
    body = serving.until(200)

    assert body["ready"] is True and body["recipe_hash"].startswith(HASH12)
    harness.assert_converged()


def test_a_lost_mount_turns_readiness_503_then_the_agent_mounts_it_again(harness: Harness, serving: Serving):
    serving.until(200)
    # The pass that mounts again is held at its first Compute call: without this, on a busy machine
    # it could end between two probes and the 503 would never be seen.
    harness.compute.hold()
    try:
        harness.mount_path.unlink()

        assert serving.until(503, timeout=5)["step"] == "recheck"
    finally:
        harness.compute.release()
    serving.until(200)
    assert harness.is_mounted()
    assert harness.compute_calls()["compute.disks.insert"] == 1
    harness.assert_converged()


def test_a_refused_runtime_keeps_readiness_503_and_the_taint(harness: Harness, serving: Serving):
    harness.udev.contents[IMAGE] = RuntimeContent("0" * 64)

    body = serving.until(503)
    while "step" not in body:  # first pass still running
        body = serving.until(503)

    assert body["step"] == "verify" and "wrong runtime" in body["error"]
    time.sleep(0.3)  # a few retry passes later
    assert serving.health()[0] == 503
    assert harness.kube.taints(NODE) == [STARTUP_TAINT, GPU_TAINT]
    assert harness.compute_calls()["compute.disks.insert"] == 1  # retries reuse the attached disk


def test_a_startup_taint_put_back_on_a_ready_node_is_removed_again(harness: Harness, serving: Serving, capsys):
    serving.until(200)
    compute_before = len(harness.compute.requests)

    harness.kube.add_node(NODE, taints=[STARTUP_TAINT, GPU_TAINT])  # GKE writes the pool's taints back

    deadline = time.monotonic() + 20
    while harness.kube.taints(NODE) != [GPU_TAINT] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert harness.kube.taints(NODE) == [GPU_TAINT]
    assert serving.health()[0] == 200
    assert harness.compute.requests[compute_before:] == []  # the mount was fine: no new pass
    # The agent logs the removal after its PATCH (attacher/server.py): the line may trail the taint by a moment.
    output = capsys.readouterr().out
    while not any(line.get("taint") == "removed again" for line in log_lines(output)) and time.monotonic() < deadline:
        time.sleep(0.02)
        output += capsys.readouterr().out
    assert any(line.get("taint") == "removed again" for line in log_lines(output))
    harness.assert_converged()
