"""The agent's full pass against the fakes: success, restarts, races, faults, refusals."""

from __future__ import annotations

import json
import threading
from collections import Counter

import pytest
from attacher import agent, kube, names

from tests.attacher.conftest import (
    FRESH_NODE_CALLS,
    GPU_TAINT,
    HASH12,
    IMAGE,
    NODE,
    PROJECT,
    STARTUP_TAINT,
    ZONE,
    Harness,
    RuntimeContent,
    SimulatedCrash,
    log_lines,
    step_lines,
)

DISK = names.disk_name(NODE, HASH12)
MUTATING_OR_WAITING = {"compute.disks.insert", "compute.instances.attachDisk", "compute.zoneOperations.wait"}


def test_fresh_node_gets_one_disk_attached_mounted_read_only_verified_and_untainted(harness: Harness, capsys):
    assert harness.run_once() == 0

    harness.assert_converged()
    disk = harness.runtime_disks()[0]
    assert disk["labels"] == {"sdgke-owner": NODE, "sdgke-runtime-hash": HASH12, "managed-by": "sd-gke"}
    assert disk["sourceImage"].endswith(f"projects/{PROJECT}/global/images/{IMAGE}")
    assert disk["type"].endswith(f"zones/{ZONE}/diskTypes/pd-balanced")
    assert harness.compute_calls() == FRESH_NODE_CALLS
    assert harness.kube.calls() == [("GET", f"/api/v1/nodes/{NODE}"), ("PATCH", f"/api/v1/nodes/{NODE}")]
    assert sorted(set(harness.metadata.paths())) == [
        "instance/hostname", "instance/service-accounts/default/token", "instance/zone", "project/project-id"]


def test_attach_sets_auto_delete_in_the_attach_call_itself(harness: Harness):
    assert harness.run_once() == 0

    attach = [r for r in harness.compute.requests if r.api_method == "compute.instances.attachDisk"]
    assert [r.body for r in attach] == [{
        "source": harness.runtime_disks()[0]["selfLink"], "deviceName": "sd-runtime", "mode": "READ_WRITE",
        "autoDelete": True}]
    assert not [r for r in harness.compute.requests if r.api_method == "compute.instances.setDiskAutoDelete"]


def test_every_step_logs_one_json_line_with_its_duration(harness: Harness, capsys):
    assert harness.run_once() == 0

    lines = log_lines(capsys.readouterr().out)
    steps = [line for line in lines if line["event"] == "step"]
    assert [line["step"] for line in steps] == list(agent.STEPS)
    assert all(line["status"] == "ok" and isinstance(line["duration_ms"], int) for line in steps)
    assert lines[-1]["event"] == "pass" and lines[-1]["status"] == "ok"


def test_a_second_pass_on_a_ready_node_only_reads(harness: Harness, capsys):
    assert harness.run_once() == 0
    before, kube_before = len(harness.compute.requests), len(harness.kube.requests)
    capsys.readouterr()

    assert harness.run_once() == 0

    assert harness.compute_calls(before) == Counter({"compute.instances.get": 1, "compute.images.get": 1})
    # read at the start, and again before calling the taint absent (it may have been put back meanwhile)
    assert harness.kube.calls()[kube_before:] == [("GET", f"/api/v1/nodes/{NODE}")] * 2
    steps = step_lines(capsys.readouterr().out)
    assert steps["create_disk"]["status"] == steps["attach_disk"]["status"] == "skipped"
    assert steps["untaint"]["outcome"] == "absent"
    harness.assert_converged()


# Compute calls of the re-run after a crash at each step boundary: everything before the crash is
# reused, nothing is created twice.
RERUN_CALLS = {
    "identify": FRESH_NODE_CALLS,
    "inspect": FRESH_NODE_CALLS,
    "create_disk": Counter({"compute.instances.get": 1, "compute.images.get": 1, "compute.disks.insert": 1,
                            "compute.disks.get": 1, "compute.instances.attachDisk": 1,
                            "compute.zoneOperations.wait": 1}),
    "attach_disk": Counter({"compute.instances.get": 1, "compute.images.get": 1}),
    "wait_device": Counter({"compute.instances.get": 1, "compute.images.get": 1}),
    "mount": Counter({"compute.instances.get": 1, "compute.images.get": 1}),
    "verify": Counter({"compute.instances.get": 1, "compute.images.get": 1}),
    "untaint": Counter({"compute.instances.get": 1, "compute.images.get": 1}),
}


