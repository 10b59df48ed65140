"""Where the attached disk shows up and how it is mounted: the host, or a directory for harnesses.

Both kinds are idempotent and serialised by a lock file next to the mount path, so two agents on
one node (a DaemonSet rolling update) never stack two mounts.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

POLL_SECONDS = 0.05
LOCK_TIMEOUT_SECONDS = 60.0
BY_ID_DIR = "/dev/disk/by-id"


class MountError(Exception):
    pass


class Devices(Protocol):
    def device_path(self, device_name: str) -> str: ...

    def mount(self, device: str, mount_path: str) -> bool:
        """Mount read-only; True if mounted now, False if it already was."""

    def is_mounted(self, device: str, mount_path: str) -> bool: ...

    def set_read_ahead(self, device: str, kilobytes: int) -> int | None:
        """Set the device's read-ahead; the value now in force, or None where there is no block queue."""


def wait_for_device(devices: Devices, device_name: str, timeout: float) -> str:
    path = devices.device_path(device_name)
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"device {path} did not appear within {timeout:.0f}s of the attach")
        time.sleep(POLL_SECONDS)
    return path


@contextmanager
def mount_lock(mount_path: str) -> Iterator[None]:
    parent, base = os.path.split(mount_path)
    os.makedirs(parent, exist_ok=True)
    fd = os.open(os.path.join(parent, f".{base}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + LOCK_TIMEOUT_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise MountError(f"lock for {mount_path} held by another agent for {LOCK_TIMEOUT_SECONDS:.0f}s") from None
                time.sleep(POLL_SECONDS)
        yield
    finally:
        os.close(fd)


class HostDevices:
    """The real node: /dev/disk/by-id/google-<deviceName>, mounted `ro,noload` as ext4.

    Runs in a privileged container whose /mnt/disks is a hostPath with Bidirectional propagation, so
    the mount made here appears on the host and, through HostToContainer, in the SD pods. The disk
    is attached READ_WRITE (so that it can be auto-deleted), and `ro` alone would still write to it:
    "ext4 will replay the journal (and thus write to the partition) even when mounted "read only".
    The mount options "ro,noload" can be used to prevent writes to the filesystem."
    (torvalds/linux Documentation/admin-guide/ext4.rst, `ro` and `norecovery, noload`). The bake
    unmounts the filesystem cleanly, so there is no journal to replay.
    """

    FSTYPE = "ext4"
    OPTIONS = "ro,noload"

    def __init__(self, run: Callable[[Sequence[str]], subprocess.CompletedProcess] | None = None,
                 sys_root: str = "/sys"):
        self._run = run or (lambda argv: subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120))
        self._sys_root = sys_root

    def set_read_ahead(self, device: str, kilobytes: int) -> int | None:
        """A disk restored from an image loads lazily; large sequential reads (the checkpoint) go much
        faster with a deep read-ahead (published: 84 s -> 38 s for a 7B model at 1024 KiB)."""
        queue = os.path.join(self._sys_root, "block", os.path.basename(os.path.realpath(device)), "queue", "read_ahead_kb")
        with open(queue, "w") as f:
            f.write(str(kilobytes))
        with open(queue) as f:
            return int(f.read().strip())

    def device_path(self, device_name: str) -> str:
        return os.path.join(BY_ID_DIR, f"google-{device_name}")

    def mount_argv(self, device: str, mount_path: str) -> list[str]:
        return ["mount", "-t", self.FSTYPE, "-o", self.OPTIONS, device, mount_path]

    def is_mounted(self, device: str, mount_path: str) -> bool:
        try:
            return os.path.ismount(mount_path) and os.stat(mount_path).st_dev == os.stat(device).st_rdev
        except FileNotFoundError:
            return False

    def mount(self, device: str, mount_path: str) -> bool:
        with mount_lock(mount_path):
            if self.is_mounted(device, mount_path):
                return False
            if os.path.ismount(mount_path):
                raise MountError(f"{mount_path} already has another filesystem mounted; refusing to stack {device}")
            os.makedirs(mount_path, exist_ok=True)
            result = self._run(self.mount_argv(device, mount_path))
            if result.returncode != 0:
                raise MountError(f"mount {device} on {mount_path} exited {result.returncode}: {result.stderr.strip()}")
            if not self.is_mounted(device, mount_path):
                raise MountError(f"mount {device} on {mount_path} succeeded but the mount is not there")
            return True


class DirectoryDevices:
    """Dry device mode (SDGKE_DEVICE_DIR): the device of a disk attached as X is the directory
    $SDGKE_DEVICE_DIR/google-X, and mounting links that directory at the mount path.

    Whatever makes the directory appear (a test's udev stand-in) plays the kernel's part.
    """

    def __init__(self, device_dir: str):
        self.device_dir = device_dir

    def set_read_ahead(self, device: str, kilobytes: int) -> int | None:
        """A directory has no block queue to tune."""
        return None

    def device_path(self, device_name: str) -> str:
        return os.path.join(self.device_dir, f"google-{device_name}")

    def is_mounted(self, device: str, mount_path: str) -> bool:
        return (
            os.path.islink(mount_path)
            and os.path.isdir(device)
            and os.path.realpath(mount_path) == os.path.realpath(device)
        )

    def mount(self, device: str, mount_path: str) -> bool:
        with mount_lock(mount_path):
            if self.is_mounted(device, mount_path):
                return False
            if os.path.islink(mount_path):
                raise MountError(f"{mount_path} already links to {os.readlink(mount_path)}; refusing to replace it")
            if os.path.isdir(mount_path):
                if os.listdir(mount_path):
                    raise MountError(f"{mount_path} is a non-empty directory; refusing to hide its content")
                os.rmdir(mount_path)
            elif os.path.exists(mount_path):
                raise MountError(f"{mount_path} exists and is not a directory")
            staging = f"{mount_path}.tmp-{os.getpid()}-{threading.get_ident()}"
            os.symlink(device, staging)
            os.replace(staging, mount_path)
            return True
