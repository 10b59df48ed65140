"""The rules that span several keys of a stack's config, and the platform facts they apply.

Each rule runs once the values it reads passed their own checks (reader.py, `Reader.valid`), so one bad
value is reported once, by its own key, not again by every rule that reads it.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any

from components.config.model import (
    FIXED_DISK_TYPE,
    GPU_MACHINE_FAMILIES,
    AutoscalingConfig,
    ClusterConfig,
    GatewayConfig,
    GpuPoolConfig,
    JobsConfig,
    NetworkConfig,
    ObservabilityConfig,
    QueueConfig,
    RuntimeConfig,
    StackConfig,
    SystemPoolConfig,
    WebuiConfig,
)
from components.config.reader import Reader

SECONDARY_BOOT_DISK_MIN_VERSION = "1.28.3-gke.1067000"
"""Secondary boot disks in Standard clusters: "Starting in GKE version 1.28.3-gke.1067000 in Standard clusters"
(https://cloud.google.com/kubernetes-engine/docs/how-to/data-container-image-preloading, Overview)."""
COMPUTE_CLASS_MIN_VERSION = "1.30.3-gke.1451000"
"""Custom ComputeClasses: "available to use in GKE Autopilot mode and GKE Standard mode in version
1.30.3-gke.1451000 and later" (https://cloud.google.com/kubernetes-engine/docs/concepts/about-custom-compute-classes)."""

# Machine families whose GPU count is fixed by the machine type (GKE rejects any other count).
_FIXED_GPU_COUNTS = {
    "g2-standard-4": 1, "g2-standard-8": 1, "g2-standard-12": 1, "g2-standard-16": 1,
    "g2-standard-32": 1, "g2-standard-24": 2, "g2-standard-48": 4, "g2-standard-96": 8,
    "a2-highgpu-1g": 1, "a2-highgpu-2g": 2, "a2-highgpu-4g": 4, "a2-highgpu-8g": 8,
    "a3-highgpu-1g": 1, "a3-highgpu-2g": 2, "a3-highgpu-4g": 4, "a3-highgpu-8g": 8,
}
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


def check(r: Reader, stack: StackConfig, raw: dict[str, Any], root: Path | None) -> None:
    """Every cross-key rule, in the order its problems are reported."""
    _check_relations(r, stack.network, stack.system_pool, stack.gpu_pool, stack.runtime, stack.webui, root)
    _check_deployable(r, stack.environment, stack.network, stack.system_pool, stack.gpu_pool, stack.runtime)
    _check_demand_scaling(r, stack.environment, stack.gpu_pool, stack.webui, stack.autoscaling, stack.gateway,
                          stack.network)
    _check_queue(r, stack.queue, stack.observability)
    _check_alerting(r, stack.environment, stack.observability)
    _check_parts(r, raw, {"gateway": stack.gateway.enabled, "observability": stack.observability.enabled})
    _check_delivery_and_capacity(r, stack.cluster, stack.gpu_pool, stack.runtime, raw.get("runtime"))


def check_retry_backoff(r: Reader, jobs: JobsConfig) -> None:
    """The job queue's retry backoff runs from its minimum to its maximum."""
    if r.valid("jobs") and jobs.min_retry_backoff_seconds > jobs.max_retry_backoff_seconds:
        r.fail("jobs.minRetryBackoffSeconds", jobs.min_retry_backoff_seconds,
               f"at most jobs.maxRetryBackoffSeconds ({jobs.max_retry_backoff_seconds})")


def _network_ranges(network: NetworkConfig) -> dict[str, str]:
    return {
        "network.subnetCidr": network.subnet_cidr,
        "network.podsCidr": network.pods_cidr,
        "network.servicesCidr": network.services_cidr,
        "network.masterCidr": network.master_cidr,
    }


def _check_relations(r: Reader, network: NetworkConfig, system_pool: SystemPoolConfig,
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


def _check_deployable(r: Reader, environment: str, network: NetworkConfig, system_pool: SystemPoolConfig,
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
                   "(components/config/rules.py, PD_TYPES_BY_SERIES, cites the source)")
    fixed = (("systemPool.machineType", system_pool.machine_type, "the system nodes' boot disks"),
             ("runtime.bakeMachineType", runtime.bake_machine_type, "the builder VM's disks"))
    for key, machine_type, disks in fixed:
        supported = _pd_types(machine_type)
        if supported is not None and FIXED_DISK_TYPE not in supported and r.valid(key):
            r.fail(key, machine_type, f"a machine type that takes {FIXED_DISK_TYPE} disks ({disks} are "
                   f"{FIXED_DISK_TYPE}); it takes {', '.join(supported) or 'no Persistent Disk, only Hyperdisk'}")


def _check_delivery_and_capacity(r: Reader, cluster: ClusterConfig, gpu_pool: GpuPoolConfig,
                                 runtime: RuntimeConfig, raw_runtime: Any) -> None:
    """What the runtime delivery and the Spot fallback need from the cluster and the pools."""
    if r.valid("gpuPool.onDemandFallback", "gpuPool.spot") and gpu_pool.on_demand_fallback and not gpu_pool.spot:
        r.fail("gpuPool.onDemandFallback", True, "false unless gpuPool.spot is true: the fallback is for Spot capacity "
               "that is gone, and a stack without Spot runs on demand already")
    needs = []
    if r.valid("runtime.delivery") and runtime.delivery == "secondaryBootDisk":
        needs.append(("runtime.delivery", runtime.delivery, SECONDARY_BOOT_DISK_MIN_VERSION, "secondary boot disks"))
        # "The secondary boot disk type is the same as the node boot disk" (data-container-image-preloading).
        chosen = raw_runtime.get("diskType")  # a valid delivery other than the default was set in this object
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


def _check_demand_scaling(r: Reader, environment: str, gpu_pool: GpuPoolConfig, webui: WebuiConfig,
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


def _check_queue(r: Reader, queue: QueueConfig, observability: ObservabilityConfig) -> None:
    """A request may wait at least as long as the cold start the stack expects: the cold-start alert's budget."""
    if r.valid("queue.maxWaitSeconds", "observability.coldStartBudgetSeconds") and \
            queue.max_wait_seconds < observability.cold_start_budget_seconds:
        r.fail("queue.maxWaitSeconds", queue.max_wait_seconds,
               f"at least observability.coldStartBudgetSeconds ({observability.cold_start_budget_seconds}): "
               "a request that wakes the WebUI waits through its cold start")


NOTIFICATION_EMAIL_COMMAND = "pulumi config set --path 'sd-gke:observability.notificationEmail' <your-oncall-address>"


def _check_alerting(r: Reader, environment: str, observability: ObservabilityConfig) -> None:
    """Prod's alerts page someone: without a notification channel they open incidents nobody is told of.
    With observability off there are no alerts, and nothing to page."""
    if environment == "prod" and observability.enabled and \
            r.valid("environment", "observability.enabled", "observability.notificationEmail") and \
            observability.notification_email is None:
        r.problems.append(f"observability.notificationEmail: missing; prod's alerts must page someone: set it with "
                          f"`{NOTIFICATION_EMAIL_COMMAND} --stack prod`")




PART_KEYS: dict[str, tuple[str, ...]] = {
    "gateway": ("webui.public", "gateway.hostname", "gateway.certificateMap", "gateway.iapClientId",
                "gateway.iapSecretName"),
    "observability": ("observability.notificationEmail",),
}
"""Keys that ask something of a part and mean nothing without it: set (true or a value) while the part is off,
they are refused rather than silently ignored. The parts' tuning keys (gateway.proxyOnlyCidr, jobs.*) may stay."""


def _check_parts(r: Reader, raw: dict[str, Any], enabled: dict[str, bool]) -> None:
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

