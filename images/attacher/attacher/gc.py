"""Delete runtime disks left behind by nodes that are gone.

autoDelete removes a node's runtime disk with the node once it is attached; what can leak is a disk
created but never attached (the node vanished or the agent died in between). A disk is deleted only
if all hold: labelled managed-by=sd-gke with an owner, no users (unattached), older than the grace
period (an agent attaches within seconds of creating), and its owner instance does not exist. The
API itself refuses to delete a disk that got attached meanwhile (400 resourceInUseByAnotherResource).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from google.api_core import exceptions as gexc

from attacher import log, names
from attacher.compute import Compute, OperationError

if TYPE_CHECKING:
    from attacher.compute_api import compute as compute_v1

LIST_FILTER = f"labels.{names.LABEL_MANAGED_BY}={names.MANAGED_BY}"
DELETE_TIMEOUT_SECONDS = 300.0


@dataclass
class GcReport:
    deleted: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # disk -> reason
    failed: dict[str, str] = field(default_factory=dict)  # disk -> error


def _keep_reason(disk: compute_v1.Disk, grace_seconds: int, now: datetime) -> str | None:
    if disk.labels.get(names.LABEL_MANAGED_BY) != names.MANAGED_BY:
        return "not managed by sd-gke"
    if not disk.labels.get(names.LABEL_OWNER):
        return f"no {names.LABEL_OWNER} label"
    if disk.users:
        return "attached"
    created = datetime.fromisoformat(disk.creation_timestamp)
    age = (now - created).total_seconds()
    if age < grace_seconds:
        return f"younger than the grace period ({age:.0f}s < {grace_seconds}s)"
    return None


def collect(compute: Compute, zones: tuple[str, ...], grace_seconds: int, now: datetime | None = None) -> GcReport:
    now = now or datetime.now(UTC)
    report = GcReport()
    started = time.monotonic()
    for zone in zones:
        for disk in compute.list_disks(zone, LIST_FILTER):
            reason = _keep_reason(disk, grace_seconds, now)
            owner = disk.labels.get(names.LABEL_OWNER, "")
            if reason is None:
                try:
                    compute.get_instance(zone, owner)
                    reason = f"owner {owner} exists"
                except gexc.NotFound:
                    pass
            if reason is not None:
                report.kept[disk.name] = reason
                log.emit("gc_disk", zone=zone, disk=disk.name, owner=owner, action="kept", reason=reason)
                continue
            action, detail = _delete(compute, zone, disk.name)
            if action == "deleted":
                report.deleted.append(disk.name)
            elif action == "kept":
                report.kept[disk.name] = detail
            else:
                report.failed[disk.name] = detail
            log.emit("gc_disk", zone=zone, disk=disk.name, owner=owner, action=action, reason=detail)
    log.emit(
        "gc",
        zones=list(zones),
        deleted=len(report.deleted),
        kept=len(report.kept),
        failed=len(report.failed),
        duration_ms=round((time.monotonic() - started) * 1000),
    )
    return report


def _delete(compute: Compute, zone: str, disk_name: str) -> tuple[str, str]:
    try:
        operation = compute.delete_disk(zone, disk_name)
        compute.wait_zone_operation(zone, operation, f"disks.delete {disk_name}", DELETE_TIMEOUT_SECONDS)
        return "deleted", "owner gone, unattached, past the grace period"
    except gexc.NotFound:
        return "kept", "already gone"
    except gexc.BadRequest as exc:
        if any(isinstance(error, dict) and error.get("reason") == "resourceInUseByAnotherResource" for error in exc.errors):
            return "kept", "attached meanwhile"
        return "failed", f"{type(exc).__name__}: {exc}"
    except (OperationError, gexc.GoogleAPICallError, TimeoutError) as exc:
        return "failed", f"{type(exc).__name__}: {exc}"
