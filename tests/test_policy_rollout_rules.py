"""What `pulumi up` waits for, at the policy's boundaries, over small hand-written resources (policy/rollout.py).

test_await.py runs the policy over the stacks the program registers; here each case is the one or two
resources it reads, so that a rule loosened by one condition (an annotation's value ignored, a timeout read
wrong, a Service matched on part of its selector) fails a named case.
"""

from __future__ import annotations

import dataclasses

import pytest

from tests.test_policy_rules import DEPLOYMENT, SERVICE, container, resource, violations, workload
from tools import policy_check

POLICY = "k8s-gpu-pods-do-not-block-up"


def gpu_deployment(annotations: dict | None = None, timeouts: dict | None = None, *, init: bool = False):
    """The WebUI Deployment (pods labelled app: webui) with one GPU as a limit, in its container or an init one."""
    gpu = container(resources={"limits": {"memory": "1Gi", "nvidia.com/gpu": "1"}})
    inputs = workload([container()], init=[gpu]) if init else workload([gpu])
    if annotations:
        inputs["metadata"]["annotations"] = annotations
    return dataclasses.replace(resource(DEPLOYMENT, inputs, name="webui"), custom_timeouts=timeouts or {})


def waits(kind: str, name: str, seconds: int, budget: int = 1800) -> str:
    return (f"{kind} {name!r} waits for GPU pods for up to {seconds}s, less than their cold start ({budget}s): `up` "
            "would fail while GPU capacity comes up. Annotate it pulumi.com/skipAwait: \"true\" or give it "
            "customTimeouts of at least the cold start.")


def service(selector: dict | None, annotations: dict | None = None):
    inputs = {"metadata": {"name": "webui", "namespace": "sd", "annotations": annotations or {}},
              "spec": {"type": "ClusterIP", "ports": [{"port": 80}]}}
    if selector is not None:
        inputs["spec"]["selector"] = selector
    return resource(SERVICE, inputs, name="webui-service")


SKIP = {"pulumi.com/skipAwait": "true"}


def test_a_gpu_deployment_awaited_by_default_is_refused():
    assert violations(POLICY, gpu_deployment()) == [waits("Deployment", "webui", 600)]


def test_gpus_in_an_init_container_count_as_gpu_pods():
    assert violations(POLICY, gpu_deployment(init=True)) == [waits("Deployment", "webui", 600)]


def test_skip_await_true_passes():
    assert violations(POLICY, gpu_deployment(SKIP)) == []


def test_skip_await_set_to_anything_but_true_still_waits():
    assert violations(POLICY, gpu_deployment({"pulumi.com/skipAwait": "false"})) == [waits("Deployment", "webui", 600)]


def test_a_wait_for_condition_replaces_the_readiness_await():
    assert violations(POLICY, gpu_deployment({"pulumi.com/waitFor": "condition=Progressing"})) == []


@pytest.mark.parametrize(("timeout", "found"), [("1800", []), ("1799", [waits("Deployment", "webui", 1799)])])
def test_a_timeout_annotation_of_the_cold_start_or_more_passes(timeout, found):
    assert violations(POLICY, gpu_deployment({"pulumi.com/timeoutSeconds": timeout})) == found


def test_a_timeout_annotation_that_is_not_a_number_of_seconds_leaves_the_default_wait():
    assert violations(POLICY, gpu_deployment({"pulumi.com/timeoutSeconds": "45m"})) == [
        waits("Deployment", "webui", 600)]


def test_custom_timeouts_come_before_the_annotation():
    deployment = gpu_deployment({"pulumi.com/timeoutSeconds": "3600"}, {"create": "20m", "update": "20m"})
    assert violations(POLICY, deployment) == [waits("Deployment", "webui", 1200)]


@pytest.mark.parametrize("timeouts", [{"create": "40m"}, {"update": "40m"}])
def test_the_shorter_of_the_create_and_update_waits_is_judged(timeouts):
    assert violations(POLICY, gpu_deployment(timeouts=timeouts)) == [waits("Deployment", "webui", 600)]


def test_the_cold_start_budget_comes_from_the_policy_config():
    found = [v.message for v in policy_check.evaluate(None, {POLICY: {"gpuColdStartSeconds": 3600}},
                                                      [gpu_deployment({"pulumi.com/timeoutSeconds": "2400"})])
             if v.policy == POLICY]
    assert found == [waits("Deployment", "webui", 2400, budget=3600)]


def test_a_service_in_front_of_the_gpu_pods_awaited_by_default_is_refused():
    assert violations(POLICY, gpu_deployment(SKIP), service({"app": "webui"})) == [waits("Service", "webui", 600)]


def test_a_service_that_skips_the_await_passes():
    assert violations(POLICY, gpu_deployment(SKIP), service({"app": "webui"}, SKIP)) == []


@pytest.mark.parametrize("selector", [None, {}, {"app": "other"}, {"app": "webui", "tier": "cpu"}])
def test_a_service_that_does_not_select_every_label_of_the_gpu_pods_is_not_judged(selector):
    assert violations(POLICY, gpu_deployment(SKIP), service(selector)) == []


def test_a_service_in_front_of_pods_without_gpus_is_not_judged():
    cpu = resource(DEPLOYMENT, workload([container()]), name="webui")
    assert violations(POLICY, cpu, service({"app": "webui"})) == []


def test_the_violation_is_reported_against_the_workload_that_waits():
    deployment = gpu_deployment()
    assert [v.urn for v in policy_check.evaluate(None, {}, [deployment]) if v.policy == POLICY] == [deployment.urn]
