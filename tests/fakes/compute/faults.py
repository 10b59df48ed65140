"""Fault injection: requests answered with an HTTP error, operations that end in an error, requests held."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from tests.fakes.compute.operations import OPERATION_ERRORS


@dataclass
class HttpFault:
    method: str | None
    path: re.Pattern[str]
    status: int
    reason: str
    remaining: int


@dataclass
class OperationFault:
    kind: str
    path: re.Pattern[str]
    code: str
    message: str | None
    remaining: int


class Faults:
    """The faults a test has asked for, each taken by the requests it matches until its count runs out."""

    HOLD_SECONDS = 30.0

    def __init__(self, lock: threading.RLock, mutating_methods: list[str]):
        self._lock = lock
        self._mutating_methods = mutating_methods
        self._http_faults: list[HttpFault] = []
        self._operation_faults: list[OperationFault] = []
        self._open = threading.Event()  # cleared by hold(): requests wait until release()
        self._open.set()

    def fail_next(self, *, method: str | None = None, path_regex: str = ".*", status: int = 503, times: int = 1,
                  reason: str = "backendError") -> None:
        """The next `times` matching requests answer `status` with a Google error body."""
        if not 400 <= status <= 599 or times < 1:
            raise ValueError(f"fail_next needs an HTTP error status 400..599 and times >= 1, got {status}, {times}")
        with self._lock:
            self._http_faults.append(HttpFault(method and method.upper(), re.compile(path_regex), status, reason,
                                               times))

    def fail_operation(self, *, kind: str, path_regex: str = ".*", code: str = "QUOTA_EXCEEDED",
                       message: str | None = None, times: int = 1) -> None:
        """The next matching mutating call returns an operation that ends DONE with error.errors=[{code, message}]."""
        if code not in OPERATION_ERRORS:
            raise ValueError(f"fail_operation code {code!r} is not one of {sorted(OPERATION_ERRORS)}")
        mutating = self._mutating_methods
        if not any(kind in (m, m.rsplit(".", 1)[-1]) for m in mutating):
            raise ValueError(f"fail_operation kind {kind!r} names no mutating method of the fake: {mutating}")
        with self._lock:
            self._operation_faults.append(OperationFault(kind, re.compile(path_regex), code, message, times))

    def hold(self) -> None:
        """Requests arriving from now on wait (at most HOLD_SECONDS) until release(): a state the caller is
        in while it waits for the API lasts until the test has seen it, however slow the test is."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def wait_until_released(self) -> bool:
        """False when a hold outlasted HOLD_SECONDS (the test never released it)."""
        return self._open.wait(self.HOLD_SECONDS)

    def take_http_fault(self, verb: str, path: str) -> HttpFault | None:
        for fault in self._http_faults:
            if fault.method in (None, verb) and fault.path.search(path):
                fault.remaining -= 1
                if not fault.remaining:
                    self._http_faults.remove(fault)
                return fault
        return None

    def take_operation_fault(self, method_id: str, path: str) -> OperationFault | None:
        for fault in self._operation_faults:
            if fault.kind in (method_id, method_id.rsplit(".", 1)[-1]) and fault.path.search(path):
                fault.remaining -= 1
                if not fault.remaining:
                    self._operation_faults.remove(fault)
                return fault
        return None
