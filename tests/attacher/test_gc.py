"""The garbage collector: deletes only labelled, unattached, old disks whose owner is gone."""

from __future__ import annotations

from collections import Counter

import pytest
from attacher import names
from google.cloud import compute_v1

from tests.attacher.conftest import NODE, PROJECT, ZONE, Harness, log_lines

OTHER_ZONE = "us-central1-b"
GONE = "gke-sdgke-gpu-pool-0a1b2c3d-gone"


def make_disk(harness: Harness, name: str, *, zone: str = ZONE, labels: dict[str, str] | None = None) -> None:
    disks = harness.compute.client(compute_v1.DisksClient)
    disks.insert(project=PROJECT, zone=zone, disk_resource=compute_v1.Disk(name=name, size_gb=20, labels=labels or {})
                 ).result()


def runtime_labels(owner: str) -> dict[str, str]:
    return names.disk_labels(owner, "3f9a1c2b7d4e")


def disk_names(harness: Harness) -> set[str]:
    return {disk["name"] for disk in harness.compute.disks()}


def gc_lines(output: str) -> dict[str, dict]:
    return {line["disk"]: line for line in log_lines(output) if line["event"] == "gc_disk"}


def test_an_orphaned_disk_is_deleted_with_bounded_calls(harness: Harness, capsys):
    make_disk(harness, "orphan", labels=runtime_labels(GONE))
    before = len(harness.compute.requests)

    assert harness.run_gc(grace_seconds=0) == 0

    assert disk_names(harness) == {NODE}
    assert harness.compute_calls(before) == Counter({"compute.disks.list": 1, "compute.instances.get": 1,
                                                     "compute.disks.delete": 1, "compute.zoneOperations.wait": 1})
    assert gc_lines(capsys.readouterr().out)["orphan"]["action"] == "deleted"
    harness.assert_fakes_clean()


def test_an_attached_disk_is_never_deleted_even_if_its_owner_is_gone(harness: Harness, capsys):
    make_disk(harness, "attached-elsewhere", labels=runtime_labels(GONE))
    instances = harness.compute.client(compute_v1.InstancesClient)
    instances.attach_disk(project=PROJECT, zone=ZONE, instance=NODE, attached_disk_resource=compute_v1.AttachedDisk(
        source=f"projects/{PROJECT}/zones/{ZONE}/disks/attached-elsewhere", device_name="x", mode="READ_ONLY")).result()
    before = len(harness.compute.requests)

    assert harness.run_gc(grace_seconds=0) == 0

    assert "attached-elsewhere" in disk_names(harness)
    assert gc_lines(capsys.readouterr().out)["attached-elsewhere"]["reason"] == "attached"
    assert "compute.disks.delete" not in harness.compute_calls(before)


def test_disks_not_labelled_by_sd_gke_are_never_touched(harness: Harness, capsys):
    make_disk(harness, "someone-elses", labels={"sdgke-owner": GONE})
    make_disk(harness, "managed-without-owner", labels={"managed-by": "sd-gke"})
    before = len(harness.compute.requests)

    assert harness.run_gc(grace_seconds=0) == 0

    assert {"someone-elses", "managed-without-owner"} <= disk_names(harness)
    lines = gc_lines(capsys.readouterr().out)
    assert "someone-elses" not in lines  # filtered out by the list call itself
    assert lines["managed-without-owner"]["reason"] == "no sdgke-owner label"
    assert harness.compute_calls(before) == Counter({"compute.disks.list": 1})
    list_call = next(r for r in harness.compute.requests[before:] if r.api_method == "compute.disks.list")
    assert list_call.query["filter"] == ["labels.managed-by=sd-gke"]


def test_a_disk_younger_than_the_grace_period_is_kept(harness: Harness, capsys):
    make_disk(harness, "just-created", labels=runtime_labels(GONE))

    assert harness.run_gc(grace_seconds=3600) == 0

    assert "just-created" in disk_names(harness)
    assert gc_lines(capsys.readouterr().out)["just-created"]["reason"].startswith("younger than the grace period")


