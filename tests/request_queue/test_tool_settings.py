"""The tools that start the real request queue give it every variable its config requires: a tool whose
environment lacks one would stop at start-up (exit 2), and only the e2e run would notice."""

from __future__ import annotations

import pytest

from tools import bench_request_queue
from tools.e2e import processes


@pytest.mark.parametrize("settings", [bench_request_queue.SETTINGS, processes.queue_settings(max_depth=10)],
                         ids=["bench_request_queue", "e2e"])
def test_a_tool_starts_the_request_queue_with_every_setting_it_requires(service_module, settings):
    config = service_module("config")
    loaded = config.load(settings)
    assert loaded.forwarded_for_entries == 0, "on loopback no load balancer appends to X-Forwarded-For"
