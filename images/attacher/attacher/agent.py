"""One pass of the agent: from "a GPU node booted" to "runtime mounted, verified, node untainted".

Every step is idempotent, so a pass that crashed anywhere converges when run again:
  identify     project, zone, instance from the metadata server; the Compute client is built (its
               import is the slowest part of a cold start) while the node is read, in the
               background, for untaint
  inspect      instances.get (is `sd-runtime` attached?) and images.get, in parallel; a node holding
               another runtime's disk is relabelled with that runtime and refused
  create_disk  disks.insert of the deterministic name (409 = created earlier/by a twin: reuse it)
  attach_disk  instances.attachDisk READ_WRITE, autoDelete=true in the same call
  wait_device  the device of `sd-runtime` appears
  mount        read-only (ro,noload: nothing writes to the disk), at the mount path
  verify       MANIFEST.json recipe_hash and the ready marker
  untaint      remove the startup taint from the node
Nothing here detaches or deletes: a failure or SIGTERM leaves either nothing or a disk that the next
pass reuses (or, if the node is gone, that autoDelete or the GC removes).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from google.api_core import exceptions as gexc

from attacher import log, names
from attacher.compute import Compute, OperationError
from attacher.config import AgentConfig
from attacher.devices import Devices, wait_for_device
from attacher.kube import KubeClient, remove_taint, set_label
from attacher.manifest import verify_runtime
from attacher.metadata import MetadataClient

if TYPE_CHECKING:
    from attacher.compute_api import compute as compute_v1

STEPS = ("identify", "inspect", "create_disk", "attach_disk", "wait_device", "mount", "verify", "untaint")
DISK_READY_POLL_SECONDS = 1.0


class AgentError(Exception):
    """A refusal or an unrecoverable condition, worded for the operator reading the log."""


@dataclass(frozen=True)
class Deps:
    metadata: MetadataClient
    compute_for_project: Callable[[str], Compute]
    kube: KubeClient
    devices: Devices


@dataclass(frozen=True)
class PassResult:
    disk: str
    device: str
    recipe_hash: str
    taint: str  # "removed" | "absent"


# An agent before this one attached READ_ONLY with autoDelete, which Compute Engine cannot honour
# (see _attach): such a disk stays with the node and is mounted as it is. It is not deleted with the
# node; the GC deletes it once the node is gone (labelled, unattached, owner missing).
_NOT_AUTO_DELETED = ("runtime disk {disk} is attached {mode} without autoDelete (by an older agent): it is used as "
                     "it is, outlives the node, and the GC deletes it once the node is gone")


def _attached_runtime(instance: compute_v1.Instance) -> compute_v1.AttachedDisk | None:
    return next((disk for disk in instance.disks if disk.device_name == names.DEVICE_NAME), None)


def _check_image(cfg: AgentConfig, image: compute_v1.Image) -> None:
    if image.status != "READY":
        raise AgentError(f"runtime image {cfg.image.path} is {image.status or 'of unknown status'}, not READY")
    label = image.labels.get(names.LABEL_HASH)
    if label != cfg.runtime_hash:
        raise AgentError(
            f"runtime image {cfg.image.path} carries label {names.LABEL_HASH}={label}, but "
            f"SDGKE_RUNTIME_HASH={cfg.runtime_hash}: the DaemonSet and the image disagree; refusing to create a disk"
        )
    if cfg.disk_size_gb is not None and cfg.disk_size_gb < image.disk_size_gb:
        raise AgentError(
            f"SDGKE_DISK_SIZE_GB={cfg.disk_size_gb} is smaller than runtime image {cfg.image.path} "
            f"({image.disk_size_gb} GB); allowed: {image.disk_size_gb} or more, or unset"
        )


def _check_reused_disk(cfg: AgentConfig, disk: compute_v1.Disk, instance: str) -> None:
    expected = names.disk_labels(instance, cfg.runtime_hash)
    actual = {key: disk.labels.get(key) for key in expected}
    if actual != expected:
        raise AgentError(
            f"disk {disk.name} exists but is not this node's runtime disk: labels {actual}, expected {expected}; "
            "refusing to reuse it"
        )


def _refuse_another_runtime(
    cfg: AgentConfig, deps: Deps, instance: str, attached: compute_v1.AttachedDisk, step: log.Step
) -> None:
    """A node that holds another runtime's disk stays that runtime's node.

    Its disk cannot be swapped safely: WebUI pods of that runtime may be reading it, and a node never
    needs to change runtime, since every runtime gets its own node pool (components/gpu_pool.py). The
    DaemonSet only selects nodes labelled with its runtime, so reaching such a node means the label
    is wrong (changed in place): correct it to the runtime the node holds. Then the DaemonSet
    controller takes this agent off the node ("If node labels are changed, the DaemonSet will promptly
    add Pods to newly matching nodes and delete Pods from newly not-matching nodes",
    https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/#updating-a-daemonset), so its
    rollout does not wait on a pod that can never be ready, and this runtime's WebUI pods, which
    select the label too, do not land here.
    """
    held_disk = attached.source.rsplit("/", 1)[-1]
    if held_disk == names.disk_name(instance, cfg.runtime_hash):
        return
    held = names.runtime_of_disk(held_disk, instance)
    if held is None:
        raise AgentError(f"device {names.DEVICE_NAME} holds disk {held_disk}, which is not a runtime disk of {instance}; "
                         "refusing to mount it")
    step.note(held_runtime=held)
    step.note(node_label=set_label(deps.kube, cfg.node_name, names.RUNTIME_NODE_LABEL, held))
    raise AgentError(
        f"node {cfg.node_name} holds runtime {held} (disk {held_disk}), not SDGKE_RUNTIME_HASH={cfg.runtime_hash}; "
        f"its disk stays for the pods that use it; node labelled {names.RUNTIME_NODE_LABEL}={held} so that runtime "
        f"{cfg.runtime_hash}'s disk attacher and WebUI leave it to the pool of its own runtime"
    )


def _wait_disk_ready(compute: Compute, zone: str, disk: compute_v1.Disk, timeout: float) -> compute_v1.Disk:
    """A disk a twin agent is still creating: poll until READY (bounded)."""
    deadline = time.monotonic() + timeout
    polls = 0
    while disk.status != "READY":
        if disk.status == "FAILED":
            raise AgentError(f"disk {disk.name} is FAILED; it cannot be used (the GC removes it once the node is gone)")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"disk {disk.name} still {disk.status} after {timeout:.0f}s")
        time.sleep(min(DISK_READY_POLL_SECONDS * 2**polls, 5.0))
        polls += 1
        disk = compute.get_disk(zone, disk.name)
    return disk


def run_pass(cfg: AgentConfig, deps: Deps, after_step: Callable[[str], None] = lambda step: None) -> PassResult:
    # The node is read for untaint in the background while the pass runs; leaving the `with` waits for
    # that read, so a pass, failed or not, leaves no request behind.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="node-read") as background:
        return _pass(cfg, deps, after_step, background)


def _pass(cfg: AgentConfig, deps: Deps, after_step: Callable[[str], None], background: Executor) -> PassResult:
    with log.step("identify") as step:
        identity = deps.metadata.identity()
        step.note(project=identity.project, zone=identity.zone, instance=identity.instance)
        if identity.instance != cfg.node_name:  # GKE names a node after its VM
            raise AgentError(
                f"SDGKE_NODE_NAME={cfg.node_name} but the metadata server says this VM is {identity.instance}: "
                "refusing to attach to one and untaint the other"
            )
        node_read = background.submit(deps.kube.get_node, cfg.node_name)
        compute = deps.compute_for_project(identity.project)
    after_step("identify")
    zone, instance = identity.zone, identity.instance
    disk_name = names.disk_name(instance, cfg.runtime_hash)

    with log.step("inspect", disk=disk_name) as step:
        with ThreadPoolExecutor(max_workers=2) as pool:
            instance_future = pool.submit(compute.get_instance, zone, instance)
            image_future = pool.submit(compute.get_image, cfg.image.project, cfg.image.name)
        try:
            attached = _attached_runtime(instance_future.result())
        except gexc.NotFound:
            raise AgentError(f"instance {instance} in zone {zone} (from the metadata server) does not exist") from None
        if attached is not None:
            # The disk is there already: the image may have been deleted since, and does not matter.
            step.note(attached_disk=attached.source.rsplit("/", 1)[-1], mode=attached.mode,
                      auto_delete=attached.auto_delete)
            _refuse_another_runtime(cfg, deps, instance, attached, step)
            if not attached.auto_delete:
                log.emit("warning", step="inspect", message=_NOT_AUTO_DELETED.format(
                    disk=attached.source.rsplit("/", 1)[-1], mode=attached.mode))
        else:
            try:
                _check_image(cfg, image_future.result())
            except gexc.NotFound:
                raise AgentError(
                    f"runtime image {cfg.image.path} (SDGKE_RUNTIME_IMAGE) does not exist; no disk was created"
                ) from None
    after_step("inspect")

    source = attached.source if attached is not None else None
    with log.step("create_disk", disk=disk_name) as step:
        if source is not None:
            step.skip("runtime disk already attached")
        else:
            source = _get_or_create_disk(cfg, compute, zone, instance, disk_name, step)
    after_step("create_disk")

    with log.step("attach_disk", disk=disk_name) as step:
        if attached is not None:
            step.skip("runtime disk already attached")
        else:
            _attach(cfg, compute, zone, instance, disk_name, source, step)
    after_step("attach_disk")

    with log.step("wait_device") as step:
        device = wait_for_device(deps.devices, names.DEVICE_NAME, cfg.device_timeout_seconds)
        step.note(device=device)
    after_step("wait_device")

    with log.step("mount", device=device, mount_path=cfg.mount_path) as step:
        step.note(read_ahead_kb=_set_read_ahead(deps.devices, device, cfg.read_ahead_kb))
        step.note(mounted_now=deps.devices.mount(device, cfg.mount_path))
    after_step("mount")

    with log.step("verify", mount_path=cfg.mount_path) as step:
        runtime = verify_runtime(cfg.mount_path, cfg.runtime_hash)
        step.note(recipe_hash=runtime.recipe_hash)
    after_step("verify")

    with log.step("untaint", node=cfg.node_name, taint=cfg.startup_taint_key) as step:
        outcome = remove_taint(deps.kube, cfg.node_name, cfg.startup_taint_key, read_earlier=node_read.result())
        step.note(outcome=outcome)
    after_step("untaint")
    return PassResult(disk=disk_name, device=device, recipe_hash=runtime.recipe_hash, taint=outcome)


def _get_or_create_disk(
    cfg: AgentConfig, compute: Compute, zone: str, instance: str, disk_name: str, step: log.Step
) -> str:
    try:
        operation = compute.insert_disk(
            zone,
            name=disk_name,
            description=f"sd-gke runtime {cfg.runtime_hash} for {instance}; deleted with it (autoDelete)",
            source_image=cfg.image.path,
            disk_type=cfg.disk_type,
            labels=names.disk_labels(instance, cfg.runtime_hash),
            size_gb=cfg.disk_size_gb,
        )
        waits = compute.wait_zone_operation(zone, operation, f"disks.insert {disk_name}", cfg.operation_timeout_seconds)
        step.note(created=True, operation_waits=waits)
        return operation.target_link or f"projects/{compute.project}/zones/{zone}/disks/{disk_name}"
    except gexc.Conflict:
        pass  # created by an earlier pass or a twin agent
    except gexc.NotFound as exc:
        raise AgentError(f"disks.insert {disk_name}: {exc.message} (is SDGKE_RUNTIME_IMAGE={cfg.image.path} there?)") from None
    except OperationError as exc:
        if "RESOURCE_ALREADY_EXISTS" not in exc.codes:
            raise
    existing = compute.get_disk(zone, disk_name)
    _check_reused_disk(cfg, existing, instance)
    existing = _wait_disk_ready(compute, zone, existing, cfg.operation_timeout_seconds)
    step.note(created=False, reused=True)
    return existing.self_link


def _attach(
    cfg: AgentConfig, compute: Compute, zone: str, instance: str, disk_name: str, source: str, step: log.Step
) -> None:
    # READ_WRITE, because only a READ_WRITE disk can be auto-deleted: "disks attached in READ_ONLY mode
    # cannot be auto-deleted" (compute.v1 discovery document, StatefulPolicyPreservedStateDiskDevice.autoDelete).
    # The disk is this node's alone, and nothing writes to it anyway: it is mounted ro,noload (devices.py).
    try:
        operation = compute.attach_disk(zone, instance, source=source, device_name=names.DEVICE_NAME,
                                        mode="READ_WRITE", auto_delete=True)
        waits = compute.wait_zone_operation(zone, operation, f"attachDisk {disk_name}", cfg.operation_timeout_seconds)
        step.note(operation_waits=waits)
        return
    except (gexc.BadRequest, gexc.Conflict, gexc.NotFound, OperationError) as exc:
        # A twin agent may have attached it first (device name taken), or our own earlier attempt
        # went through before a retried call failed: look before giving up.
        refused = exc
    try:
        now_attached = _attached_runtime(compute.get_instance(zone, instance))
    except gexc.NotFound:
        raise AgentError(f"instance {instance} vanished while attaching {disk_name}; the GC removes the disk") from None
    if now_attached is None:
        raise refused
    other = now_attached.source.rsplit("/", 1)[-1]
    step.note(raced=True, attached_disk=other)
    if other != disk_name:
        log.emit("warning", step="attach_disk", message=f"device {names.DEVICE_NAME} holds disk {other}, not {disk_name}; "
                 f"{disk_name} stays unattached until the node is gone and the GC removes it")


def _set_read_ahead(devices: Devices, device: str, kilobytes: int) -> int | str | None:
    """Read-ahead only speeds up the first model load: a failure to set it is noted, never fatal."""
    try:
        return devices.set_read_ahead(device, kilobytes)
    except OSError as exc:
        return f"unchanged ({exc.strerror or exc})"
