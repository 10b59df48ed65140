"""One JSON object per line on stdout: steps with their duration feed the cold-start timeline."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO

_lock = threading.Lock()


class StepFailed(Exception):
    """An error already explained by a log line; carries the step so callers can report it."""

    def __init__(self, step: str, message: str):
        super().__init__(message)
        self.step = step
        self.message = message


def emit(event: str, *, stream: TextIO | None = None, **fields: Any) -> None:
    record = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event, **fields}
    line = json.dumps(record, default=str, sort_keys=False)
    with _lock:
        out = stream or sys.stdout
        out.write(line + "\n")
        out.flush()


class Step:
    """Extra fields a step adds to its log line while it runs."""

    def __init__(self, name: str):
        self.name = name
        self.fields: dict[str, Any] = {}
        self.status = "ok"

    def note(self, **fields: Any) -> None:
        self.fields.update(fields)

    def skip(self, reason: str) -> None:
        self.status = "skipped"
        self.fields["reason"] = reason


@contextmanager
def step(name: str, **fields: Any) -> Iterator[Step]:
    """Log the step once it ends: status ok/skipped/failed, duration_ms, and what it noted."""
    current = Step(name)
    current.note(**fields)
    started = time.monotonic()
    try:
        yield current
    except StepFailed:
        raise
    except Exception as exc:  # every failure leaves exactly one clear line naming the step
        message = f"{type(exc).__name__}: {exc}"
        emit("step", step=name, status="failed", duration_ms=_ms(started), error=message, **current.fields)
        raise StepFailed(name, message) from exc
    emit("step", step=name, status=current.status, duration_ms=_ms(started), **current.fields)


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
