"""The demand-scaling policies at their boundaries, over small hand-written resources (policy/scaling.py).

test_autoscaling.py runs them over the stacks the program registers; here each case is the few resources a
rule reads, so that a rule loosened by one condition (a target of another kind, a pool's zones counted
wrong, GPUs asked only as limits) fails a named case.
"""

from __future__ import annotations

import pytest

from tests.test_policy_rules import DEPLOYMENT, NODE_POOL, container, gpu_pool, resource, violations, workload
from tools import policy_check

SCALED_OBJECT = "kubernetes:keda.sh/v1alpha1:ScaledObject"
DEMAND_SCALED = "k8s-gpu-deployments-demand-scaled"
FITS_POOL = "keda-scaler-fits-gpu-pool"
UNSCALED = ("GPU Deployment sd/webui is neither demand-scaled (no ScaledObject targets it) nor pinned (spec.replicas "
            "and a sd-gke/replicas-pinned annotation saying why): a GPU node would run whether or not anyone asks "
            "for it.")


def gpu_deployment(*, replicas: int | None = None, annotations: dict | None = None, gpu: dict | None = None):
    """The WebUI Deployment in namespace sd; `gpu` is the container's resources (one GPU as a limit by default)."""
    inputs = workload([container(resources=gpu or {"limits": {"memory": "1Gi", "nvidia.com/gpu": "1"}})])
    if replicas is not None:
        inputs["spec"]["replicas"] = replicas
    if annotations:
        inputs["metadata"]["annotations"] = annotations
    return resource(DEPLOYMENT, inputs, name="webui")


def scaled_object(target: dict | None = None, maximum: int | None = None, name: str = "scaler"):
    spec = {"scaleTargetRef": target or {"name": "webui"}, "triggers": []}
    if maximum is not None:
        spec["maxReplicaCount"] = maximum
    return resource(SCALED_OBJECT, {"metadata": {"name": "webui", "namespace": "sd"}, "spec": spec}, name=name)


def reported(policy: str, *resources) -> list[tuple[str, str | None]]:
    """(message, the resource it is attached to) for each violation: `pulumi preview` prints it under that one."""
    return [(v.message, v.urn) for v in policy_check.evaluate(None, {}, list(resources)) if v.policy == policy]


# --- a GPU Deployment is demand-scaled or pinned with a reason --------------------------------------

def test_a_scaled_object_that_names_no_kind_targets_the_deployment_of_that_name():
    """KEDA's scaleTargetRef.kind defaults to Deployment (https://keda.sh/docs/2.20/reference/scaledobject-spec/)."""
    assert violations(DEMAND_SCALED, gpu_deployment(), scaled_object({"name": "webui"})) == []


def test_a_scaled_object_that_names_the_deployment_kind_targets_it():
    assert violations(DEMAND_SCALED, gpu_deployment(), scaled_object({"kind": "Deployment", "name": "webui"})) == []


def test_a_scaled_object_of_a_statefulset_of_the_same_name_leaves_the_deployment_unscaled():
    target = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "webui"}
    assert violations(DEMAND_SCALED, gpu_deployment(), scaled_object(target)) == [UNSCALED]


def test_a_gpu_deployment_with_replicas_but_no_reason_is_refused():
    assert violations(DEMAND_SCALED, gpu_deployment(replicas=1)) == [UNSCALED]


def test_a_gpu_deployment_with_a_reason_but_no_replicas_is_refused():
    pinned = gpu_deployment(annotations={"sd-gke/replicas-pinned": "benchmark host"})
    assert violations(DEMAND_SCALED, pinned) == [UNSCALED]


def test_a_gpu_deployment_pinned_with_replicas_and_a_reason_passes():
    pinned = gpu_deployment(replicas=1, annotations={"sd-gke/replicas-pinned": "benchmark host"})
    assert violations(DEMAND_SCALED, pinned) == []


def test_an_unscaled_gpu_deployment_is_reported_against_the_deployment():
    deployment = gpu_deployment()
    assert reported(DEMAND_SCALED, deployment) == [(UNSCALED, deployment.urn)]


