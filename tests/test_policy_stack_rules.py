"""Cases of the stack-wide policies (policy/stack.py) that the first whole mutation run found untold:
which resources each check reads, what it leaves to the others, and the words it names them with."""

from __future__ import annotations

import copy
import dataclasses

from tests.test_policy import mutate
from tools import policy_check
from tools.mockrun import Recorded, Run

NODE_POOL = "gcp:container/nodePool:NodePool"
DAEMONSET = "kubernetes:apps/v1:DaemonSet"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
ALERT_POLICY = "gcp:monitoring/alertPolicy:AlertPolicy"
CHANNEL = "gcp:monitoring/notificationChannel:NotificationChannel"
RUNTIME_LABEL = "sd-gke/runtime"
SELECTION = "stack-runtime-selection-agrees"


def messages(run: Run, policy: str, resources: list[Recorded]) -> list[str]:
    return [v.message for v in policy_check.evaluate(run, None, resources) if v.policy == policy]


def changed(resource: Recorded, change, **fields) -> Recorded:
    copied = dataclasses.replace(resource, inputs=copy.deepcopy(resource.inputs), **fields)
    change(copied.inputs)
    return copied


def agent_pod(inputs: dict) -> dict:
    return inputs["spec"]["template"]["spec"]


def runtime_of(run: Run) -> str:
    return run.one(NODE_POOL, "sd-gpu").inputs["nodeConfig"]["labels"][RUNTIME_LABEL]


def label_gpu_pool(value: str):
    def change(inputs: dict) -> None:
        inputs["nodeConfig"]["labels"][RUNTIME_LABEL] = value
    return change


def cpu_pool_like_the_gpu_pool(run: Run, change) -> Recorded:
    """A second pool without accelerators, otherwise the GPU pool's copy: a node pool that is not a GPU pool."""
    gpu = run.one(NODE_POOL, "sd-gpu")

    def without_gpus(inputs: dict) -> None:
        inputs["nodeConfig"].pop("guestAccelerators")
        change(inputs)

    return changed(gpu, without_gpus, name="sd-cpu", urn=gpu.urn.replace("sd-gpu", "sd-cpu"))


def test_an_alert_paging_nobody_is_left_alone_when_the_stack_has_no_channel(runs):
    """Without a channel there is nobody to page; prod's own policy says so, this one has nothing to add."""
    run = runs["dev"]
    silent = mutate(run, ALERT_POLICY, "sd-gpu-pool-at-max", lambda i: i.__setitem__("notificationChannels", []))
    without_channel = [r for r in silent if r.type != CHANNEL]
    assert messages(run, "stack-alerts-page-the-channel", without_channel) == []


def test_the_agents_runtime_is_judged_whichever_order_its_workloads_come_in(runs):
    """A second attacher workload without a runtime hash, listed after the real one, hides nothing."""
    run = runs["dev"]
    agent = run.one(DAEMONSET, "runtime-disk-daemonset")

    def no_hash(inputs: dict) -> None:
        for container in agent_pod(inputs)["containers"]:
            container["env"] = [e for e in container.get("env") or [] if e["name"] != "SDGKE_RUNTIME_HASH"]

    second = changed(agent, no_hash, name="runtime-disk-daemonset-2", urn=agent.urn + "-2")
    mislabelled = mutate(run, NODE_POOL, "sd-gpu", label_gpu_pool("0" * 12)) + [second]
    assert messages(run, SELECTION, mislabelled) == [
        f"No GPU node pool is labelled {RUNTIME_LABEL}={runtime_of(run)}, the runtime the disk attacher mounts "
        f"(pools: ['{'0' * 12}'])."]


def test_a_pool_without_gpus_neither_serves_nor_hides_the_runtime(runs):
    """Only GPU pools run the agent: a CPU pool labelled with the runtime does not count as serving it."""
    run = runs["dev"]
    cpu = cpu_pool_like_the_gpu_pool(run, label_gpu_pool(runtime_of(run)))
    unserved = mutate(run, NODE_POOL, "sd-gpu", label_gpu_pool("0" * 12)) + [cpu]
    assert messages(run, SELECTION, unserved) == [
        f"No GPU node pool is labelled {RUNTIME_LABEL}={runtime_of(run)}, the runtime the disk attacher mounts "
        f"(pools: ['{'0' * 12}'])."]


def test_a_pool_without_gpus_may_carry_another_image_as_its_boot_disk(runs):
    """The label-against-image check is about the nodes that run the WebUI: GPU pools."""
    run = runs["dev"]

    def other_runtime_disk(inputs: dict) -> None:
        inputs["nodeConfig"]["secondaryBootDisks"] = [
            {"diskImage": "projects/sd-gke-dev/global/images/sd-runtime-000000000000", "mode": "CONTAINER_IMAGE_CACHE"}]

    cpu = cpu_pool_like_the_gpu_pool(run, other_runtime_disk)
    assert messages(run, SELECTION, run.resources + [cpu]) == []


def test_an_empty_runtime_label_is_named_unlabelled(runs):
    run = runs["dev"]
    assert messages(run, SELECTION, mutate(run, NODE_POOL, "sd-gpu", label_gpu_pool(""))) == [
        f"No GPU node pool is labelled {RUNTIME_LABEL}={runtime_of(run)}, the runtime the disk attacher mounts "
        "(pools: ['unlabelled'])."]


def test_an_agent_affinity_naming_the_runtime_with_another_operator_does_not_require_it(runs):
    run = runs["dev"]

    def not_in(inputs: dict) -> None:
        terms = agent_pod(inputs)["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"]
        for expression in terms[0]["matchExpressions"]:
            if expression["key"] == RUNTIME_LABEL:
                expression["operator"] = "NotIn"

    assert messages(run, SELECTION, mutate(run, DAEMONSET, "runtime-disk-daemonset", not_in)) == [
        f"The disk attacher does not require {RUNTIME_LABEL} In [{runtime_of(run)}] in its node affinity: on a node of "
        "another runtime it would find that runtime's disk, refuse it and stay unready."]


def test_a_webui_selecting_no_runtime_is_named_as_selecting_nothing(runs):
    run = runs["dev"]

    def no_runtime_selector(inputs: dict) -> None:
        agent_pod(inputs)["nodeSelector"].pop(RUNTIME_LABEL)

    assert messages(run, SELECTION, mutate(run, DEPLOYMENT, "webui-deployment", no_runtime_selector)) == [
        f"The WebUI selects {RUNTIME_LABEL}=(nothing) but the disk attacher mounts runtime {runtime_of(run)}: its "
        "pods would run another runtime or never be scheduled."]


def test_a_public_service_without_auth_is_reported_against_the_service(runs):
    from tests.test_await import webui_service

    run = runs["dev"]
    service = webui_service(run, "LoadBalancer")

    def no_auth(inputs: dict) -> None:
        for container in agent_pod(inputs)["containers"]:
            container["args"] = [a for a in container.get("args") or [] if a != "--api-auth"]

    public = mutate(run, DEPLOYMENT, "webui-deployment", no_auth) + [service]
    found = [v for v in policy_check.evaluate(run, None, public) if v.policy == "stack-public-service-requires-auth"]
    assert [(v.message, v.urn) for v in found] == [
        ("Service 'webui' is public but 'webui' runs without --api-auth.", service.urn)]
