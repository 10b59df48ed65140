"""The WebUI probe script against a local stand-in of WebUI's API (basic auth, model loading, queue)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

PROBE = Path(__file__).resolve().parent.parent / "images" / "webui" / "probe.py"
AUTH = "sd:secret"


class FakeWebui:
    """Answers like WebUI's API: 401 without the right basic auth, txt2img only once the model loaded."""

    def __init__(self):
        self.model_loaded = threading.Event()
        self.job_count = 0
        self.txt2img_payloads: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _authorised(self) -> bool:
                expected = "Basic " + base64.b64encode(AUTH.encode()).decode()
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.end_headers()
                    return False
                return True

            def _json(self, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if not self._authorised():
                    return
                if self.path == "/sdapi/v1/options":
                    self._json({"sd_model_checkpoint": "v1-5"})
                elif self.path.startswith("/sdapi/v1/progress"):
                    self._json({"progress": 0.5, "state": {"job_count": fake.job_count}})
                else:
                    self.send_response(404)
                    self.end_headers()

            def do_POST(self):
                if not self._authorised():
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.txt2img_payloads.append(body)
                if not fake.model_loaded.wait(timeout=1):
                    self.send_response(500)
                    self.end_headers()
                    return
                self._json({"images": []})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webui():
    with FakeWebui() as fake:
        yield fake


def probe(mode: str, url: str, tmp_path: Path, auth: str | None = AUTH, **env) -> subprocess.CompletedProcess:
    environment = {"SD_API_URL": url, "SD_WARM_MARKER": str(tmp_path / "warm"), "SD_WARM_TIMEOUT": "8", **env}
    if auth:
        environment["SD_API_AUTH"] = auth
    return subprocess.run([sys.executable, str(PROBE), mode], env=environment, capture_output=True, text=True, timeout=60)


def test_warm_succeeds_once_the_model_is_loaded_and_leaves_a_marker(webui, tmp_path):
    webui.model_loaded.set()
    assert probe("warm", webui.url, tmp_path).returncode == 0
    assert (tmp_path / "warm").exists()
    assert webui.txt2img_payloads[0]["steps"] == 1 and webui.txt2img_payloads[0]["width"] == 64


def test_warm_fails_while_the_model_cannot_load(webui, tmp_path):
    result = probe("warm", webui.url, tmp_path)
    assert result.returncode == 1 and "warm probe failed" in result.stderr
    assert not (tmp_path / "warm").exists()


def test_warm_fails_with_wrong_credentials(webui, tmp_path):
    webui.model_loaded.set()
    result = probe("warm", webui.url, tmp_path, auth="sd:wrong")
    assert result.returncode == 1 and "401" in result.stderr


def test_warm_fails_when_nothing_listens(tmp_path):
    assert probe("warm", "http://127.0.0.1:9", tmp_path).returncode == 1


def test_ready_fails_before_warm_even_if_the_api_answers(webui, tmp_path):
    result = probe("ready", webui.url, tmp_path)
    assert result.returncode == 1 and "not warm yet" in result.stderr


def test_ready_succeeds_after_warm(webui, tmp_path):
    webui.model_loaded.set()
    probe("warm", webui.url, tmp_path)
    assert probe("ready", webui.url, tmp_path).returncode == 0


def test_drain_waits_for_the_running_generation(webui, tmp_path):
    webui.job_count = 1
    threading.Timer(1.5, lambda: setattr(webui, "job_count", 0)).start()
    started = time.monotonic()
    assert probe("drain", webui.url, tmp_path).returncode == 0
    assert time.monotonic() - started >= 1.5


def test_drain_gives_up_at_its_deadline(webui, tmp_path):
    webui.job_count = 1
    started = time.monotonic()
    assert probe("drain", webui.url, tmp_path, SD_DRAIN_SECONDS="1").returncode == 0
    assert time.monotonic() - started < 10


def test_unknown_mode_is_a_usage_error(tmp_path):
    result = probe("healthy", "http://127.0.0.1:9", tmp_path)
    assert result.returncode == 2 and "usage" in result.stderr
