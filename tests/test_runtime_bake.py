"""The runtime image provider bakes, adopts, retires and always cleans up, against the fake Compute API.

The provider runs with the real google-cloud-compute client against tests/fakes/compute/, which
checks every request and response against compute.v1. Every scenario ends with no builder VM, no
builder disk and no schema violation (`assert_clean_end`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pulumi
import pytest
from google.cloud import compute_v1

from components.runtime_bake.builder import (
    BUILDER_BOOT_DISK_GB,
    BUILDER_LABEL,
    STARTUP_SCRIPT,
    BakeSpec,
    builder_instance,
)
from components.runtime_bake.compute import BakeError, Pacing
from components.runtime_bake.provider import RuntimeImageProvider
from components.runtime_layout import HASH_LABEL, IMAGE_FAMILY
from tests.fakes.compute import FakeCompute

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "images" / "runtime" / "recipe.yaml"
P, Z, Z2 = "sdgke-test", "us-central1-a", "us-central1-b"
IDENTITY = hashlib.sha256(b"a recipe, a bake script and a base image").hexdigest()
HASH12 = IDENTITY[:12]
IMAGE = f"sd-runtime-{HASH12}"
BUILDER = f"sd-runtime-build-{HASH12}"
DIGEST = "sha256:" + "c" * 64
BASE = f"us-central1-docker.pkg.dev/{P}/sd-images/sd-base@{DIGEST}"
FAST = Pacing(poll_seconds=0.01, backoff_seconds=0.01, backoff_cap_seconds=0.04)
IMAGES_INSERT = r"/global/images$"


# ---- fixtures and helpers ------------------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeCompute]:
    with FakeCompute(project=P, zones=(Z, Z2)) as server:
        server.add_image("cos-stable-121-18867-0-94", family="cos-stable", project="cos-cloud", disk_size_gb=10)
        yield server


@pytest.fixture
def log() -> list[str]:
    return []


@pytest.fixture
def provider(log: list[str]) -> RuntimeImageProvider:
    return RuntimeImageProvider(FAST, report=log.append)


def props(fake: FakeCompute | None = None, **changes: Any) -> dict[str, Any]:
    """The dynamic resource's inputs as the engine passes them (numbers as floats), aimed at the fake."""
    return {
        "project": P, "zone": Z, "node_zones": [Z, Z2], "image_name": IMAGE, "family": IMAGE_FAMILY,
        "identity_hash": IDENTITY, "recipe_json": json.dumps({"python": "3.11"}), "bake_script": "print('bake')\n",
        "base_image": BASE, "subnetwork": f"projects/{P}/regions/us-central1/subnetworks/sd-subnet",
        "machine_type": "e2-standard-8", "disk_size_gb": 50.0, "timeout_seconds": 5.0,
        "service_account_email": f"sd-runtime-builder@{P}.iam.gserviceaccount.com",
        "compute_endpoint": fake.url if fake else None,
        **changes,
    }


def bake_progresses(fake: FakeCompute, *steps: dict[str, str]) -> None:
    """What the builder publishes, one more entry per poll of its guest attributes."""
    fake.script_guest_attributes(BUILDER, zone=Z, namespace="sd-bake", steps=list(steps))


def successful_bake(fake: FakeCompute) -> None:
    bake_progresses(fake, {"step": "format-disk", "status": "running"}, {"step": "venv", "status": "running"},
                    {"step": "torch", "status": "running"}, {"step": "unmount", "status": "running"},
                    {"status": "done"})


def builder_resources(fake: FakeCompute) -> list[str]:
    vms = [f"instance {i['name']}" for i in fake.instances() if i["name"].startswith("sd-runtime-build")]
    disks = [f"disk {d['name']}" for d in fake.disks()
             if d["name"].startswith("sd-runtime-build") or BUILDER_LABEL in d.get("labels", {})]
    return vms + disks


