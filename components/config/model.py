"""The typed stack configuration: what a validated stack is, and the values its keys may take.

reader.py builds these from a stack's raw values, key by key; rules.py checks what spans several keys.
"""

from __future__ import annotations

from dataclasses import dataclass

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

# GPU model -> machine family that carries it (GKE accepts no other pairing).
GPU_MACHINE_FAMILIES = {
    "nvidia-l4": "g2",
    "nvidia-tesla-t4": "n1",
    "nvidia-tesla-a100": "a2",
    "nvidia-h100-80gb": "a3",
}
FIXED_DISK_TYPE = "pd-balanced"
"""The type of the disks the config does not choose: system nodes' boot disks and the builder VM's disks."""

# Kubernetes minors the manifest schemas cover (kubernetes-validate) and GKE still serves.
KUBERNETES_MINORS = tuple(f"1.{m}" for m in range(30, 38))
KEDA_CHART_VERSIONS = ("2.20.2",)
"""Chart versions whose CRD schemas tests/schemas holds: a new version gets its schemas written and checked first."""
PARTS = ("gateway", "observability", "jobs")
"""The parts a stack may turn off (`<part>.enabled`); demand scaling is no part: the cold start is for it."""


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
    network: NetworkConfig
    cluster: ClusterConfig
    system_pool: SystemPoolConfig
    gpu_pool: GpuPoolConfig
    runtime: RuntimeConfig
    webui: WebuiConfig
    autoscaling: AutoscalingConfig
    queue: QueueConfig
    gateway: GatewayConfig
    observability: ObservabilityConfig
    jobs: JobsConfig
    deletion_protection: bool | None
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
