"""The queue agent image: the lock's versions, the WebUI pod's user, the agent as its entry point."""

from __future__ import annotations

import re

from components import webui, worker
from tools import lock


def test_every_pin_is_the_locked_version():
    assert lock.drift(lock.QUEUE_AGENT) == ""


def test_the_image_runs_the_agent_as_the_webui_pods_user():
    dockerfile = (worker.CONTEXT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}$", dockerfile, re.M)
    assert re.findall(r"^USER (\S+)$", dockerfile, re.M) == [f"{webui.UID}:{webui.UID}"]
    assert 'ENTRYPOINT ["python", "-m", "queue_agent"]' in dockerfile


def test_the_image_installs_the_clients_the_agent_imports():
    pinned = set(lock.read_pins(worker.CONTEXT / "requirements.txt"))
    assert {"google-cloud-pubsub", "google-cloud-storage"} <= pinned
    assert "google-cloud-compute" not in pinned  # the attacher's, not the agent's