@pytest.mark.parametrize("crash_after", agent.STEPS)
def test_crash_after_any_step_then_restart_converges_without_a_second_disk(harness: Harness, crash_after: str):
    def crash(step: str) -> None:
        if step == crash_after:
            raise SimulatedCrash(step)

    with pytest.raises(SimulatedCrash):
        harness.run_once(after_step=crash)
    before = len(harness.compute.requests)

    assert harness.run_once() == 0

    assert harness.compute_calls(before) == RERUN_CALLS[crash_after]
    harness.assert_converged()


def test_two_agents_racing_on_one_node_end_with_one_disk_attached_once(harness: Harness, capsys):
    both_inspected = threading.Barrier(2, timeout=10)
    codes: list[int] = []

    def agent_run() -> None:
        codes.append(harness.run_once(after_step=lambda step: step == "inspect" and both_inspected.wait()))

    threads = [threading.Thread(target=agent_run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert codes == [0, 0]
    harness.assert_converged()
    calls = harness.compute_calls()
    assert calls["compute.disks.insert"] == 2  # one creates, the other gets 409 and reuses
    assert calls["compute.instances.attachDisk"] <= 2
    assert sum(calls[m] for m in MUTATING_OR_WAITING) <= 8
    assert sum(calls.values()) <= 16
    patches = [r for r in harness.kube.requests if r.method == "PATCH"]
    assert [r.status for r in patches if r.status == 200] == [200]
    lines = [line for line in log_lines(capsys.readouterr().out) if line["event"] == "step"]
    created = sorted(line.get("reused", False) for line in lines if line["step"] == "create_disk")
    assert created == [False, True]  # one agent created the disk, the twin got 409 and reused it
    raced = [line.get("raced", False) for line in lines if line["step"] == "attach_disk"]
    assert sorted(raced) == [False, True]  # one attached, the twin found it attached


@pytest.mark.parametrize(
    ("http_method", "path_regex", "status", "retried"),
    [
        ("POST", r"/zones/[^/]+/disks$", 503, "compute.disks.insert"),
        ("POST", r"/attachDisk$", 429, "compute.instances.attachDisk"),
        ("POST", r"/operations/[^/]+/wait$", 503, "compute.zoneOperations.wait"),
        ("GET", r"/instances/[^/]+$", 500, "compute.instances.get"),
        ("GET", r"/global/images/", 502, "compute.images.get"),
    ],
)
def test_transient_compute_errors_are_retried_once_each(harness, http_method, path_regex, status, retried):
    harness.compute.fail_next(method=http_method, path_regex=path_regex, status=status,
                              reason="rateLimitExceeded" if status == 429 else "backendError")

    assert harness.run_once() == 0

    assert harness.compute_calls() == FRESH_NODE_CALLS + Counter({retried: 1})
    harness.assert_converged()


def test_a_429_storm_longer_than_the_retry_budget_fails_clearly(harness: Harness, capsys):
    harness.compute.fail_next(method="POST", path_regex=r"/zones/[^/]+/disks$", status=429, times=50,
                              reason="rateLimitExceeded")

    assert harness.run_once() == 1

    steps = step_lines(capsys.readouterr().out)
    assert steps["create_disk"]["status"] == "failed"
    assert "TooManyRequests" in steps["create_disk"]["error"]
    assert harness.compute_calls()["compute.disks.insert"] == 8  # RetryPolicy.max_attempts
    assert harness.runtime_disks() == []
    assert harness.kube.taints(NODE) == [STARTUP_TAINT, GPU_TAINT]


def test_transient_metadata_and_kubernetes_errors_are_retried(harness: Harness):
    harness.metadata.fail_next(path_regex="instance/zone", status=503)
    harness.kube.fail_next(method="PATCH", status=503)
    harness.kube.fail_next(method="GET", status=429)

    assert harness.run_once() == 0

    assert [(r.method, r.status) for r in harness.kube.requests] == [
        ("GET", 429), ("GET", 200), ("PATCH", 503), ("PATCH", 200)]
    assert harness.compute_calls() == FRESH_NODE_CALLS
    harness.assert_converged()


def test_an_existing_disk_of_this_node_and_hash_is_reused_on_409(harness: Harness, capsys):
    harness.compute.fail_operation(kind="compute.instances.attachDisk", code="RESOURCE_NOT_FOUND")
    assert harness.run_once() == 1  # created the disk, attach failed: the disk stays for the next pass
    assert [d["name"] for d in harness.runtime_disks()] == [DISK]
    before = len(harness.compute.requests)
    capsys.readouterr()

    assert harness.run_once() == 0

    steps = step_lines(capsys.readouterr().out)
    assert steps["create_disk"]["reused"] is True
    assert harness.compute_calls(before) == RERUN_CALLS["create_disk"]
    harness.assert_converged()


def test_a_foreign_disk_with_the_same_name_is_not_reused(harness: Harness, capsys):
    from google.cloud import compute_v1

    disks = harness.compute.client(compute_v1.DisksClient)
    disks.insert(project=PROJECT, zone=ZONE, disk_resource=compute_v1.Disk(
        name=DISK, size_gb=20, labels={"sdgke-owner": "someone-else", "sdgke-runtime-hash": HASH12,
                                       "managed-by": "sd-gke"})).result()
    before = len(harness.compute.requests)

    assert harness.run_once() == 1

    steps = step_lines(capsys.readouterr().out)
    assert steps["create_disk"]["status"] == "failed"
    assert steps["create_disk"]["error"].endswith("; refusing to reuse it")
    assert "compute.instances.attachDisk" not in harness.compute_calls(before)
    assert harness.attached_runtime() == []
    assert harness.kube.taints(NODE) == [STARTUP_TAINT, GPU_TAINT]


def test_quota_exceeded_on_create_fails_clearly_and_leaves_no_disk(harness: Harness, capsys):
    harness.compute.fail_operation(kind="compute.disks.insert", code="QUOTA_EXCEEDED",
                                   message="Quota 'SSD_TOTAL_GB' exceeded. Limit: 500.0 in region us-central1.")

    assert harness.run_once() == 1

    out = capsys.readouterr().out
    steps = step_lines(out)
    assert steps["create_disk"]["status"] == "failed"
    assert "QUOTA_EXCEEDED: Quota 'SSD_TOTAL_GB' exceeded" in steps["create_disk"]["error"]
    assert log_lines(out)[-1] == {**log_lines(out)[-1], "event": "pass", "status": "failed", "step": "create_disk"}
    assert harness.runtime_disks() == []
    assert harness.compute_calls() == Counter({"compute.instances.get": 1, "compute.images.get": 1,
                                               "compute.disks.insert": 1, "compute.zoneOperations.wait": 1})
    assert harness.kube.taints(NODE) == [STARTUP_TAINT, GPU_TAINT]
    harness.assert_fakes_clean()


def test_a_missing_runtime_image_is_a_clear_error_and_creates_no_disk(harness: Harness, capsys, monkeypatch):
    monkeypatch.setenv("SDGKE_RUNTIME_IMAGE", f"projects/{PROJECT}/global/images/sd-runtime-000000000000")

    assert harness.run_once() == 1

    steps = step_lines(capsys.readouterr().out)
    assert steps["inspect"]["status"] == "failed"
    assert (f"runtime image projects/{PROJECT}/global/images/sd-runtime-000000000000 (SDGKE_RUNTIME_IMAGE) "
            "does not exist; no disk was created") in steps["inspect"]["error"]
    assert harness.compute_calls() == Counter({"compute.instances.get": 1, "compute.images.get": 1})
    assert harness.runtime_disks() == []
    harness.assert_fakes_clean()


def test_an_image_labelled_with_another_hash_is_refused_before_creating_a_disk(harness, capsys, monkeypatch):
    other = "aaaaaaaaaaaa"
    harness.compute.add_image(f"sd-runtime-{other}-mislabelled", labels={names.LABEL_HASH: other})
    monkeypatch.setenv("SDGKE_RUNTIME_IMAGE", f"projects/{PROJECT}/global/images/sd-runtime-{other}-mislabelled")

    assert harness.run_once() == 1

    error = step_lines(capsys.readouterr().out)["inspect"]["error"]
    assert f"carries label sdgke-runtime-hash={other}, but SDGKE_RUNTIME_HASH={HASH12}" in error
    assert harness.runtime_disks() == []


def test_a_wrong_manifest_hash_is_refused_loudly_and_the_taint_stays(harness: Harness, capsys):
    harness.udev.contents[IMAGE] = RuntimeContent("0123456789ab" + "0" * 52)

    assert harness.run_once() == 1

    steps = step_lines(capsys.readouterr().out)
    assert steps["verify"]["status"] == "failed"
    assert f"does not start with SDGKE_RUNTIME_HASH={HASH12}" in steps["verify"]["error"]
    assert "untaint" not in steps
    assert harness.kube.taints(NODE) == [STARTUP_TAINT, GPU_TAINT]
    assert [r.method for r in harness.kube.requests] == ["GET"]  # read at the start, never patched
    assert len(harness.attached_runtime()) == 1  # attached with autoDelete: it goes with the node


def test_a_runtime_without_the_ready_marker_is_refused(harness: Harness, capsys):
    harness.udev.contents[IMAGE] = RuntimeContent(harness.udev.contents[IMAGE].recipe_hash, ready_marker=False)

    assert harness.run_once() == 1

    assert "the bake of this runtime did not finish" in step_lines(capsys.readouterr().out)["verify"]["error"]
    assert harness.kube.taints(NODE) == [STARTUP_TAINT, GPU_TAINT]


def test_the_startup_taint_is_removed_even_if_other_taints_moved_meanwhile(harness: Harness):
    harness.kube.before_next_patch(lambda node: node["spec"]["taints"].insert(
        0, {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}))

    assert harness.run_once() == 0

    assert [r.status for r in harness.kube.requests if r.method == "PATCH"] == [422, 200]
    assert harness.kube.taints(NODE) == [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}, GPU_TAINT]
    harness.assert_fakes_clean()


def test_instance_deleted_mid_attach_fails_clearly_and_gc_removes_the_disk(harness: Harness, capsys):
    def node_vanishes(step: str) -> None:
        if step == "create_disk":
            harness.compute.remove_instance(NODE, zone=ZONE)

    assert harness.run_once(after_step=node_vanishes) == 1
    error = step_lines(capsys.readouterr().out)["attach_disk"]["error"]
    assert f"instance {NODE} vanished while attaching {DISK}" in error
    assert [d["name"] for d in harness.runtime_disks()] == [DISK]
    before = len(harness.compute.requests)

    assert harness.run_gc(grace_seconds=0) == 0

    assert harness.runtime_disks() == []
    assert harness.compute.disks() == []  # the node's boot disk went with it (autoDelete)
    assert harness.compute_calls(before) == Counter({"compute.disks.list": 1, "compute.instances.get": 1,
                                                     "compute.disks.delete": 1, "compute.zoneOperations.wait": 1})
    harness.assert_fakes_clean()


def test_operations_that_stay_running_are_waited_for_with_bounded_polls(harness: Harness):
    harness.compute.operation_polls_until_done = 2

    assert harness.run_once() == 0

    assert harness.compute_calls()["compute.zoneOperations.wait"] == 2 * 3
    harness.assert_converged()


def test_a_requested_disk_size_below_the_image_size_is_refused(harness: Harness, capsys, monkeypatch):
    monkeypatch.setenv("SDGKE_DISK_SIZE_GB", "10")

    assert harness.run_once() == 1

    assert "SDGKE_DISK_SIZE_GB=10 is smaller than runtime image" in step_lines(capsys.readouterr().out)["inspect"]["error"]
    assert harness.runtime_disks() == []


def test_disk_type_and_size_come_from_the_environment(harness: Harness, monkeypatch):
    monkeypatch.setenv("SDGKE_DISK_TYPE", "pd-ssd")
    monkeypatch.setenv("SDGKE_DISK_SIZE_GB", "200")

    assert harness.run_once() == 0

    disk = harness.runtime_disks()[0]
    assert (disk["type"].rsplit("/", 1)[-1], disk["sizeGb"]) == ("pd-ssd", "200")
    harness.assert_converged()


def test_a_node_already_carrying_the_runtime_disk_goes_straight_to_mounting(harness: Harness, capsys):
    assert harness.run_once() == 0
    harness.mount_path.unlink()  # e.g. the host rebooted: disk attached, not mounted
    harness.kube.add_node(NODE, taints=[STARTUP_TAINT, GPU_TAINT])
    before = len(harness.compute.requests)
    capsys.readouterr()

    assert harness.run_once() == 0

    assert "compute.disks.insert" not in harness.compute_calls(before)
    assert step_lines(capsys.readouterr().out)["mount"]["mounted_now"] is True
    harness.assert_converged()


def test_a_node_name_that_is_not_this_vm_is_refused_before_any_compute_call(harness, capsys, monkeypatch):
    monkeypatch.setenv("SDGKE_NODE_NAME", "gke-sdgke-gpu-pool-0a1b2c3d-othr")

    assert harness.run_once() == 1

    error = step_lines(capsys.readouterr().out)["identify"]["error"]
    assert f"SDGKE_NODE_NAME=gke-sdgke-gpu-pool-0a1b2c3d-othr but the metadata server says this VM is {NODE}" in error
    assert harness.compute.requests == [] and harness.kube.requests == []


def test_gpu_taint_is_never_touched(harness: Harness):
    assert harness.run_once() == 0

    patch = next(r for r in harness.kube.requests if r.method == "PATCH")
    assert patch.body == [{"op": "test", "path": "/spec/taints/0/key", "value": STARTUP_TAINT["key"]},
                          {"op": "remove", "path": "/spec/taints/0"}]
    assert harness.kube.taints(NODE) == [GPU_TAINT]


def test_a_disk_an_older_agent_attached_read_only_is_used_as_it_is_and_the_gc_collects_it(harness, capsys):
    """Before READ_WRITE, agents attached READ_ONLY; Compute Engine cannot auto-delete such a disk, so
    it is mounted as it is (never detached: pods may use it), flagged, and the GC removes it once the
    node is gone."""
    from google.cloud import compute_v1

    disks = harness.compute.client(compute_v1.DisksClient)
    disks.insert(project=PROJECT, zone=ZONE, disk_resource=compute_v1.Disk(
        name=DISK, source_image=f"projects/{PROJECT}/global/images/{IMAGE}",
        labels={"sdgke-owner": NODE, "sdgke-runtime-hash": HASH12, "managed-by": "sd-gke"})).result()
    harness.compute.client(compute_v1.InstancesClient).attach_disk(
        project=PROJECT, zone=ZONE, instance=NODE, attached_disk_resource=compute_v1.AttachedDisk(
            source=f"zones/{ZONE}/disks/{DISK}", device_name=names.DEVICE_NAME, mode="READ_ONLY")).result()
    before = len(harness.compute.requests)

    assert harness.run_once() == 0

    assert harness.compute_calls(before) == Counter({"compute.instances.get": 1, "compute.images.get": 1})
    assert [(a["mode"], a["autoDelete"]) for a in harness.attached_runtime()] == [("READ_ONLY", False)]
    assert harness.is_mounted() and harness.kube.taints(NODE) == [GPU_TAINT]
    warning = next(line for line in log_lines(capsys.readouterr().out) if line["event"] == "warning")
    assert f"{DISK} is attached READ_ONLY without autoDelete" in warning["message"]

    harness.compute.remove_instance(NODE, zone=ZONE)
    assert [d["name"] for d in harness.runtime_disks()] == [DISK]  # not auto-deleted
    assert harness.run_gc(grace_seconds=0) == 0
    assert harness.runtime_disks() == []
    harness.assert_fakes_clean()


def test_an_image_that_is_not_ready_is_refused_naming_its_status(harness: Harness, capsys, monkeypatch):
    harness.compute.add_image("sd-runtime-pending", labels={names.LABEL_HASH: HASH12}, status="PENDING")
    monkeypatch.setenv("SDGKE_RUNTIME_IMAGE", f"projects/{PROJECT}/global/images/sd-runtime-pending")

    assert harness.run_once() == 1

    assert step_lines(capsys.readouterr().out)["inspect"]["error"] == (
        f"AgentError: runtime image projects/{PROJECT}/global/images/sd-runtime-pending is PENDING, not READY")
    assert harness.runtime_disks() == []


def test_a_requested_disk_size_equal_to_the_image_size_is_accepted(harness: Harness, monkeypatch):
    monkeypatch.setenv("SDGKE_DISK_SIZE_GB", "20")  # the image is 20 GB

    assert harness.run_once() == 0

    assert harness.runtime_disks()[0]["sizeGb"] == "20"
    harness.assert_converged()


def test_a_failed_attach_names_the_disk_and_the_operation_error(harness: Harness, capsys):
    harness.compute.fail_operation(kind="compute.instances.attachDisk", code="RESOURCE_NOT_FOUND",
                                   message="The resource was not found.")

    assert harness.run_once() == 1

    assert step_lines(capsys.readouterr().out)["attach_disk"]["error"] == (
        f"OperationError: attachDisk {DISK} failed: RESOURCE_NOT_FOUND: The resource was not found.")


def test_the_attach_step_notes_how_many_operation_waits_it_took(harness: Harness, capsys):
    harness.compute.operation_polls_until_done = 2

    assert harness.run_once() == 0

    assert step_lines(capsys.readouterr().out)["attach_disk"]["operation_waits"] == 3


def done(harness: Harness, operation) -> None:
    """Wait for a test's own operation with zoneOperations.wait, as the agent does, so that a test acting
    inside a pass adds no method to those the pass is checked to call (conftest: the agent's role)."""
    from google.cloud import compute_v1

    operations = harness.compute.client(compute_v1.ZoneOperationsClient)
    status = operation.status
    while status != compute_v1.Operation.Status.DONE:
        status = operations.wait(project=PROJECT, zone=ZONE, operation=operation.name).status


def test_a_device_taken_by_another_disk_during_the_attach_is_reported_and_the_disk_left_for_the_gc(harness, capsys):
    from google.cloud import compute_v1

    def take_the_device(step: str) -> None:
        if step != "create_disk":
            return
        disks = harness.compute.client(compute_v1.DisksClient)
        done(harness, disks.insert(project=PROJECT, zone=ZONE, disk_resource=compute_v1.Disk(name="scratch", size_gb=20)))
        done(harness, harness.compute.client(compute_v1.InstancesClient).attach_disk(
            project=PROJECT, zone=ZONE, instance=NODE, attached_disk_resource=compute_v1.AttachedDisk(
                source=f"projects/{PROJECT}/zones/{ZONE}/disks/scratch", device_name=names.DEVICE_NAME)))

    assert harness.run_once(after_step=take_the_device) == 1  # what it then mounts is no runtime: verify refuses it

    lines = log_lines(capsys.readouterr().out)
    attach = next(line for line in lines if line["event"] == "step" and line["step"] == "attach_disk")
    assert (attach["raced"], attach["attached_disk"]) == (True, "scratch")
    warnings = [line for line in lines if line["event"] == "warning"]
    assert [(w["step"], w["message"]) for w in warnings] == [("attach_disk", (
        f"device sd-runtime holds disk scratch, not {DISK}; {DISK} stays unattached until the node is gone "
        "and the GC removes it"))]
    assert [a["source"].rsplit("/", 1)[-1] for a in harness.attached_runtime()] == ["scratch"]
    assert [line["step"] for line in lines if line.get("status") == "failed"] == ["verify", "verify"]
    assert harness.kube.taints(NODE) == [STARTUP_TAINT, GPU_TAINT]


def test_a_twin_that_attached_the_same_disk_first_raises_no_warning(harness: Harness, capsys):
    from google.cloud import compute_v1

    def attach_it_first(step: str) -> None:
        if step == "create_disk":
            done(harness, harness.compute.client(compute_v1.InstancesClient).attach_disk(
                project=PROJECT, zone=ZONE, instance=NODE, attached_disk_resource=compute_v1.AttachedDisk(
                    source=harness.runtime_disks()[0]["selfLink"], device_name=names.DEVICE_NAME,
                    mode="READ_WRITE", auto_delete=True)))

    assert harness.run_once(after_step=attach_it_first) == 0

    lines = log_lines(capsys.readouterr().out)
    assert step_lines("\n".join(json.dumps(line) for line in lines))["attach_disk"]["attached_disk"] == DISK
    assert [line for line in lines if line["event"] == "warning"] == []
    harness.assert_converged()


def test_the_startup_taint_is_removed_and_the_untaint_step_says_so(harness: Harness, capsys):
    assert harness.run_once() == 0

    assert step_lines(capsys.readouterr().out)["untaint"]["outcome"] == "removed"


def test_a_startup_taint_listed_twice_is_removed_both_times_in_one_patch(harness: Harness):
    harness.kube.add_node(NODE, taints=[STARTUP_TAINT, GPU_TAINT, STARTUP_TAINT])

    assert harness.run_once() == 0

    assert [r.status for r in harness.kube.requests if r.method == "PATCH"] == [200]
    assert harness.kube.taints(NODE) == [GPU_TAINT]


def test_a_409_conflict_on_the_untaint_patch_is_retried(harness: Harness):
    harness.kube.fail_next(method="PATCH", status=409)

    assert harness.run_once() == 0

    assert [r.status for r in harness.kube.requests if r.method == "PATCH"] == [409, 200]
    assert harness.kube.taints(NODE) == [GPU_TAINT]


def test_taints_that_keep_changing_fail_the_untaint_naming_the_node_and_the_attempts(harness: Harness, capsys):
    harness.kube.fail_next(method="PATCH", status=409, times=kube.CONFLICT_ATTEMPTS)

    assert harness.run_once() == 1

    assert step_lines(capsys.readouterr().out)["untaint"]["error"] == (
        f"RuntimeError: taints of node {NODE} changed under us {kube.CONFLICT_ATTEMPTS} times in a row")
    assert harness.kube.taints(NODE) == [STARTUP_TAINT, GPU_TAINT]
