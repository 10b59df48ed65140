"""Agent and GC settings, read from the environment and validated all at once."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from attacher import names

DISK_TYPES = ("pd-balanced", "pd-ssd", "pd-standard")
MAX_DISK_SIZE_GB = 65536

_IMAGE_PATH = re.compile(
    r"^(?:https://(?:www|compute)\.googleapis\.com/compute/v1/)?"
    r"projects/(?P<project>[a-z][-a-z0-9.:]{4,61}[a-z0-9])/global/images/(?P<name>[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)$"
)
_HASH12 = re.compile(r"^[0-9a-f]{12}$")
_ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")
_TAINT_KEY = re.compile(
    r"^(?:[a-z0-9]([-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_HOST_PORT = re.compile(r"^(?P<host>[0-9a-zA-Z.:\-\[\]]+):(?P<port>[0-9]{1,5})$")


class ConfigError(Exception):
    """Every problem in the environment, reported together."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class RuntimeImage:
    project: str
    name: str

    @property
    def path(self) -> str:
        return f"projects/{self.project}/global/images/{self.name}"


DEFAULT_READ_AHEAD_KB = 1024
MAX_READ_AHEAD_KB = 16384


@dataclass(frozen=True)
class AgentConfig:
    image: RuntimeImage
    runtime_hash: str  # first 12 hex digits of the recipe hash; MANIFEST.json recipe_hash must start with it
    node_name: str
    disk_type: str = "pd-balanced"
    disk_size_gb: int | None = None  # None: the image's size
    mount_path: str = names.DEFAULT_MOUNT_PATH
    startup_taint_key: str = names.DEFAULT_STARTUP_TAINT_KEY
    device_dir: str | None = None  # dry device mode (see devices.DirectoryDevices)
    compute_endpoint: str | None = None  # None: the real Compute API
    health_host: str = "0.0.0.0"
    health_port: int = 8080
    recheck_seconds: float = 30.0
    device_timeout_seconds: float = 120.0
    operation_timeout_seconds: float = 300.0
    read_ahead_kb: int = DEFAULT_READ_AHEAD_KB


@dataclass(frozen=True)
class GcConfig:
    zones: tuple[str, ...] | None  # None: the zone of the metadata server
    grace_seconds: int
    compute_endpoint: str | None = None


def _compute_endpoint(env: Mapping[str, str], problems: list[str]) -> str | None:
    endpoint = env.get("SDGKE_COMPUTE_ENDPOINT") or None
    if endpoint is not None and not re.match(r"^https?://[^/\s]+/?$", endpoint):
        problems.append(
            f"SDGKE_COMPUTE_ENDPOINT={endpoint!r}: must be a URL root like https://compute.googleapis.com"
            " or http://127.0.0.1:PORT (no path)"
        )
    return endpoint


def _positive_number(env: Mapping[str, str], key: str, default: float, problems: list[str]) -> float:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        problems.append(f"{key}={raw!r}: must be a number of seconds greater than 0")
        return default
    return value


