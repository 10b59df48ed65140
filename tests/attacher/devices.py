"""A stand-in for the kernel and udev in dry device mode (SDGKE_DEVICE_DIR), shared by the tests and
tools/bench_attacher.py: a disk attached to the watched instance as X appears as the directory
<device_dir>/google-X holding what its source image holds; a detached one vanishes.
"""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from tests.fakes.compute import FakeCompute

MANIFEST_FILE = "MANIFEST.json"
READY_MARKER = ".sd-runtime-ready"


@dataclass(frozen=True)
class RuntimeContent:
    recipe_hash: str
    ready_marker: bool = True


class Udev(threading.Thread):
    """Plays the kernel and udev: attached disks appear as device directories, detached ones vanish."""

    def __init__(self, compute: FakeCompute, device_dir: Path, instance: str, zone: str):
        super().__init__(name="udev", daemon=True)
        self.compute, self.device_dir, self.instance, self.zone = compute, device_dir, instance, zone
        self.contents: dict[str, RuntimeContent] = {}  # image name -> what its disks hold
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.005):
            self.sync()

    def sync(self) -> None:
        instance = next((i for i in self.compute.instances(self.zone) if i["name"] == self.instance), None)
        attached = {entry["deviceName"]: entry["source"] for entry in (instance or {}).get("disks", [])}
        disks = {disk["selfLink"]: disk for disk in self.compute.disks(self.zone)}
        for device_name, source in attached.items():
            path = self.device_dir / f"google-{device_name}"
            if path.exists():
                continue
            image = disks.get(source, {}).get("sourceImage", "").rsplit("/", 1)[-1]
            content = self.contents.get(image)
            staging = self.device_dir / f".staging-{device_name}"
            staging.mkdir(parents=True, exist_ok=True)
            if content is not None:
                (staging / MANIFEST_FILE).write_text(json.dumps({"recipe_hash": content.recipe_hash}))
                if content.ready_marker:
                    (staging / READY_MARKER).write_text("")
            staging.rename(path)
        for path in self.device_dir.glob("google-*"):
            if path.name.removeprefix("google-") not in attached:
                shutil.rmtree(path)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)
