"""`python -m attacher` interrupted: Ctrl-C and SIGTERM end a pass with 143, no traceback and nothing undone."""

from __future__ import annotations

import signal

from tests.attacher.conftest import Harness
from tests.attacher.test_cli import DESTRUCTIVE, agents  # noqa: F401 - agents is a fixture


def interrupt_a_pass(harness: Harness, agents, signum: int):  # noqa: F811
    """An agent --once, sent `signum` while it creates the disk (slow API answers keep it there)."""
    harness.compute.latency = 0.3
    # A runner started in the background ignores SIGINT, and a child would inherit that: let it see Ctrl-C.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        agent = agents("--once")
    finally:
        signal.signal(signal.SIGINT, previous)
    agent.wait_for(lambda line: line.get("step") == "create_disk")
    agent.process.send_signal(signum)
    return agent


def test_ctrl_c_during_a_pass_exits_143_without_a_traceback_or_undoing_anything(harness: Harness, agents):  # noqa: F811
    agent = interrupt_a_pass(harness, agents, signal.SIGINT)

    assert agent.process.wait(timeout=10) == 143
    assert agent.process.stderr.read() == ""
    assert not DESTRUCTIVE & set(harness.compute_calls())
    harness.compute.latency = 0
    assert harness.run_once() == 0
    harness.assert_converged()


def test_sigterm_during_a_pass_says_so_in_one_log_line(harness: Harness, agents):  # noqa: F811
    agent = interrupt_a_pass(harness, agents, signal.SIGTERM)

    assert agent.process.wait(timeout=10) == 143
    line = agent.wait_for(lambda line: line["event"] == "terminated")
    assert line["message"] == "SIGTERM during a pass: exiting, nothing detached or deleted"