def agent_config_from_env(env: Mapping[str, str]) -> AgentConfig:
    problems: list[str] = []

    raw_image = env.get("SDGKE_RUNTIME_IMAGE", "")
    match = _IMAGE_PATH.match(raw_image)
    image = RuntimeImage("unset", "unset")
    if match:
        image = RuntimeImage(match["project"], match["name"])
    elif "/images/family/" in raw_image:
        problems.append(
            f"SDGKE_RUNTIME_IMAGE={raw_image!r}: an image family is not allowed (it moves); "
            "give the exact image, projects/PROJECT/global/images/NAME"
        )
    else:
        problems.append(
            f"SDGKE_RUNTIME_IMAGE={raw_image!r}: must be projects/PROJECT/global/images/NAME "
            "or its https://www.googleapis.com/compute/v1/ self link"
        )

    runtime_hash = env.get("SDGKE_RUNTIME_HASH", "")
    if not _HASH12.match(runtime_hash):
        problems.append(f"SDGKE_RUNTIME_HASH={runtime_hash!r}: must be 12 lowercase hex digits (the image's hash12)")

    node_name = env.get("SDGKE_NODE_NAME", "")
    if not re.match(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", node_name):
        problems.append(
            f"SDGKE_NODE_NAME={node_name!r}: must be the Kubernetes node name "
            "(set it from the downward API, spec.nodeName)"
        )

    disk_type = env.get("SDGKE_DISK_TYPE") or "pd-balanced"
    if disk_type not in DISK_TYPES:
        problems.append(f"SDGKE_DISK_TYPE={disk_type!r}: allowed: {', '.join(DISK_TYPES)}")

    disk_size_gb: int | None = None
    raw_size = env.get("SDGKE_DISK_SIZE_GB")
    if raw_size:
        if raw_size.isdigit() and 1 <= int(raw_size) <= MAX_DISK_SIZE_GB:
            disk_size_gb = int(raw_size)
        else:
            problems.append(
                f"SDGKE_DISK_SIZE_GB={raw_size!r}: must be a whole number of GB from 1 to {MAX_DISK_SIZE_GB} "
                "(unset: the image's size)"
            )

    mount_path = env.get("SDGKE_MOUNT_PATH") or names.DEFAULT_MOUNT_PATH
    if not mount_path.startswith("/") or mount_path.rstrip("/") in ("", "/") or ".." in mount_path.split("/"):
        problems.append(f"SDGKE_MOUNT_PATH={mount_path!r}: must be an absolute path below / without '..'")

    taint_key = env.get("SDGKE_STARTUP_TAINT") or names.DEFAULT_STARTUP_TAINT_KEY
    if not _TAINT_KEY.match(taint_key):
        problems.append(f"SDGKE_STARTUP_TAINT={taint_key!r}: must be a taint key, e.g. {names.DEFAULT_STARTUP_TAINT_KEY}")

    device_dir = env.get("SDGKE_DEVICE_DIR") or None
    if device_dir is not None and not device_dir.startswith("/"):
        problems.append(f"SDGKE_DEVICE_DIR={device_dir!r}: must be an absolute directory path")

    health = env.get("SDGKE_HEALTH_ADDRESS") or "0.0.0.0:8080"
    health_match = _HOST_PORT.match(health)
    health_host, health_port = "0.0.0.0", 8080
    if health_match and int(health_match["port"]) <= 65535:
        health_host, health_port = health_match["host"].strip("[]"), int(health_match["port"])
    else:
        problems.append(f"SDGKE_HEALTH_ADDRESS={health!r}: must be HOST:PORT, e.g. 0.0.0.0:8080 (port 0 = any)")

    recheck = _positive_number(env, "SDGKE_RECHECK_SECONDS", 30.0, problems)
    endpoint = _compute_endpoint(env, problems)
    raw_read_ahead = env.get("SDGKE_READ_AHEAD_KB") or str(DEFAULT_READ_AHEAD_KB)
    read_ahead_kb = DEFAULT_READ_AHEAD_KB
    if raw_read_ahead.isdigit() and 0 < int(raw_read_ahead) <= MAX_READ_AHEAD_KB:
        read_ahead_kb = int(raw_read_ahead)
    else:
        problems.append(f"SDGKE_READ_AHEAD_KB={raw_read_ahead!r}: must be a whole number of KiB from 1 to {MAX_READ_AHEAD_KB}")

    if problems:
        raise ConfigError(problems)
    return AgentConfig(
        image=image,
        runtime_hash=runtime_hash,
        node_name=node_name,
        disk_type=disk_type,
        disk_size_gb=disk_size_gb,
        mount_path=mount_path.rstrip("/"),
        startup_taint_key=taint_key,
        device_dir=device_dir,
        compute_endpoint=endpoint,
        health_host=health_host,
        health_port=health_port,
        recheck_seconds=recheck,
        read_ahead_kb=read_ahead_kb,
    )


def gc_config_from_env(env: Mapping[str, str], grace_seconds: int) -> GcConfig:
    problems: list[str] = []
    zones: tuple[str, ...] | None = None
    raw_zones = env.get("SDGKE_ZONES")
    if raw_zones:
        zones = tuple(zone.strip() for zone in raw_zones.split(",") if zone.strip())
        bad = [zone for zone in zones if not _ZONE.match(zone)]
        if bad or not zones:
            problems.append(f"SDGKE_ZONES={raw_zones!r}: must be a comma-separated list of zones like us-central1-a")
    if grace_seconds < 0:
        problems.append(f"--grace-seconds={grace_seconds}: must be 0 or more")
    endpoint = _compute_endpoint(env, problems)
    if problems:
        raise ConfigError(problems)
    return GcConfig(zones=zones, grace_seconds=grace_seconds, compute_endpoint=endpoint)
