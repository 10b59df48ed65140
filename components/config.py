"""Stack configuration: read once, validated, typed.

Every problem is collected and reported together, so a bad stack file is fixed in one round
instead of one `pulumi preview` per typo. Nothing else in sd-gke reads `pulumi.Config`.
"""

from __future__ import annotations

import ipaddress
import json
import re
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT = "sd-gke"

ENVIRONMENTS = ("dev", "prod")
RELEASE_CHANNELS = ("RAPID", "REGULAR", "STABLE", "EXTENDED")
LOCATION_POLICIES = ("BALANCED", "ANY")
GPU_DRIVER_VERSIONS = ("DEFAULT", "LATEST")
DISK_TYPES = ("pd-balanced", "pd-ssd", "pd-standard")
RUNTIME_DISK_TYPES = ("pd-balanced", "pd-ssd")
DELIVERIES = ("daemonset", "secondaryBootDisk")
"""How the runtime image reaches a GPU node: the disk attacher DaemonSet (components/disk_attacher.py), or
GKE itself, as a secondary boot disk of the GPU pool (components/gpu_pool.py)."""
SECONDARY_BOOT_DISK_MIN_VERSION = "1.28.3-gke.1067000"
"""Secondary boot disks in Standard clusters: "Starting in GKE version 1.28.3-gke.1067000 in Standard clusters"
(https://cloud.google.com/kubernetes-engine/docs/how-to/data-container-image-preloading, Overview)."""
COMPUTE_CLASS_MIN_VERSION = "1.30.3-gke.1451000"
"""Custom ComputeClasses: "available to use in GKE Autopilot mode and GKE Standard mode in version
1.30.3-gke.1451000 and later" (https://cloud.google.com/kubernetes-engine/docs/concepts/about-custom-compute-classes)."""

# GPU model -> machine family that carries it (GKE accepts no other pairing).
GPU_MACHINE_FAMILIES = {
    "nvidia-l4": "g2",
    "nvidia-tesla-t4": "n1",
    "nvidia-tesla-a100": "a2",
    "nvidia-h100-80gb": "a3",
}
# Machine families whose GPU count is fixed by the machine type (GKE rejects any other count).
_FIXED_GPU_COUNTS = {
    "g2-standard-4": 1, "g2-standard-8": 1, "g2-standard-12": 1, "g2-standard-16": 1,
    "g2-standard-32": 1, "g2-standard-24": 2, "g2-standard-48": 4, "g2-standard-96": 8,
    "a2-highgpu-1g": 1, "a2-highgpu-2g": 2, "a2-highgpu-4g": 4, "a2-highgpu-8g": 8,
    "a3-highgpu-1g": 1, "a3-highgpu-2g": 2, "a3-highgpu-4g": 4, "a3-highgpu-8g": 8,
}
FIXED_DISK_TYPE = "pd-balanced"
"""The type of the disks the config does not choose: system nodes' boot disks and the builder VM's disks."""
PD_TYPES_BY_SERIES = {
    "g2": ("pd-balanced", "pd-ssd"),
    "n1": ("pd-standard", "pd-balanced", "pd-ssd"),
    "n4": (),
    "c4": (),
}
"""Persistent Disk types each machine series accepts (of pd-standard, pd-balanced, pd-ssd), from Compute
Engine's tables: https://cloud.google.com/compute/docs/disks#disk-types ("machine series support") and
https://cloud.google.com/compute/docs/accelerator-optimized-machines#g2-disks (G2: Balanced and SSD
Persistent Disk, no Standard). Written 2026-11-29 without access to those pages from here, so each row
is also backed by the error Compute Engine returns for a pair it refuses, as quoted in public reports:
g2 + pd-standard (everycure-org/matrix#621, "pd-standard was not available for G2"); n4 + pd-standard
(DataBiosphere/dsub#301, "[pd-standard, n4-standard-2] features are not compatible for creating
instance"; N4 takes only Hyperdisk); c4 + pd-balanced (astronomer/astronomer#2463, "[pd-balanced,
c4-standard-16] features are not compatible"). Series not listed are not checked."""

# Kubernetes minors the manifest schemas cover (kubernetes-validate) and GKE still serves.
KUBERNETES_MINORS = tuple(f"1.{m}" for m in range(30, 38))

_PROJECT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
_MACHINE_TYPE = re.compile(r"^[a-z][a-z0-9]*-[a-z0-9-]+$")
_MASTER_VERSION = re.compile(r"^1\.(\d+)(\.\d+(-gke\.\d+)?)?$")
_RECIPE_PATH = re.compile(r"^(?!/)(?!(.*/)?\.\.(/|$))[\w./-]+\.ya?ml$")
_RELATIVE_PATH = re.compile(r"^(?!/)(?!(.*/)?\.\.(/|$))[A-Za-z0-9._/-]+$")


