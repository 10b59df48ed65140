"""The program run for each stack in each runtime delivery and each capacity setting, once per session.

A variant is the stack file with `runtime.delivery` and the GPU capacity set, the way an operator
would set them with `pulumi config set --path`: "stack" keeps the stack's own capacity (dev Spot,
prod on demand), "spotFirst" is Spot with the on-demand fallback. With secondaryBootDisk delivery
the stack's `runtime.diskType` is dropped: GKE gives the runtime disk the node boot disk's type.
"""

from __future__ import annotations

import itertools
import json
from functools import cache

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


@cache
def variant(stack: str, delivery: str, capacity: str) -> mockrun.Run:
    return mockrun.run(stack, overrides=overrides(stack, delivery, capacity))