def test_a_disk_whose_owner_still_exists_is_kept(harness: Harness, capsys):
    make_disk(harness, "about-to-be-attached", labels=runtime_labels(NODE))

    assert harness.run_gc(grace_seconds=0) == 0

    assert "about-to-be-attached" in disk_names(harness)
    assert gc_lines(capsys.readouterr().out)["about-to-be-attached"]["reason"] == f"owner {NODE} exists"


def test_every_zone_in_sdgke_zones_is_scanned(harness: Harness, monkeypatch):
    make_disk(harness, "orphan-a", labels=runtime_labels(GONE))
    make_disk(harness, "orphan-b", zone=OTHER_ZONE, labels=runtime_labels(GONE))
    monkeypatch.setenv("SDGKE_ZONES", f"{ZONE},{OTHER_ZONE}")

    assert harness.run_gc(grace_seconds=0) == 0

    assert disk_names(harness) == {NODE}


def test_without_sdgke_zones_only_the_metadata_zone_is_scanned(harness: Harness, monkeypatch):
    make_disk(harness, "orphan-b", zone=OTHER_ZONE, labels=runtime_labels(GONE))
    monkeypatch.delenv("SDGKE_ZONES")
    before = len(harness.compute.requests)

    assert harness.run_gc(grace_seconds=0) == 0

    assert "orphan-b" in disk_names(harness)
    lists = [r.path for r in harness.compute.requests[before:] if r.api_method == "compute.disks.list"]
    assert lists == [f"/compute/v1/projects/{PROJECT}/zones/{ZONE}/disks"]


def test_a_disk_attached_between_list_and_delete_is_kept(harness: Harness, capsys):
    make_disk(harness, "orphan", labels=runtime_labels(GONE))
    harness.compute.fail_next(method="DELETE", path_regex="/disks/orphan$", status=400,
                              reason="resourceInUseByAnotherResource")

    assert harness.run_gc(grace_seconds=0) == 0

    line = gc_lines(capsys.readouterr().out)["orphan"]
    assert (line["action"], line["reason"]) == ("kept", "attached meanwhile")
    assert "orphan" in disk_names(harness)


def test_a_failed_delete_makes_the_run_fail_and_is_reported(harness: Harness, capsys):
    make_disk(harness, "orphan", labels=runtime_labels(GONE))
    harness.compute.fail_operation(kind="compute.disks.delete", code="RESOURCE_IN_USE_BY_ANOTHER_RESOURCE")

    assert harness.run_gc(grace_seconds=0) == 1

    line = gc_lines(capsys.readouterr().out)["orphan"]
    assert line["action"] == "failed" and "RESOURCE_IN_USE_BY_ANOTHER_RESOURCE" in line["reason"]


def test_a_transient_list_error_is_retried(harness: Harness):
    make_disk(harness, "orphan", labels=runtime_labels(GONE))
    harness.compute.fail_next(method="GET", path_regex=r"/zones/[^/]+/disks$", status=503)

    assert harness.run_gc(grace_seconds=0) == 0

    assert disk_names(harness) == {NODE}


@pytest.mark.parametrize(
    ("env", "argv", "message"),
    [
        ({"SDGKE_ZONES": "us-central1"}, ["--grace-seconds", "0"],
         "SDGKE_ZONES='us-central1': must be a comma-separated list of zones like us-central1-a"),
        ({}, ["--grace-seconds", "-5"], "--grace-seconds=-5: must be 0 or more"),
    ],
)
def test_bad_gc_settings_exit_2_naming_the_value(harness: Harness, capsys, monkeypatch, env, argv, message):
    from attacher import __main__ as cli

    for key, value in env.items():
        monkeypatch.setenv(key, value)

    assert cli.main(["gc", *argv]) == 2

    (line,) = log_lines(capsys.readouterr().out)
    assert line["event"] == "config" and line["problems"] == [message]
