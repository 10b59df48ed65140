"""What components/request_queue.py deploys is what the service reads: every variable it sets is one the
service accepts, with the values of each stack, and the probes' ports and paths are the service's own."""

from __future__ import annotations

import importlib
import sys

import pytest

from components import config, request_queue
from components.timeouts import TimeoutChain
from tests.request_queue.conftest import IMAGE


@pytest.fixture(scope="module")
def service_config():
    sys.path.insert(0, str(IMAGE))
    try:
        yield importlib.import_module("request_queue.config")
    finally:
        sys.path.remove(str(IMAGE))


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_components_environment_is_accepted_by_the_service_with_the_chains_values(service_config, stack):
    cfg = config.load_stack(request_queue.CONTEXT.parent.parent, stack)
    chain = TimeoutChain.of(cfg)
    settings = service_config.load({**request_queue.environment(cfg.queue, chain), "SD_API_AUTH": "sd:secret"})
    assert settings.result_wait == chain.result_wait
    assert settings.drain == chain.queue_drain and settings.max_wait == chain.queue_wait
    assert (settings.http_port, settings.worker_port) == (request_queue.HTTP_PORT, request_queue.WORKER_PORT)
    assert settings.max_depth == cfg.queue.max_depth


def test_the_service_requires_every_variable_the_component_sets(service_config):
    cfg = config.load_stack(request_queue.CONTEXT.parent.parent, "dev")
    env = request_queue.environment(cfg.queue, TimeoutChain.of(cfg))
    for name in env:
        with pytest.raises(service_config.ConfigError, match=name):
            service_config.load({k: v for k, v in env.items() if k != name})
