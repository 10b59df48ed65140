"""Warm capacity by schedule: `Mon-Fri 09:00-18:00 1` = one replica wanted on weekdays from 09:00 to 18:00.

The same meaning as a KEDA cron trigger (https://keda.sh/docs/latest/scalers/cron/): `desiredReplicas`
between `start` and `end` in the trigger's IANA `timezone`, nothing outside; `cron()` gives those two
expressions. Windows end on the day they start (no overnight windows: write two schedules).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
FORMAT = "DAYS HH:MM-HH:MM REPLICAS, e.g. 'Mon-Fri 09:00-18:00 1' (DAYS: '*', a day, a range or a comma list of them)"
_PATTERN = re.compile(r"^(?P<days>\S+)\s+(?P<start>\d{1,2}:\d{2})-(?P<end>\d{1,2}:\d{2})\s+(?P<replicas>\d+)$")


@dataclass(frozen=True)
class WarmSchedule:
    text: str
    days: frozenset[int]  # 0 = Monday, as datetime.weekday()
    start_minute: int
    end_minute: int
    replicas: int

    def replicas_at(self, epoch_s: float, timezone: str) -> int:
        local = datetime.fromtimestamp(epoch_s, ZoneInfo(timezone))
        minute = local.hour * 60 + local.minute + local.second / 60
        inside = local.weekday() in self.days and self.start_minute <= minute < self.end_minute
        return self.replicas if inside else 0

    def next_start(self, epoch_s: float, timezone: str) -> float:
        """The first opening of the window after `epoch_s` (within the next eight days: every day set is met)."""
        zone = ZoneInfo(timezone)
        today = datetime.fromtimestamp(epoch_s, zone).date()
        for offset in range(9):
            day = today + timedelta(days=offset)
            opening = datetime.combine(day, time(self.start_minute // 60, self.start_minute % 60), zone).timestamp()
            if day.weekday() in self.days and opening > epoch_s:
                return opening
        raise AssertionError("a schedule has at least one day")

    def cron(self) -> tuple[str, str]:
        """KEDA's `start` and `end` (minute hour day-of-month month day-of-week; cron counts Sunday as 0)."""
        days = ",".join(str((day + 1) % 7) for day in sorted(self.days))
        return tuple(f"{minute % 60} {minute // 60} * * {days}" for minute in (self.start_minute, self.end_minute))


def _minutes(text: str, key: str, problems: list[str]) -> int:
    hours, minutes = (int(part) for part in text.split(":"))
    if not (0 <= hours <= 24 and 0 <= minutes < 60) or hours * 60 + minutes > 24 * 60:
        problems.append(f"{key} {text!r}: expected a time from 00:00 to 24:00")
    return hours * 60 + minutes


def _days(text: str, problems: list[str]) -> frozenset[int]:
    if text == "*":
        return frozenset(range(7))
    chosen: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            problems.append(f"days {part!r}: expected '*' or days among {', '.join(DAYS)} (e.g. Mon-Fri or Sat,Sun)")
            continue
        start, end = DAYS.index(first), DAYS.index(last or first)
        if end < start:
            problems.append(f"days {part!r}: a range runs forward through the week (e.g. Mon-Fri)")
        chosen.update(range(start, end + 1))
    return frozenset(chosen)


def parse_warm(text: str) -> tuple[WarmSchedule | None, list[str]]:
    """A schedule, or every problem with it (the value and what is allowed)."""
    match = _PATTERN.match(text.strip())
    if not match:
        return None, [f"warm schedule {text!r}: expected {FORMAT}"]
    problems: list[str] = []
    days = _days(match["days"], problems)
    start = _minutes(match["start"], "start", problems)
    end = _minutes(match["end"], "end", problems)
    replicas = int(match["replicas"])
    if start >= end:
        problems.append(f"window {match['start']}-{match['end']}: expected the start before the end, the same day")
    if replicas < 1:
        problems.append(f"replicas {replicas}: expected at least 1")
    if problems:
        return None, [f"warm schedule {text!r}: {problem}" for problem in problems]
    return WarmSchedule(text.strip(), days, start, end, replicas), []


def run_start_epoch(day: date, timezone: str) -> float:
    """Seconds since the epoch at midnight starting `day` in `timezone`: the simulator's t = 0."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"timezone {timezone!r}: expected an IANA time zone name such as Europe/Berlin") from error
    return datetime.combine(day, time(0), zone).timestamp()
