"""Names and labels shared by the agent, the garbage collector and the Pulumi component."""

import hashlib
import re

DEVICE_NAME = "sd-runtime"
DEFAULT_MOUNT_PATH = "/mnt/disks/sd-runtime"
DEFAULT_STARTUP_TAINT_KEY = "ignore-taint.cluster-autoscaler.kubernetes.io/sd-runtime"  # why: components/runtime_layout.py
MANIFEST_FILE = "MANIFEST.json"
READY_MARKER = ".sd-runtime-ready"

RUNTIME_NODE_LABEL = "sd-gke/runtime"
"""Node label naming the runtime (hash12) a node is for; the DaemonSet runs only where it is its own."""

LABEL_OWNER = "sdgke-owner"
LABEL_HASH = "sdgke-runtime-hash"
LABEL_MANAGED_BY = "managed-by"
MANAGED_BY = "sd-gke"

DISK_NAME_PREFIX = "sd-runtime-"
MAX_RESOURCE_NAME = 63
_RFC1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_DISK_HASH = re.compile(rf"^{DISK_NAME_PREFIX}(?P<hash>[0-9a-f]{{12}})-")


def is_rfc1035(name: str) -> bool:
    return bool(_RFC1035.match(name))


def disk_name(instance: str, runtime_hash: str) -> str:
    """The one disk name a node may use for a runtime hash.

    Deterministic so a restarted or racing agent finds the disk it (or its twin) created instead of
    making another; it contains the hash, so a disk of another runtime version is never reused.
    `sd-runtime-<hash12>-<instance>`; an instance name too long to fit is cut and suffixed with 8 hex
    digits of its sha256 so two long names sharing a prefix still differ.
    """
    prefix = f"{DISK_NAME_PREFIX}{runtime_hash}-"
    room = MAX_RESOURCE_NAME - len(prefix)
    if len(instance) <= room:
        return prefix + instance
    digest = hashlib.sha256(instance.encode()).hexdigest()[:8]
    return f"{prefix}{instance[:room - 9].rstrip('-')}-{digest}"


def disk_labels(instance: str, runtime_hash: str) -> dict[str, str]:
    return {LABEL_OWNER: instance, LABEL_HASH: runtime_hash, LABEL_MANAGED_BY: MANAGED_BY}


def runtime_of_disk(name: str, instance: str) -> str | None:
    """The runtime hash12 of disk `name` if it is `instance`'s runtime disk of some runtime, else None."""
    match = _DISK_HASH.match(name)
    return match["hash"] if match and disk_name(instance, match["hash"]) == name else None
