"""The agent of a new runtime on a node that still holds the old runtime's disk.

Blue/green pools (components/gpu_pool.py) keep the new runtime's DaemonSet off old nodes; a node only
gets here if its runtime label was changed in place. The agent must not mount the old disk, refuse
its manifest and stay unready for ever (the DaemonSet rollout, and `pulumi up`, would never end):
it labels the node with the runtime it holds, which takes the node out of its DaemonSet's selection.
"""

from __future__ import annotations

import pytest
from attacher import names

from components import runtime_layout as layout
from tests.attacher.conftest import (
    GPU_TAINT,
    HASH12,
    IMAGE,
    NODE,
    PROJECT,
    ZONE,
    Harness,
    RuntimeContent,
    step_lines,
)

OLD_RECIPE_HASH = "0a1b2c3d4e5f" + "6" * 52
OLD_HASH12 = OLD_RECIPE_HASH[:12]
OLD_IMAGE = f"sd-runtime-{OLD_HASH12}"
OLD_DISK = names.disk_name(NODE, OLD_HASH12)
ACCELERATOR = {layout.GPU_NODE_LABEL: "nvidia-l4"}


def node_of_old_runtime(harness: Harness, monkeypatch: pytest.MonkeyPatch, label: str | None) -> None:
    """The node as the old runtime's agent left it (old disk attached and mounted, node untainted),
    with its runtime label then set to `label` (None: no runtime label), and the agent now of the
    new runtime."""
    harness.compute.add_image(OLD_IMAGE, family="sd-runtime", labels={names.LABEL_HASH: OLD_HASH12}, disk_size_gb=20)
    harness.udev.contents[OLD_IMAGE] = RuntimeContent(OLD_RECIPE_HASH)
    monkeypatch.setenv("SDGKE_RUNTIME_IMAGE", f"projects/{PROJECT}/global/images/{OLD_IMAGE}")
    monkeypatch.setenv("SDGKE_RUNTIME_HASH", OLD_HASH12)
    assert harness.run_once() == 0
    labels = {**ACCELERATOR, **({layout.RUNTIME_NODE_LABEL: label} if label else {})}
    harness.kube.add_node(NODE, taints=harness.kube.taints(NODE), labels=labels)
    monkeypatch.setenv("SDGKE_RUNTIME_IMAGE", f"projects/{PROJECT}/global/images/{IMAGE}")
    monkeypatch.setenv("SDGKE_RUNTIME_HASH", HASH12)


def selects(affinity: dict, labels: dict[str, str]) -> bool:
    """Whether a required node affinity admits a node: terms are ORed, a term's expressions ANDed
    (https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#node-affinity)."""
    def holds(expression: dict) -> bool:
        key, operator = expression["key"], expression["operator"]
        if operator == "Exists":
            return key in labels
        if operator == "In":
            return labels.get(key) in expression["values"]
        raise AssertionError(f"operator {operator} is not modelled here")

    terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    return any(all(holds(x) for x in term["matchExpressions"]) for term in terms)


def daemonset_affinity_of_runtime(runs, runtime_hash12: str) -> dict:
    """The DaemonSet's node affinity as the program declares it, for the runtime `runtime_hash12`."""
    run = runs["dev"]
    declared = run.one("pulumi-python:dynamic:Resource", "runtime-image").inputs["identity_hash"][:12]
    pod = run.one("kubernetes:apps/v1:DaemonSet", "runtime-disk-daemonset").inputs["spec"]["template"]["spec"]
    terms = [{"matchExpressions": [{**x, "values": [runtime_hash12 if v == declared else v for v in x["values"]]}
                                   if "values" in x else x for x in term["matchExpressions"]]}
             for term in pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]]
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}


def test_a_node_relabelled_to_the_new_runtime_but_holding_the_old_disk_gets_its_label_back(harness, monkeypatch, capsys):
    node_of_old_runtime(harness, monkeypatch, label=HASH12)
    capsys.readouterr()

    assert harness.run_once() == 1

    assert harness.kube.labels(NODE) == {**ACCELERATOR, layout.RUNTIME_NODE_LABEL: OLD_HASH12}
    inspect = step_lines(capsys.readouterr().out)["inspect"]
    assert f"node {NODE} holds runtime {OLD_HASH12} (disk {OLD_DISK}), not SDGKE_RUNTIME_HASH={HASH12}" in inspect["error"]
    assert inspect["held_runtime"] == OLD_HASH12


def test_the_old_disk_stays_attached_and_mounted_for_the_pods_that_use_it(harness, monkeypatch):
    node_of_old_runtime(harness, monkeypatch, label=HASH12)
    before = len(harness.compute.requests)

    assert harness.run_once() == 1

    assert [d["name"] for d in harness.runtime_disks()] == [OLD_DISK]
    assert [a["source"].rsplit("/", 1)[-1] for a in harness.attached_runtime()] == [OLD_DISK]
    assert harness.is_mounted()
    assert set(harness.compute_calls(before)) == {"compute.instances.get", "compute.images.get"}
    assert harness.kube.taints(NODE) == [GPU_TAINT]
    harness.assert_fakes_clean()


