"""Spot first, on demand when Spot is gone: the ComputeClass, its pools and the pods that select it.

The ComputeClass is checked against a schema hand-written from its CRD reference page (tests/schemas/README.md).
"""

from __future__ import annotations

import copy

import pytest

from components import config
from components.compute_class import COMPUTE_CLASS_LABEL, COMPUTE_CLASS_TAINT
from components.runtime_layout import GPU_TAINT
from tests import crd_schemas
from tests.test_delivery import gpu_pools, parse, webui_pod
from tests.variants import DELIVERIES, STACKS, variant
from tools import plan

COMPUTE_CLASS = "kubernetes:cloud.google.com/v1:ComputeClass"
NODE_POOL = "gcp:container/nodePool:NodePool"
SPOT_FIRST = [(s, d) for s in STACKS for d in DELIVERIES]
IDS = [f"{s}-{d}" for s, d in SPOT_FIRST]


@pytest.fixture(params=SPOT_FIRST, ids=IDS)
def spot_first(request):
    return variant(request.param[0], request.param[1], "spotFirst")


def manifest(run) -> dict:
    return next(m for m in plan.manifests(run).values() if m["kind"] == "ComputeClass")


def pool_named(run, name: str) -> dict:
    return next(r.inputs for r in run.of_type(NODE_POOL) if r.state.get("name") == name)


def toleration(t: dict) -> dict:
    return {"key": t["key"], "operator": "Equal", "value": t["value"], "effect": t["effect"]}


def test_the_compute_class_is_valid_for_its_crd(spot_first):
    assert crd_schemas.validate(manifest(spot_first)) == []


def test_the_crd_schema_refuses_a_misspelt_field(spot_first):
    """The oracle itself can fail: an unknown field, and a priority field of the wrong type."""
    broken = copy.deepcopy(manifest(spot_first))
    broken["spec"]["activeMigration"]["optimiseRulePriority"] = True
    broken["spec"]["priorities"][0]["spot"] = "yes"
    found = crd_schemas.validate(broken)
    assert len(found) == 3 and found[-1] == crd_schemas.RULES_NOT_CHECKED
    assert any("optimiseRulePriority" in e for e in found) and any("'yes' is not of type 'boolean'" in e for e in found)


def test_spot_pool_comes_first_and_the_on_demand_pool_second(spot_first):
    priorities = manifest(spot_first)["spec"]["priorities"]
    assert len(priorities) == 2 and all(set(p) == {"nodepools"} for p in priorities)
    first, second = (pool_named(spot_first, p["nodepools"][0]) for p in priorities)
    assert (first["nodeConfig"]["spot"], second["nodeConfig"]["spot"]) == (True, False)


def test_pods_move_back_to_spot_when_it_returns_and_gke_creates_no_pools_of_its_own(spot_first):
    spec = manifest(spot_first)["spec"]
    assert spec["activeMigration"] == {"optimizeRulePriority": True}
    assert spec["nodePoolAutoCreation"] == {"enabled": False}
    assert spec["whenUnsatisfiable"] == "DoNotScaleUp"


def test_both_pools_scale_from_zero_and_the_fallback_keeps_no_node(spot_first):
    spot, on_demand = gpu_pools(spot_first)
    assert on_demand["autoscaling"]["totalMinNodeCount"] == 0 and on_demand["initialNodeCount"] == 0
    assert spot["autoscaling"]["totalMinNodeCount"] == 0, "both shipped stacks scale GPUs from zero"


def test_every_pool_of_the_class_carries_its_label_and_taint(spot_first):
    for pool in gpu_pools(spot_first):
        assert pool["nodeConfig"]["labels"][COMPUTE_CLASS_LABEL] == manifest(spot_first)["metadata"]["name"]
        assert {"key": COMPUTE_CLASS_LABEL, "value": COMPUTE_CLASS_TAINT["value"], "effect": "NO_SCHEDULE"} in \
            pool["nodeConfig"]["taints"]


def test_the_webui_selects_the_class_and_tolerates_its_taint(spot_first):
    pod = webui_pod(spot_first)
    assert pod["nodeSelector"][COMPUTE_CLASS_LABEL] == manifest(spot_first)["metadata"]["name"]
    assert pod["tolerations"] == [toleration(GPU_TAINT), toleration(COMPUTE_CLASS_TAINT)]


def test_the_attacher_follows_the_webui_onto_both_pools(runs):
    run = variant("dev", "daemonset", "spotFirst")
    agent = run.one("kubernetes:apps/v1:DaemonSet", "runtime-disk-daemonset").inputs["spec"]["template"]["spec"]
    assert toleration(COMPUTE_CLASS_TAINT) in agent["tolerations"]


@pytest.mark.parametrize("stack", STACKS)
def test_without_the_fallback_there_is_one_pool_and_no_class(runs, stack):
    run = runs[stack]
    assert run.of_type(COMPUTE_CLASS) == []
    assert len(gpu_pools(run)) == 1
    assert COMPUTE_CLASS_LABEL not in webui_pod(run)["nodeSelector"]


def test_the_stack_config_decides_whether_prod_runs_on_spot(runs):
    assert [p["nodeConfig"]["spot"] for p in gpu_pools(runs["prod"])] == [False]
    assert [p["nodeConfig"]["spot"] for p in gpu_pools(variant("prod", "daemonset", "spotFirst"))] == [True, False]


def test_the_fallback_is_refused_without_spot():
    with pytest.raises(config.ConfigError) as err:
        parse("prod", gpuPool={"onDemandFallback": True})
    assert err.value.problems == [
        "gpuPool.onDemandFallback: true is not allowed; expected false unless gpuPool.spot is true: the fallback is "
        "for Spot capacity that is gone, and a stack without Spot runs on demand already"]


@pytest.mark.parametrize("version", ["1.30", "1.30.3-gke.1400000"])
def test_the_fallback_is_refused_below_the_gke_version_compute_classes_need(version):
    with pytest.raises(config.ConfigError) as err:
        parse("dev", cluster={"minMasterVersion": version}, gpuPool={"onDemandFallback": True})
    assert err.value.problems == [
        f'cluster.minMasterVersion: "{version}" is not allowed; expected a GKE version of at least 1.30.3-gke.1451000 '
        "for gpuPool.onDemandFallback=true (custom ComputeClasses need it); a bare minor such as 1.30 may resolve to "
        "an older patch, so give a later minor or a full version"]


def test_the_fallback_takes_the_first_version_compute_classes_have():
    parse("dev", cluster={"minMasterVersion": "1.30.3-gke.1451000"}, gpuPool={"onDemandFallback": True})
