"""The operations mutating calls return: RUNNING until polled DONE, then applied or failed; replayed by requestId.

get and wait are both one poll; `polls` more polls keep an operation RUNNING. requestId makes a
mutation idempotent, as on GCP: the same id answers the first call's operation.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.fakes.compute.errors import not_found
from tests.fakes.compute.resources import API_ROOT, ComputeResources, Mutation, timestamp

# Operation error code -> (httpErrorStatusCode, httpErrorMessage) as GCP reports them.
OPERATION_ERRORS = {
    "QUOTA_EXCEEDED": (403, "FORBIDDEN"),
    "RESOURCE_ALREADY_EXISTS": (409, "CONFLICT"),
    "RESOURCE_NOT_FOUND": (404, "NOT FOUND"),
    "RESOURCE_IN_USE_BY_ANOTHER_RESOURCE": (400, "BAD REQUEST"),
}


def is_mutating(method: dict[str, Any]) -> bool:
    """A discovery method that returns an Operation (and is not itself an operations method)."""
    return method.get("response", {}).get("$ref") == "Operation" and "Operations." not in method["id"]


@dataclass
class _Operation:
    resource: dict[str, Any]
    polls_left: int
    on_done: Callable[[], None] | None
    error: tuple[str, str] | None


class Operations:
    """The operations of one fake, zonal and global."""

    def __init__(self, resources: ComputeResources):
        self.resources = resources
        self._operations: dict[tuple[str, str], _Operation] = {}
        self._request_ids: dict[str, tuple[str, str]] = {}

    def replay(self, request_id: str | None) -> dict[str, Any] | None:
        """The operation an earlier call with this requestId started, as it is now; None for a new requestId."""
        if request_id not in self._request_ids:
            return None
        return copy.deepcopy(self._operations[self._request_ids[request_id]].resource)

    def start(self, method: dict[str, Any], zone: str | None, mutation: Mutation, error: tuple[str, str] | None,
              request_id: str | None, polls: int) -> dict[str, Any]:
        target_link, target_id, on_done = mutation
        project = self.resources.project
        scope = f"zones/{zone}" if zone else "global"
        name = f"operation-{int(time.time() * 1000)}-{uuid.uuid4().hex[:13]}-{uuid.uuid4().hex[:8]}"
        now = timestamp()
        resource = {"kind": "compute#operation", "id": self.resources.next_id(), "name": name,
                    "operationType": method["id"].rsplit(".", 1)[-1], "targetLink": target_link,
                    "status": "RUNNING", "progress": 0, "user": f"sdgke@{project}.iam.gserviceaccount.com",
                    "insertTime": now, "startTime": now,
                    "selfLink": f"{API_ROOT}projects/{project}/{scope}/operations/{name}"}
        if target_id:
            resource["targetId"] = target_id
        if zone:
            resource["zone"] = self.resources.zone_link(zone)
        if request_id:
            resource["clientOperationId"] = request_id
            self._request_ids[request_id] = (scope, name)
        self._operations[(scope, name)] = _Operation(resource, polls, on_done, error)
        return copy.deepcopy(resource)

    def poll(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        """The handler of zoneOperations/globalOperations get and wait."""
        self.resources.require_scope(p)
        scope = f"zones/{p['zone']}" if "zone" in p else "global"
        operation = self._operations.get((scope, p["operation"]))
        if operation is None:
            raise not_found(f"projects/{self.resources.project}/{scope}/operations/{p['operation']}")
        resource = operation.resource
        if resource["status"] != "DONE":
            if operation.polls_left > 0:
                operation.polls_left -= 1
            else:
                resource.update(status="DONE", progress=100, endTime=timestamp())
                if operation.error:
                    code, message = operation.error
                    resource["error"] = {"errors": [{"code": code, "message": message}]}
                    resource["httpErrorStatusCode"], resource["httpErrorMessage"] = OPERATION_ERRORS[code]
                elif operation.on_done:
                    operation.on_done()
        return copy.deepcopy(resource)
