"""The offline plan: run the program for a stack under mocks, with no cloud credentials.

    python -m tools.plan --stack dev
    python -m tools.plan --stack dev --set runtime.delivery=secondaryBootDisk
    python -m tools.plan --stack dev --off gateway --off observability --off jobs   (the smallest stack)

Prints the resource tree with each resource's key settings, writes `build/plan/<stack>.json`
(every registered resource with its inputs as registered, camelCase) and the Kubernetes manifests
to `build/plan/<stack>/manifests/`, then runs the policy pack over the plan with
`policy/config/<stack>.json`. Exit codes: 0 clean, 1 a mandatory policy violation, 2 a config error
(the messages, no traceback).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from components.config import PART_KEYS, PARTS
from tools import mockrun, policy_check

DEFAULT_OUT = mockrun.ROOT / "build" / "plan"


def _get(d: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(d, list):
            d = d[int(part)] if part.isdigit() and int(part) < len(d) else None
        elif isinstance(d, dict):
            d = d.get(part)
        else:
            return None
    return d


# type -> settings worth a glance in the tree
KEY_SETTINGS: dict[str, tuple[str, ...]] = {
    "gcp:container/cluster:Cluster": (
        "location", "releaseChannel.channel", "minMasterVersion",
        "clusterAutoscaling.autoscalingProfile", "nodePoolDefaults.nodeConfigDefaults.gcfsConfig.enabled",
        "privateClusterConfig.enablePrivateNodes", "deletionProtection",
    ),
    "gcp:container/nodePool:NodePool": (
        "nodeConfig.machineType", "nodeConfig.guestAccelerators.0.type", "autoscaling.totalMinNodeCount",
        "autoscaling.totalMaxNodeCount", "nodeConfig.spot", "nodeConfig.gcfsConfig.enabled",
        "nodeConfig.secondaryBootDisks.0.diskImage",
    ),
    "kubernetes:cloud.google.com/v1:ComputeClass": ("metadata.name", "spec.activeMigration.optimizeRulePriority"),
    "gcp:compute/subnetwork:Subnetwork": ("ipCidrRange", "privateIpGoogleAccess"),
    "gcp:projects/service:Service": ("service",),
    "gcp:projects/iAMMember:IAMMember": ("role",),
    "gcp:projects/iAMCustomRole:IAMCustomRole": ("roleId",),
    "gcp:artifactregistry/repository:Repository": ("location", "format"),
    "docker-build:index:Image": ("tags.0", "push"),
    "pulumi-python:dynamic:Resource": ("image_name", "family", "identity_hash"),
    "kubernetes:apps/v1:Deployment": ("metadata.namespace", "spec.replicas"),
    "kubernetes:apps/v1:DaemonSet": ("metadata.namespace",),
    "kubernetes:helm.sh/v3:Release": ("chart", "version", "namespace"),
    "kubernetes:keda.sh/v1alpha1:ScaledObject": ("spec.minReplicaCount", "spec.maxReplicaCount", "spec.cooldownPeriod",
                                                 "spec.pollingInterval"),
    "kubernetes:gateway.networking.k8s.io/v1:Gateway": ("spec.gatewayClassName",),
    "kubernetes:networking.gke.io/v1:GCPBackendPolicy": ("spec.default.timeoutSec",),
    "gcp:logging/metric:Metric": ("name", "metricDescriptor.valueType"),
    "gcp:monitoring/alertPolicy:AlertPolicy": ("displayName", "severity"),
    "gcp:monitoring/notificationChannel:NotificationChannel": ("type",),
}


def _line(r: mockrun.Recorded) -> str:
    settings = []
    for path in KEY_SETTINGS.get(r.type, ()):
        value = _get(r.inputs, path)
        if value is not None:
            label = next(part for part in reversed(path.split(".")) if not part.isdigit())
            settings.append(f"{label}={value}")
    if r.protect:
        settings.append("protect")
    return f"{r.type} {r.name}" + (f"  [{', '.join(settings)}]" if settings else "")


def render_tree(run: mockrun.Run) -> str:
    children: dict[str | None, list[mockrun.Recorded]] = {}
    urns = {r.urn for r in run.resources}
    for r in run.resources:
        children.setdefault(r.parent if r.parent in urns else None, []).append(r)
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for r in sorted(children.get(parent, []), key=lambda x: (x.type, x.name)):
            lines.append("  " * depth + _line(r))
            walk(r.urn, depth + 1)

    walk(None, 0)
    return "\n".join(lines)


def manifests(run: mockrun.Run) -> dict[str, dict[str, Any]]:
    """Kubernetes objects as manifests, keyed by a file name derived from kind, namespace and name."""
    out = {}
    for r in run.kubernetes_objects():
        obj = {k: v for k, v in r.redacted.items() if k not in ("__meta", "__inputs")}
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace", "cluster")
        out[f"{obj.get('kind', r.type.split(':')[-1])}-{ns}-{meta.get('name', r.name)}.yaml".lower()] = obj
    return out


def write(run: mockrun.Run, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{run.stack}.json"
    path.write_text(json.dumps(run.to_json(), indent=2, sort_keys=True) + "\n")
    mdir = out / run.stack / "manifests"
    shutil.rmtree(mdir, ignore_errors=True)
    mdir.mkdir(parents=True)
    for name, obj in manifests(run).items():
        (mdir / name).write_text(yaml.safe_dump(obj, sort_keys=False))
    return path


def with_settings(config: dict[str, str], settings: list[str]) -> dict[str, str]:
    """The stack's config with `key.path=value` settings applied, as `pulumi config set --path` would
    (the value read as YAML: `true` is a boolean, `3` a number)."""
    out = dict(config)
    for setting in settings:
        path, sep, text = setting.partition("=")
        if not sep or not path:
            raise mockrun.StackFileError(f"--set {setting!r}: expected KEY=VALUE, e.g. runtime.delivery=secondaryBootDisk")
        top, *keys = path.split(".")
        full = f"{mockrun.PROJECT}:{top}"
        value = yaml.safe_load(text)
        if keys:
            section = json.loads(out[full]) if full in out else {}
            node = section
            for key in keys[:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = value
            value = section
        out[full] = value if isinstance(value, str) else json.dumps(value)
    return out


def without_parts(config: dict[str, str], parts: list[str]) -> dict[str, str]:
    """The stack's config with each part turned off as an operator would: `<part>.enabled` false, and the keys that
    ask something of the part (components/config/rules.py PART_KEYS, e.g. webui.public for the gateway) removed."""
    out = with_settings(config, [f"{part}.enabled=false" for part in parts])
    for part in parts:
        for key in PART_KEYS.get(part, ()):
            top, name = key.split(".")
            full = f"{mockrun.PROJECT}:{top}"
            if full in out:
                section = json.loads(out[full])
                section.pop(name, None)
                out[full] = json.dumps(section)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.plan", description=__doc__.splitlines()[0])
    parser.add_argument("--stack", required=True, help="stack name: Pulumi.<stack>.yaml is read")
    parser.add_argument("--stack-file", type=Path, help="read the config from this file instead")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default build/plan)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key of the stack (without the sd-gke: prefix; a dotted path "
                             "sets one key of a section), e.g. runtime.delivery=secondaryBootDisk")
    parser.add_argument("--off", action="append", default=[], choices=PARTS, metavar="PART",
                        help="turn an optional part off (repeatable): " + ", ".join(PARTS))
    args = parser.parse_args(argv)

    import pulumi

    started = time.monotonic()
    try:
        config = mockrun.config_of(args.stack_file) if args.stack_file else mockrun.read_stack_config(args.stack)
        run = mockrun.run(args.stack, config=with_settings(without_parts(config, args.off), args.set))
    except (FileNotFoundError, mockrun.StackFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except pulumi.RunError as err:
        print(f"error: stack {args.stack}: {err}", file=sys.stderr)
        return 2
    path = write(run, args.out)
    print(render_tree(run))
    print(
        f"\n{len(run.resources)} resources for stack {args.stack} in {time.monotonic() - started:.1f} s; "
        f"wrote {path} and {len(manifests(run))} manifests to {args.out / run.stack / 'manifests'}"
    )
    violations = policy_check.evaluate(run, policy_check.stack_config(args.stack))
    print(f"\npolicy pack: {len(policy_check.policies())} policies, {len(violations)} violation(s)")
    for violation in violations:
        print(f"  {violation}")
    if policy_check.mandatory(violations):
        print("mandatory policy violations: the plan fails", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
