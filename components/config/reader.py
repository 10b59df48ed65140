"""Reading a stack's config key by key: each key's format and bounds, every problem collected.

A checker appends a problem naming the key, the value and what is allowed, and returns the value; the
reader remembers which keys failed, so that a cross-key rule (rules.py) runs only on values that passed.
"""

from __future__ import annotations

import ipaddress
import json
import re
import zoneinfo
from collections.abc import Callable
from typing import Any

from components.config.model import (
    DELIVERIES,
    DISK_TYPES,
    ENVIRONMENTS,
    GPU_DRIVER_VERSIONS,
    GPU_MACHINE_FAMILIES,
    KEDA_CHART_VERSIONS,
    KUBERNETES_MINORS,
    LOCATION_POLICIES,
    PROJECT,
    RELEASE_CHANNELS,
    RUNTIME_DISK_TYPES,
    AutoscalingConfig,
    ClusterConfig,
    GatewayConfig,
    GpuPoolConfig,
    JobsConfig,
    NetworkConfig,
    ObservabilityConfig,
    QueueConfig,
    RuntimeConfig,
    SystemPoolConfig,
    WarmSchedule,
    WebuiConfig,
)

_PROJECT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
_MACHINE_TYPE = re.compile(r"^[a-z][a-z0-9]*-[a-z0-9-]+$")
_MASTER_VERSION = re.compile(r"^1\.(\d+)(\.\d+(-gke\.\d+)?)?$")
_RECIPE_PATH = re.compile(r"^(?!/)(?!(.*/)?\.\.(/|$))[\w./-]+\.ya?ml$")
_RELATIVE_PATH = re.compile(r"^(?!/)(?!(.*/)?\.\.(/|$))[A-Za-z0-9._/-]+$")

# camelCase config key -> (dataclass field, checker); checkers append problems and return the value.
_Checker = Callable[["Reader", str, Any], Any]


class Reader:
    """The problems found so far in one stack's config, and the keys (or sections) they were found in."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.bad_keys: set[str] = set()

    def fail(self, key: str, value: Any, allowed: str) -> None:
        self.bad_keys.add(key.split("[")[0])
        self.problems.append(f"{key}: {json.dumps(value)} is not allowed; expected {allowed}")

    def valid(self, *keys: str) -> bool:
        """Whether every key (or section) a cross-key rule reads passed its own check."""
        return not any(bad == k or bad.startswith(k + ".") or k.startswith(bad + ".") for bad in self.bad_keys for k in keys)

    def string(self, key: str, value: Any, pattern: re.Pattern | None, allowed: str) -> Any:
        if not isinstance(value, str) or (pattern is not None and not pattern.match(value)):
            self.fail(key, value, allowed)
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

    def cidr(self, key: str, value: Any, prefix_range: tuple[int, int]) -> Any:
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
            checked = check(self, f"{key}.{name}", value)
            if self.valid(f"{key}.{name}"):  # a refused value is reported; its field keeps its default
                values[attr] = checked
        return cls(**values)


def _machine_type(r: Reader, key: str, v: Any) -> Any:
    return r.string(key, v, _MACHINE_TYPE, "a machine type such as e2-standard-4")


def _cidr_list(r: Reader, key: str, v: Any) -> Any:
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


def _cron(r: Reader, key: str, value: Any) -> Any:
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


def _timezone(r: Reader, key: str, value: Any) -> Any:
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


def _warm_schedules(r: Reader, key: str, value: Any) -> Any:
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
    "iapClientId": ("iap_client_id", lambda r, k, v: r.string(k, v, None, "an OAuth client id")),
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


def _master_version(r: Reader, key: str, value: Any) -> Any:
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


def read_top_level(r: Reader, raw: dict[str, Any]) -> tuple[str, str, tuple[str, ...], str]:
    """The top-level keys: none unknown, the required ones present; the project, region, zones and environment."""
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
            names = [z for z in zv if isinstance(z, str)]  # the others are reported above, and may be unhashable
            if len(set(names)) != len(names):
                r.fail("zones", zv, "distinct zones")
    environment = r.choice("environment", raw["environment"], ENVIRONMENTS) if "environment" in raw else "dev"
    return project, region, zones, environment


SECTIONS = (
    ("network", "network", NetworkConfig, _NETWORK),
    ("cluster", "cluster", ClusterConfig, _CLUSTER),
    ("systemPool", "system_pool", SystemPoolConfig, _SYSTEM_POOL),
    ("gpuPool", "gpu_pool", GpuPoolConfig, _GPU_POOL),
    ("runtime", "runtime", RuntimeConfig, _RUNTIME),
    ("webui", "webui", WebuiConfig, _WEBUI),
    ("autoscaling", "autoscaling", AutoscalingConfig, _AUTOSCALING),
    ("queue", "queue", QueueConfig, _QUEUE),
    ("gateway", "gateway", GatewayConfig, _GATEWAY),
    ("observability", "observability", ObservabilityConfig, _OBSERVABILITY),
    ("jobs", "jobs", JobsConfig, _JOBS),
)
"""Each object key, in the order it is read: (config key, StackConfig field, dataclass, its keys' checkers)."""


def read_sections(r: Reader, raw: dict[str, Any]) -> dict[str, Any]:
    """Every object key as its dataclass (defaults where absent), by StackConfig field."""
    return {attr: r.section(key, raw.get(key), cls, fields) for key, attr, cls, fields in SECTIONS}


def read_deletion_protection(r: Reader, raw: dict[str, Any]) -> bool | None:
    return r.boolean("deletionProtection", raw["deletionProtection"]) if "deletionProtection" in raw else None
