"""Stack configuration: read once, validated, typed.

Every problem is collected and reported together, so a bad stack file is fixed in one round
instead of one `pulumi preview` per typo. Nothing else in sd-gke reads `pulumi.Config`.

- model.py: the typed config (StackConfig and its sections) and the values its keys may take;
- reader.py: each key's format and bounds, read one by one, every problem collected;
- rules.py: the rules that span several keys, and the platform facts they apply;
- here: where the raw values come from (Pulumi, a stack file) and `parse`, which runs the two in turn.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from components.config.model import (
    FIXED_DISK_TYPE,
    GPU_DRIVER_VERSIONS,
    KUBERNETES_MINORS,
    LOCATION_POLICIES,
    PARTS,
    PROJECT,
    RELEASE_CHANNELS,
    AutoscalingConfig,
    ClusterConfig,
    ConfigError,
    GatewayConfig,
    GpuPoolConfig,
    JobsConfig,
    NetworkConfig,
    ObservabilityConfig,
    QueueConfig,
    RuntimeConfig,
    StackConfig,
    SystemPoolConfig,
    WarmSchedule,
    WebuiConfig,
)
from components.config.reader import TOP_LEVEL_KEYS, Reader, read_deletion_protection, read_sections, read_top_level
from components.config.rules import (
    COMPUTE_CLASS_MIN_VERSION,
    PART_KEYS,
    SECONDARY_BOOT_DISK_MIN_VERSION,
    check,
    check_retry_backoff,
    version_at_least,
)

__all__ = [  # what the rest of sd-gke reads from here; the other tables are the modules' own
    "COMPUTE_CLASS_MIN_VERSION", "FIXED_DISK_TYPE", "GPU_DRIVER_VERSIONS", "KUBERNETES_MINORS", "LOCATION_POLICIES",
    "PARTS", "PART_KEYS", "PROJECT", "RELEASE_CHANNELS", "SECONDARY_BOOT_DISK_MIN_VERSION", "TOP_LEVEL_KEYS",
    "AutoscalingConfig", "ClusterConfig", "ConfigError", "GatewayConfig", "GpuPoolConfig", "JobsConfig",
    "NetworkConfig", "ObservabilityConfig", "QueueConfig", "RuntimeConfig", "StackConfig", "SystemPoolConfig",
    "WarmSchedule", "WebuiConfig", "decode", "load", "load_stack", "parse", "version_at_least",
]


def parse(raw: dict[str, Any], root: Path | None = None) -> StackConfig:
    """Validate a stack's config (keys without the project prefix, values already decoded).

    `root` is the project directory, used to check that the recipe file exists.
    Raises ConfigError listing every problem.
    """
    r = Reader()
    project, region, zones, environment = read_top_level(r, raw)
    sections = read_sections(r, raw)
    check_retry_backoff(r, sections["jobs"])
    deletion_protection = read_deletion_protection(r, raw)
    stack = StackConfig(project=project, region=region, zones=zones, environment=environment, **sections,
                        deletion_protection=deletion_protection)
    check(r, stack, raw, root)
    if r.problems:
        raise ConfigError(r.problems)
    return stack


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
