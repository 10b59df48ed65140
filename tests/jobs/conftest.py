"""The Pub/Sub emulator for the whole session (started by the tests themselves, so `make test` starts
and stops it), a fresh queue per test, and the stand-ins the agent talks to."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.jobs import harness


@pytest.fixture(scope="session")
def pubsub_emulator() -> Iterator[str]:
    with harness.session_emulator() as host:
        yield host


@pytest.fixture
def queue(pubsub_emulator: str) -> harness.Queue:
    return harness.Queue(max_attempts=5)


@pytest.fixture
def webui() -> Iterator[harness.FakeWebui]:
    with harness.FakeWebui(auth=harness.AUTH, model_loaded=True, image=harness.PNG) as fake:
        yield fake


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[harness.FakeStorage]:
    with harness.FakeStorage(buckets=("results",)) as fake:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake.url)
        yield fake
        assert fake.problems == [], "requests the storage.v1 document refuses"


@pytest.fixture
def settings(queue: harness.Queue, webui: harness.FakeWebui, bucket: harness.FakeStorage):
    return queue.settings("results", webui_url=webui.url)

