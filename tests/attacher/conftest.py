"""Fixtures for the disk attacher: the three fakes it talks to, a udev stand-in, and the agent itself.

The agent runs in-process through `attacher.__main__.main` (the same code path as
`python -m attacher`) with the real google-cloud-compute client against tests/fakes/compute/,
and in dry device mode: a disk attached as X shows up as the directory $SDGKE_DEVICE_DIR/google-X
once the `Udev` thread sees the attachment in the fake, filled with what the disk's source image
holds (MANIFEST.json and the ready marker).
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ATTACHER_ROOT = Path(__file__).resolve().parents[2] / "images" / "attacher"
if str(ATTACHER_ROOT) not in sys.path:
    sys.path.insert(0, str(ATTACHER_ROOT))

from attacher import __main__ as cli  # noqa: E402
from attacher import agent, names, permissions  # noqa: E402
from attacher.retry import RetryPolicy  # noqa: E402

from tests.attacher.devices import RuntimeContent, Udev  # noqa: E402
from tests.fakes.compute import FakeCompute  # noqa: E402
from tests.fakes.kube import FakeKube  # noqa: E402
from tests.fakes.metadata import FakeMetadata  # noqa: E402

PROJECT = "sdgke-test"
ZONE = "us-central1-a"
NODE = "gke-sdgke-gpu-pool-0a1b2c3d-x7k2"
RECIPE_HASH = "3f9a1c2b7d4e" + "5" * 52  # the full sha256 hex the bake writes in MANIFEST.json
HASH12 = RECIPE_HASH[:12]
IMAGE = f"sd-runtime-{HASH12}"
STARTUP_TAINT = {"key": names.DEFAULT_STARTUP_TAINT_KEY, "value": "pending", "effect": "NoSchedule"}
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
FRESH_NODE_CALLS = Counter({
    "compute.instances.get": 1,
    "compute.images.get": 1,
    "compute.disks.insert": 1,
    "compute.zoneOperations.wait": 2,
    "compute.instances.attachDisk": 1,
})


class SimulatedCrash(BaseException):
    """The agent process dying at a step boundary (BaseException: nothing in the agent may catch it)."""


@dataclass
class Harness:
    compute: FakeCompute
    metadata: FakeMetadata
    kube: FakeKube
    udev: Udev
    device_dir: Path
    mount_path: Path
    env: dict[str, str]

    agent_methods: set[str] = field(default_factory=set)  # every Compute method an agent run called
    gc_methods: set[str] = field(default_factory=set)

    def run_once(self, after_step: Callable[[str], None] | None = None) -> int:
        before = len(self.compute.requests)
        try:
            return cli.main(["--once"], after_step)
        finally:
            self.agent_methods.update(r.api_method for r in self.compute.requests[before:])

    def run_gc(self, grace_seconds: int = 0) -> int:
        before = len(self.compute.requests)
        try:
            return cli.main(["gc", "--grace-seconds", str(grace_seconds)])
        finally:
            self.gc_methods.update(r.api_method for r in self.compute.requests[before:])

    def compute_calls(self, since: int = 0) -> Counter:
        return Counter(request.api_method for request in self.compute.requests[since:])

    def runtime_disks(self) -> list[dict]:
        return [disk for disk in self.compute.disks() if disk.get("labels", {}).get(names.LABEL_MANAGED_BY)]

    def attached_runtime(self) -> list[dict]:
        """The node's attachments with device name sd-runtime."""
        instance = next((i for i in self.compute.instances(ZONE) if i["name"] == NODE), None)
        return [entry for entry in (instance or {}).get("disks", []) if entry["deviceName"] == names.DEVICE_NAME]

    def is_mounted(self) -> bool:
        device = self.device_dir / f"google-{names.DEVICE_NAME}"
        return self.mount_path.is_symlink() and self.mount_path.resolve() == device.resolve() and device.is_dir()

    def assert_converged(self) -> None:
        """Success state: one runtime disk, attached once as sd-runtime READ_WRITE+autoDelete, mounted,
        verified, the startup taint gone and the GPU taint kept; no fake saw a bad request."""
        disks = self.runtime_disks()
        assert [d["name"] for d in disks] == [names.disk_name(NODE, HASH12)], disks
        attached = self.attached_runtime()
        assert len(attached) == 1, attached
        assert attached[0]["source"] == disks[0]["selfLink"]
        assert (attached[0]["mode"], attached[0]["autoDelete"]) == ("READ_WRITE", True)
        assert disks[0]["users"] == [i["selfLink"] for i in self.compute.instances(ZONE) if i["name"] == NODE]
        assert self.is_mounted()
        assert self.kube.taints(NODE) == [GPU_TAINT]
        self.assert_fakes_clean()

    def assert_fakes_clean(self) -> None:
        self.compute.assert_clean()
        self.metadata.assert_clean()
        self.kube.assert_clean()


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    compute = FakeCompute(project=PROJECT).start()
    metadata = FakeMetadata(project=PROJECT, zone=ZONE, instance=NODE).start()
    kube = FakeKube().start()
    device_dir, host = tmp_path / "dev", tmp_path / "host"
    device_dir.mkdir()
    compute.add_image(IMAGE, family="sd-runtime", labels={names.LABEL_HASH: HASH12}, disk_size_gb=20)
    compute.add_instance(NODE, zone=ZONE)
    kube.add_node(NODE, taints=[STARTUP_TAINT, GPU_TAINT])
    udev = Udev(compute, device_dir, NODE, ZONE)
    udev.contents[IMAGE] = RuntimeContent(RECIPE_HASH)
    udev.start()
    env = {
        "GCE_METADATA_HOST": metadata.host,
        "SDGKE_COMPUTE_ENDPOINT": compute.url,
        "KUBECONFIG": kube.write_kubeconfig(str(tmp_path / "kubeconfig")),
        "SDGKE_RUNTIME_IMAGE": f"projects/{PROJECT}/global/images/{IMAGE}",
        "SDGKE_RUNTIME_HASH": HASH12,
        "SDGKE_NODE_NAME": NODE,
        "SDGKE_DEVICE_DIR": str(device_dir),
        "SDGKE_MOUNT_PATH": str(host / "mnt" / "disks" / "sd-runtime"),
        "SDGKE_HEALTH_ADDRESS": "127.0.0.1:0",
        "SDGKE_ZONES": ZONE,
    }
    for key in ("KUBERNETES_SERVICE_HOST", "GCE_METADATA_ROOT", "SDGKE_DISK_SIZE_GB", "SDGKE_DISK_TYPE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # Production backoff starts at 0.5 s; the policy itself is unit-tested, here it only has to be short.
    monkeypatch.setattr(cli, "RetryPolicy", lambda: RetryPolicy(initial_seconds=0.01, max_delay_seconds=0.05))
    monkeypatch.setattr(agent, "DISK_READY_POLL_SECONDS", 0.02)
    harness = Harness(compute, metadata, kube, udev, device_dir, Path(env["SDGKE_MOUNT_PATH"]), env)
    try:
        yield harness
    finally:
        udev.stop()
        kube.stop()
        metadata.stop()
        compute.stop()
    # Across the whole matrix: every call an agent or the GC makes is one the custom roles allow.
    assert harness.agent_methods <= set(permissions.AGENT_METHODS), harness.agent_methods
    assert harness.gc_methods <= set(permissions.GC_METHODS), harness.gc_methods


def log_lines(output: str) -> list[dict]:
    """The agent's JSON log lines (every stdout line must be one)."""
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def step_lines(output: str) -> dict[str, dict]:
    return {line["step"]: line for line in log_lines(output) if line["event"] == "step"}


def subprocess_env(harness: Harness) -> dict[str, str]:
    """Environment for `python -m attacher` as a child process."""
    env = {k: v for k, v in os.environ.items() if k not in ("KUBERNETES_SERVICE_HOST",)}
    env.update(harness.env)
    env["PYTHONPATH"] = str(ATTACHER_ROOT)
    return env
