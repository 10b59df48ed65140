"""The agent's parts on their own: names, settings, retries, manifest, devices, Kubernetes endpoint."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest
import requests
from attacher import agent, names
from attacher.agent import AgentError
from attacher.config import ConfigError, agent_config_from_env
from attacher.devices import DirectoryDevices, HostDevices, MountError
from attacher.kube import load_endpoint
from attacher.manifest import RuntimeRefused, verify_runtime
from attacher.retry import HttpStatusError, RetryPolicy
from google.api_core import exceptions as gexc

HASH12 = "3f9a1c2b7d4e"
GOOD_ENV = {
    "SDGKE_RUNTIME_IMAGE": "projects/sdgke-test/global/images/sd-runtime-3f9a1c2b7d4e",
    "SDGKE_RUNTIME_HASH": HASH12,
    "SDGKE_NODE_NAME": "gke-sdgke-gpu-pool-0a1b2c3d-x7k2",
}


# names

def test_disk_name_is_the_hash_and_the_instance():
    assert names.disk_name("gke-c-gpu-0a1b2c3d-x7k2", HASH12) == "sd-runtime-3f9a1c2b7d4e-gke-c-gpu-0a1b2c3d-x7k2"


@pytest.mark.parametrize("length", [39, 40, 63])
def test_disk_names_fit_63_chars_and_rfc1035_for_any_instance_name(length: int):
    instance = ("gke-" + "a-b" * 30)[:length - 1] + "z"

    name = names.disk_name(instance, HASH12)

    assert len(name) <= 63 and names.is_rfc1035(name), name


def test_long_instance_names_sharing_a_prefix_get_different_disk_names():
    prefix = "gke-sdgke-prod-cluster-gpu-pool-l4-"
    first, second = names.disk_name(prefix + "0a1b2c3d-x7k2", HASH12), names.disk_name(prefix + "0a1b2c3d-q9zz", HASH12)

    assert first != second and len(first) == len(second) == 63


def test_disk_names_differ_per_runtime_hash_so_an_old_disk_is_never_reused():
    assert names.disk_name("node", HASH12) != names.disk_name("node", "000000000000")


# settings

def test_a_self_link_is_accepted_for_the_image():
    cfg = agent_config_from_env({**GOOD_ENV, "SDGKE_RUNTIME_IMAGE":
                                 "https://www.googleapis.com/compute/v1/projects/img-proj/global/images/sd-runtime-x"})

    assert cfg.image.path == "projects/img-proj/global/images/sd-runtime-x"


def test_defaults_are_the_shared_constants():
    cfg = agent_config_from_env(GOOD_ENV)

    assert (cfg.mount_path, cfg.startup_taint_key, cfg.disk_type, cfg.disk_size_gb, cfg.device_dir) == (
        "/mnt/disks/sd-runtime", "ignore-taint.cluster-autoscaler.kubernetes.io/sd-runtime", "pd-balanced", None, None)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("SDGKE_RUNTIME_IMAGE", "sd-runtime-3f9a1c2b7d4e",
         "SDGKE_RUNTIME_IMAGE='sd-runtime-3f9a1c2b7d4e': must be projects/PROJECT/global/images/NAME or its "
         "https://www.googleapis.com/compute/v1/ self link"),
        ("SDGKE_RUNTIME_HASH", "3f9a1c2b7d4e5", "SDGKE_RUNTIME_HASH='3f9a1c2b7d4e5': must be 12 lowercase hex digits "
                                                "(the image's hash12)"),
        ("SDGKE_NODE_NAME", "", "SDGKE_NODE_NAME='': must be the Kubernetes node name (set it from the downward API, "
                                "spec.nodeName)"),
        ("SDGKE_DISK_SIZE_GB", "0", "SDGKE_DISK_SIZE_GB='0': must be a whole number of GB from 1 to 65536 "
                                    "(unset: the image's size)"),
        ("SDGKE_MOUNT_PATH", "mnt/disks", "SDGKE_MOUNT_PATH='mnt/disks': must be an absolute path below / without '..'"),
        ("SDGKE_STARTUP_TAINT", "bad key!", "SDGKE_STARTUP_TAINT='bad key!': must be a taint key, e.g. "
                                            "ignore-taint.cluster-autoscaler.kubernetes.io/sd-runtime"),
        ("SDGKE_DEVICE_DIR", "dev", "SDGKE_DEVICE_DIR='dev': must be an absolute directory path"),
        ("SDGKE_HEALTH_ADDRESS", "8080", "SDGKE_HEALTH_ADDRESS='8080': must be HOST:PORT, e.g. 0.0.0.0:8080 "
                                         "(port 0 = any)"),
        ("SDGKE_RECHECK_SECONDS", "-1", "SDGKE_RECHECK_SECONDS='-1': must be a number of seconds greater than 0"),
        ("SDGKE_COMPUTE_ENDPOINT", "http://x/compute/v1", "SDGKE_COMPUTE_ENDPOINT='http://x/compute/v1': must be a "
                                                          "URL root like https://compute.googleapis.com or "
                                                          "http://127.0.0.1:PORT (no path)"),
    ],
)
def test_each_bad_setting_is_reported_with_its_value_and_what_is_allowed(key: str, value: str, message: str):
    with pytest.raises(ConfigError) as caught:
        agent_config_from_env({**GOOD_ENV, key: value})

    assert caught.value.problems == [message]


def test_all_problems_are_reported_together():
    with pytest.raises(ConfigError) as caught:
        agent_config_from_env({})

    assert [problem.split("=", 1)[0] for problem in caught.value.problems] == [
        "SDGKE_RUNTIME_IMAGE", "SDGKE_RUNTIME_HASH", "SDGKE_NODE_NAME"]


# retries

class Flaky:
    def __init__(self, *errors: BaseException):
        self.errors, self.calls = list(errors), 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def no_sleep(delays: list[float]) -> RetryPolicy:
    return RetryPolicy(sleep=delays.append)


@pytest.mark.parametrize("error", [gexc.TooManyRequests("x"), gexc.ServiceUnavailable("x"), gexc.InternalServerError("x"),
                                   HttpStatusError("k", 503, ""), HttpStatusError("k", 429, ""),
                                   requests.ConnectionError("reset")])
def test_429_5xx_and_connection_errors_are_retried(error: BaseException):
    delays: list[float] = []
    call = Flaky(error)

    assert no_sleep(delays).call("x", call) == "ok"
    assert call.calls == 2 and len(delays) == 1


@pytest.mark.parametrize("error", [gexc.BadRequest("x"), gexc.Conflict("x"), gexc.NotFound("x"), gexc.Forbidden("x"),
                                   HttpStatusError("k", 422, "")])
def test_4xx_errors_are_not_retried(error: BaseException):
    call = Flaky(error)

    with pytest.raises(type(error)):
        no_sleep([]).call("x", call)
    assert call.calls == 1


def test_backoff_is_capped_exponential_with_jitter_and_bounded_in_attempts():
    delays: list[float] = []
    call = Flaky(*[gexc.ServiceUnavailable("x")] * 20)
    policy = RetryPolicy(initial_seconds=0.5, max_delay_seconds=8.0, max_attempts=8, sleep=delays.append)

    with pytest.raises(gexc.ServiceUnavailable):
        policy.call("x", call)

    assert call.calls == 8 and len(delays) == 7
    caps = [min(8.0, 0.5 * 2**n) for n in range(7)]
    assert all(0 <= delay <= cap for delay, cap in zip(delays, caps, strict=True))
    assert len(set(delays)) > 1  # jittered


def test_no_attempt_starts_after_the_time_budget():
    call = Flaky(*[gexc.ServiceUnavailable("x")] * 20)
    policy = RetryPolicy(initial_seconds=10, max_delay_seconds=10, budget_seconds=0.001, sleep=lambda s: None)

    with pytest.raises(gexc.ServiceUnavailable):
        policy.call("x", call)
    assert call.calls < 20


# manifest

def write_runtime(root: Path, manifest: object, marker: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "MANIFEST.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    if marker:
        (root / ".sd-runtime-ready").write_text("")
    return root


def test_a_manifest_whose_full_hash_starts_with_the_hash12_is_accepted(tmp_path: Path):
    root = write_runtime(tmp_path / "rt", {"recipe_hash": HASH12 + "ab" * 26})

    assert verify_runtime(str(root), HASH12).recipe_hash == HASH12 + "ab" * 26


@pytest.mark.parametrize(
    ("manifest", "marker", "message"),
    [
        ({"recipe_hash": "0" * 64}, True, "does not start with SDGKE_RUNTIME_HASH=3f9a1c2b7d4e"),
        ({"recipe": "x"}, True, "has no recipe_hash string"),
        ("{not json", True, "is unreadable"),
        ({"recipe_hash": HASH12 + "0" * 52}, False, "the bake of this runtime did not finish"),
    ],
)
def test_a_wrong_or_unfinished_runtime_is_refused(tmp_path: Path, manifest, marker, message):
    root = write_runtime(tmp_path / "rt", manifest, marker)

    with pytest.raises(RuntimeRefused, match=message):
        verify_runtime(str(root), HASH12)


def test_a_disk_without_a_manifest_is_refused(tmp_path: Path):
    with pytest.raises(RuntimeRefused, match="is not an sd-gke runtime"):
        verify_runtime(str(tmp_path), HASH12)


# devices

def test_the_host_mount_is_read_only_without_journal_replay():
    assert HostDevices().mount_argv("/dev/disk/by-id/google-sd-runtime", "/mnt/disks/sd-runtime") == [
        "mount", "-t", "ext4", "-o", "ro,noload", "/dev/disk/by-id/google-sd-runtime", "/mnt/disks/sd-runtime"]
    assert HostDevices().device_path("sd-runtime") == "/dev/disk/by-id/google-sd-runtime"


def test_a_failing_host_mount_reports_the_command_error(tmp_path: Path):
    ran: list[list[str]] = []

    def fail(argv):
        ran.append(list(argv))
        return subprocess.CompletedProcess(argv, 32, "", "mount: wrong fs type, bad option, bad superblock")

    with pytest.raises(MountError, match="exited 32: mount: wrong fs type"):
        HostDevices(run=fail).mount(str(tmp_path / "dev"), str(tmp_path / "mnt"))
    assert len(ran) == 1


def test_dry_mount_links_the_device_and_is_idempotent(tmp_path: Path):
    device, mount = tmp_path / "dev" / "google-sd-runtime", tmp_path / "host" / "sd-runtime"
    device.mkdir(parents=True)
    mount.mkdir(parents=True)  # the host's empty mount point
    devices = DirectoryDevices(str(tmp_path / "dev"))

    assert devices.mount(str(device), str(mount)) is True
    assert devices.mount(str(device), str(mount)) is False
    assert devices.is_mounted(str(device), str(mount)) and os.readlink(mount) == str(device)


def test_dry_mount_refuses_to_hide_a_non_empty_directory_or_replace_another_link(tmp_path: Path):
    device = tmp_path / "dev" / "google-sd-runtime"
    device.mkdir(parents=True)
    devices = DirectoryDevices(str(tmp_path / "dev"))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "file").write_text("x")
    other = tmp_path / "other-link"
    other.symlink_to(tmp_path)

    with pytest.raises(MountError, match="non-empty directory"):
        devices.mount(str(device), str(busy))
    with pytest.raises(MountError, match="already links to"):
        devices.mount(str(device), str(other))


# Kubernetes endpoint

def test_in_cluster_endpoint_uses_the_service_account_files():
    endpoint = load_endpoint({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}, "/sa")

    assert (endpoint.server, endpoint.token_file, endpoint.verify) == ("https://10.0.0.1:443", "/sa/token", "/sa/ca.crt")


def test_in_cluster_ipv6_host_is_bracketed():
    assert load_endpoint({"KUBERNETES_SERVICE_HOST": "fd00::1"}, "/sa").server == "https://[fd00::1]:443"


def test_a_kubeconfig_with_token_and_ca_data_is_understood(tmp_path: Path):
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
        f"clusters: [{{name: k, cluster: {{server: 'https://k:6443/', certificate-authority-data: "
        f"{base64.b64encode(b'PEM').decode()}}}}}]\n"
        "users: [{name: u, user: {token: t0k}}]\n"
    )

    endpoint = load_endpoint({"KUBECONFIG": str(path)})

    assert (endpoint.server, endpoint.token) == ("https://k:6443", "t0k")
    assert Path(endpoint.verify).read_bytes() == b"PEM"


def test_a_kubeconfig_user_the_agent_cannot_use_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "clusters": [{"name": "k", "cluster": {"server": "https://k"}}],
        "users": [{"name": "u", "user": {"exec": {"command": "gke-gcloud-auth-plugin"}}}]}))

    with pytest.raises(ConfigError) as caught:
        load_endpoint({"KUBECONFIG": str(path)})
    assert caught.value.problems == [
        f"KUBECONFIG={str(path)!r}: user fields ['exec'] are not supported; allowed: token, tokenFile"]


def test_no_kubernetes_endpoint_is_a_clear_error():
    with pytest.raises(ConfigError, match="neither KUBECONFIG nor KUBERNETES_SERVICE_HOST is set"):
        load_endpoint({})


def fake_block_device(tmp_path: Path, kernel_name: str = "nvme0n2") -> tuple[str, Path]:
    """/dev/disk/by-id/google-sd-runtime -> /dev/<kernel_name>, and its sysfs queue, under tmp_path."""
    dev = tmp_path / "dev"
    (dev / "disk" / "by-id").mkdir(parents=True)
    (dev / kernel_name).write_text("")
    link = dev / "disk" / "by-id" / "google-sd-runtime"
    link.symlink_to(dev / kernel_name)
    queue = tmp_path / "sys" / "block" / kernel_name / "queue"
    queue.mkdir(parents=True)
    (queue / "read_ahead_kb").write_text("128\n")
    return str(link), queue / "read_ahead_kb"


def test_read_ahead_is_set_on_the_kernel_device_behind_the_by_id_link(tmp_path: Path):
    device, setting = fake_block_device(tmp_path)
    assert HostDevices(sys_root=str(tmp_path / "sys")).set_read_ahead(device, 1024) == 1024
    assert setting.read_text() == "1024"


def test_read_ahead_of_a_device_without_a_queue_raises(tmp_path: Path):
    with pytest.raises(OSError):
        HostDevices(sys_root=str(tmp_path / "sys")).set_read_ahead(str(tmp_path / "missing"), 1024)


def test_dry_devices_have_no_read_ahead_to_set(tmp_path: Path):
    assert DirectoryDevices(str(tmp_path)).set_read_ahead(str(tmp_path / "google-sd-runtime"), 1024) is None


def test_read_ahead_defaults_to_1024_kib():
    assert agent_config_from_env(GOOD_ENV).read_ahead_kb == 1024


@pytest.mark.parametrize("value", ["0", "-5", "lots", "99999"])
def test_bad_read_ahead_is_a_config_error(value: str):
    with pytest.raises(ConfigError, match=f"SDGKE_READ_AHEAD_KB='{value}': must be a whole number of KiB from 1 to 16384"):
        agent_config_from_env({**GOOD_ENV, "SDGKE_READ_AHEAD_KB": value})


def test_a_read_ahead_failure_is_noted_and_the_mount_goes_on(tmp_path: Path):
    from attacher.agent import _set_read_ahead

    assert _set_read_ahead(HostDevices(sys_root=str(tmp_path / "sys")), str(tmp_path / "nope"), 1024).startswith("unchanged (")


# the checks of the agent's inspect and create_disk steps, and its wait for a twin's disk


def test_an_image_without_a_status_is_refused_as_of_unknown_status():
    from google.cloud import compute_v1

    cfg = agent_config_from_env(GOOD_ENV)

    with pytest.raises(AgentError) as refused:
        agent._check_image(cfg, compute_v1.Image(name="sd-runtime-3f9a1c2b7d4e"))

    assert str(refused.value) == (
        "runtime image projects/sdgke-test/global/images/sd-runtime-3f9a1c2b7d4e is of unknown status, not READY")


class Clock:
    """agent.time for _wait_disk_ready: sleeping advances monotonic time, and each sleep is recorded."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class TwinsDisk:
    """Compute.get_disk for a disk another agent is creating: the statuses it shows, one per read."""

    def __init__(self, statuses: list[str]):
        self.statuses = statuses
        self.reads: list[tuple[str, str]] = []

    def get_disk(self, zone: str, name: str):
        from google.cloud import compute_v1

        self.reads.append((zone, name))
        return compute_v1.Disk(name=name, status=self.statuses[min(len(self.reads), len(self.statuses)) - 1])


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(agent, "time", clock)
    return clock


