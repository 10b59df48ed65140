"""The worker registry in-process, on a clock the test moves: how long a worker stays registered is measured in
minutes (WORKER_TTL_SECONDS, GENERATION_TIMEOUT_SECONDS), which no process test should wait for."""

from __future__ import annotations

TTL = 60.0
GENERATION_TIMEOUT = 120.0
MARGIN = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _registry_with_batch_worker(workers):
    clock = Clock()
    registry = workers.Registry(TTL, GENERATION_TIMEOUT + MARGIN, clock)
    registry.started_batch(registry.seen("pod-a", "http://10.0.0.1:7860"))
    return registry, clock


def test_a_worker_running_a_batch_job_stays_registered_and_busy_past_its_ttl_until_the_generation_timeout(
        service_module):
    registry, clock = _registry_with_batch_worker(service_module("workers"))
    clock.now = GENERATION_TIMEOUT + MARGIN
    assert [(worker.name, worker.busy) for worker in registry.alive()] == [("pod-a", True)]


def test_a_worker_silent_past_its_batch_hold_and_its_ttl_is_forgotten(service_module):
    registry, clock = _registry_with_batch_worker(service_module("workers"))
    clock.now = GENERATION_TIMEOUT + MARGIN + 1
    assert registry.alive() == []
