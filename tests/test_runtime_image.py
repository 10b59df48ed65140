"""RuntimeDiskImage: the provider bakes, adopts, retires and always cleans up, against the fake Compute API.

The provider runs with the real google-cloud-compute client against tests/fakes/compute/, which
checks every request and response against compute.v1. Every scenario ends with no builder VM, no
builder disk and no schema violation (`assert_clean_end`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pulumi
import pytest
from google.cloud import compute_v1

from components.recipe import BAKE_SCRIPT, load_recipe, parse_recipe
from components.runtime_bake.builder import (
    BAKE_STATE_DIR,
    BUILDER_BOOT_DISK_GB,
    BUILDER_DEVICE,
    BUILDER_LABEL,
    STARTUP_SCRIPT,
    BakeSpec,
    builder_instance,
    builder_metadata,
)
from components.runtime_bake.compute import BakeError, Pacing
from components.runtime_bake.provider import RuntimeImageProvider
from components.runtime_identity import runtime_identity
from components.runtime_image import RuntimeDiskImage, RuntimeDiskImageArgs
from components.runtime_layout import HASH_LABEL, IMAGE_FAMILY
from components.source import load_source
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


def test_builder_settings_travel_as_metadata_beside_the_unchanged_startup_script():
    metadata = builder_metadata(BakeSpec.from_props(props()))

    assert metadata["startup-script"] == STARTUP_SCRIPT.read_text()
    assert {k: v for k, v in metadata.items() if k.startswith("sd-bake-") and k not in ("sd-bake-script", "sd-bake-recipe")} == {
        "sd-bake-namespace": "sd-bake", "sd-bake-image": BASE, "sd-bake-digest": DIGEST, "sd-bake-python": "python3.11",
        "sd-bake-expected-hash": IDENTITY, "sd-bake-runtime": "/runtime", "sd-bake-state-dir": ".bake",
    }
    assert re.findall(r"metadata (sd-bake-[a-z-]+)", STARTUP_SCRIPT.read_text()) == [
        "sd-bake-namespace", "sd-bake-image", "sd-bake-digest", "sd-bake-python", "sd-bake-expected-hash",
        "sd-bake-runtime", "sd-bake-state-dir", "sd-bake-script", "sd-bake-recipe"]


def test_startup_script_mounts_the_data_disk_by_the_device_name_the_vm_gives_it():
    assert re.findall(r"^DEVICE=(\S+)", STARTUP_SCRIPT.read_text(), flags=re.MULTILINE) == [
        f"/dev/disk/by-id/google-{BUILDER_DEVICE}"]


def test_the_bakes_temporary_files_go_to_the_bakes_own_state_directory():
    bake = load_source(BAKE_SCRIPT, "bake_for_the_builder_contract")
    assert BAKE_STATE_DIR == bake.STATE


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


# ---- the builder's startup script ----------------------------------------------------------------------------

STUB_CURL = """\
import json, os, sys
args = sys.argv[1:]
url = args[-1]
with open(sys.argv[0] + ".log", "a") as log:
    if "PUT" in args:
        log.write(f"{url.rsplit('/', 1)[1]}={sys.stdin.read()}\\n")
    else:
        metadata = json.loads(os.environ["METADATA"])
        name = url.rsplit("/", 1)[1]
        if name not in metadata:
            sys.exit(22)  # curl -f on the metadata server's 404
        sys.stdout.write(metadata[name])
