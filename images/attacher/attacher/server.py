"""Long-running mode: keep the runtime mounted and tell kubelet (readiness) whether it is."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from attacher import log
from attacher.agent import Deps, run_pass
from attacher.config import AgentConfig
from attacher.kube import remove_taint
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


def keep_untainted(cfg: AgentConfig, deps: Deps) -> None:
    """Remove the startup taint again if it is back on this ready node.

    GKE writes a node pool's taints onto its existing nodes: "you can apply updates to the ...
    node taints of an existing GKE node pool without re-creating the node pool"
    (https://cloud.google.com/kubernetes-engine/docs/how-to/update-existing-nodepools), and taints
    set through GKE "are preserved when a node is restarted or replaced"
    (https://cloud.google.com/kubernetes-engine/docs/how-to/node-taints). GKE documents no taint it
    applies once and leaves alone (AKS does: nodeInitializationTaints, "will not be reconciled by
    AKS"). A `pulumi up` that touches the pool's taints would otherwise close every ready node to
    new SD pods. A failure here leaves readiness alone (the runtime is fine); the next check retries.
    """
    try:
        outcome = remove_taint(deps.kube, cfg.node_name, cfg.startup_taint_key)
    except Exception as exc:  # noqa: BLE001 - one clear line; the next check tries again
        log.emit("recheck", status="failed", step="untaint", error=f"{type(exc).__name__}: {exc}")
        return
    if outcome == "removed":
        log.emit("recheck", status="ok", taint="removed again", node=cfg.node_name,
                 message=f"{cfg.startup_taint_key} was back on this ready node (GKE re-applies node pool taints)")


def serve(cfg: AgentConfig, deps: Deps, stop: threading.Event) -> None:
    """Pass until it succeeds, then re-check every recheck_seconds: the mount and the runtime (on a
    failed check, pass again) and the startup taint (removed again if it is back).
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
                keep_untainted(cfg, deps)
    finally:
        server.shutdown()
        server.server_close()
