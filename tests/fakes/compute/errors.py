"""The errors the fake answers with, in Google's JSON error body, worded as GCP words them."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error the fake answers with Google's JSON error body (the client maps the status to an exception)."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.status, "message": self.message,
                          "errors": [{"message": self.message, "domain": "global", "reason": self.reason}]}}


class FakeLimitation(ApiError):
    """A valid request the fake cannot answer faithfully: answered 400 and recorded as a violation."""

    def __init__(self, message: str):
        super().__init__(400, "invalid", f"fake limitation: {message}")


def not_found(resource: str) -> ApiError:
    return ApiError(404, "notFound", f"The resource '{resource}' was not found")


def invalid(field: str, value: Any, why: str) -> ApiError:
    return ApiError(400, "invalid", f"Invalid value for field '{field}': '{value}'. {why}")


def in_use(resource: str, user: str) -> ApiError:
    return ApiError(400, "resourceInUseByAnotherResource",
                    f"The disk resource '{resource}' is already being used by '{user}'")


def read_only_auto_delete(resource: str) -> ApiError:
    """Compute Engine: "disks attached in READ_ONLY mode cannot be auto-deleted" (compute.v1 discovery document,
    StatefulPolicyPreservedStateDiskDevice.autoDelete and PreservedStatePreservedDisk.autoDelete; rendered at
    https://cloud.google.com/python/docs/reference/compute/latest/
    google.cloud.compute_v1.types.StatefulPolicyPreservedStateDiskDevice). What
    instances.attachDisk and instances.insert answer to READ_ONLY + autoDelete is not documented: refused
    here, so code that relies on it fails in the tests; the status, reason and text are this fake's, unverified."""
    return ApiError(400, "invalid", f"Invalid value for field 'autoDelete': 'true'. The disk '{resource}' is "
                                    "attached in READ_ONLY mode, and disks attached in READ_ONLY mode cannot be "
                                    "auto-deleted; attach it READ_WRITE to have it deleted with the instance.")


def not_ready(resource: str) -> ApiError:
    return ApiError(400, "resourceNotReady", f"The resource '{resource}' is not ready")