def test_a_demand_scaled_deployment_setting_replicas_is_reported_against_the_deployment():
    deployment = gpu_deployment(replicas=2)
    assert reported(DEMAND_SCALED, deployment, scaled_object()) == [(
        "Deployment sd/webui is demand-scaled but sets replicas: 2; every apply would reset what the autoscaler "
        "chose. Drop spec.replicas.", deployment.urn)]


# --- a ScaledObject's maximum fits the GPU pools -----------------------------------------------------

def too_many(maximum: int, gpus: int) -> str:
    return f"ScaledObject sd/webui may ask for {maximum} pods of 1 GPU(s); the GPU pools hold {gpus} GPU(s) at most."


def zonal_pool(max_per_zone: int, zones: list[str] | None) -> dict:
    """A GPU pool bounded per zone (maxNodeCount), with no total."""
    pool = gpu_pool(autoscaling={"minNodeCount": 0, "maxNodeCount": max_per_zone})
    if zones is not None:
        pool["nodeLocations"] = zones
    return pool


@pytest.mark.parametrize(("maximum", "found"), [(4, []), (5, [too_many(5, 4)])])
def test_a_per_zone_maximum_holds_that_many_nodes_in_each_of_the_pools_zones(maximum, found):
    pool = resource(NODE_POOL, zonal_pool(2, ["us-central1-a", "us-central1-b"]), name="gpu")
    assert violations(FITS_POOL, pool, gpu_deployment(), scaled_object(maximum=maximum)) == found


@pytest.mark.parametrize("zones", [None, []])
def test_a_per_zone_maximum_without_node_locations_counts_one_zone(zones):
    pool = resource(NODE_POOL, zonal_pool(2, zones), name="gpu")
    assert violations(FITS_POOL, pool, gpu_deployment(), scaled_object(maximum=3)) == [too_many(3, 2)]


def test_the_total_maximum_wins_over_the_per_zone_one():
    pool = gpu_pool(autoscaling={"totalMinNodeCount": 0, "totalMaxNodeCount": 1, "maxNodeCount": 5},
                    nodeLocations=["us-central1-a", "us-central1-b"])
    found = violations(FITS_POOL, resource(NODE_POOL, pool, name="gpu"), gpu_deployment(), scaled_object(maximum=2))
    assert found == [too_many(2, 1)]


def test_an_accelerator_listed_with_no_cards_adds_no_gpu_to_the_pool():
    pool = gpu_pool()
    pool["nodeConfig"]["guestAccelerators"] = [{"type": "nvidia-l4", "count": 1}, {"type": "nvidia-t4", "count": 0}]
    found = violations(FITS_POOL, resource(NODE_POOL, pool, name="gpu"), gpu_deployment(), scaled_object(maximum=3))
    assert found == [too_many(3, 2)]


def test_gpus_asked_only_as_a_limit_count_against_the_pool():
    """The usual form: Kubernetes defaults an extended resource's request to its limit, and refuses a GPU
    request without a limit (kubernetes/kubernetes pkg/apis/core/validation/validation.go
    ValidateContainerResourceRequirements: "Limit must be set for non overcommitable resources")."""
    pool = resource(NODE_POOL, gpu_pool(), name="gpu")  # 2 nodes of 1 GPU
    deployment = gpu_deployment(gpu={"limits": {"memory": "1Gi", "nvidia.com/gpu": "1"}})
    assert violations(FITS_POOL, pool, deployment, scaled_object(maximum=3)) == [too_many(3, 2)]


def test_a_fixed_size_pool_without_gpus_does_not_keep_the_gpu_pools_from_being_judged():
    system = resource(NODE_POOL, {"nodeCount": 1, "nodeConfig": {"machineType": "e2-standard-4"}}, name="system")
    gpus = resource(NODE_POOL, gpu_pool(), name="gpu")
    assert violations(FITS_POOL, system, gpus, gpu_deployment(), scaled_object(maximum=3)) == [too_many(3, 2)]


