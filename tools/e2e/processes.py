"""The real processes a scenario runs on loopback, started as in the cluster and stopped when it ends: the
request queue, and per pod a stand-in WebUI with the real worker beside it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QUEUE_ROOT = ROOT / "images" / "request-queue"
AGENT_ROOT = ROOT / "images" / "queue-agent"
AUTH = "sd:secret"


def queue_settings(max_depth: int) -> dict[str, str]:
    """The request queue's environment here: loopback, no Gateway in front (the peer is the caller)."""
    return {"QUEUE_MAX_DEPTH": str(max_depth), "QUEUE_MAX_WAIT_SECONDS": "120", "GENERATION_TIMEOUT_SECONDS": "30",
            "MARGIN_SECONDS": "5", "UI_KEEPALIVE_SECONDS": "300", "WORKER_TTL_SECONDS": "60", "DRAIN_SECONDS": "5",
            "FORWARDED_FOR_ENTRIES": "0", "HTTP_PORT": "0", "WORKER_PORT": "0", "SD_API_AUTH": AUTH}


def _listening(process: subprocess.Popen, what: str, log: Path) -> dict:
    """The `{"event": "listening", ...}` line a process prints once it serves."""
    line = process.stdout.readline()
    if not line:
        process.wait(timeout=10)
        raise RuntimeError(f"{what} did not start (exit {process.returncode}); see {log}")
    return json.loads(line)


class Processes:
    """Everything one scenario started, stopped (SIGTERM, then SIGKILL) on exit; logs in `workdir`."""

    def __init__(self, workdir: Path, generation_s: float):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.generation_s = generation_s
        self.started: list[subprocess.Popen] = []
        self.logs: list = []
        self.webui_logs: list[Path] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.started:
            if process.poll() is None:
                process.terminate()
        for process in self.started:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self.logs:
            log.close()

    def _spawn(self, name: str, argv: list[str], cwd: Path, env: dict[str, str], listens: bool
               ) -> tuple[subprocess.Popen, Path]:
        """Output to `<name>.log`; stdout piped only for a process that prints its `listening` line."""
        path = self.workdir / f"{name}.log"
        log = path.open("w")
        self.logs.append(log)
        process = subprocess.Popen(argv, cwd=cwd, env={"PATH": os.environ.get("PATH", ""), **env},
                                   stdout=subprocess.PIPE if listens else log, stderr=log, text=True)
        self.started.append(process)
        return process, path

    def request_queue(self, max_depth: int) -> tuple[str, str]:
        """The real request queue; (client URL, workers URL)."""
        env = {"PYTHONPATH": str(QUEUE_ROOT), **queue_settings(max_depth)}
        process, log = self._spawn("request-queue", [sys.executable, "-m", "request_queue"], QUEUE_ROOT, env,
                                    listens=True)
        ports = _listening(process, "the request queue", log)
        return f"http://127.0.0.1:{ports['http_port']}", f"http://127.0.0.1:{ports['worker_port']}"

    def pod(self, workers_url: str, batch_env: dict[str, str] | None = None) -> None:
        """A stand-in WebUI and the real worker beside it, as components/worker.py runs them."""
        index = len(self.webui_logs)
        generations = self.workdir / f"webui-{index}.jsonl"
        generations.touch()
        self.webui_logs.append(generations)
        webui, log = self._spawn(f"webui-{index}", [
            sys.executable, "-m", "tools.standin_webui", "--generation-seconds", str(self.generation_s),
            "--log", str(generations), "--auth", AUTH], ROOT, {"PYTHONPATH": str(ROOT)}, listens=True)
        port = _listening(webui, f"stand-in WebUI {index}", log)["port"]
        env = {"PYTHONPATH": str(AGENT_ROOT), "QUEUE_FRONT_URL": workers_url, "POD_NAME": f"pod-{index}",
               "POD_IP": "127.0.0.1", "SD_API_URL": f"http://127.0.0.1:{port}", "SD_API_AUTH": AUTH,
               **(batch_env or {})}
        self._spawn(f"worker-{index}", [sys.executable, "-W", "ignore", "-m", "queue_agent"], AGENT_ROOT, env,
                    listens=False)

    def generations(self) -> list[list[dict]]:
        """Each pod's generations, in the order it ran them (the first, untagged, is the worker's warm-up)."""
        return [[json.loads(line) for line in path.read_text().splitlines() if line.strip()]
                for path in self.webui_logs]


def demand(workers_url: str) -> dict:
    with urllib.request.urlopen(f"{workers_url}/v1/demand", timeout=5) as response:
        return json.loads(response.read())
