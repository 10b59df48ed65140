"""Run the policy pack in-process over a recorded run, the way the Pulumi engine would feed it.

Each registered resource becomes a ResourceValidationArgs (props = inputs as registered, camelCase),
the whole stack a StackValidationArgs; each policy gets its own config, with its schema's defaults
filled in as the engine does. `pulumi preview --policy-pack policy` does the same for real.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
)

from tools import mockrun

POLICY_DIR = mockrun.ROOT / "policy"


def policies() -> list:
    if str(POLICY_DIR) not in sys.path:
        sys.path.insert(0, str(POLICY_DIR))
    import sdgke_policies

    return sdgke_policies.POLICIES


def stack_config(stack: str) -> dict[str, Any]:
    path = POLICY_DIR / "config" / f"{stack}.json"
    return json.loads(path.read_text()) if path.exists() else {}


@dataclass(frozen=True)
class Violation:
    policy: str
    level: str
    message: str
    urn: str | None

    def __str__(self) -> str:
        return f"[{self.level}] {self.policy}: {self.message}" + (f" ({self.urn.split('::')[-1]})" if self.urn else "")


def _level(policy, pack_config: dict[str, Any]) -> EnforcementLevel:
    entry = pack_config.get(policy.name)
    if isinstance(entry, str):
        return EnforcementLevel(entry)
    if isinstance(entry, dict) and "enforcementLevel" in entry:
        return EnforcementLevel(entry["enforcementLevel"])
    return policy.enforcement_level or EnforcementLevel.MANDATORY


def _policy_config(policy, pack_config: dict[str, Any]) -> dict[str, Any]:
    schema = policy.config_schema.properties if policy.config_schema else {}
    entry = pack_config.get(policy.name)
    given = {k: v for k, v in entry.items() if k != "enforcementLevel"} if isinstance(entry, dict) else {}
    unknown = set(given) - set(schema)
    if unknown:
        raise ValueError(f"policy config for {policy.name}: unknown key(s) {sorted(unknown)}; allowed: {sorted(schema)}")
    return {**{k: v["default"] for k, v in schema.items() if "default" in v}, **given}


def _options(r: mockrun.Recorded) -> PolicyResourceOptions:
    t = r.custom_timeouts
    return PolicyResourceOptions(
        protect=r.protect, ignore_changes=r.ignore_changes, delete_before_replace=r.delete_before_replace,
        aliases=[], additional_secret_outputs=r.additional_secret_outputs, parent=r.parent,
        custom_timeouts=PolicyCustomTimeouts(
            _seconds(t.get("create")), _seconds(t.get("update")), _seconds(t.get("delete"))),
    )


def _seconds(duration: str | None) -> float:
    if not duration:
        return 0.0
    units = {"s": 1, "m": 60, "h": 3600}
    return float(duration[:-1]) * units[duration[-1]] if duration[-1] in units else float(duration)


def evaluate(run: mockrun.Run, pack_config: dict[str, Any] | None = None,
             resources: list[mockrun.Recorded] | None = None) -> list[Violation]:
    """Every violation the pack reports for `run` (or for `resources`, e.g. mutated copies of it)."""
    pack_config = pack_config if pack_config is not None else stack_config(run.stack)
    resources = resources if resources is not None else run.resources
    custom = [r for r in resources if r.custom]
    found: list[Violation] = []
    for policy in policies():
        level = _level(policy, pack_config)
        if level == EnforcementLevel.DISABLED:
            continue
        config = _policy_config(policy, pack_config)

        def report(message: str, urn: str | None = None, _p=policy, _l=level) -> None:
            found.append(Violation(_p.name, _l.value, message, urn))

        if isinstance(policy, ResourceValidationPolicy):
            for r in custom:
                args = ResourceValidationArgs(r.type, r.inputs, r.urn, r.name, _options(r), None, config, {})
                policy.validate(args, lambda m, u=None, _r=r: report(m, u or _r.urn))
        else:
            stack = [PolicyResource(r.type, r.inputs, r.urn, r.name, _options(r), None, None, [], {}) for r in custom]
            policy.validate(StackValidationArgs(stack, config, {}), report)
    return found


def mandatory(violations: list[Violation]) -> list[Violation]:
    return [v for v in violations if v.level == EnforcementLevel.MANDATORY.value]
