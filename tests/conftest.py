"""Shared fixtures: the real program run under Pulumi mocks with a stack's own config file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tools import mockrun

ROOT = Path(__file__).resolve().parent.parent
STACKS = ("dev", "prod")


@pytest.fixture(scope="session")
def runs() -> dict[str, mockrun.Run]:
    """One recorded run per stack, shared read-only by tests that only inspect the stack files' result."""
    return {stack: mockrun.run(stack) for stack in STACKS}


@pytest.fixture(params=STACKS)
def run(request, runs) -> mockrun.Run:
    """The recorded run of each stack in turn: a test using it is checked against dev and prod."""
    return runs[request.param]


@pytest.fixture
def run_stack() -> Callable[..., mockrun.Run]:
    """Run the program afresh for a stack with config overrides (keys without the project prefix)."""

    def _run(stack: str = "dev", **overrides: Any) -> mockrun.Run:
        return mockrun.run(stack, overrides=overrides)

    return _run