def assert_clean_end(fake: FakeCompute) -> None:
    assert builder_resources(fake) == []
    fake.assert_clean()


def calls(fake: FakeCompute, api_method: str) -> list[Any]:
    return [r for r in fake.requests if r.api_method == api_method]


def leave_builder_behind(fake: FakeCompute) -> None:
    """A builder VM and its disks as a run killed mid-bake leaves them (no finally ever ran)."""
    instances = fake.client(compute_v1.InstancesClient)
    spec = BakeSpec.from_props(props(fake))
    instances.insert(project=P, zone=Z, instance_resource=builder_instance(compute_v1, spec)).result(timeout=10)
    assert len(builder_resources(fake)) == 3


def runtime_disk(fake: FakeCompute, name: str, zone: str, hash12: str = HASH12) -> None:
    """A node's runtime disk, labelled as the disk attacher labels it."""
    disk = compute_v1.Disk(name=name, size_gb=50, labels={HASH_LABEL: hash12, "managed-by": "sd-gke"})
    fake.client(compute_v1.DisksClient).insert(project=P, zone=zone, disk_resource=disk).result(timeout=10)


# ---- create: success -----------------------------------------------------------------------------------------


def test_bake_makes_the_image_in_the_family_with_the_hash_label(fake, provider):
    successful_bake(fake)

    result = provider.create(props(fake))

    [image] = [i for i in fake.images() if i["name"] == IMAGE]
    assert image["family"] == "sd-runtime"
    assert image["labels"] == {HASH_LABEL: HASH12, "managed-by": "pulumi"}
    assert image["status"] == "READY"
    assert image["sourceDisk"].endswith(f"/zones/{Z}/disks/{BUILDER}-data")
    assert result.id == IMAGE
    assert result.outs["self_link"] == image["selfLink"]
    assert result.outs["size_gb"] == 50
    assert result.outs["identity_hash"] == IDENTITY
    assert_clean_end(fake)


def test_bake_reports_each_published_step_in_the_log(fake, provider, log):
    successful_bake(fake)

    provider.create(props(fake))

    steps = [line.split(": bake step ")[1] for line in log if ": bake step " in line]
    assert steps == ["format-disk: running", "venv: running", "torch: running", "unmount: running", "unmount: done"]
    assert_clean_end(fake)


def test_image_is_made_from_the_disk_of_a_stopped_builder_once_each_operation_is_done(fake, provider):
    successful_bake(fake)
    fake.operation_polls_until_done = 3  # a disk of a VM still RUNNING cannot become an image

    provider.create(props(fake))

    order = [r.api_method for r in fake.requests if r.mutating and r.status == 200]
    assert order.index("compute.instances.stop") < order.index("compute.images.insert")
    assert order.index("compute.images.insert") < order.index("compute.instances.delete")
    assert_clean_end(fake)


