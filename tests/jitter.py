"""Jitter pinned for tests: `random.uniform` returns its upper bound, and every draw is recorded."""

from __future__ import annotations

import random

import pytest


def top_of_jitter(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, float]]:
    """Every (low, high) drawn from here on; each draw returns high, so each delay is a known literal."""
    draws: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        draws.append((low, high))
        return high

    monkeypatch.setattr(random, "uniform", uniform)
    return draws
