"""Latency percentiles, computed the same way for simulated and measured requests."""

from __future__ import annotations

import math
from collections.abc import Sequence

PERCENTILES = (50, 95, 99)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile: the smallest value with at least p% of the values at or below it.

    Nearest rank returns an observed latency (never an interpolation between two), so small runs
    can be checked by hand: of 1..10, p50 is 5 and p99 is 10.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 < p <= 100:
        raise ValueError(f"percentile {p} is not in (0, 100]")
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def latency_summary(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99 and the maximum, in seconds; None for each when there are no values."""
    keys = [f"p{p}" for p in PERCENTILES] + ["max"]
    if not values:
        return dict.fromkeys(keys)
    return {**{f"p{p}": percentile(values, p) for p in PERCENTILES}, "max": max(values)}