class ConfigError(Exception):
    """All problems found in one stack's configuration."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            f"{len(problems)} problem(s) in the stack configuration:\n"
            + "\n".join(f"  - {p}" for p in problems)
        )


@dataclass(frozen=True)
class NetworkConfig:
    subnet_cidr: str = "10.10.0.0/20"
    pods_cidr: str = "10.16.0.0/14"
    services_cidr: str = "10.20.0.0/20"
    master_cidr: str = "172.16.0.0/28"
    master_authorized_cidrs: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClusterConfig:
    release_channel: str = "REGULAR"
    min_master_version: str = "1.33"

    @property
    def kubernetes_minor(self) -> str:
        """The minor version manifests are validated against (`1.33.5-gke.100` -> `1.33`)."""
        return ".".join(self.min_master_version.split(".")[:2])


@dataclass(frozen=True)
class SystemPoolConfig:
    machine_type: str = "e2-standard-4"
    min_nodes: int = 1
    max_nodes: int = 3
    disk_size_gb: int = 50


@dataclass(frozen=True)
class GpuPoolConfig:
    machine_type: str = "g2-standard-8"
    accelerator_type: str = "nvidia-l4"
    accelerator_count: int = 1
    min_nodes: int = 0
    max_nodes: int = 2
    spot: bool = True
    disk_type: str = "pd-balanced"
    disk_size_gb: int = 100
    location_policy: str = "ANY"
    gpu_driver_version: str = "LATEST"
    on_demand_fallback: bool = False
    """With `spot`: a second, on-demand pool, used only when Spot capacity is gone (components/compute_class.py)."""


@dataclass(frozen=True)
class RuntimeConfig:
    recipe: str = "images/runtime/recipe.yaml"
    disk_type: str = "pd-balanced"
    disk_size_gb: int = 50
    bake_timeout_minutes: int = 90
    bake_machine_type: str = "e2-standard-8"
    delivery: str = "daemonset"


@dataclass(frozen=True)
class WebuiConfig:
    model_path: str = "models/Stable-diffusion"
    api_auth: bool = True
    public: bool = False
    generation_timeout_seconds: int = 120


@dataclass(frozen=True)
class WarmSchedule:
    """Replicas KEDA's cron trigger keeps warm between `start` and `end` (5-field cron) in `timezone` (IANA)."""

    timezone: str
    start: str
    end: str
    replicas: int


@dataclass(frozen=True)
class AutoscalingConfig:
    """Demand-driven WebUI replicas (KEDA, fed by the request queue): the autoscaler owns the replica count."""

    min_replicas: int = 0
    max_replicas: int = 2
    cooldown_seconds: int = 300
    keda_chart_version: str = "2.20.2"
    warm_schedules: tuple[WarmSchedule, ...] = ()


@dataclass(frozen=True)
class QueueConfig:
    """The request queue in front of the WebUI (components/request_queue.py, docs/request-queue.md): how many
    requests may wait, and for how long, before a client gets 429 or 503 with Retry-After."""

    max_wait_seconds: int = 600
    max_depth: int = 200


@dataclass(frozen=True)
class GatewayConfig:
    """The way in: a GKE Gateway in front of the request queue; public only with TLS and IAP. Off: no load
    balancer, so the WebUI is reached through `kubectl port-forward` (README, Optional parts)."""

    proxy_only_cidr: str = "10.24.0.0/23"
    hostname: str = ""
    certificate_map: str = ""
    iap_client_id: str = ""
    iap_secret_name: str = ""
    enabled: bool = True


@dataclass(frozen=True)
class ObservabilityConfig:
    """The dashboard, log-based metrics and alerts (components/observability.py), and the cluster's managed
    Prometheus with the kube state and DCGM metrics they read (components/cluster.py)."""

    notification_email: str | None = None
    """Where alerts go (a Cloud Monitoring email channel); None: alerts open incidents that notify nobody."""
    cold_start_budget_seconds: int = 300
    """How long a wanted WebUI replica may stay unavailable before the cold-start alert fires."""
    enabled: bool = True


@dataclass(frozen=True)
class JobsConfig:
    """The asynchronous job queue (components/jobs.py); ranges are Pub/Sub's own
    (https://cloud.google.com/pubsub/docs/reference/rest/v1/projects.subscriptions)."""

    enabled: bool = False
    ack_deadline_seconds: int = 60
    max_delivery_attempts: int = 5
    min_retry_backoff_seconds: int = 10
    max_retry_backoff_seconds: int = 600
    result_retention_days: int = 30
    jobs_per_pod: int = 5