def test_builder_vm_has_no_external_ip_its_own_account_and_the_bake_in_its_metadata(fake, provider):
    successful_bake(fake)

    provider.create(props(fake))

    [insert] = [r for r in calls(fake, "compute.instances.insert") if r.status == 200]
    body = insert.body
    assert body["networkInterfaces"] == [{"subnetwork": f"projects/{P}/regions/us-central1/subnetworks/sd-subnet"}]
    assert body["serviceAccounts"] == [{"email": f"sd-runtime-builder@{P}.iam.gserviceaccount.com",
                                        "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}]
    boot, data = body["disks"]
    assert boot["boot"] and boot["autoDelete"]
    assert boot["initializeParams"]["sourceImage"] == "projects/cos-cloud/global/images/family/cos-stable"
    assert data["deviceName"] == "sd-runtime-build" and data["autoDelete"]
    assert data["initializeParams"]["diskSizeGb"] == "50"
    metadata = {item["key"]: item["value"] for item in body["metadata"]["items"]}
    assert metadata["enable-guest-attributes"] == "TRUE"
    assert metadata["sd-bake-script"] == "print('bake')\n"
    assert metadata["sd-bake-recipe"] == json.dumps({"python": "3.11"})
    assert metadata["startup-script"] == STARTUP_SCRIPT.read_text()
    assert_clean_end(fake)


def test_builder_boot_disk_is_sized_for_the_base_image_not_left_at_the_cos_images_10_gb(fake, provider):
    successful_bake(fake)

    provider.create(props(fake))

    [insert] = [r for r in calls(fake, "compute.instances.insert") if r.status == 200]
    boot = insert.body["disks"][0]
    assert boot["initializeParams"]["diskSizeGb"] == str(BUILDER_BOOT_DISK_GB)
    [cos] = [i for i in fake.images() if i.get("family") == "cos-stable"]  # the boot disk's size if none is given
    assert BUILDER_BOOT_DISK_GB >= 3 * int(cos["diskSizeGb"])
    assert_clean_end(fake)


# ---- create: failures ----------------------------------------------------------------------------------------


def test_bake_failure_names_the_step_and_reason_and_quotes_the_serial_tail(fake, provider):
    bake_progresses(fake, {"step": "venv", "status": "running"}, {"step": "models", "status": "running"},
                    {"status": "failed", "error": "bake failed at models: sha256 mismatch for v1-5.safetensors"})
    fake.set_serial_output(BUILDER, zone=Z, text="".join(f"console line {n}\n" for n in range(1, 101)))

    with pytest.raises(BakeError) as failure:
        provider.create(props(fake))

    message = str(failure.value)
    assert f"bake of {IMAGE} failed at step models: bake failed at models: sha256 mismatch" in message
    assert "console line 61\n" in message and message.endswith("console line 100")
    assert "console line 60\n" not in message
    assert [i["name"] for i in fake.images()] == ["cos-stable-121-18867-0-94"]
    assert_clean_end(fake)


def test_timeout_ends_the_bake_with_the_last_step_and_the_serial_tail(fake, provider):
    bake_progresses(fake, {"step": "torch", "status": "running"})
    fake.set_serial_output(BUILDER, zone=Z, text="Collecting torch==2.1.2\n")

    with pytest.raises(BakeError) as failure:
        provider.create(props(fake, timeout_seconds=0.2))

    message = str(failure.value)
    assert f"bake of {IMAGE} timed out after 0.2 s at step torch" in message
    assert message.endswith("Collecting torch==2.1.2")
    assert_clean_end(fake)


def test_quota_exceeded_on_the_builder_vm_fails_with_the_quota_message(fake, provider):
    fake.fail_operation(kind="compute.instances.insert", code="QUOTA_EXCEEDED",
                        message="Quota 'CPUS' exceeded.  Limit: 8.0 in region us-central1.")

    with pytest.raises(BakeError) as failure:
        provider.create(props(fake))

    assert str(failure.value) == (f"creating builder VM {BUILDER} in {Z} failed: QUOTA_EXCEEDED: "
                                  "Quota 'CPUS' exceeded.  Limit: 8.0 in region us-central1.")
    assert_clean_end(fake)


def test_a_storm_of_429_and_5xx_is_retried_and_the_bake_succeeds(fake, provider):
    successful_bake(fake)
    fake.fail_next(status=503, times=4)  # whatever comes first
    fake.fail_next(method="POST", path_regex=r"/zones/[^/]+/instances$", status=503, times=2)
    fake.fail_next(path_regex="getGuestAttributes", status=429, times=2, reason="rateLimitExceeded")
    fake.fail_next(method="POST", path_regex=r"/operations/.+/wait$", status=502, times=1)
    fake.fail_next(method="POST", path_regex=IMAGES_INSERT, status=500, times=2)

    result = provider.create(props(fake))

    assert result.outs["self_link"].endswith(f"/global/images/{IMAGE}")
    assert sum(r.status in (429, 500, 502, 503) for r in fake.requests) == 11
    inserts = calls(fake, "compute.instances.insert")
    assert [r.status for r in inserts] == [503, 503, 200]
    assert len({r.query["requestId"][0] for r in inserts}) == 1, "retries of one insert share its requestId"
    assert_clean_end(fake)


def test_a_rate_limit_403_is_retried(fake, provider):
    successful_bake(fake)
    fake.fail_next(method="POST", path_regex=IMAGES_INSERT, status=403, reason="rateLimitExceeded")

    provider.create(props(fake))

    assert [r.status for r in calls(fake, "compute.images.insert")] == [403, 200]
    assert_clean_end(fake)


def test_errors_beyond_the_retry_budget_fail_and_the_builder_is_still_removed(fake, provider):
    successful_bake(fake)
    fake.fail_next(method="POST", path_regex=IMAGES_INSERT, status=503, times=FAST.attempts)

    with pytest.raises(BakeError) as failure:
        provider.create(props(fake))

    assert str(failure.value).startswith(f"creating image {IMAGE}: still failing after {FAST.attempts} attempts: 503")
    assert len(calls(fake, "compute.images.insert")) == FAST.attempts
    assert_clean_end(fake)


def test_an_unreachable_api_is_retried_then_fails_saying_what_was_being_done(provider):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"

    with pytest.raises(BakeError) as failure:
        provider.delete(IMAGE, props(compute_endpoint=closed))

    assert str(failure.value).startswith(f"listing disks of runtime {HASH12} in {Z}: still failing after "
                                         f"{FAST.attempts} attempts: ")


def test_an_image_of_the_same_name_with_another_hash_is_refused_before_any_vm(fake, provider):
    fake.add_image(IMAGE, family=IMAGE_FAMILY, labels={HASH_LABEL: "0123456789ab"})

    with pytest.raises(BakeError) as failure:
        provider.create(props(fake))

    assert str(failure.value) == (f"image {IMAGE} exists with label {HASH_LABEL}='0123456789ab', expected "
                                  f"'{HASH12}': it was not made by this program; delete or rename it")
    assert calls(fake, "compute.instances.insert") == []
    assert_clean_end(fake)


# ---- crashes and re-runs -------------------------------------------------------------------------------------


def test_a_crash_at_image_creation_removes_the_builder_and_a_rerun_converges(fake, provider):
    successful_bake(fake)
    fake.fail_next(method="POST", path_regex=IMAGES_INSERT, status=400, reason="invalid")

    with pytest.raises(BakeError, match=f"^creating image {IMAGE}: 400 POST"):
        provider.create(props(fake))
    assert_clean_end(fake)
    assert IMAGE not in [i["name"] for i in fake.images()]

    successful_bake(fake)
    result = provider.create(props(fake))

    assert result.outs["self_link"].endswith(f"/global/images/{IMAGE}")
    assert_clean_end(fake)


def test_a_rerun_after_a_kill_mid_bake_deletes_the_leftover_builder_and_bakes_again(fake, provider, log):
    leave_builder_behind(fake)
    successful_bake(fake)
    requests_before = len(fake.requests)

    result = provider.create(props(fake))

    done = [r.api_method for r in fake.requests[requests_before:] if r.mutating and r.status == 200]
    assert done.index("compute.instances.delete") < done.index("compute.instances.insert")
    assert f"{IMAGE}: deleting builder VM {BUILDER} (left by an earlier run)" in log
    assert result.outs["self_link"].endswith(f"/global/images/{IMAGE}")
    assert_clean_end(fake)


def test_a_rerun_after_a_kill_after_image_creation_adopts_the_image(fake, provider, log):
    seeded = fake.add_image(IMAGE, family=IMAGE_FAMILY, labels={HASH_LABEL: HASH12, "managed-by": "pulumi"},
                            disk_size_gb=50)
    leave_builder_behind(fake)
    requests_before = len(fake.requests)

    result = provider.create(props(fake))

    assert result.outs["self_link"] == seeded["selfLink"]
    assert result.outs["size_gb"] == 50
    assert [r.api_method for r in fake.requests[requests_before:] if r.api_method.endswith("insert")] == []
    assert f"{IMAGE}: adopting the existing image (label {HASH_LABEL}={HASH12})" in log
    assert_clean_end(fake)


def test_a_failed_image_left_by_an_earlier_run_is_deleted_and_baked_again(fake, provider):
    fake.add_image(IMAGE, family=IMAGE_FAMILY, labels={HASH_LABEL: HASH12}, status="FAILED")
    successful_bake(fake)

    provider.create(props(fake))

    [image] = [i for i in fake.images() if i["name"] == IMAGE]
    assert image["status"] == "READY" and image["sourceDisk"].endswith(f"/disks/{BUILDER}-data")
    assert_clean_end(fake)


# ---- delete, read, diff, update ------------------------------------------------------------------------------


def test_delete_without_runtime_disks_deletes_the_image(fake, provider):
    fake.add_image(IMAGE, family=IMAGE_FAMILY, labels={HASH_LABEL: HASH12})
    runtime_disk(fake, "node-of-another-runtime", Z2, hash12="0123456789ab")

    provider.delete(IMAGE, props(fake))

    assert IMAGE not in [i["name"] for i in fake.images()]
    assert_clean_end(fake)


def test_delete_while_runtime_disks_exist_deprecates_the_image_instead(fake, provider, log):
    fake.add_image(IMAGE, family=IMAGE_FAMILY, labels={HASH_LABEL: HASH12})
    runtime_disk(fake, "gke-sd-gpu-node-1-sd-runtime", Z2)

    provider.delete(IMAGE, props(fake))

    [image] = [i for i in fake.images() if i["name"] == IMAGE]
    assert image["deprecated"]["state"] == "DEPRECATED"
    assert any("deprecating instead of deleting: 1 disk(s)" in line and f"{Z2}/gke-sd-gpu-node-1-sd-runtime" in line
               for line in log)
    assert_clean_end(fake)


def test_delete_of_an_image_already_gone_succeeds(fake, provider, log):
    provider.delete(IMAGE, props(fake))

    assert log == [f"{IMAGE}: already deleted"]
    assert_clean_end(fake)


def test_read_of_a_deleted_image_reports_it_gone(fake, provider):
    assert provider.read(IMAGE, props(fake)).id is None
    assert_clean_end(fake)


@pytest.mark.parametrize("key, value", [
    ("identity_hash", "f" * 64), ("image_name", "sd-runtime-ffffffffffff"), ("project", "other-project"),
    ("family", "other-family"),
])
def test_diff_replaces_when_the_image_identity_changes(fake, provider, key, value):
    olds = {**props(fake), "self_link": "https://x/images/a", "size_gb": 50}

    diff = provider.diff(IMAGE, olds, props(fake, **{key: value}))

    assert diff.changes and diff.replaces == [key]


@pytest.mark.parametrize("key, value", [
    ("timeout_seconds", 7200.0), ("machine_type", "n2-standard-16"), ("disk_size_gb", 80.0),
    ("node_zones", [Z]), ("compute_endpoint", None),
])
def test_diff_updates_in_place_when_only_build_settings_change(fake, provider, key, value):
    olds = {**props(fake), "self_link": "https://x/images/a", "size_gb": 50}

    diff = provider.diff(IMAGE, olds, props(fake, **{key: value}))

    assert diff.changes and diff.replaces == []


def test_diff_of_unchanged_inputs_is_no_change(fake, provider):
    olds = {**props(fake), "self_link": "https://x/images/a", "size_gb": 50}

    diff = provider.diff(IMAGE, olds, props(fake))

    assert not diff.changes and diff.replaces == []


def test_replacing_with_the_same_image_name_deletes_the_old_one_first(fake, provider):
    olds = {**props(fake), "self_link": "https://x/images/a", "size_gb": 50}

    assert provider.diff(IMAGE, olds, props(fake, family="other-family")).delete_before_replace
    assert not provider.diff(IMAGE, olds, props(fake, identity_hash="f" * 64,
                                                image_name="sd-runtime-ffffffffffff")).delete_before_replace


def test_update_keeps_the_image_and_takes_the_new_settings(fake, provider):
    olds = {**props(fake), "self_link": "https://x/images/a", "size_gb": 50}

    outs = provider.update(IMAGE, olds, props(fake, timeout_seconds=7200.0)).outs

    assert outs["self_link"] == "https://x/images/a" and outs["size_gb"] == 50
    assert outs["timeout_seconds"] == 7200.0
    assert fake.requests == []


# ---- the provider in the engine's state ---------------------------------------------------------------------


PROVIDER_LOADER = ("import base64, sys, dill; p = dill.loads(base64.b64decode(sys.stdin.read())); "
                   "print(type(p).__module__, type(p).__name__, p.pacing.poll_seconds, p.report.__module__)")
PROVIDER_STORED_BEFORE_THE_SPLIT = (
    "gASV2QAAAAAAAACMGGNvbXBvbmVudHMucnVudGltZV9pbWFnZZSMFFJ1bnRpbWVJbWFnZVByb3ZpZGVylJOUKYGUfZQojAZwYWNpbmeUaACMBlBh"
    "Y2luZ5STlCmBlH2UKIwIYXR0ZW1wdHOUSweME2JhY2tvZmZfY2FwX3NlY29uZHOUR0A+AAAAAAAAjA9iYWNrb2ZmX3NlY29uZHOURz/wAAAAAAAA"
    "jAxwb2xsX3NlY29uZHOUR0AUAAAAAAAAdWKMBnJlcG9ydJSMCnB1bHVtaS5sb2eUjARpbmZvlJOUdWIu"
)
"""The __provider of an image made while the provider lived in components/runtime_image.py (serialize_provider
at commit d19ddf2): it names components.runtime_image.RuntimeImageProvider and components.runtime_image.Pacing."""


def load_provider_in_a_fresh_process(serialized: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", PROVIDER_LOADER], input=serialized, capture_output=True, text=True,
                          cwd=ROOT, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_the_provider_is_pickled_by_reference_and_loads_in_a_fresh_process():
    serialized = pulumi.dynamic.dynamic.serialize_provider(RuntimeImageProvider())

    loaded = load_provider_in_a_fresh_process(serialized)

    assert loaded == ["components.runtime_bake.provider", "RuntimeImageProvider", "5.0", "pulumi.log"]
    assert b"RuntimeImageProvider" in base64.b64decode(serialized)


def test_a_provider_stored_before_the_split_still_loads_as_the_provider_of_today():
    assert b"components.runtime_image" in base64.b64decode(PROVIDER_STORED_BEFORE_THE_SPLIT)

    loaded = load_provider_in_a_fresh_process(PROVIDER_STORED_BEFORE_THE_SPLIT)

    assert loaded == ["components.runtime_bake.provider", "RuntimeImageProvider", "5.0", "pulumi.log"]


def test_a_provider_stored_before_the_split_differs_from_today_s_in_nothing_the_diff_sees(fake, provider):
    olds = {**props(fake), "__provider": PROVIDER_STORED_BEFORE_THE_SPLIT, "self_link": "https://x/images/a",
            "size_gb": 50}
    news = {**props(fake), "__provider": pulumi.dynamic.dynamic.serialize_provider(RuntimeImageProvider())}
    assert olds["__provider"] != news["__provider"]

    diff = provider.diff(IMAGE, olds, news)

    assert not diff.changes and diff.replaces == []
