"""The Compute Engine calls the agent and the GC make, each with our retry policy and a bounded wait.

The library's own retries are switched off (retry=None) so every HTTP attempt is one we decided,
logged and counted. The client library itself (attacher.compute_api) is imported by make_clients,
not by this module: the agent reads its node while that import runs.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from google.auth import credentials as gcredentials

from attacher.retry import RetryPolicy

if TYPE_CHECKING:
    from attacher import compute_api

CALL_TIMEOUT_SECONDS = 60.0


def _types() -> ModuleType:
    """The library's types module (Disk, requests, Operation), loaded by make_clients before any call."""
    from attacher.compute_api import compute

    return compute


class OperationError(Exception):
    """A Compute operation that finished with errors (they arrive inside the operation, not as HTTP)."""

    def __init__(self, what: str, errors: list[tuple[str, str]]):
        detail = "; ".join(f"{code}: {message}" for code, message in errors)
        super().__init__(f"{what} failed: {detail}")
        self.codes = [code for code, _ in errors]


@dataclass(frozen=True)
class Clients:
    disks: compute_api.DisksClient
    instances: compute_api.InstancesClient
    images: compute_api.ImagesClient
    zone_operations: compute_api.ZoneOperationsClient


def make_clients(credentials: gcredentials.Credentials, endpoint: str | None) -> Clients:
    """REST clients (no gRPC channel); the first call in a process imports the library (~0.4 s)."""
    from google.api_core.client_options import ClientOptions

    from attacher import compute_api

    options = ClientOptions(api_endpoint=endpoint) if endpoint else None
    kwargs = {"credentials": credentials, "transport": "rest", "client_options": options}
    return Clients(
        disks=compute_api.DisksClient(**kwargs),
        instances=compute_api.InstancesClient(**kwargs),
        images=compute_api.ImagesClient(**kwargs),
        zone_operations=compute_api.ZoneOperationsClient(**kwargs),
    )


class Compute:
    def __init__(self, clients: Clients, project: str, retry: RetryPolicy):
        self.clients = clients
        self.project = project
        self.retry = retry

    def get_instance(self, zone: str, instance: str) -> compute_api.compute.Instance:
        return self.retry.call(
            "instances.get",
            lambda: self.clients.instances.get(
                project=self.project, zone=zone, instance=instance, retry=None, timeout=CALL_TIMEOUT_SECONDS
            ),
        )

    def get_image(self, project: str, name: str) -> compute_api.compute.Image:
        return self.retry.call(
            "images.get",
            lambda: self.clients.images.get(project=project, image=name, retry=None, timeout=CALL_TIMEOUT_SECONDS),
        )

    def get_disk(self, zone: str, name: str) -> compute_api.compute.Disk:
        return self.retry.call(
            "disks.get",
            lambda: self.clients.disks.get(
                project=self.project, zone=zone, disk=name, retry=None, timeout=CALL_TIMEOUT_SECONDS
            ),
        )

    # Mutations carry one requestId across their retries: if an attempt took effect but its answer
    # was lost (a 5xx after the fact), the retry gets the same operation back instead of an error.

    def insert_disk(self, zone: str, *, name: str, description: str, source_image: str, disk_type: str,
                    labels: dict[str, str], size_gb: int | None) -> compute_api.compute.Operation:
        """A disk from an image; size_gb None: the image's size."""
        disk = _types().Disk(name=name, description=description, source_image=source_image,
                             type_=f"zones/{zone}/diskTypes/{disk_type}", labels=labels)
        if size_gb is not None:
            disk.size_gb = size_gb
        request = _types().InsertDiskRequest(
            project=self.project, zone=zone, disk_resource=disk, request_id=str(uuid.uuid4())
        )
        return self.retry.call(
            "disks.insert",
            lambda: self.clients.disks.insert_unary(request=request, retry=None, timeout=CALL_TIMEOUT_SECONDS),
        )

    def attach_disk(self, zone: str, instance: str, *, source: str, device_name: str, mode: str,
                    auto_delete: bool) -> compute_api.compute.Operation:
        attached = _types().AttachedDisk(source=source, device_name=device_name, mode=mode, auto_delete=auto_delete)
        request = _types().AttachDiskInstanceRequest(
            project=self.project,
            zone=zone,
            instance=instance,
            attached_disk_resource=attached,
            request_id=str(uuid.uuid4()),
        )
        return self.retry.call(
            "instances.attachDisk",
            lambda: self.clients.instances.attach_disk_unary(
                request=request, retry=None, timeout=CALL_TIMEOUT_SECONDS
            ),
        )

    def list_disks(self, zone: str, filter_: str) -> list[compute_api.compute.Disk]:
        disks: list[compute_api.compute.Disk] = []
        page_token = ""
        for _ in range(1000):  # bounded: 500 disks a page
            request = _types().ListDisksRequest(project=self.project, zone=zone, filter=filter_, max_results=500)
            if page_token:  # an empty pageToken is not "first page" to the API, it is an invalid token
                request.page_token = page_token
            page = self.retry.call(
                "disks.list",
                lambda request=request: self.clients.disks.list(
                    request=request, retry=None, timeout=CALL_TIMEOUT_SECONDS
                ),
            )
            disks.extend(page.items)  # the pager proxies the first page's response
            page_token = page.next_page_token
            if not page_token:
                return disks
        raise RuntimeError(f"disks.list in {zone} did not end after 1000 pages")

    def delete_disk(self, zone: str, name: str) -> compute_api.compute.Operation:
        request = _types().DeleteDiskRequest(project=self.project, zone=zone, disk=name, request_id=str(uuid.uuid4()))
        return self.retry.call(
            "disks.delete",
            lambda: self.clients.disks.delete_unary(request=request, retry=None, timeout=CALL_TIMEOUT_SECONDS),
        )

    def wait_zone_operation(self, zone: str, operation: compute_api.compute.Operation, what: str,
                            timeout: float) -> int:
        """Wait with zoneOperations.wait until DONE; raise OperationError if it carries errors.

        Returns how many wait calls it made (0 when the operation came back already DONE).
        """
        deadline = time.monotonic() + timeout
        waits = 0
        while operation.status != _types().Operation.Status.DONE:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{what}: operation {operation.name} not DONE after {timeout:.0f}s")
            call_timeout = min(CALL_TIMEOUT_SECONDS + 60, remaining + 5)
            operation = self.retry.call(
                "zoneOperations.wait",
                lambda name=operation.name, call_timeout=call_timeout: self.clients.zone_operations.wait(
                    project=self.project, zone=zone, operation=name, retry=None, timeout=call_timeout
                ),
            )
            waits += 1
        if operation.error and operation.error.errors:
            raise OperationError(what, [(error.code, error.message) for error in operation.error.errors])
        return waits
