"""The exact Compute Engine permissions and Kubernetes RBAC the attacher and its GC use.

The Pulumi component builds the custom IAM roles from AGENT_PERMISSIONS and GC_PERMISSIONS, and the
ClusterRole from NODE_RBAC_RULES. tests/attacher/test_permissions.py records every API method the
agent and the GC call against the fake and checks it against METHOD_PERMISSIONS both ways: every
call is covered and every listed permission is needed by some call.
"""

# API method (discovery id) -> the permissions Compute Engine checks for it, as the agent calls it.
METHOD_PERMISSIONS: dict[str, tuple[str, ...]] = {
    # Learn whether the node already has the runtime disk; re-read after losing an attach race.
    "compute.instances.get": ("compute.instances.get",),
    # Check the runtime image exists, is READY, carries the expected hash label, and its size.
    "compute.images.get": ("compute.images.get",),
    # Create the node's disk: from an image (useReadOnly on the image) and with labels at creation
    # (creation-time labels are authorised by setLabels, not by create).
    "compute.disks.insert": ("compute.disks.create", "compute.disks.setLabels", "compute.images.useReadOnly"),
    # Read the disk after insert answered 409 (an earlier run or a racing agent created it).
    "compute.disks.get": ("compute.disks.get",),
    # Attach the disk READ_WRITE with autoDelete in the same call (no setDiskAutoDelete needed). READ_WRITE
    # because READ_ONLY disks cannot be auto-deleted (agent._attach); a READ_WRITE attach needs
    # compute.disks.use on the disk (compute.disks.useReadOnly covers READ_ONLY attaches only):
    # https://cloud.google.com/compute/docs/reference/rest/v1/instances/attachDisk#iam-permissions
    "compute.instances.attachDisk": ("compute.instances.attachDisk", "compute.disks.use"),
    # Wait for insert/attach/delete operations.
    "compute.zoneOperations.wait": ("compute.zoneOperations.get",),
    # GC: find disks labelled managed-by=sd-gke.
    "compute.disks.list": ("compute.disks.list",),
    # GC: delete an orphaned disk.
    "compute.disks.delete": ("compute.disks.delete",),
}

AGENT_METHODS: tuple[str, ...] = (
    "compute.instances.get",
    "compute.images.get",
    "compute.disks.insert",
    "compute.disks.get",
    "compute.instances.attachDisk",
    "compute.zoneOperations.wait",
)

GC_METHODS: tuple[str, ...] = (
    "compute.disks.list",
    "compute.instances.get",  # is the owner instance still there?
    "compute.disks.delete",
    "compute.zoneOperations.wait",
)


def _permissions(methods: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted({perm for method in methods for perm in METHOD_PERMISSIONS[method]}))


# compute.disks.create, compute.disks.get, compute.disks.setLabels, compute.disks.use,
# compute.images.get, compute.images.useReadOnly, compute.instances.attachDisk,
# compute.instances.get, compute.zoneOperations.get
AGENT_PERMISSIONS: tuple[str, ...] = _permissions(AGENT_METHODS)

# compute.disks.delete, compute.disks.list, compute.instances.get, compute.zoneOperations.get
GC_PERMISSIONS: tuple[str, ...] = _permissions(GC_METHODS)

# The agent reads its node and removes the startup taint with a JSON patch (and, on a node that
# holds another runtime's disk, sets its sd-gke/runtime label the same way). RBAC cannot name the
# node in advance (a DaemonSet pod runs on any node), so this is cluster-wide get/patch on nodes.
# The GC needs no Kubernetes access.
NODE_RBAC_RULES: tuple[dict[str, list[str]], ...] = (
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]},
)
