"""The custom roles hold exactly the permissions the agent and the GC need: no more, no less."""

from __future__ import annotations

import re

from attacher import permissions
from google.cloud import compute_v1

from tests.attacher.conftest import PROJECT, ZONE, Harness, SimulatedCrash


def permissions_of(methods: set[str]) -> set[str]:
    return {perm for method in methods for perm in permissions.METHOD_PERMISSIONS[method]}


def test_every_agent_call_maps_to_a_listed_permission_and_every_listed_one_is_used(harness: Harness):
    def crash_after_create(step: str) -> None:
        if step == "create_disk":
            raise SimulatedCrash(step)

    try:  # a pass that creates the disk, then one that finds it (409 -> disks.get): every code path's calls
        harness.run_once(after_step=crash_after_create)
    except SimulatedCrash:
        pass
    assert harness.run_once() == 0

    assert harness.agent_methods == set(permissions.AGENT_METHODS)
    assert permissions_of(harness.agent_methods) == set(permissions.AGENT_PERMISSIONS)


def test_every_gc_call_maps_to_a_listed_permission_and_every_listed_one_is_used(harness: Harness):
    disks = harness.compute.client(compute_v1.DisksClient)
    disks.insert(project=PROJECT, zone=ZONE, disk_resource=compute_v1.Disk(
        name="orphan", size_gb=20, labels={"sdgke-owner": "gone", "sdgke-runtime-hash": "3f9a1c2b7d4e",
                                           "managed-by": "sd-gke"})).result()

    assert harness.run_gc(grace_seconds=0) == 0

    assert harness.gc_methods == set(permissions.GC_METHODS)
    assert permissions_of(harness.gc_methods) == set(permissions.GC_PERMISSIONS)


def test_the_lists_are_exactly_these_permissions():
    assert permissions.AGENT_PERMISSIONS == (
        "compute.disks.create", "compute.disks.get", "compute.disks.setLabels", "compute.disks.use",
        "compute.images.get", "compute.images.useReadOnly", "compute.instances.attachDisk", "compute.instances.get",
        "compute.zoneOperations.get",
    )
    assert permissions.GC_PERMISSIONS == (
        "compute.disks.delete", "compute.disks.list", "compute.instances.get", "compute.zoneOperations.get",
    )


def test_no_permission_lets_the_agent_detach_a_disk_or_keep_it_past_its_node():
    granted = set(permissions.AGENT_PERMISSIONS) | set(permissions.GC_PERMISSIONS)
    assert not granted & {"compute.instances.detachDisk", "compute.instances.setDiskAutoDelete",
                          "compute.instances.delete", "compute.disks.setIamPolicy", "compute.disks.useReadOnly"}
    assert all(re.fullmatch(r"compute\.[a-z][A-Za-z]+\.[a-z][A-Za-z]+", perm) for perm in granted)
    assert "compute.disks.delete" not in permissions.AGENT_PERMISSIONS  # only the GC deletes


def test_the_attach_is_read_write_so_it_needs_disks_use(harness: Harness):
    assert harness.run_once() == 0

    modes = [r.body["mode"] for r in harness.compute.requests if r.api_method == "compute.instances.attachDisk"]
    assert modes == ["READ_WRITE"]  # READ_ONLY disks cannot be auto-deleted
    assert permissions.METHOD_PERMISSIONS["compute.instances.attachDisk"] == (
        "compute.instances.attachDisk", "compute.disks.use")


def test_the_node_rbac_is_get_and_patch_on_nodes_only():
    assert permissions.NODE_RBAC_RULES == ({"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]},)
