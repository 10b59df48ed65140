"""The real request queue, run as a process on loopback (`python -m request_queue`), and async test plumbing."""

from __future__ import annotations

import asyncio
import functools
import importlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
IMAGE = ROOT / "images" / "request-queue"
SETTINGS = {
    "QUEUE_MAX_DEPTH": "10",
    "QUEUE_MAX_WAIT_SECONDS": "30",
    "GENERATION_TIMEOUT_SECONDS": "30",
    "MARGIN_SECONDS": "5",
    "UI_KEEPALIVE_SECONDS": "300",
    "WORKER_TTL_SECONDS": "60",
    "DRAIN_SECONDS": "30",
    "HTTP_PORT": "0",
    "WORKER_PORT": "0",
    "FORWARDED_FOR_ENTRIES": "0",
}
AUTH = "sd:secret"
STARTUP_SECONDS = 30


def run_async(test: Callable) -> Callable:
    """Run an `async def` test on its own event loop (the suite has no asyncio plugin)."""

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return wrapper


@dataclass
class RunningQueue:
    process: subprocess.Popen
    http_port: int
    worker_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def workers_url(self) -> str:
        return f"http://127.0.0.1:{self.worker_port}"

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def events(self, timeout: float = STARTUP_SECONDS) -> list[dict]:
        """Every JSON line the process printed until it exited."""
        out, _ = self.process.communicate(timeout=timeout)
        return [json.loads(line) for line in out.splitlines() if line.strip()]


def spawn(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "request_queue"], cwd=IMAGE, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def queue_env(**overrides: str | None) -> dict[str, str]:
    """The settings above with `overrides` (None removes a variable), in a clean environment."""
    settings = {**SETTINGS, **overrides}
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(IMAGE), "PYTHONDONTWRITEBYTECODE": "1"}
    return {**env, **{k: v for k, v in settings.items() if v is not None}}


@pytest.fixture
def start_queue() -> Iterator[Callable[..., RunningQueue]]:
    """Start the request queue with settings overridden by keyword; stopped (SIGTERM, then kill) afterwards."""
    started: list[RunningQueue] = []

    def _start(**overrides: str | None) -> RunningQueue:
        process = spawn(queue_env(**overrides))
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"the request queue did not start: {process.communicate(timeout=5)[1]}")
        event = json.loads(line)
        assert event["event"] == "listening", event
        running = RunningQueue(process, event["http_port"], event["worker_port"])
        started.append(running)
        return running

    yield _start
    for running in started:
        if running.process.poll() is None:
            running.process.kill()
        running.process.communicate(timeout=STARTUP_SECONDS)


@pytest.fixture
def service_module() -> Iterator[Callable[[str], object]]:
    """Import a module of the service (images/request-queue/request_queue) for a test that runs it in-process."""
    sys.path.insert(0, str(IMAGE))
    try:
        yield lambda name: importlib.import_module(f"request_queue.{name}")
    finally:
        sys.path.remove(str(IMAGE))
