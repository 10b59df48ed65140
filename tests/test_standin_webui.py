"""The stand-in WebUI process of tools/e2e: WebUI v1.10.1's one FIFO generation lock, and its log."""

import base64
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
AUTH = "sd:secret"


@pytest.fixture
def standin(tmp_path, request):
    """The process, generating for 0.2 s (or the test's `generation_seconds` mark); its URL and log."""
    mark = request.node.get_closest_marker("generation_seconds")
    log = tmp_path / "generations.jsonl"
    process = subprocess.Popen([sys.executable, "-m", "tools.standin_webui", "--generation-seconds",
                                str(mark.args[0] if mark else 0.2), "--log", str(log), "--auth", AUTH],
                               cwd=ROOT, stdout=subprocess.PIPE, text=True)
    port = json.loads(process.stdout.readline())["port"]
    yield f"http://127.0.0.1:{port}", log
    process.terminate()
    process.wait(timeout=10)


def post(url: str, path: str, tag: str | None = None, auth: str = AUTH) -> int:
    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode(), "Content-Type": "application/json"}
    if tag is not None:
        headers["X-Loadtest-Request"] = tag
    request = urllib.request.Request(url + path, data=b"{}", headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def generations(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_concurrent_generations_run_one_at_a_time_and_are_logged_with_their_tags(standin):
    url, log = standin
    threads = [threading.Thread(target=post, args=(url, "/sdapi/v1/txt2img", str(i))) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ran = sorted(generations(log), key=lambda g: g["start"])
    assert sorted(g["tag"] for g in ran) == ["0", "1", "2"]
    assert all(first["end"] <= second["start"] for first, second in zip(ran, ran[1:], strict=False))


def test_a_generation_without_a_tag_is_logged_untagged(standin):
    url, log = standin
    assert post(url, "/sdapi/v1/txt2img") == 200
    assert [g["tag"] for g in generations(log)] == [None]


@pytest.mark.generation_seconds(600)
def test_an_interrupt_ends_the_generation_in_progress(standin):
    url, log = standin
    generation = threading.Thread(target=post, args=(url, "/sdapi/v1/txt2img", "0"))
    generation.start()
    while generation.is_alive():  # an interrupt before the generation starts is lost, as in WebUI: repeat it
        assert post(url, "/sdapi/v1/interrupt") == 200
        generation.join(timeout=0.05)
    (ran,) = generations(log)
    assert ran["end"] - ran["start"] < 600


def test_wrong_credentials_get_401(standin):
    url, log = standin
    assert post(url, "/sdapi/v1/txt2img", "0", auth="sd:wrong") == 401
    assert generations(log) == []