"""

STUB_DOCKER = """\
import os, sys
log_path = sys.argv[0] + ".log"
with open(log_path, "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
if sys.argv[1] == "pull":
    pulls = sum(line.startswith("pull ") for line in open(log_path))
    sys.exit(1 if pulls <= int(os.environ["PULL_FAILURES"]) else 0)
if sys.argv[1] == "run":
    for line in os.environ["BAKE_OUTPUT"].split("|"):
        print(line, flush=True)
    sys.exit(int(os.environ["BAKE_STATUS"]))
"""


def run_startup_script(tmp_path: Path, bake_output: list[str], bake_status: int,
                       pull_failures: int = 0) -> tuple[int, Path]:
    """Run images/runtime/builder-startup.sh with stub system tools in place of COS's and the metadata server
    (which serves the builder's metadata as the provider sets it)."""
    bin_dir, work, mount, device = tmp_path / "bin", tmp_path / "work", tmp_path / "mnt", tmp_path / "device"
    bin_dir.mkdir()
    device.touch()
    for name, code in (("curl", STUB_CURL), ("docker", STUB_DOCKER)):
        (bin_dir / name).write_text(f"#!{sys.executable}\n{code}")
    for name, status in (("blkid", 2), ("mountpoint", 1), ("docker-credential-gcr", 0), ("mkfs.ext4", 0),
                         ("mount", 0), ("umount", 0), ("fstrim", 0), ("sleep", 0)):
        (bin_dir / name).write_text(f'#!/bin/bash\necho "{name} $*" >> "$0.log"\nexit {status}\n')
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    script = STARTUP_SCRIPT.read_text()
    for key, value in (("DEVICE", device), ("MOUNT", mount), ("WORK", work), ("CONSOLE", tmp_path / "console")):
        script, count = re.subn(rf"^{key}=\S*", f"{key}={value}", script, flags=re.MULTILINE)
        assert count == 1, f"the script sets {key} once"
    (tmp_path / "startup.sh").write_text(script)
    metadata = builder_metadata(BakeSpec.from_props(props()))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "BAKE_OUTPUT": "|".join(bake_output),
           "BAKE_STATUS": str(bake_status), "PULL_FAILURES": str(pull_failures), "METADATA": json.dumps(metadata)}
    done = subprocess.run(["bash", str(tmp_path / "startup.sh")], env=env, capture_output=True, text=True,
                          timeout=30, check=False)
    return done.returncode, bin_dir


def published(bin_dir: Path) -> list[str]:
    return (bin_dir / "curl.log").read_text().splitlines()


def test_startup_script_is_shellcheck_clean():
    from tools.checks import run_shellcheck

    assert [str(finding) for finding in run_shellcheck([STARTUP_SCRIPT])] == []


def test_shellcheck_reports_what_it_finds(tmp_path):
    from tools.checks import run_shellcheck

    script = tmp_path / "bad.sh"
    script.write_text('#!/bin/bash\nf() { local x=$(date); echo $x; }\nf\n')
    assert {finding.code for finding in run_shellcheck([script])} == {"SC2155", "SC2086"}


def test_startup_script_publishes_each_step_then_done_and_runs_the_bake_in_the_base_image(tmp_path):
    output = ["sd-bake-progress webui running", '{"step": "webui", "status": "done", "seconds": 1.0}',
              "sd-bake-progress webui done", "sd-bake-progress venv running", "sd-bake-progress venv done"]

    status, bin_dir = run_startup_script(tmp_path, output, 0)

    assert status == 0
    steps = ["format-disk", "pull-base-image", "webui", "venv", "unmount"]
    assert published(bin_dir) == [line for s in steps for line in (f"step={s}", "status=running")] + ["status=done"]
    run = (bin_dir / "docker.log").read_text().splitlines()[-1]
    assert run == (f"run --rm --user 0:0 --env TMPDIR=/runtime/.bake --volume {tmp_path}/mnt:/runtime "
                   f"--volume {tmp_path}/work:/bake:ro {BASE} "
                   f"python3.11 /bake/bake.py --recipe /bake/recipe.json --root /runtime --base-image-digest {DIGEST} "
                   f"--expected-hash {IDENTITY} --progress-cmd echo sd-bake-progress")
    assert (tmp_path / "work" / "bake.py").read_text() == "print('bake')\n"
    assert json.loads((tmp_path / "work" / "recipe.json").read_text()) == {"python": "3.11"}
    assert (bin_dir / "docker-credential-gcr.log").read_text() == \
        "docker-credential-gcr configure-docker --registries=us-central1-docker.pkg.dev\n"
    assert (bin_dir / "umount.log").read_text() == f"umount {tmp_path}/mnt\n"


def test_startup_script_publishes_the_bakes_failure_line_and_leaves_the_disk_mounted(tmp_path):
    output = ["sd-bake-progress models running", "sd-bake-progress models failed",
              "bake failed at models: sha256 mismatch for v1-5.safetensors"]

    status, bin_dir = run_startup_script(tmp_path, output, 1)

    assert status == 1
    assert published(bin_dir)[-4:] == ["step=models", "status=running",
                                       "error=bake failed at models: sha256 mismatch for v1-5.safetensors",
                                       "status=failed"]
    assert not (bin_dir / "umount.log").exists()


def test_startup_script_retries_the_pull_with_backoff_while_the_builders_iam_grant_propagates(tmp_path):
    status, bin_dir = run_startup_script(tmp_path, ["sd-bake-progress venv running"], 0, pull_failures=3)

    assert status == 0
    docker = (bin_dir / "docker.log").read_text().splitlines()
    assert [line.split()[0] for line in docker] == ["pull", "pull", "pull", "pull", "run"]
    assert (bin_dir / "sleep.log").read_text().splitlines() == ["sleep 5", "sleep 10", "sleep 20"]
    assert published(bin_dir)[-1] == "status=done"


def test_startup_script_stops_pulling_after_the_bound_and_says_what_to_check(tmp_path):
    status, bin_dir = run_startup_script(tmp_path, [], 0, pull_failures=1000)

    assert status == 1
    sleeps = [int(line.split()[1]) for line in (bin_dir / "sleep.log").read_text().splitlines()]
    assert sleeps[:5] == [5, 10, 20, 40, 60] and set(sleeps[5:]) == {60}
    assert 900 <= sum(sleeps) < 900 + 60, "retried for the 15 minutes IAM propagation may take, no longer"
    assert not any(line.startswith("run ") for line in (bin_dir / "docker.log").read_text().splitlines())
    assert published(bin_dir)[-2:] == [
        f"error=docker pull {BASE} still failed after {sum(sleeps)} s of retries: check that the builder service "
        "account has roles/artifactregistry.reader and that the image exists",
        "status=failed"]


# ---- the component under Pulumi mocks and the identity --------------------------------------------------------


class _Recorder(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(args)
        state = dict(args.inputs)
        if args.typ == "gcp:serviceaccount/account:Account":
            state["email"] = f"{args.inputs['accountId']}@{P}.iam.gserviceaccount.com"
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        raise NotImplementedError(args.token)


def component_args(**changes: Any) -> RuntimeDiskImageArgs:
    args = RuntimeDiskImageArgs(project=P, zone=Z, recipe_path=RECIPE, base_image=BASE, base_python="3.11",
                                subnetwork=f"projects/{P}/regions/us-central1/subnetworks/sd-subnet",
                                machine_type="e2-standard-8", disk_size_gb=50, timeout_minutes=90, node_zones=[Z, Z2])
    return replace(args, **changes)


@pytest.fixture
def mocks() -> _Recorder:
    recorder = _Recorder()
    pulumi.runtime.set_mocks(recorder, project="sd-gke", stack="test", preview=False)
    return recorder


@pulumi.runtime.test
def test_component_registers_the_image_with_its_identity_hash(mocks):
    component = RuntimeDiskImage("sd-runtime", component_args())
    expected = runtime_identity(load_recipe(RECIPE), BAKE_SCRIPT.read_bytes(), BASE)

    def check(values: list[Any]) -> None:
        identity, hash12, name = values
        [image] = [r for r in mocks.resources if r.typ == "pulumi-python:dynamic:Resource"]
        assert image.name == "sd-runtime-image"
        assert image.inputs["identity_hash"] == identity == expected
        assert image.inputs["image_name"] == name == f"sd-runtime-{expected[:12]}"
        assert hash12 == expected[:12]
        assert image.inputs["timeout_seconds"] == 90 * 60
        assert image.inputs["service_account_email"] == f"sd-runtime-builder@{P}.iam.gserviceaccount.com"
        roles = sorted(r.inputs["role"] for r in mocks.resources if r.typ == "gcp:projects/iAMMember:IAMMember")
        assert roles == ["roles/artifactregistry.reader", "roles/logging.logWriter"]
        types = {r.typ for r in mocks.resources}
        assert "sdgke:runtime_image:RuntimeDiskImage" in types

    return pulumi.Output.all(component.identity_hash, component.hash12, component.image_name).apply(check)


def test_component_reports_every_recipe_problem_without_a_traceback(mocks, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("python: 3.11\ntorch: {}\n")

    with pytest.raises(pulumi.RunError) as failure:
        RuntimeDiskImage("sd-runtime", component_args(recipe_path=recipe))

    message = str(failure.value)
    assert "python: 3.11 is not allowed" in message
    assert "torch.index_url: missing" in message and "pip: missing" in message and "webui: missing" in message
    assert failure.value.__cause__ is None and failure.value.__suppress_context__


def test_identity_changes_with_the_recipe_the_bake_script_and_the_base_digest():
    recipe = load_recipe(RECIPE)
    script = BAKE_SCRIPT.read_bytes()
    pinned = recipe.to_dict()
    changed_recipe = parse_recipe({**pinned, "webui": {**pinned["webui"], "commit": "0" * 40}})
    other_base = BASE.replace(DIGEST, "sha256:" + "d" * 64)

    identity = runtime_identity(recipe, script, BASE)

    assert runtime_identity(load_recipe(RECIPE), BAKE_SCRIPT.read_bytes(), BASE) == identity
    variants = {runtime_identity(changed_recipe, script, BASE), runtime_identity(recipe, script + b"\n", BASE),
                runtime_identity(recipe, script, other_base)}
    assert identity not in variants and len(variants) == 3


def test_a_recipe_for_another_python_than_the_base_image_is_refused(mocks):
    with pytest.raises(pulumi.RunError, match=r"python '3.11' is not allowed; expected '3.12', the Python of "
                                              r"images/base/Dockerfile"):
        RuntimeDiskImage("sd-runtime", component_args(base_python="3.12"))


def test_a_base_image_by_tag_is_refused():
    with pytest.raises(pulumi.RunError, match="base_image 'us-central1-docker.pkg.dev/p/r/sd-base:latest' is not "
                                              "allowed; expected a reference by digest"):
        runtime_identity(load_recipe(RECIPE), b"", "us-central1-docker.pkg.dev/p/r/sd-base:latest")


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
