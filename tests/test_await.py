"""What `pulumi up` waits for, as registered, and the policy that keeps GPU capacity out of it.

pulumi-kubernetes waits up to 10 minutes for a Deployment to be Available and for a Service's
endpoints to be ready, then fails the update. From a GPU pool at zero, a WebUI pod needs a scale-up,
a node, its driver, the runtime disk and a warm-up first: `up` must not wait on that.
"""

from __future__ import annotations

import dataclasses

from components.labels import selector_labels
from tests.test_policy import mutate, violations_of
from tools.mockrun import Recorded

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
DAEMONSET = "kubernetes:apps/v1:DaemonSet"
SERVICE = "kubernetes:core/v1:Service"
POLICY = "k8s-gpu-pods-do-not-block-up"
AWAIT_ANNOTATIONS = ("pulumi.com/skipAwait", "pulumi.com/waitFor", "pulumi.com/timeoutSeconds")
SKIP_AWAIT = {"pulumi.com/skipAwait": "true"}


def await_annotations(resource) -> dict[str, str]:
    annotations = resource.inputs["metadata"].get("annotations") or {}
    return {k: v for k, v in annotations.items() if k in AWAIT_ANNOTATIONS}


def test_up_does_not_wait_for_webui_pods(run):
    assert await_annotations(run.one(DEPLOYMENT, "webui-deployment")) == {"pulumi.com/skipAwait": "true"}


def webui_service(run, service_type: str = "ClusterIP", annotations: dict | None = None) -> Recorded:
    """A Service in front of the WebUI pods, as a change might add one (the stack has none: the request
    queue reaches each pod at the address its worker registers)."""
    inputs = {"metadata": {"name": "webui", "namespace": "sd-webui", "annotations": annotations or {}},
              "spec": {"type": service_type, "selector": selector_labels("webui"),
                       "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}
    deployment = run.one(DEPLOYMENT, "webui-deployment")
    return Recorded(urn=deployment.urn.replace(DEPLOYMENT, SERVICE).replace("webui-deployment", "webui-service"),
                    type=SERVICE, name="webui-service", parent=deployment.parent, provider=deployment.provider,
                    custom=True, inputs=inputs)


def test_no_service_fronts_the_gpu_pods(run):
    selectors = [r.inputs["spec"].get("selector") or {} for r in run.of_type(SERVICE)]
    assert selector_labels("webui") not in selectors


def test_up_waits_for_the_disk_attacher_rollout(run):
    """On a GPU pool at zero nodes the DaemonSet wants no pod, and kstatus calls it Current at once
    (desiredNumberScheduled 0); on warm nodes, a broken agent should fail `up`."""
    daemonset = run.one(DAEMONSET, "runtime-disk-daemonset")
    assert await_annotations(daemonset) == {}
    assert daemonset.custom_timeouts == {}


def test_webui_pods_are_the_ones_that_need_gpus(run):
    limits = [c["resources"].get("limits", {}) for c in
                run.one(DEPLOYMENT, "webui-deployment").inputs["spec"]["template"]["spec"]["containers"]]
    assert any("nvidia.com/gpu" in lim for lim in limits)


def _without_await_annotations(d: dict) -> None:
    for key in AWAIT_ANNOTATIONS:
        d["metadata"]["annotations"].pop(key, None)


def test_a_gpu_deployment_awaited_by_default_is_refused(runs):
    run = runs["dev"]
    found = violations_of(run, POLICY, mutate(run, DEPLOYMENT, "webui-deployment", _without_await_annotations))
    assert found == ["Deployment 'webui' waits for GPU pods for up to 600s, less than their cold start (1800s): `up` "
                     "would fail while GPU capacity comes up. Annotate it pulumi.com/skipAwait: \"true\" or give it "
                     "customTimeouts of at least the cold start."]


def test_a_gpu_deployment_may_wait_out_the_cold_start_instead(runs):
    run = runs["dev"]
    target = run.one(DEPLOYMENT, "webui-deployment")
    resources = mutate(run, DEPLOYMENT, "webui-deployment", _without_await_annotations,
                       custom_timeouts={"create": "45m", "update": "45m"})
    assert violations_of(run, POLICY, resources) == []
    short_update = [dataclasses.replace(r, custom_timeouts={"create": "45m"}) if r.urn == target.urn else r
                    for r in resources]
    assert "up to 600s" in violations_of(run, POLICY, short_update)[0]


def test_a_timeout_annotation_counts_like_custom_timeouts(runs):
    run = runs["dev"]

    def annotated(d):
        _without_await_annotations(d)
        d["metadata"]["annotations"]["pulumi.com/timeoutSeconds"] = "2400"

    assert violations_of(run, POLICY, mutate(run, DEPLOYMENT, "webui-deployment", annotated)) == []


def test_a_service_in_front_of_gpu_pods_awaited_by_default_is_refused(runs):
    run = runs["dev"]
    assert violations_of(run, POLICY, run.resources + [webui_service(run, annotations=SKIP_AWAIT)]) == []
    found = violations_of(run, POLICY, run.resources + [webui_service(run)])
    assert len(found) == 1 and found[0].startswith("Service 'webui' waits for GPU pods for up to 600s")


def test_the_cold_start_budget_comes_from_policy_config(runs):
    run = runs["dev"]
    resources = mutate(run, DEPLOYMENT, "webui-deployment", _without_await_annotations,
                       custom_timeouts={"create": "45m", "update": "45m"})
    found = violations_of(run, POLICY, resources, config={POLICY: {"gpuColdStartSeconds": 3600}})
    assert "up to 2700s, less than their cold start (3600s)" in found[0]


def test_any_workload_that_requests_gpus_is_judged_and_others_are_not(runs):
    run = runs["dev"]
    assert violations_of(run, POLICY) == []

    def wants_a_gpu(d):
        d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "1"

    found = violations_of(run, POLICY, mutate(run, DAEMONSET, "runtime-disk-daemonset", wants_a_gpu))
    assert len(found) == 1 and found[0].startswith("DaemonSet 'disk-attacher' waits for GPU pods")
