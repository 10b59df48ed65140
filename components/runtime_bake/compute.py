"""The Compute calls of the bake: retried on 429/5xx and lost connections, operations waited on to the end."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

OPERATION_DEADLINE_SECONDS = 45 * 60
"""Bound on any single Compute operation (a 50 GB image takes minutes, not close to this)."""
CALL_TIMEOUT_SECONDS = 180
"""Longer than the two minutes an operations.wait call may block."""
_TRANSIENT_STATUS = (429, 500, 502, 503, 504)
_RATE_LIMIT_REASONS = ("rateLimitExceeded", "userRateLimitExceeded")


class BakeError(Exception):
    """The bake or one of its Compute calls failed; the message says what, where, and what is left."""


@dataclass(frozen=True)
class Pacing:
    """How often to poll and how to back off; tests shrink these to keep the suite fast."""

    poll_seconds: float = 5.0
    backoff_seconds: float = 1.0
    backoff_cap_seconds: float = 30.0
    attempts: int = 7
    """Tries per API call on 429/5xx or a lost connection (up to a minute of backoff at the defaults)."""


class ComputeClient:
    """The Compute calls the bake needs: retried on 429/5xx, operations waited on with these same clients.

    google-cloud-compute is imported here, in the provider, so the program itself never loads it.
    """

    def __init__(self, project: str, endpoint: str | None, pacing: Pacing):
        """`endpoint`: tests point the clients at a fake Compute API (anonymously); None is the real one."""
        from google.api_core import exceptions
        from google.cloud import compute_v1

        self.v1, self.errors = compute_v1, exceptions
        self.project, self.pacing = project, pacing
        kwargs: dict[str, Any] = {"transport": "rest"}
        if endpoint:
            from google.api_core.client_options import ClientOptions
            from google.auth.credentials import AnonymousCredentials

            kwargs.update(credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=endpoint))
        self.instances = compute_v1.InstancesClient(**kwargs)
        self.disks = compute_v1.DisksClient(**kwargs)
        self.images = compute_v1.ImagesClient(**kwargs)
        self.zone_operations = compute_v1.ZoneOperationsClient(**kwargs)
        self.global_operations = compute_v1.GlobalOperationsClient(**kwargs)

    def call(self, what: str, method: Callable[..., Any], request: dict[str, Any],
             expect: tuple[type[Exception], ...] = ()) -> Any:
        """One API call for this project. 429, 5xx and rate-limit 403s are retried with capped exponential
        backoff and jitter; errors in `expect` propagate as they are, others say what was being done."""
        for attempt in range(1, self.pacing.attempts + 1):
            try:
                return method(request={"project": self.project, **request}, retry=None, timeout=CALL_TIMEOUT_SECONDS)
            except self.errors.GoogleAPICallError as err:
                if isinstance(err, expect):
                    raise
                transient = err.code in _TRANSIENT_STATUS or (err.code == 403 and any(
                    isinstance(e, dict) and e.get("reason") in _RATE_LIMIT_REASONS for e in err.errors))
                if not transient:
                    raise BakeError(f"{what}: {err}") from None
                failure: Exception = err
            except (requests.ConnectionError, requests.Timeout) as err:
                failure = err
            if attempt == self.pacing.attempts:
                raise BakeError(f"{what}: still failing after {attempt} attempts: {failure}") from None
            delay = min(self.pacing.backoff_cap_seconds, self.pacing.backoff_seconds * 2 ** (attempt - 1))
            time.sleep(random.uniform(delay / 2, delay))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def get(self, what: str, method: Callable[..., Any], **request: Any) -> Any | None:
        """The resource, or None when it does not exist."""
        try:
            return self.call(what, method, request, expect=(self.errors.NotFound,))
        except self.errors.NotFound:
            return None

    def listed(self, what: str, method: Callable[..., Any], **request: Any) -> list[Any]:
        return self.call(what, lambda **kw: list(method(**kw)), request)

    def mutate(self, what: str, method: Callable[..., Any], expect: tuple[type[Exception], ...] = (),
               **request: Any) -> None:
        """A mutating call and its operation, to the end; one requestId for all retries keeps them idempotent."""
        operation = self.call(what, method, {**request, "request_id": str(uuid.uuid4())}, expect)
        done = self.v1.Operation.Status.DONE
        deadline = time.monotonic() + OPERATION_DEADLINE_SECONDS
        zone = request.get("zone")
        while operation.status != done:
            if time.monotonic() > deadline:
                raise BakeError(f"{what}: operation {operation.name} not done after {OPERATION_DEADLINE_SECONDS} s")
            waiter = self.zone_operations.wait if zone else self.global_operations.wait
            operation = self.call(what, waiter, {"operation": operation.name, **({"zone": zone} if zone else {})})
            if operation.status != done:
                time.sleep(self.pacing.poll_seconds)
        if operation.error.errors:
            problems = "; ".join(f"{e.code}: {e.message}" for e in operation.error.errors)
            raise BakeError(f"{what} failed: {problems}")
