"""The program run for each stack in each runtime delivery and each capacity setting, once per test process.

A variant is the stack file with `runtime.delivery` and the GPU capacity set, the way an operator
would set them with `pulumi config set --path`: "stack" keeps the stack's own capacity (dev Spot,
prod on demand), "spotFirst" is Spot with the on-demand fallback. With secondaryBootDisk delivery
the stack's `runtime.diskType` is dropped: GKE gives the runtime disk the node boot disk's type.
"""

from __future__ import annotations

import itertools
import json

from tests.shared_runs import edited, fingerprint
from tools import mockrun

STACKS = ("dev", "prod")
DELIVERIES = ("daemonset", "secondaryBootDisk")
CAPACITIES = ("stack", "spotFirst")
VARIANTS = list(itertools.product(STACKS, DELIVERIES, CAPACITIES))
IDS = [f"{s}-{d}-{c}" for s, d, c in VARIANTS]


def overrides(stack: str, delivery: str, capacity: str) -> dict:
    config = mockrun.read_stack_config(stack)
    runtime = {**json.loads(config[f"{mockrun.PROJECT}:runtime"]), "delivery": delivery}
    if delivery == "secondaryBootDisk":
        runtime.pop("diskType", None)
    gpu_pool = json.loads(config[f"{mockrun.PROJECT}:gpuPool"])
    if capacity == "spotFirst":
        gpu_pool.update(spot=True, onDemandFallback=True)
    return {"runtime": runtime, "gpuPool": gpu_pool}


_made: dict[tuple[str, str, str], tuple[mockrun.Run, dict[str, str]]] = {}


def variant(stack: str, delivery: str, capacity: str) -> mockrun.Run:
    """The variant's run, made once per test process and shared: read it, copy it before editing."""
    key = (stack, delivery, capacity)
    if key not in _made:
        run = mockrun.run(stack, overrides=overrides(stack, delivery, capacity))
        _made[key] = run, fingerprint(run)
    return _made[key][0]


def edits() -> dict[str, list[str]]:
    """Variant id -> the resources some test edited in the shared run (tests/conftest.py fails on any)."""
    return {"-".join(key): found for key, (run, before) in _made.items() if (found := edited(before, run))}