def test_a_scaled_object_of_a_deployment_outside_the_stack_is_not_judged():
    pool = resource(NODE_POOL, gpu_pool(), name="gpu")
    elsewhere = scaled_object({"name": "made-by-another-stack"}, maximum=3)
    assert violations(FITS_POOL, pool, gpu_deployment(), elsewhere) == []


def test_a_scaled_object_without_a_maximum_may_ask_for_keda_s_default_of_a_hundred_pods():
    pool = resource(NODE_POOL, gpu_pool(), name="gpu")
    assert violations(FITS_POOL, pool, gpu_deployment(), scaled_object()) == [too_many(100, 2)]


def test_a_pod_of_two_gpus_counts_twice_against_the_pool():
    pool = resource(NODE_POOL, gpu_pool(autoscaling={"totalMinNodeCount": 0, "totalMaxNodeCount": 3}), name="gpu")
    deployment = gpu_deployment(gpu={"limits": {"memory": "1Gi", "nvidia.com/gpu": "2"}})
    assert violations(FITS_POOL, pool, deployment, scaled_object(maximum=2)) == [
        "ScaledObject sd/webui may ask for 2 pods of 2 GPU(s); the GPU pools hold 3 GPU(s) at most."]


def test_each_scaled_object_is_judged_after_one_that_is_not():
    pool = resource(NODE_POOL, gpu_pool(), name="gpu")
    elsewhere = scaled_object({"name": "made-by-another-stack"}, maximum=3, name="elsewhere")
    assert violations(FITS_POOL, pool, gpu_deployment(), elsewhere, scaled_object(maximum=3)) == [too_many(3, 2)]


def test_a_scaler_too_large_for_the_pool_is_reported_against_the_scaled_object():
    pool, scaler = resource(NODE_POOL, gpu_pool(), name="gpu"), scaled_object(maximum=3)
    assert reported(FITS_POOL, pool, gpu_deployment(), scaler) == [(too_many(3, 2), scaler.urn)]


# --- a prometheus trigger on Cloud Monitoring ignores null values -------------------------------------

def prometheus_trigger(ignore: str) -> dict:
    return {"metadata": {"name": "webui", "namespace": "sd"},
            "spec": {"scaleTargetRef": {"name": "webui"}, "triggers": [{"type": "prometheus", "metadata": {
                "serverAddress": "https://monitoring.googleapis.com/v1/projects/p/location/global/prometheus",
                "query": "q", "threshold": "5", "ignoreNullValues": ignore}}]}}


@pytest.mark.parametrize("ignore", ["1", "t", "T", "TRUE", "true", "True"])
def test_every_spelling_go_parses_as_true_ignores_null_values(ignore):
    """KEDA reads ignoreNullValues with Go's strconv.ParseBool (golang/go src/strconv/atob.go ParseBool)."""
    assert violations("keda-no-data-is-zero", resource(SCALED_OBJECT, prometheus_trigger(ignore))) == []


@pytest.mark.parametrize("ignore", ["yes", "on", "tRUE"])
def test_a_spelling_go_does_not_parse_as_true_is_refused(ignore):
    assert violations("keda-no-data-is-zero", resource(SCALED_OBJECT, prometheus_trigger(ignore))) == [
        f"ScaledObject sd/webui: its prometheus trigger on Cloud Monitoring has ignoreNullValues {ignore!r}; set "
        "ignoreNullValues: \"true\", or a query with no data is an error that holds the GPU pods."]


def test_a_value_if_null_other_than_zero_is_refused_naming_the_value():
    scaler = {"metadata": {"name": "webui", "namespace": "sd"}, "spec": {"scaleTargetRef": {"name": "webui"}, "triggers": [
        {"type": "gcp-pubsub", "metadata": {"subscriptionName": "sd-jobs", "value": "5", "valueIfNull": "1"}}]}}
    assert violations("keda-no-data-is-zero", resource(SCALED_OBJECT, scaler)) == [
        "ScaledObject sd/webui: its gcp-pubsub trigger has valueIfNull '1'; set valueIfNull: \"0\", or an idle "
        "subscription is an error that holds the GPU pods."]
