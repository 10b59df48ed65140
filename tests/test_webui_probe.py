"""The WebUI probe script against a local stand-in of WebUI's API (basic auth, model loading, queue)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.fakes.webui import FakeWebui

PROBE = Path(__file__).resolve().parent.parent / "images" / "webui" / "probe.py"
AUTH = "sd:secret"


@pytest.fixture
def webui():
    with FakeWebui(auth=AUTH) as fake:
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
