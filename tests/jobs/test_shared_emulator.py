"""Test sessions that share one Pub/Sub emulator (tools/mutate.py runs many against one): a session given
its address starts none, and no two test processes name a queue alike; a stopped emulator answers nothing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from tests.conftest import ROOT
from tests.jobs import harness


def _no_emulator_may_start(*args, **kwargs):
    raise AssertionError("a session given a shared emulator started one")


def test_a_session_given_a_shared_emulator_starts_none_and_points_the_clients_at_it(monkeypatch):
    monkeypatch.setenv(harness.SHARED_EMULATOR, "127.0.0.1:1")
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    monkeypatch.setattr(harness.subprocess, "Popen", _no_emulator_may_start)
    with harness.session_emulator() as host:
        assert host == os.environ["PUBSUB_EMULATOR_HOST"] == "127.0.0.1:1"
    assert "PUBSUB_EMULATOR_HOST" not in os.environ


def test_queue_names_differ_between_test_processes():
    mine = {harness.queue_number(), harness.queue_number()}
    other = subprocess.run([sys.executable, "-c", "from tests.jobs import harness; print(harness.queue_number())"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert len(mine) == 2 and other and other not in mine


def test_the_mutation_runner_starts_a_shared_emulator_and_stops_it(monkeypatch):
    from tools import mutate

    monkeypatch.delenv(mutate.SHARED_EMULATOR, raising=False)
    holder = mutate._start_shared_emulator()
    host = os.environ[mutate.SHARED_EMULATOR]
    monkeypatch.delenv(mutate.SHARED_EMULATOR)
    try:
        answer = urllib.request.urlopen(f"http://{host}/", timeout=5).read()
    finally:
        mutate._stop(holder)
    assert answer == b"Ok\n"
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{host}/", timeout=2)


def test_a_stopped_emulators_address_counts_as_closed_only_once_nothing_answers_there():
    """The stand-in for a JVM still answering after gcloud exited: a listener that closes 0.5 s later."""
    listener = socket.create_server(("127.0.0.1", 0))
    host = f"127.0.0.1:{listener.getsockname()[1]}"
    threading.Timer(0.5, listener.close).start()
    started = time.monotonic()
    assert harness.closed(host, timeout=10)
    assert time.monotonic() - started >= 0.5


def test_an_address_that_keeps_answering_is_not_closed():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        assert not harness.closed(f"127.0.0.1:{listener.getsockname()[1]}", timeout=0.3)
