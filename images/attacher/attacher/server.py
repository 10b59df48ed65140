"""Long-running mode: keep the runtime mounted and tell kubelet (readiness) whether it is."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from attacher import log
from attacher.agent import Deps, run_pass
from attacher.config import AgentConfig
from attacher.manifest import RuntimeRefused, verify_runtime


class Readiness:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict = {"ready": False, "reason": "first pass not finished"}

    def set(self, ready: bool, **detail) -> None:
        with self._lock:
            self._state = {"ready": ready, **detail}

    def get(self) -> dict:
        with self._lock:
            return dict(self._state)


def start_health_server(host: str, port: int, readiness: Readiness) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/healthz":
                self.send_error(404, "only /healthz")
                return
            state = readiness.get()
            body = json.dumps(state).encode()
            self.send_response(200 if state["ready"] else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # probes every few seconds are not news
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.1,), name="healthz", daemon=True).start()
    log.emit("health_server", address=f"{host}:{server.server_address[1]}", path="/healthz")
    return server


def still_good(cfg: AgentConfig, deps: Deps, device: str) -> str | None:
    """None if the runtime is still mounted and verified, else why not."""
    if not deps.devices.is_mounted(device, cfg.mount_path):
        return f"{cfg.mount_path} is no longer mounted from {device}"
    try:
        verify_runtime(cfg.mount_path, cfg.runtime_hash)
    except RuntimeRefused as exc:
        return str(exc)
    return None


def serve(cfg: AgentConfig, deps: Deps, stop: threading.Event) -> None:
    """Pass until it succeeds, then re-check every recheck_seconds; on a failed check, pass again.
    Returns when `stop` is set."""
    readiness = Readiness()
    server = start_health_server(cfg.health_host, cfg.health_port, readiness)
    try:
        while not stop.is_set():
            try:
                result = run_pass(cfg, deps)
            except log.StepFailed as exc:
                readiness.set(False, step=exc.step, error=exc.message)
                log.emit("pass", status="failed", step=exc.step, retry_in_s=cfg.recheck_seconds)
                stop.wait(cfg.recheck_seconds)
                continue
            readiness.set(True, disk=result.disk, recipe_hash=result.recipe_hash)
            log.emit("pass", status="ok", disk=result.disk)
            while not stop.wait(cfg.recheck_seconds):
                problem = still_good(cfg, deps, result.device)
                if problem is not None:
                    readiness.set(False, step="recheck", error=problem)
                    log.emit("recheck", status="failed", error=problem)
                    break
    finally:
        server.shutdown()
        server.server_close()