@dataclass(frozen=True)
class StackConfig:
    project: str
    region: str
    zones: tuple[str, ...]
    environment: str
    network: NetworkConfig = field(default_factory=NetworkConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    system_pool: SystemPoolConfig = field(default_factory=SystemPoolConfig)
    gpu_pool: GpuPoolConfig = field(default_factory=GpuPoolConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    webui: WebuiConfig = field(default_factory=WebuiConfig)
    autoscaling: AutoscalingConfig = field(default_factory=AutoscalingConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    observability: ObservabilityConfig = field(default_factory=ObservabilityConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    deletion_protection: bool | None = None
    """The stack's `deletionProtection`; None: the environment's default (on in prod)."""

    @property
    def production(self) -> bool:
        return self.environment == "prod"

    @property
    def parts(self) -> tuple[str, ...]:
        """The optional parts this stack turns on, of PARTS."""
        return tuple(part for part in PARTS if getattr(self, part).enabled)

    @property
    def protected(self) -> bool:
        """GKE deletion protection on the cluster and Pulumi `protect` on stateful resources: its own
        switch, so lifting it for a teardown changes nothing else about a live stack."""
        return self.production if self.deletion_protection is None else self.deletion_protection


# --- reading -------------------------------------------------------------------------------

# camelCase config key -> (dataclass field, checker); checkers append problems and return the value.
_Checker = Callable[["_Reader", str, Any], Any]


class _Reader:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.bad_keys: set[str] = set()

    def fail(self, key: str, value: Any, allowed: str) -> None:
        self.bad_keys.add(key.split("[")[0])
        self.problems.append(f"{key}: {json.dumps(value)} is not allowed; expected {allowed}")

    def valid(self, *keys: str) -> bool:
        """Whether every key (or section) a cross-key rule reads passed its own check."""
        return not any(bad == k or bad.startswith(k + ".") or k.startswith(bad + ".") for bad in self.bad_keys for k in keys)

    def string(self, key: str, value: Any, pattern: re.Pattern | None = None, allowed: str = "") -> Any:
        if not isinstance(value, str) or (pattern is not None and not pattern.match(value)):
            self.fail(key, value, allowed or "a string")
        return value

    def choice(self, key: str, value: Any, choices: tuple[str, ...]) -> Any:
        if value not in choices:
            self.fail(key, value, "one of " + ", ".join(choices))
        return value

    def integer(self, key: str, value: Any, low: int, high: int) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(key, value, f"an integer from {low} to {high}")
        return value

    def boolean(self, key: str, value: Any) -> Any:
        if not isinstance(value, bool):
            self.fail(key, value, "true or false")
        return value

    def cidr(self, key: str, value: Any, prefix_range: tuple[int, int] = (8, 29)) -> Any:
        low, high = prefix_range
        allowed = f"an IPv4 CIDR block with a prefix length from /{low} to /{high}"
        try:
            net = ipaddress.IPv4Network(value, strict=True)
        except (ValueError, TypeError):
            self.fail(key, value, allowed + " (host bits zero)")
            return value
        if not low <= net.prefixlen <= high:
            self.fail(key, value, allowed)
        return value

    def section(self, key: str, raw: Any, cls: type, fields: dict[str, tuple[str, _Checker]]) -> Any:
        """Build dataclass `cls` from a config object, checking every field and rejecting unknown ones."""
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            self.fail(key, raw, "an object with keys " + ", ".join(sorted(fields)))
            return cls()
        values = {}
        for name, value in raw.items():
            if name not in fields:
                self.problems.append(
                    f"{key}.{name}: unknown key; allowed keys are " + ", ".join(sorted(fields))
                )
                continue
            attr, check = fields[name]
            values[attr] = check(self, f"{key}.{name}", value)
        try:
            return cls(**values)
        except TypeError:
            return cls()


def _machine_type(r: _Reader, key: str, v: Any) -> Any:
    return r.string(key, v, _MACHINE_TYPE, "a machine type such as e2-standard-4")


def _cidr_list(r: _Reader, key: str, v: Any) -> Any:
    if not isinstance(v, list):
        r.fail(key, v, "a list of IPv4 CIDR blocks")
        return ()
    return tuple(r.cidr(f"{key}[{i}]", c, (0, 32)) for i, c in enumerate(v))


_NETWORK = {
    "subnetCidr": ("subnet_cidr", lambda r, k, v: r.cidr(k, v, (8, 29))),
    "podsCidr": ("pods_cidr", lambda r, k, v: r.cidr(k, v, (9, 21))),
    "servicesCidr": ("services_cidr", lambda r, k, v: r.cidr(k, v, (16, 27))),
    "masterCidr": ("master_cidr", lambda r, k, v: r.cidr(k, v, (28, 28))),
    "masterAuthorizedCidrs": ("master_authorized_cidrs", _cidr_list),
}
_CLUSTER = {
    "releaseChannel": ("release_channel", lambda r, k, v: r.choice(k, v, RELEASE_CHANNELS)),
    "minMasterVersion": ("min_master_version", lambda r, k, v: _master_version(r, k, v)),
}
_SYSTEM_POOL = {
    "machineType": ("machine_type", _machine_type),
    "minNodes": ("min_nodes", lambda r, k, v: r.integer(k, v, 1, 10)),
    "maxNodes": ("max_nodes", lambda r, k, v: r.integer(k, v, 1, 20)),
    "diskSizeGb": ("disk_size_gb", lambda r, k, v: r.integer(k, v, 20, 500)),
}
_GPU_POOL = {
    "machineType": ("machine_type", _machine_type),
    "acceleratorType": (
        "accelerator_type",
        lambda r, k, v: r.choice(k, v, tuple(GPU_MACHINE_FAMILIES)),
    ),
    "acceleratorCount": ("accelerator_count", lambda r, k, v: r.integer(k, v, 1, 8)),
    "minNodes": ("min_nodes", lambda r, k, v: r.integer(k, v, 0, 100)),
    "maxNodes": ("max_nodes", lambda r, k, v: r.integer(k, v, 1, 100)),
    "spot": ("spot", lambda r, k, v: r.boolean(k, v)),
    "diskType": ("disk_type", lambda r, k, v: r.choice(k, v, DISK_TYPES)),
    "diskSizeGb": ("disk_size_gb", lambda r, k, v: r.integer(k, v, 50, 2000)),
    "locationPolicy": ("location_policy", lambda r, k, v: r.choice(k, v, LOCATION_POLICIES)),
    "gpuDriverVersion": (
        "gpu_driver_version",
        lambda r, k, v: r.choice(k, v, GPU_DRIVER_VERSIONS),
    ),
    "onDemandFallback": ("on_demand_fallback", lambda r, k, v: r.boolean(k, v)),
}
_RUNTIME = {
    "recipe": (
        "recipe",
        lambda r, k, v: r.string(k, v, _RECIPE_PATH, "a relative path to a .yaml recipe inside the project"),
    ),
    "diskType": ("disk_type", lambda r, k, v: r.choice(k, v, RUNTIME_DISK_TYPES)),
    "diskSizeGb": ("disk_size_gb", lambda r, k, v: r.integer(k, v, 20, 1000)),
    "bakeTimeoutMinutes": ("bake_timeout_minutes", lambda r, k, v: r.integer(k, v, 10, 240)),
    "bakeMachineType": ("bake_machine_type", _machine_type),
    "delivery": ("delivery", lambda r, k, v: r.choice(k, v, DELIVERIES)),
}
_WEBUI = {
    "replicas": ("replicas", lambda r, k, v: r.fail(
        k, v, "no value: the key is gone, the autoscaler owns the replica count; set autoscaling.minReplicas "
              "and autoscaling.maxReplicas instead")),
    "modelPath": (
        "model_path",
        lambda r, k, v: r.string(k, v, _RELATIVE_PATH, "a relative path inside /runtime without '..'"),
    ),
    "apiAuth": ("api_auth", lambda r, k, v: r.boolean(k, v)),
    "public": ("public", lambda r, k, v: r.boolean(k, v)),
    "generationTimeoutSeconds": (
        "generation_timeout_seconds",
        lambda r, k, v: r.integer(k, v, 10, 1800),
    ),
}

_JOBS = {
    "enabled": ("enabled", lambda r, k, v: r.boolean(k, v)),
    "ackDeadlineSeconds": ("ack_deadline_seconds", lambda r, k, v: r.integer(k, v, 10, 600)),
    "maxDeliveryAttempts": ("max_delivery_attempts", lambda r, k, v: r.integer(k, v, 5, 100)),
    "minRetryBackoffSeconds": ("min_retry_backoff_seconds", lambda r, k, v: r.integer(k, v, 0, 600)),
    "maxRetryBackoffSeconds": ("max_retry_backoff_seconds", lambda r, k, v: r.integer(k, v, 0, 600)),
    "resultRetentionDays": ("result_retention_days", lambda r, k, v: r.integer(k, v, 1, 3650)),
    "jobsPerPod": ("jobs_per_pod", lambda r, k, v: r.integer(k, v, 1, 1000)),
}


KEDA_CHART_VERSIONS = ("2.20.2",)
"""Chart versions whose CRD schemas tests/schemas holds: a new version gets its schemas written and checked first."""
_HOSTNAME = re.compile(r"^([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}$")
_RESOURCE_NAME = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
_CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")
_CRON_NAMES = re.compile(r"^[A-Za-z]{3}(-[A-Za-z]{3})?(,[A-Za-z]{3}(-[A-Za-z]{3})?)*$")
CRON_FIELD_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
"""Minute, hour, day of month, month, day of week: the "Linux format cron" KEDA's cron trigger takes
(https://keda.sh/docs/2.20/scalers/cron/); month and weekday may also be names (JAN, MON-FRI)."""
COLD_START_SECONDS = 300
"""The shortest wait that covers a cold start from zero GPU nodes (published: about 3.5 min from the autoscaler's
trigger to a warm WebUI, REFERENCE §1), with room to spare: a shorter queue.maxWaitSeconds answers 503 to every
request that wakes the WebUI."""


def _gone(instead: str) -> _Checker:
    """A key an old stack file may still carry: refused with what replaced it."""
    return lambda r, k, v: r.fail(k, v, f"no value: the key is gone; {instead}")


def _cron(r: _Reader, key: str, value: Any) -> Any:
    allowed = ("a 5-field cron expression (minute hour day-of-month month day-of-week) such as \"0 9 * * MON-FRI\", "
               "each number within " + ", ".join(f"{lo}-{hi}" for lo, hi in CRON_FIELD_RANGES))
    parts = value.split() if isinstance(value, str) else []
    ok = len(parts) == 5
    for i, part in enumerate(parts if ok else ()):
        low, high = CRON_FIELD_RANGES[i]
        if i >= 3 and _CRON_NAMES.match(part):
            continue
        if not _CRON_FIELD.match(part) or any(not low <= int(n) <= high
                                              for n in re.findall(r"(?<!/)\b\d+", part)):
            ok = False
    if not ok:
        r.fail(key, value, allowed)
    return value


def _timezone(r: _Reader, key: str, value: Any) -> Any:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        r.fail(key, value, "an IANA time zone such as Europe/Berlin or America/New_York")
    return value


_WARM_SCHEDULE = {
    "timezone": ("timezone", _timezone),
    "start": ("start", _cron),
    "end": ("end", _cron),
    "replicas": ("replicas", lambda r, k, v: r.integer(k, v, 1, 100)),
}


def _warm_schedules(r: _Reader, key: str, value: Any) -> Any:
    if not isinstance(value, list):
        r.fail(key, value, "a list of {timezone, start, end, replicas}")
        return ()
    schedules = []
    for i, raw in enumerate(value):
        item = f"{key}[{i}]"
        if not isinstance(raw, dict):
            r.fail(item, raw, "an object with keys " + ", ".join(_WARM_SCHEDULE))
            continue
        missing = [name for name in _WARM_SCHEDULE if name not in raw]
        for name in missing:
            r.problems.append(f"{item}.{name}: missing; a warm schedule needs " + ", ".join(_WARM_SCHEDULE))
        if missing:
            continue
        known = len(r.problems)
        schedule = r.section(item, raw, WarmSchedule, _WARM_SCHEDULE)
        if len(r.problems) > known:
            continue
        if schedule.start == schedule.end:
            r.fail(f"{item}.end", schedule.end, "a time other than start: KEDA refuses a cron window that starts "
                   "and ends at once (https://keda.sh/docs/2.20/scalers/cron/)")
        schedules.append(schedule)
    return tuple(schedules)


_AUTOSCALING = {
    "minReplicas": ("min_replicas", lambda r, k, v: r.integer(k, v, 0, 100)),
    "maxReplicas": ("max_replicas", lambda r, k, v: r.integer(k, v, 1, 100)),
    "cooldownSeconds": ("cooldown_seconds", lambda r, k, v: r.integer(k, v, 30, 86400)),
    "kedaChartVersion": ("keda_chart_version", lambda r, k, v: r.choice(k, v, KEDA_CHART_VERSIONS)),
    "warmSchedules": ("warm_schedules", _warm_schedules),
    "coldStartTimeoutSeconds": ("cold_start_timeout_seconds", _gone(
        "requests now wait in the request queue; set queue.maxWaitSeconds instead")),
    "httpAddOnChartVersion": ("http_add_on_chart_version", _gone(
        "the KEDA HTTP add-on is replaced by the request queue (docs/request-queue.md); delete the key")),
}
_QUEUE = {
    "maxWaitSeconds": ("max_wait_seconds", lambda r, k, v: r.integer(k, v, COLD_START_SECONDS, 3600)),
    "maxDepth": ("max_depth", lambda r, k, v: r.integer(k, v, 1, 100000)),
}
_GATEWAY = {
    "enabled": ("enabled", lambda r, k, v: r.boolean(k, v)),
    "proxyOnlyCidr": ("proxy_only_cidr", lambda r, k, v: r.cidr(k, v, (23, 26))),
    "hostname": ("hostname", lambda r, k, v: r.string(k, v, _HOSTNAME, "a DNS name such as sd.example.com")),
    "certificateMap": ("certificate_map", lambda r, k, v: r.string(
        k, v, _RESOURCE_NAME, "the name of a Certificate Manager certificate map")),
    "iapClientId": ("iap_client_id", lambda r, k, v: r.string(k, v, allowed="an OAuth client id")),
    "iapSecretName": ("iap_secret_name", lambda r, k, v: r.string(
        k, v, _RESOURCE_NAME, "the name of the Secret holding the OAuth client secret")),
}

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[a-zA-Z]{2,}$")
_OBSERVABILITY = {
    "enabled": ("enabled", lambda r, k, v: r.boolean(k, v)),
    "notificationEmail": (
        "notification_email", lambda r, k, v: r.string(k, v, _EMAIL, "an email address such as oncall@your-domain"),
    ),
    "coldStartBudgetSeconds": ("cold_start_budget_seconds", lambda r, k, v: r.integer(k, v, 60, 3600)),
}


def _master_version(r: _Reader, key: str, value: Any) -> Any:
    allowed = "a GKE version such as 1.33 or 1.33.5-gke.1000 with minor " + " to ".join(
        (KUBERNETES_MINORS[0], KUBERNETES_MINORS[-1])
    )
    m = _MASTER_VERSION.match(value) if isinstance(value, str) else None
    if not m or f"1.{m.group(1)}" not in KUBERNETES_MINORS:
        r.fail(key, value, allowed)
    return value


TOP_LEVEL_KEYS = (
    "project", "region", "zones", "environment",
    "network", "cluster", "systemPool", "gpuPool", "runtime", "webui", "autoscaling", "queue", "gateway",
    "observability", "jobs", "deletionProtection",
)


def parse(raw: dict[str, Any], root: Path | None = None) -> StackConfig:
    """Validate a stack's config (keys without the project prefix, values already decoded).

    `root` is the project directory, used to check that the recipe file exists.
    Raises ConfigError listing every problem.
    """
    r = _Reader()
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            r.problems.append(
                f"{PROJECT}:{key}: unknown key; allowed keys are " + ", ".join(TOP_LEVEL_KEYS)
            )
    for key in ("project", "region", "zones", "environment"):
        if key not in raw:
            r.problems.append(f"{PROJECT}:{key}: missing; it is required")

    project = ""
    if "project" in raw:
        project = r.string("project", raw["project"], _PROJECT_ID,
                           "a GCP project id: 6-30 lowercase letters, digits or hyphens, starting with a letter")
    region = r.string("region", raw["region"], _REGION, "a GCP region such as us-central1") if "region" in raw else ""
    zones: tuple[str, ...] = ()
    if "zones" in raw:
        zv = raw["zones"]
        if not isinstance(zv, list) or not zv:
            r.fail("zones", zv, "a non-empty list of zones in the region")
        else:
            zones = tuple(zv)
            region_ok = isinstance(region, str) and _REGION.match(region)
            for i, z in enumerate(zv):
                if not isinstance(z, str) or (region_ok and not re.fullmatch(re.escape(region) + r"-[a-z]", z)):
                    r.fail(f"zones[{i}]", z, f"a zone of region {region}, such as {region}-a")
            if len(set(zones)) != len(zones):
                r.fail("zones", zv, "distinct zones")
    environment = r.choice("environment", raw["environment"], ENVIRONMENTS) if "environment" in raw else "dev"

    network = r.section("network", raw.get("network"), NetworkConfig, _NETWORK)
    cluster = r.section("cluster", raw.get("cluster"), ClusterConfig, _CLUSTER)
    system_pool = r.section("systemPool", raw.get("systemPool"), SystemPoolConfig, _SYSTEM_POOL)
    gpu_pool = r.section("gpuPool", raw.get("gpuPool"), GpuPoolConfig, _GPU_POOL)
    runtime = r.section("runtime", raw.get("runtime"), RuntimeConfig, _RUNTIME)
    webui = r.section("webui", raw.get("webui"), WebuiConfig, _WEBUI)
    autoscaling = r.section("autoscaling", raw.get("autoscaling"), AutoscalingConfig, _AUTOSCALING)
    queue = r.section("queue", raw.get("queue"), QueueConfig, _QUEUE)
    gateway = r.section("gateway", raw.get("gateway"), GatewayConfig, _GATEWAY)
    observability = r.section("observability", raw.get("observability"), ObservabilityConfig, _OBSERVABILITY)
    jobs = r.section("jobs", raw.get("jobs"), JobsConfig, _JOBS)
    if r.valid("jobs") and jobs.min_retry_backoff_seconds > jobs.max_retry_backoff_seconds:
        r.fail("jobs.minRetryBackoffSeconds", jobs.min_retry_backoff_seconds,
               f"at most jobs.maxRetryBackoffSeconds ({jobs.max_retry_backoff_seconds})")
    deletion_protection = r.boolean("deletionProtection", raw["deletionProtection"]) if "deletionProtection" in raw else None

    _check_relations(r, network, system_pool, gpu_pool, runtime, webui, root)
    _check_deployable(r, environment, network, system_pool, gpu_pool, runtime)
    _check_demand_scaling(r, environment, gpu_pool, webui, autoscaling, gateway, network)
    _check_queue(r, queue, observability)
    _check_alerting(r, environment, observability)
    _check_parts(r, raw, {"gateway": gateway.enabled, "observability": observability.enabled})
    _check_delivery_and_capacity(r, cluster, gpu_pool, runtime, raw.get("runtime"))
    if r.problems:
        raise ConfigError(r.problems)
    return StackConfig(
        project=project, region=region, zones=zones, environment=environment,
        network=network, cluster=cluster, system_pool=system_pool, gpu_pool=gpu_pool,
        runtime=runtime, webui=webui, autoscaling=autoscaling, queue=queue, gateway=gateway,
        observability=observability, jobs=jobs, deletion_protection=deletion_protection,
    )


def _network_ranges(network: NetworkConfig) -> dict[str, str]:
    return {
        "network.subnetCidr": network.subnet_cidr,
        "network.podsCidr": network.pods_cidr,
        "network.servicesCidr": network.services_cidr,
        "network.masterCidr": network.master_cidr,
    }


def _check_relations(r: _Reader, network: NetworkConfig, system_pool: SystemPoolConfig,
                     gpu_pool: GpuPoolConfig, runtime: RuntimeConfig, webui: WebuiConfig,
                     root: Path | None) -> None:
    """Rules that span several keys; each runs once the values it reads passed their own checks."""
    if r.valid("webui") and webui.public and not webui.api_auth:
        r.fail("webui.public", True, "false unless webui.apiAuth is true: a public WebUI requires auth")
    if r.valid("gpuPool.acceleratorType", "gpuPool.machineType"):
        family = GPU_MACHINE_FAMILIES[gpu_pool.accelerator_type]
        if gpu_pool.machine_type.split("-")[0] != family:
            r.fail("gpuPool.machineType", gpu_pool.machine_type,
                   f"a {family}-* machine type, the only family that carries {gpu_pool.accelerator_type}")
        elif r.valid("gpuPool.acceleratorCount"):
            fixed = _FIXED_GPU_COUNTS.get(gpu_pool.machine_type)
            if fixed is not None and gpu_pool.accelerator_count != fixed:
                r.fail("gpuPool.acceleratorCount", gpu_pool.accelerator_count,
                       f"{fixed}, the GPU count built into {gpu_pool.machine_type}")
    for key, pool in (("gpuPool", gpu_pool), ("systemPool", system_pool)):
        if r.valid(f"{key}.minNodes", f"{key}.maxNodes") and pool.min_nodes > pool.max_nodes:
            r.fail(f"{key}.minNodes", pool.min_nodes, f"at most {key}.maxNodes ({pool.max_nodes})")

    ranges = _network_ranges(network)
    names = [k for k in ranges if r.valid(k)]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if ipaddress.IPv4Network(ranges[a]).overlaps(ipaddress.IPv4Network(ranges[b])):
                r.fail(b, ranges[b], f"a range that does not overlap {a} ({ranges[a]})")
    if root is not None and r.valid("runtime.recipe") and not (root / runtime.recipe).is_file():
        r.fail("runtime.recipe", runtime.recipe, f"a recipe file that exists under {root}")


DOCUMENTATION_RANGES = tuple(ipaddress.IPv4Network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"))
"""RFC 5737 section 3: TEST-NET-1/2/3, "for use in documentation"; no client ever has such an address."""


def _check_deployable(r: _Reader, environment: str, network: NetworkConfig, system_pool: SystemPoolConfig,
                      gpu_pool: GpuPoolConfig, runtime: RuntimeConfig) -> None:
    """Values every check above accepts but GKE or Compute Engine would reject, or that leave prod unreachable."""
    if environment == "prod" and r.valid("network.masterAuthorizedCidrs"):
        for i, cidr in enumerate(network.master_authorized_cidrs):
            doc = next((d for d in DOCUMENTATION_RANGES if ipaddress.IPv4Network(cidr).subnet_of(d)), None)
            if doc is not None:
                r.fail(f"network.masterAuthorizedCidrs[{i}]", cidr,
                       f"the range your operators reach the API server's IP endpoint from (inside the VPC: prod's "
                       f"IP endpoint is private): {doc} is reserved for documentation (RFC 5737), no client comes "
                       "from it, so nobody could reach that endpoint. Set yours with `pulumi config set --path "
                       f"'sd-gke:network.masterAuthorizedCidrs[{i}]' <your-vpn-cidr>`, or an empty list for any "
                       "address in the VPC")
    chosen = (("gpuPool.diskType", gpu_pool.disk_type), ("runtime.diskType", runtime.disk_type))
    for key, disk_type in chosen:  # both disks of a GPU node: its boot disk and the runtime disk attached to it
        supported = _pd_types(gpu_pool.machine_type)
        if supported is not None and disk_type not in supported and r.valid(key, "gpuPool.machineType"):
            r.fail(key, disk_type, f"a disk type {gpu_pool.machine_type} takes: {', '.join(supported)} "
                   "(components/config.py, PD_TYPES_BY_SERIES, cites the source)")
    fixed = (("systemPool.machineType", system_pool.machine_type, "the system nodes' boot disks"),
             ("runtime.bakeMachineType", runtime.bake_machine_type, "the builder VM's disks"))
    for key, machine_type, disks in fixed:
        supported = _pd_types(machine_type)
        if supported is not None and FIXED_DISK_TYPE not in supported and r.valid(key):
            r.fail(key, machine_type, f"a machine type that takes {FIXED_DISK_TYPE} disks ({disks} are "
                   f"{FIXED_DISK_TYPE}); it takes {', '.join(supported) or 'no Persistent Disk, only Hyperdisk'}")


def _check_delivery_and_capacity(r: _Reader, cluster: ClusterConfig, gpu_pool: GpuPoolConfig,
                                 runtime: RuntimeConfig, raw_runtime: Any) -> None:
    """What the runtime delivery and the Spot fallback need from the cluster and the pools."""
    if r.valid("gpuPool.onDemandFallback", "gpuPool.spot") and gpu_pool.on_demand_fallback and not gpu_pool.spot:
        r.fail("gpuPool.onDemandFallback", True, "false unless gpuPool.spot is true: the fallback is for Spot capacity "
               "that is gone, and a stack without Spot runs on demand already")
    needs = []
    if r.valid("runtime.delivery") and runtime.delivery == "secondaryBootDisk":
        needs.append(("runtime.delivery", runtime.delivery, SECONDARY_BOOT_DISK_MIN_VERSION, "secondary boot disks"))
        # "The secondary boot disk type is the same as the node boot disk" (data-container-image-preloading).
        chosen = raw_runtime.get("diskType") if isinstance(raw_runtime, dict) else None
        if chosen is not None and r.valid("runtime.diskType", "gpuPool.diskType") and chosen != gpu_pool.disk_type:
            r.fail("runtime.diskType", chosen, f"unset or {gpu_pool.disk_type!r} (gpuPool.diskType) with delivery "
                   "secondaryBootDisk: GKE gives the runtime disk the type of the node's boot disk")
    if r.valid("gpuPool.onDemandFallback") and gpu_pool.on_demand_fallback:
        needs.append(("gpuPool.onDemandFallback", True, COMPUTE_CLASS_MIN_VERSION, "custom ComputeClasses"))
    if not r.valid("cluster.minMasterVersion"):
        return
    for key, value, minimum, feature in needs:
        if not version_at_least(cluster.min_master_version, minimum):
            r.fail("cluster.minMasterVersion", cluster.min_master_version,
                   f"a GKE version of at least {minimum} for {key}={json.dumps(value)} ({feature} need it); "
                   f"a bare minor such as 1.30 may resolve to an older patch, so give a later minor or a full version")


def version_at_least(version: str, minimum: str) -> bool:
    """GKE versions compare as (major, minor, patch, gke build). A shorter version stands for any of its
    later parts (`1.30` is any 1.30 patch), so it is at least `minimum` only when what it gives is later."""
    def parts(v: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", v))

    have, need = parts(version), parts(minimum)
    if len(have) < len(need):
        return have > need[:len(have)]
    return have >= need


def _pd_types(machine_type: Any) -> tuple[str, ...] | None:
    """The Persistent Disk types a machine type's series takes; None where the table does not say."""
    return PD_TYPES_BY_SERIES.get(machine_type.split("-")[0]) if isinstance(machine_type, str) else None


def _check_demand_scaling(r: _Reader, environment: str, gpu_pool: GpuPoolConfig, webui: WebuiConfig,
                          autoscaling: AutoscalingConfig, gateway: GatewayConfig, network: NetworkConfig) -> None:
    """The scaler fits the GPU pool, idles at zero outside prod, and a public way in has TLS and IAP."""
    if r.valid("autoscaling.minReplicas", "autoscaling.maxReplicas") and autoscaling.min_replicas > autoscaling.max_replicas:
        r.fail("autoscaling.minReplicas", autoscaling.min_replicas,
               f"at most autoscaling.maxReplicas ({autoscaling.max_replicas})")
    if r.valid("autoscaling.maxReplicas", "gpuPool.maxNodes", "gpuPool.acceleratorCount"):
        capacity = gpu_pool.max_nodes * gpu_pool.accelerator_count
        if autoscaling.max_replicas > capacity:
            r.fail("autoscaling.maxReplicas", autoscaling.max_replicas,
                   f"at most {capacity}, the GPUs the pool holds (gpuPool.maxNodes x gpuPool.acceleratorCount; "
                   "one GPU per WebUI pod)")
    if r.valid("autoscaling.minReplicas", "environment") and environment != "prod" and autoscaling.min_replicas:
        r.fail("autoscaling.minReplicas", autoscaling.min_replicas,
               "0 outside prod: an idle stack keeps no GPU node")
    if r.valid("autoscaling.minReplicas", "autoscaling.maxReplicas", "autoscaling.warmSchedules"):
        for i, schedule in enumerate(autoscaling.warm_schedules):
            if not autoscaling.min_replicas <= schedule.replicas <= autoscaling.max_replicas:
                r.fail(f"autoscaling.warmSchedules[{i}].replicas", schedule.replicas,
                       f"from autoscaling.minReplicas ({autoscaling.min_replicas}) to autoscaling.maxReplicas "
                       f"({autoscaling.max_replicas})")
    if r.valid("webui.public", "gateway") and webui.public and gateway.enabled:
        for key, value in (("gateway.hostname", gateway.hostname), ("gateway.certificateMap", gateway.certificate_map),
                           ("gateway.iapClientId", gateway.iap_client_id),
                           ("gateway.iapSecretName", gateway.iap_secret_name)):
            if not value:
                r.problems.append(f"{key}: missing; a public WebUI (webui.public: true) needs TLS and IAP")
    if r.valid("gateway.proxyOnlyCidr", "gateway.enabled") and gateway.enabled:
        for key, cidr in _network_ranges(network).items():
            if r.valid(key) and ipaddress.IPv4Network(gateway.proxy_only_cidr).overlaps(ipaddress.IPv4Network(cidr)):
                r.fail("gateway.proxyOnlyCidr", gateway.proxy_only_cidr, f"a range that does not overlap {key} ({cidr})")


def _check_queue(r: _Reader, queue: QueueConfig, observability: ObservabilityConfig) -> None:
    """A request may wait at least as long as the cold start the stack expects: the cold-start alert's budget."""
    if r.valid("queue.maxWaitSeconds", "observability.coldStartBudgetSeconds") and \
            queue.max_wait_seconds < observability.cold_start_budget_seconds:
        r.fail("queue.maxWaitSeconds", queue.max_wait_seconds,
               f"at least observability.coldStartBudgetSeconds ({observability.cold_start_budget_seconds}): "
               "a request that wakes the WebUI waits through its cold start")


NOTIFICATION_EMAIL_COMMAND = "pulumi config set --path 'sd-gke:observability.notificationEmail' <your-oncall-address>"


def _check_alerting(r: _Reader, environment: str, observability: ObservabilityConfig) -> None:
    """Prod's alerts page someone: without a notification channel they open incidents nobody is told of.
    With observability off there are no alerts, and nothing to page."""
    if environment == "prod" and observability.enabled and \
            r.valid("environment", "observability.enabled", "observability.notificationEmail") and \
            observability.notification_email is None:
        r.problems.append(f"observability.notificationEmail: missing; prod's alerts must page someone: set it with "
                          f"`{NOTIFICATION_EMAIL_COMMAND} --stack prod`")


PARTS = ("gateway", "observability", "jobs")
"""The parts a stack may turn off (`<part>.enabled`); demand scaling is no part: the cold start is for it."""
PART_KEYS: dict[str, tuple[str, ...]] = {
    "gateway": ("webui.public", "gateway.hostname", "gateway.certificateMap", "gateway.iapClientId",
                "gateway.iapSecretName"),
    "observability": ("observability.notificationEmail",),
}
"""Keys that ask something of a part and mean nothing without it: set (true or a value) while the part is off,
they are refused rather than silently ignored. The parts' tuning keys (gateway.proxyOnlyCidr, jobs.*) may stay."""


def _check_parts(r: _Reader, raw: dict[str, Any], enabled: dict[str, bool]) -> None:
    """A key that needs a part that is off is refused, naming both keys."""
    for part, keys in PART_KEYS.items():
        switch = f"{part}.enabled"
        if enabled[part] or not r.valid(switch):
            continue
        for key in keys:
            top, name = key.split(".")
            value = raw[top].get(name) if isinstance(raw.get(top), dict) else None
            if value not in (None, False, "") and r.valid(key):
                r.fail(key, value, f"false or no value while {switch} is false (it acts only with the {part} on); "
                       f"set {switch}: true, or remove {key}")


def decode(raw: dict[str, str]) -> dict[str, Any]:
    """Turn Pulumi's config bag ({"sd-gke:key": "string or JSON"}) into plain values.

    Keys of other namespaces (gcp:, kubernetes:) belong to their providers and are ignored.
    """
    out: dict[str, Any] = {}
    prefix = PROJECT + ":"
    for key, value in raw.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        out[name] = value
    return out


def load(root: Path) -> StackConfig:
    """Read the running stack's config through the Pulumi SDK (the only place that does)."""
    from pulumi.runtime.config import CONFIG

    return parse(decode(dict(CONFIG.get())), root)


def load_stack(root: Path, stack: str) -> StackConfig:
    """Read a stack file's config without Pulumi, for tools that run beside it (tools/loadtest.py)."""
    from tools.mockrun import read_stack_config

    return parse(decode(read_stack_config(stack, root)), root)