def test_after_the_relabel_the_new_runtimes_daemonset_no_longer_selects_the_node(harness, monkeypatch, runs):
    """So the DaemonSet controller deletes the agent's pod there and its rollout completes."""
    node_of_old_runtime(harness, monkeypatch, label=HASH12)
    new_runtime = daemonset_affinity_of_runtime(runs, HASH12)
    assert selects(new_runtime, harness.kube.labels(NODE))

    assert harness.run_once() == 1

    assert not selects(new_runtime, harness.kube.labels(NODE))
    assert selects(daemonset_affinity_of_runtime(runs, OLD_HASH12), harness.kube.labels(NODE))


def test_a_node_without_a_runtime_label_gets_the_one_it_holds(harness, monkeypatch):
    node_of_old_runtime(harness, monkeypatch, label=None)

    assert harness.run_once() == 1

    assert harness.kube.labels(NODE)[layout.RUNTIME_NODE_LABEL] == OLD_HASH12
    patch = next(r for r in harness.kube.requests if r.method == "PATCH" and "labels" in str(r.body))
    assert patch.body == [{"op": "add", "path": "/metadata/labels/sd-gke~1runtime", "value": OLD_HASH12}]
    harness.assert_fakes_clean()


def test_a_second_pass_finds_the_label_right_and_writes_nothing(harness, monkeypatch, capsys):
    node_of_old_runtime(harness, monkeypatch, label=HASH12)
    assert harness.run_once() == 1
    patches = len([r for r in harness.kube.requests if r.method == "PATCH"])
    capsys.readouterr()

    assert harness.run_once() == 1

    assert len([r for r in harness.kube.requests if r.method == "PATCH"]) == patches
    assert step_lines(capsys.readouterr().out)["inspect"]["node_label"] == "unchanged"


def test_a_label_changed_meanwhile_is_not_overwritten(harness, monkeypatch, capsys):
    node_of_old_runtime(harness, monkeypatch, label=HASH12)
    harness.kube.before_next_patch(lambda node: node["metadata"]["labels"].update({layout.RUNTIME_NODE_LABEL: "ffffffffffff"}))

    assert harness.run_once() == 1

    assert harness.kube.labels(NODE)[layout.RUNTIME_NODE_LABEL] == "ffffffffffff"
    assert [r.status for r in harness.kube.requests if r.method == "PATCH"][-1] == 422
    assert "422" in step_lines(capsys.readouterr().out)["inspect"]["error"]
    harness.assert_fakes_clean()


def test_a_disk_on_the_runtime_device_that_is_no_runtime_disk_is_refused_and_the_node_left_alone(harness, capsys):
    from google.cloud import compute_v1

    disks = harness.compute.client(compute_v1.DisksClient)
    disks.insert(project=PROJECT, zone=ZONE, disk_resource=compute_v1.Disk(name="scratch", size_gb=20)).result()
    instances = harness.compute.client(compute_v1.InstancesClient)
    instances.attach_disk(project=PROJECT, zone=ZONE, instance=NODE, attached_disk_resource=compute_v1.AttachedDisk(
        source=f"projects/{PROJECT}/zones/{ZONE}/disks/scratch", device_name=names.DEVICE_NAME)).result()
    kube_before = len(harness.kube.requests)

    assert harness.run_once() == 1

    error = step_lines(capsys.readouterr().out)["inspect"]["error"]
    assert f"device sd-runtime holds disk scratch, which is not a runtime disk of {NODE}; refusing to mount it" in error
    # Left alone: the pass reads its node (in the background, for untaint) but writes nothing to it.
    assert [r.method for r in harness.kube.requests[kube_before:] if r.method != "GET"] == []
    assert not harness.is_mounted()


@pytest.mark.parametrize("instance", [NODE, "gke-" + "x" * 70])
def test_the_runtime_of_a_disk_is_read_back_from_its_name(instance):
    assert names.runtime_of_disk(names.disk_name(instance, OLD_HASH12), instance) == OLD_HASH12
    assert names.runtime_of_disk(names.disk_name(instance, OLD_HASH12), "gke-another-node") is None
    assert names.runtime_of_disk("scratch", instance) is None


@pytest.mark.parametrize("body", [
    [{"op": "remove", "path": "/metadata/labels/sd-gke~1runtime"}],
    [{"op": "add", "path": "/metadata/labels/a", "value": "1"}, {"op": "add", "path": "/metadata/labels/b", "value": "2"}],
    [{"op": "add", "path": "/metadata/labels/sd-gke~1runtime", "value": "not a label value!"}],
    [{"op": "test", "path": "/metadata/labels/a", "value": "1"}, {"op": "replace", "path": "/metadata/labels/b", "value": "2"}],
])
def test_the_fake_refuses_label_patches_beyond_setting_one_label(harness, body):
    import requests

    response = requests.patch(f"{harness.kube.url}/api/v1/nodes/{NODE}", json=body, timeout=5,
                              headers={"Authorization": f"Bearer {harness.kube.token}",
                                       "Content-Type": "application/json-patch+json"})

    assert response.status_code == 422
    assert harness.kube.violations
    harness.kube.violations.clear()
