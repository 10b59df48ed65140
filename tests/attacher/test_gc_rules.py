"""The GC's rules one by one, on a recording stand-in for the Compute calls: each reason to keep a
disk at its edge, each outcome of a delete, and the log lines an operator reads.

The end-to-end runs against the fake Compute API are in test_gc.py; here every case is one disk.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from attacher import gc
from attacher.compute import OperationError
from google.api_core import exceptions as gexc
from google.cloud import compute_v1

NOW = datetime(2026, 1, 15, 12, 0, 0, tzinfo=UTC)
OWNER = "gke-sdgke-gpu-pool-0a1b2c3d-gone"
RUNTIME_LABELS = {"managed-by": "sd-gke", "sdgke-owner": OWNER, "sdgke-runtime-hash": "3f9a1c2b7d4e"}


def disk(name: str = "orphan", *, labels: dict[str, str] | None = None, users: tuple[str, ...] = (),
         age_seconds: int = 7200) -> compute_v1.Disk:
    created = (NOW - timedelta(seconds=age_seconds)).isoformat()
    return compute_v1.Disk(name=name, labels=RUNTIME_LABELS if labels is None else labels, users=list(users),
                           creation_timestamp=created)


class Compute:
    """Answers list/get/delete/wait from what the test says; records every call."""

    def __init__(self, disks: dict[str, list[compute_v1.Disk]], *, instances: tuple[str, ...] = (),
                 delete_error: Exception | None = None, wait_error: Exception | None = None):
        self.disks, self.instances = disks, instances
        self.delete_error, self.wait_error = delete_error, wait_error
        self.calls: list[tuple] = []

    def list_disks(self, zone: str, filter_: str) -> list[compute_v1.Disk]:
        self.calls.append(("list", zone, filter_))
        return self.disks.get(zone, [])

    def get_instance(self, zone: str, name: str) -> compute_v1.Instance:
        self.calls.append(("get_instance", zone, name))
        if name not in self.instances:
            raise gexc.NotFound(f"instance {name}")
        return compute_v1.Instance(name=name)

    def delete_disk(self, zone: str, name: str) -> compute_v1.Operation:
        self.calls.append(("delete", zone, name))
        if self.delete_error:
            raise self.delete_error
        return compute_v1.Operation(name="op-1")

    def wait_zone_operation(self, zone: str, operation: compute_v1.Operation, what: str, timeout: float) -> int:
        self.calls.append(("wait", zone, operation.name, what, timeout))
        if self.wait_error:
            raise self.wait_error
        return 1


def log(capsys) -> list[dict]:
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for line in lines:
        del line["ts"]
    return lines


def collect(compute: Compute, grace_seconds: int = 3600, zones: tuple[str, ...] = ("us-central1-a",)) -> gc.GcReport:
    return gc.collect(compute, zones, grace_seconds, now=NOW)


def test_disks_are_listed_by_the_managed_by_label_in_every_zone():
    compute = Compute({})
    collect(compute, zones=("us-central1-a", "us-central1-b"))
    assert compute.calls == [("list", "us-central1-a", "labels.managed-by=sd-gke"),
                             ("list", "us-central1-b", "labels.managed-by=sd-gke")]


def test_an_unattached_labelled_disk_past_the_grace_period_whose_owner_is_gone_is_deleted():
    compute = Compute({"us-central1-a": [disk()]})
    report = collect(compute)
    assert (report.deleted, report.kept, report.failed) == (["orphan"], {}, {})
    assert compute.calls[1:] == [("get_instance", "us-central1-a", OWNER), ("delete", "us-central1-a", "orphan"),
                                 ("wait", "us-central1-a", "op-1", "disks.delete orphan", 300.0)]


@pytest.mark.parametrize(("labels", "reason"), [
    ({"sdgke-owner": OWNER}, "not managed by sd-gke"),
    ({"managed-by": "pulumi", "sdgke-owner": OWNER}, "not managed by sd-gke"),
    ({"managed-by": "sd-gke"}, "no sdgke-owner label"),
    ({"managed-by": "sd-gke", "sdgke-owner": ""}, "no sdgke-owner label"),
])
def test_a_disk_without_both_labels_is_kept_and_its_owner_not_even_looked_up(labels, reason):
    compute = Compute({"us-central1-a": [disk(labels=labels)]})
    report = collect(compute)
    assert report.kept == {"orphan": reason}
    assert [c[0] for c in compute.calls] == ["list"]


def test_an_attached_disk_is_kept():
    compute = Compute({"us-central1-a": [disk(users=("projects/p/zones/us-central1-a/instances/other",))]})
    assert collect(compute).kept == {"orphan": "attached"}
    assert [c[0] for c in compute.calls] == ["list"]


def test_a_disk_one_second_short_of_the_grace_period_is_kept():
    compute = Compute({"us-central1-a": [disk(age_seconds=3599)]})
    assert collect(compute, grace_seconds=3600).kept == {
        "orphan": "younger than the grace period (3599s < 3600s)"}


def test_a_disk_exactly_as_old_as_the_grace_period_is_deleted():
    compute = Compute({"us-central1-a": [disk(age_seconds=3600)]})
    assert collect(compute, grace_seconds=3600).deleted == ["orphan"]


def test_a_disk_whose_owner_exists_is_kept():
    compute = Compute({"us-central1-a": [disk()]}, instances=(OWNER,))
    report = collect(compute)
    assert (report.deleted, report.kept) == ([], {"orphan": f"owner {OWNER} exists"})
    assert "delete" not in [c[0] for c in compute.calls]


def test_a_disk_gone_before_the_delete_is_kept_as_already_gone():
    compute = Compute({"us-central1-a": [disk()]}, delete_error=gexc.NotFound("disk orphan"))
    report = collect(compute)
    assert (report.deleted, report.kept, report.failed) == ([], {"orphan": "already gone"}, {})


def test_a_disk_attached_before_the_delete_is_kept():
    in_use = gexc.BadRequest("in use", errors=[{"reason": "resourceInUseByAnotherResource"}])
    report = collect(Compute({"us-central1-a": [disk()]}, delete_error=in_use))
    assert (report.kept, report.failed) == ({"orphan": "attached meanwhile"}, {})


def test_any_other_refused_delete_is_a_failure(capsys):
    refused = gexc.BadRequest("bad", errors=[{"reason": "invalid"}])
    report = collect(Compute({"us-central1-a": [disk()]}, delete_error=refused))
    assert (report.deleted, report.kept) == ([], {})
    assert report.failed == {"orphan": "BadRequest: 400 bad"}
    assert log(capsys)[0]["action"] == "failed"


@pytest.mark.parametrize(("error", "detail"), [
    (OperationError("disks.delete orphan", [("RESOURCE_IN_USE_BY_ANOTHER_RESOURCE", "in use")]),
     "OperationError: disks.delete orphan failed: RESOURCE_IN_USE_BY_ANOTHER_RESOURCE: in use"),
    (TimeoutError("not done after 300s"), "TimeoutError: not done after 300s"),
    (gexc.ServiceUnavailable("down"), "ServiceUnavailable: 503 down"),
])
def test_a_delete_that_does_not_finish_is_a_failure(error, detail):
    report = collect(Compute({"us-central1-a": [disk()]}, wait_error=error))
    assert (report.deleted, report.failed) == ([], {"orphan": detail})


def test_each_disk_gets_one_log_line_with_its_zone_owner_action_and_reason(capsys):
    collect(Compute({"us-central1-a": [disk("young", age_seconds=10), disk("orphan")]}))
    lines = log(capsys)
    assert lines[:2] == [
        {"event": "gc_disk", "zone": "us-central1-a", "disk": "young", "owner": OWNER, "action": "kept",
         "reason": "younger than the grace period (10s < 3600s)"},
        {"event": "gc_disk", "zone": "us-central1-a", "disk": "orphan", "owner": OWNER, "action": "deleted",
         "reason": "owner gone, unattached, past the grace period"},
    ]


def test_a_disk_without_an_owner_label_is_logged_with_an_empty_owner(capsys):
    collect(Compute({"us-central1-a": [disk(labels={"managed-by": "sd-gke"})]}))
    assert log(capsys)[0]["owner"] == ""


def test_the_summary_line_times_the_run_in_milliseconds(capsys, monkeypatch):
    readings = [10.0, 12.5]
    monkeypatch.setattr(gc.time, "monotonic", lambda: readings.pop(0))
    collect(Compute({}))
    assert log(capsys)[-1]["duration_ms"] == 2500


def test_the_run_ends_with_one_summary_line_of_counts(capsys):
    compute = Compute({"us-central1-a": [disk("young", age_seconds=10), disk("orphan")],
                       "us-central1-b": [disk("broken")]}, wait_error=TimeoutError("slow"))
    collect(compute, zones=("us-central1-a", "us-central1-b"))
    summary = log(capsys)[-1]
    assert isinstance(summary.pop("duration_ms"), int)
    assert summary == {"event": "gc", "zones": ["us-central1-a", "us-central1-b"], "deleted": 0, "kept": 1, "failed": 2}


def test_without_a_given_time_the_age_is_measured_from_now():
    fresh = compute_v1.Disk(name="fresh", labels=RUNTIME_LABELS, creation_timestamp=datetime.now(UTC).isoformat())
    report = gc.collect(Compute({"us-central1-a": [fresh]}), ("us-central1-a",), 3600)
    assert list(report.kept) == ["fresh"] and report.kept["fresh"].startswith("younger than the grace period")
