"""What components/request_queue.py deploys is what the service reads: every variable it sets is one the
service accepts, with the values of each stack, and the probes' ports and paths are the service's own."""

from __future__ import annotations

import pytest

from components import config, request_queue
from components.timeouts import TimeoutChain


@pytest.fixture
def service_config(service_module):
    return service_module("config")


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_components_environment_is_accepted_by_the_service_with_the_chains_values(service_config, stack):
    cfg = config.load_stack(request_queue.CONTEXT.parent.parent, stack)
    chain = TimeoutChain.of(cfg)
    settings = service_config.load({**request_queue.environment(cfg.queue, chain, 2), "SD_API_AUTH": "sd:secret"})
    assert settings.result_wait == chain.result_wait and settings.pod_read == chain.pod_read
    assert settings.heartbeat == chain.margin
    assert settings.drain == chain.queue_drain and settings.max_wait == chain.queue_wait
    assert (settings.http_port, settings.worker_port) == (request_queue.HTTP_PORT, request_queue.WORKER_PORT)
    assert settings.max_depth == cfg.queue.max_depth
    assert settings.forwarded_for_entries == 2


def test_the_service_requires_every_variable_the_component_sets(service_config):
    cfg = config.load_stack(request_queue.CONTEXT.parent.parent, "dev")
    env = request_queue.environment(cfg.queue, TimeoutChain.of(cfg), 2)
    for name in env:
        with pytest.raises(service_config.ConfigError, match=name):
            service_config.load({k: v for k, v in env.items() if k != name})


@pytest.mark.parametrize("value", ["one", "-1"])
def test_a_bad_forwarded_for_entries_is_refused_naming_the_variable_and_what_is_allowed(service_config, value):
    cfg = config.load_stack(request_queue.CONTEXT.parent.parent, "dev")
    env = {**request_queue.environment(cfg.queue, TimeoutChain.of(cfg), 1), "FORWARDED_FOR_ENTRIES": value}
    with pytest.raises(service_config.ConfigError, match=f"FORWARDED_FOR_ENTRIES='{value}' .*want an integer >= 0"):
        service_config.load(env)
