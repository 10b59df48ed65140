"""Demand: sessions that start steadily, in bursts (on/off) or along a daily curve; and the two scenarios
of issue 17, a spike after a quiet hour and a business week of a few people working in bursts.

Every pattern draws session starts from a Poisson process (exponential gaps; thinning for the bursts
and the daily curve). A session is `session_requests` prompts, each sent `think_s` after the previous
image came back, the way a person iterates on a prompt; sessions of one request give plain Poisson
arrivals. The same seed gives the same sessions.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from tools.sim.scenario import Session
from tools.sim.trace import TraceRow

PATTERNS = ("steady", "bursty", "daily")
DAY_S = 86_400.0
SPIKE_AT_S = 3600.0
SPIKE_REQUESTS = 100


@dataclass(frozen=True)
class Load:
    pattern: str = "daily"
    sessions_per_hour: float = 0.5  # mean over the whole run, whatever the pattern
    session_requests: int = 5
    think_s: float = 30.0
    burst_on_s: float = 600.0  # bursty: sessions arrive only during on periods (the run starts in one)
    burst_off_s: float = 3000.0
    daily_peak_hour: float = 14.0  # daily: rate = mean x (1 + amplitude x cos(2 pi (t - peak) / 24 h))
    daily_amplitude: float = 1.0

    def problems(self) -> list[str]:
        """Every invalid field, named with its value and what is allowed."""
        found = []
        if self.pattern not in PATTERNS:
            found.append(f"pattern={self.pattern!r}: expected one of {', '.join(PATTERNS)}")
        if self.sessions_per_hour < 0:
            found.append(f"sessions_per_hour={self.sessions_per_hour}: expected >= 0")
        if self.session_requests < 1:
            found.append(f"session_requests={self.session_requests}: expected >= 1")
        if self.think_s < 0:
            found.append(f"think_s={self.think_s}: expected >= 0")
        if self.burst_on_s <= 0 or self.burst_off_s < 0:
            found.append(f"burst_on_s={self.burst_on_s}, burst_off_s={self.burst_off_s}: expected on > 0 and off >= 0")
        if not 0 <= self.daily_amplitude <= 1:
            found.append(f"daily_amplitude={self.daily_amplitude}: expected 0..1 (the rate never goes negative)")
        return found


def session_starts(load: Load, duration_s: float, rng: random.Random) -> list[float]:
    mean_per_s = load.sessions_per_hour / 3600.0
    if mean_per_s == 0:
        return []
    if load.pattern == "steady":
        return _poisson(lambda t: mean_per_s, mean_per_s, duration_s, rng)
    if load.pattern == "bursty":
        period = load.burst_on_s + load.burst_off_s
        on_rate = mean_per_s * period / load.burst_on_s
        return _poisson(lambda t: on_rate if t % period < load.burst_on_s else 0.0, on_rate, duration_s, rng)
    peak_s = load.daily_peak_hour * 3600.0
    return _poisson(lambda t: mean_per_s * (1 + load.daily_amplitude * math.cos(2 * math.pi * (t - peak_s) / DAY_S)),
                    mean_per_s * (1 + load.daily_amplitude), duration_s, rng)


def sessions(load: Load, duration_s: float, seed: int) -> list[Session]:
    """Every session starting in [0, duration_s), in order."""
    rng = random.Random(f"arrivals-{seed}")
    return [Session(start, load.session_requests, load.think_s) for start in session_starts(load, duration_s, rng)]


def _poisson(rate, rate_max: float, duration_s: float, rng: random.Random) -> list[float]:
    """A non-homogeneous Poisson process by thinning (Lewis and Shedler): candidates at rate_max, each
    kept with probability rate(t) / rate_max."""
    times, t = [], 0.0
    while True:
        t += rng.expovariate(rate_max)
        if t >= duration_s:
            return times
        if rng.random() * rate_max < rate(t):
            times.append(t)


def spike(requests: int = SPIKE_REQUESTS, at_s: float = SPIKE_AT_S) -> list[TraceRow]:
    """Issue 17's test: `requests` API requests of one image at once, after a quiet hour."""
    return [TraceRow(at_s, 1) for _ in range(requests)]


def business_week(seed: int, people: int = 4, days: int = 7) -> list[TraceRow]:
    """A few people working in bursts, Monday to Friday 09:00-18:00 (t = 0 is Monday 00:00), nobody at the
    weekend. Each person has 2-4 bursts a working day, starting anywhere from 09:00 to 17:30; half of the
    bursts open the browser UI first; a burst is 3-12 prompts, 20-120 s apart, of 1, 2 or 4 images."""
    rng = random.Random(f"business-week-{seed}")
    rows = []
    for day in range(days):
        if day % 7 >= 5:
            continue
        for _ in range(people):
            for _ in range(rng.randint(2, 4)):
                t = round(day * DAY_S + rng.uniform(9 * 3600, 17.5 * 3600), 1)  # tenths: a CSV trace holds it exactly
                if rng.random() < 0.5:
                    rows.append(TraceRow(t, 0, "ui"))
                for _ in range(rng.randint(3, 12)):
                    if t >= day * DAY_S + 18 * 3600:
                        break
                    rows.append(TraceRow(t, rng.choice((1, 1, 1, 2, 4))))
                    t = round(t + rng.uniform(20, 120), 1)
    return sorted(rows, key=lambda row: row.t)
