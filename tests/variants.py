"""The program run for each stack in each runtime delivery and each capacity setting, and for each combination
of optional parts turned off, once per test session (tests/shared_runs.py).

A variant is the stack file with `runtime.delivery` and the GPU capacity set, the way an operator
would set them with `pulumi config set --path`: "stack" keeps the stack's own capacity (dev Spot,
prod on demand), "spotFirst" is Spot with the on-demand fallback. With secondaryBootDisk delivery
the stack's `runtime.diskType` is dropped: GKE gives the runtime disk the node boot disk's type.

A parts variant is the stack file with some optional parts off, exactly as `tools/plan.py --off` turns them off:
every combination (2^3) on dev, and on prod the full stack and the smallest. Each combination runs with the
stack's own delivery and capacity: the parts and the delivery touch different resources, which the delivery
variants above cover.
"""

from __future__ import annotations

import itertools
import json

from components.config import PARTS
from tests import shared_runs
from tests.shared_runs import edited, fingerprint
from tools import mockrun
from tools.plan import without_parts

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
    """The variant's run, made once per test session and shared: read it, copy it before editing."""
    key = (stack, delivery, capacity)
    if key not in _made:
        run = shared_runs.store().run(stack, overrides=overrides(stack, delivery, capacity))
        _made[key] = run, fingerprint(run)
    return _made[key][0]


OFF_SETS = [off for n in range(len(PARTS) + 1) for off in itertools.combinations(PARTS, n)]
"""Every combination of optional parts turned off, from none to all."""
PART_VARIANTS = [("dev", off) for off in OFF_SETS] + [("prod", ()), ("prod", PARTS)]
PART_IDS = [f"{stack}-off-{'-'.join(off) or 'none'}" for stack, off in PART_VARIANTS]
_parts_made: dict[tuple[str, str], tuple[mockrun.Run, dict[str, str]]] = {}


def parts_variant(stack: str, off: tuple[str, ...]) -> mockrun.Run:
    """The stack with these parts off, made once per test session and shared: read it, copy it before editing."""
    if not off:  # the stack as it is: the delivery variant of its own delivery and capacity, already run
        return variant(stack, json.loads(mockrun.read_stack_config(stack)[f"{mockrun.PROJECT}:runtime"])["delivery"],
                       "stack")
    key = (stack, "-".join(off))
    if key not in _parts_made:
        run = shared_runs.store().run(stack, config=without_parts(mockrun.read_stack_config(stack), list(off)))
        _parts_made[key] = run, fingerprint(run)
    return _parts_made[key][0]


def edits() -> dict[str, list[str]]:
    """Variant id -> the resources some test edited in the shared run (tests/conftest.py fails on any)."""
    made = {**_made, **{(stack, "off", off): v for (stack, off), v in _parts_made.items()}}
    return {"-".join(key): found for key, (run, before) in made.items() if (found := edited(before, run))}
