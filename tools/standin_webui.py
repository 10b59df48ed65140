"""A stand-in WebUI process for tools/e2e: WebUI v1.10.1's API shape and its one-generation-at-a-time lock.

    python -m tools.standin_webui --generation-seconds 0.3 --log gens.jsonl [--auth sd:secret]

WebUI serialises generations behind one process-wide FIFO lock
(AUTOMATIC1111/stable-diffusion-webui@82a973c04367123ae98bd9abdf80d9eda9b910e2 modules/call_queue.py:8
`queue_lock = fifo_lock.FIFOLock()`, taken around txt2img in modules/api/api.py:467), so this one does too:
a request that arrives while another generates waits inside the process, which is exactly what the
request queue must never let happen. Every generation is logged as one JSON line
`{"tag", "start", "end"}` (time.monotonic(), one clock for every process on a Linux host), from which
tools/e2e/measures.py reads the gaps between generations and the durations the ideal queue is fed with.
`/sdapi/v1/interrupt` ends the generation in progress early, as `shared.state.interrupt()` does.
On start it prints `{"event": "listening", "port": N}` and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import base64
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TAG_HEADER = "X-Loadtest-Request"
"""tools/loadtest.py tags each request with its index; the worker forwards the client's headers."""


class Generations:
    """The FIFO lock, the interrupt flag and the log of every generation."""

    def __init__(self, seconds: float, log_path: str):
        self.seconds = seconds
        self.log = open(log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
        self.turns = threading.Condition()
        self.next_ticket = 0
        self.now_serving = 0
        self.interrupted = threading.Event()

    def run(self, tag: str | None) -> None:
        with self.turns:
            ticket = self.next_ticket
            self.next_ticket += 1
            self.turns.wait_for(lambda: self.now_serving == ticket)
        try:
            self.interrupted.clear()
            start = time.monotonic()
            self.interrupted.wait(self.seconds)
            end = time.monotonic()
            self.log.write(json.dumps({"tag": tag, "start": start, "end": end}) + "\n")
        finally:
            with self.turns:
                self.now_serving += 1
                self.turns.notify_all()


def handler(generations: Generations, auth: str | None) -> type[BaseHTTPRequestHandler]:
    expected = None if auth is None else "Basic " + base64.b64encode(auth.encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            """Quiet: the generation log is the record."""

        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if expected is not None and self.headers.get("Authorization") != expected:
                self._reply(401, {"detail": "Incorrect username or password"})
                return False
            return True

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if not self._authorised():
                return
            if self.path == "/sdapi/v1/options":
                self._reply(200, {"sd_model_checkpoint": "stand-in"})
            else:
                self._reply(404, {"detail": "Not Found"})

        def do_POST(self) -> None:  # noqa: N802
            if not self._authorised():
                return
            if self.path == "/sdapi/v1/txt2img":
                generations.run(self.headers.get(TAG_HEADER))
                self._reply(200, {"images": [], "parameters": {}, "info": "{}"})
            elif self.path == "/sdapi/v1/interrupt":
                generations.interrupted.set()
                self._reply(200, {})
            else:
                self._reply(404, {"detail": "Not Found"})

    return Handler


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.standin_webui", description=__doc__.split("\n\n")[0])
    p.add_argument("--generation-seconds", type=float, required=True)
    p.add_argument("--log", required=True, help="JSON lines file: one line per generation")
    p.add_argument("--auth", help="user:password, as WebUI's --api-auth (default: no auth)")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args(argv)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(Generations(args.generation_seconds, args.log),
                                                                   args.auth))
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(json.dumps({"event": "listening", "port": server.server_address[1]}), flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
