"""Capped exponential backoff with full jitter, bounded in attempts and in total time."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import requests
from google.api_core import exceptions as gexc

from attacher import log

T = TypeVar("T")


class HttpStatusError(Exception):
    """A non-2xx answer from an endpoint the agent talks to with plain HTTP (metadata, Kubernetes)."""

    def __init__(self, what: str, status: int, body: str):
        super().__init__(f"{what} answered HTTP {status}: {body[:300]}")
        self.status = status


def is_transient(exc: BaseException) -> bool:
    """429 and 5xx answers and connection failures; never 4xx (those are our bug or a real refusal)."""
    if isinstance(exc, (gexc.TooManyRequests, gexc.ServerError)):
        return True
    if isinstance(exc, HttpStatusError):
        return exc.status == 429 or exc.status >= 500
    return isinstance(exc, (requests.ConnectionError, requests.Timeout))


@dataclass(frozen=True)
class RetryPolicy:
    initial_seconds: float = 0.5
    max_delay_seconds: float = 8.0
    max_attempts: int = 8
    budget_seconds: float = 60.0  # no new attempt starts after this much time since the first one
    sleep: Callable[[float], None] = time.sleep

    def call(self, what: str, fn: Callable[[], T]) -> T:
        started = time.monotonic()
        attempt = 1
        while True:
            try:
                return fn()
            except Exception as exc:
                elapsed = time.monotonic() - started
                if not is_transient(exc) or attempt >= self.max_attempts:
                    raise
                delay = random.uniform(0, min(self.max_delay_seconds, self.initial_seconds * 2 ** (attempt - 1)))
                if elapsed + delay > self.budget_seconds:
                    raise
                log.emit("retry", call=what, attempt=attempt, delay_ms=round(delay * 1000), error=_short(exc))
                self.sleep(delay)
                attempt += 1


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"
