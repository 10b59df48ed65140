"""The GPU pool's autoscaling bounds and its secondary boot disks at their edges, over one hand-written node pool
each (policy/gke.py).

tests/test_delivery.py runs the secondary-boot-disk policy over the stacks the program registers, which are all
compliant or wrong in one way; here each case is one way a pool can be wrong, with the exact words
`pulumi preview` prints.
"""

from __future__ import annotations

import pytest

from tests.test_policy_rules import DROP, NODE_POOL, check, gpu_pool

AUTOSCALING = "gke-gpu-pool-autoscaling"
BOOT_DISKS = "gke-secondary-boot-disks-supported"
RUNTIME = "projects/sdgke-dev/global/images/sd-runtime-0123456789ab"


def pool_with_disks(*disks: dict, **changes) -> dict:
    return gpu_pool(nodeConfig__secondaryBootDisks=list(disks), **changes)


# --- the GPU pool's autoscaling ---------------------------------------------------------------------

def test_a_pool_at_the_stacks_maximum_passes():
    assert check(AUTOSCALING, NODE_POOL, gpu_pool(autoscaling={"totalMaxNodeCount": 10})) == []


def test_a_pool_one_past_the_stacks_maximum_is_refused_naming_both():
    assert check(AUTOSCALING, NODE_POOL, gpu_pool(autoscaling={"totalMaxNodeCount": 11})) == [
        "GPU node pool may grow to 11 nodes; this stack allows at most 10 (maxGpuNodes)."]


def test_a_per_zone_maximum_is_judged_when_there_is_no_total():
    assert check(AUTOSCALING, NODE_POOL, gpu_pool(autoscaling={"maxNodeCount": 3}), config={"maxGpuNodes": 2}) == [
        "GPU node pool may grow to 3 nodes; this stack allows at most 2 (maxGpuNodes)."]


def test_the_total_maximum_is_judged_before_the_per_zone_one():
    pool = gpu_pool(autoscaling={"totalMaxNodeCount": 2, "maxNodeCount": 30})
    assert check(AUTOSCALING, NODE_POOL, pool) == []


def test_a_pool_without_a_maximum_is_refused():
    assert check(AUTOSCALING, NODE_POOL, gpu_pool(autoscaling={"totalMinNodeCount": 0})) == [
        "GPU node pool autoscaling has no maximum: set totalMaxNodeCount."]


def test_a_pool_without_autoscaling_is_refused():
    assert check(AUTOSCALING, NODE_POOL, gpu_pool(autoscaling=DROP)) == ["GPU node pool without autoscaling."]


@pytest.mark.parametrize("autoscaling", [{"totalMinNodeCount": 1, "totalMaxNodeCount": 2},
                                         {"minNodeCount": 1, "totalMaxNodeCount": 2}])
def test_a_pool_that_keeps_a_node_outside_prod_is_refused(autoscaling):
    assert check(AUTOSCALING, NODE_POOL, gpu_pool(autoscaling=autoscaling)) == [
        "GPU node pool keeps 1 node(s) running; outside prod it must scale from 0."]


def test_a_pool_that_keeps_a_node_in_prod_passes():
    pool = gpu_pool(autoscaling={"totalMinNodeCount": 1, "totalMaxNodeCount": 2})
    assert check(AUTOSCALING, NODE_POOL, pool, config={"production": True}) == []


def test_a_pool_without_gpus_is_no_business_of_the_policy():
    pool = gpu_pool(autoscaling={"totalMinNodeCount": 5, "totalMaxNodeCount": 50})
    pool["nodeConfig"].pop("guestAccelerators")
    assert check(AUTOSCALING, NODE_POOL, pool) == []


# --- secondary boot disks -------------------------------------------------------------------------

@pytest.mark.parametrize("disk", [{"diskImage": RUNTIME}, {"diskImage": RUNTIME, "mode": ""},
                                  {"diskImage": RUNTIME, "mode": "MODE_UNSPECIFIED"}])
def test_a_data_disk_on_an_image_streaming_cos_pool_passes(disk):
    assert check(BOOT_DISKS, NODE_POOL, pool_with_disks(disk, nodeConfig__imageType="COS_CONTAINERD")) == []


def test_a_pool_of_unset_image_type_takes_gkes_default_cos_and_passes():
    """cos_containerd is GKE's default node image (https://cloud.google.com/kubernetes-engine/docs/concepts/node-images)."""
    assert check(BOOT_DISKS, NODE_POOL, pool_with_disks({"diskImage": RUNTIME})) == []


def test_a_lower_case_cos_image_type_passes():
    assert check(BOOT_DISKS, NODE_POOL, pool_with_disks({"diskImage": RUNTIME}, nodeConfig__imageType="cos_containerd")) == []


def test_a_container_image_cache_disk_is_refused_naming_the_disk_and_its_mode():
    disk = {"diskImage": RUNTIME, "mode": "CONTAINER_IMAGE_CACHE"}
    assert check(BOOT_DISKS, NODE_POOL, pool_with_disks(disk)) == [
        f"Secondary boot disk {RUNTIME} in mode CONTAINER_IMAGE_CACHE: the runtime is data, which GKE mounts only "
        "without a mode."]


def test_every_disk_is_judged_not_only_the_first():
    second = "projects/sdgke-dev/global/images/other"
    disks = ({"diskImage": RUNTIME}, {"diskImage": second, "mode": "CONTAINER_IMAGE_CACHE"})
    assert check(BOOT_DISKS, NODE_POOL, pool_with_disks(*disks)) == [
        f"Secondary boot disk {second} in mode CONTAINER_IMAGE_CACHE: the runtime is data, which GKE mounts only "
        "without a mode."]


@pytest.mark.parametrize("gcfs", [DROP, {"enabled": False}, {"enabled": "true"}])
def test_disks_without_image_streaming_are_refused(gcfs):
    assert check(BOOT_DISKS, NODE_POOL, pool_with_disks({"diskImage": RUNTIME}, nodeConfig__gcfsConfig=gcfs)) == [
        "Node pool with secondary boot disks but without Image Streaming: GKE requires nodeConfig.gcfsConfig.enabled "
        "= true for them."]


@pytest.mark.parametrize("image_type", ["UBUNTU_CONTAINERD", "WINDOWS_LTSC_CONTAINERD"])
def test_disks_on_another_os_are_refused_naming_it(image_type):
    assert check(BOOT_DISKS, NODE_POOL, pool_with_disks({"diskImage": RUNTIME}, nodeConfig__imageType=image_type)) == [
        f"Node pool with secondary boot disks on image type {image_type}: they need Container-Optimized OS."]


def test_every_fault_of_a_pool_is_reported_together():
    pool = pool_with_disks({"diskImage": RUNTIME, "mode": "CONTAINER_IMAGE_CACHE"}, nodeConfig__gcfsConfig=DROP,
                           nodeConfig__imageType="UBUNTU_CONTAINERD")
    assert len(check(BOOT_DISKS, NODE_POOL, pool)) == 3


@pytest.mark.parametrize("disks", [DROP, []])
def test_a_pool_without_secondary_boot_disks_is_no_business_of_the_policy(disks):
    pool = gpu_pool(nodeConfig__gcfsConfig=DROP, nodeConfig__imageType="UBUNTU_CONTAINERD")
    if disks is not DROP:
        pool["nodeConfig"]["secondaryBootDisks"] = disks
    assert check(BOOT_DISKS, NODE_POOL, pool) == []
