"""The lifecycle the small fakes share: a threaded HTTP server on a loopback ephemeral port."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class LocalServer:
    """Subclasses implement `_handle(request)` and list the verbs they answer in METHODS."""

    METHODS: tuple[str, ...] = ("GET",)
    THREAD_NAME = "fake-server"

    def __init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        fake = self
        handlers = {f"do_{verb}": (lambda handler: fake._handle(handler)) for verb in self.METHODS}
        handler = type("Handler", (BaseHTTPRequestHandler,), {**handlers, "log_message": lambda *args: None})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name=self.THREAD_NAME, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the fake first"
        return self._server.server_address[1]