def creating(name: str = "sd-runtime-disk"):
    from google.cloud import compute_v1

    return compute_v1.Disk(name=name, status="CREATING")


def test_a_disk_still_creating_is_polled_with_doubling_waits_capped_at_five_seconds(clock: Clock):
    compute = TwinsDisk(["CREATING"] * 5 + ["READY"])

    ready = agent._wait_disk_ready(compute, "us-central1-a", creating(), timeout=600)

    assert ready.status == "READY"
    assert agent.DISK_READY_POLL_SECONDS == 1.0
    assert clock.sleeps == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert compute.reads == [("us-central1-a", "sd-runtime-disk")] * 6


def test_a_disk_still_creating_at_its_deadline_times_out_naming_it_and_its_status(clock: Clock):
    compute = TwinsDisk(["CREATING"])

    with pytest.raises(TimeoutError) as timed_out:
        agent._wait_disk_ready(compute, "us-central1-a", creating(), timeout=7.0)

    assert str(timed_out.value) == "disk sd-runtime-disk still CREATING after 7s"
    assert clock.sleeps == [1.0, 2.0, 4.0]  # 7 s waited: the deadline is reached, no further wait


def test_a_failed_disk_is_refused_at_once_naming_it(clock: Clock):
    from google.cloud import compute_v1

    with pytest.raises(AgentError) as refused:
        agent._wait_disk_ready(TwinsDisk([]), "us-central1-a",
                               compute_v1.Disk(name="sd-runtime-disk", status="FAILED"), timeout=600)

    assert str(refused.value) == (
        "disk sd-runtime-disk is FAILED; it cannot be used (the GC removes it once the node is gone)")
    assert clock.sleeps == []


def test_a_disk_that_fails_while_a_twin_creates_it_is_refused(clock: Clock):
    compute = TwinsDisk(["CREATING", "FAILED"])

    with pytest.raises(AgentError, match="disk sd-runtime-disk is FAILED"):
        agent._wait_disk_ready(compute, "us-central1-a", creating(), timeout=600)

    assert clock.sleeps == [1.0, 2.0]
