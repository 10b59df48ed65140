"""The runtime disk image as a Pulumi dynamic resource: created, adopted, replaced and retired by the provider.

Creating it bakes the image on a throwaway builder VM (builder.py):

1. the builder VM is created; it publishes each step of the bake in the guest attributes `sd-bake/`;
2. the provider follows those attributes into Pulumi's log; a failure or the timeout ends the run
   with the tail of the serial console in the error;
3. the VM is stopped and the image made from the disk in family `sd-runtime`;
4. the builder VM and its disks are always deleted, and their absence checked, whatever happened.

An image of the same name made by an earlier run (a re-run after a crash) is adopted, not baked again.

Deleting the resource keeps running nodes safe: a disk made from an image is a full copy and never
reads the image again, so nodes that already have their runtime disk are unaffected by the image
going away. Nodes created later would need it, so while any disk labelled
`sdgke-runtime-hash=<hash12>` exists in the node zones (i.e. nodes of that runtime may still be
running or scaling) the image is only deprecated: still usable by name, skipped by the family, and
left for an operator to delete once those disks are gone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pulumi
from pulumi import dynamic
from pulumi.dynamic.dynamic import PROVIDER_KEY

from components.runtime_bake.builder import BUILDER_LABEL, GUEST_NAMESPACE, BakeSpec, builder_instance
from components.runtime_bake.compute import OPERATION_DEADLINE_SECONDS, BakeError, ComputeClient, Pacing
from components.runtime_layout import HASH_LABEL

SERIAL_TAIL_LINES = 40
REPLACE_ON = ("project", "family", "image_name", "identity_hash")
"""Inputs whose change makes a different image; every other input only affects how it is built."""
_STATE_KEYS = (PROVIDER_KEY, "self_link", "size_gb")
"""Keys of the resource's state that are not inputs."""


class BakedImage(dynamic.Resource):
    """The image itself; registers as pulumi-python:dynamic:Resource."""

    self_link: pulumi.Output[str]
    size_gb: pulumi.Output[int]
    image_name: pulumi.Output[str]
    identity_hash: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions):
        super().__init__(RuntimeImageProvider(), name, {**props, "self_link": None, "size_gb": None}, opts)


class RuntimeImageProvider(dynamic.ResourceProvider):
    """Creates, adopts, replaces and retires the runtime disk image (see the module docstring)."""

    serialize_as_secret_always = False
    """The provider object holds pacing and a log function, nothing secret: keep the state readable."""

    def __init__(self, pacing: Pacing | None = None, report: Callable[[str], None] = pulumi.log.info):
        super().__init__()
        self.pacing = pacing or Pacing()
        self.report = report
        """Progress lines; pulumi.log.info prints them to the provider's stderr, which the engine shows."""

    def _client(self, spec: BakeSpec) -> ComputeClient:
        return ComputeClient(spec.project, spec.compute_endpoint, self.pacing)

    # ---- engine entry points ----------------------------------------------------------------------

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        keys = (set(olds) | set(news)) - set(_STATE_KEYS)
        replaces = [k for k in REPLACE_ON if olds.get(k) != news.get(k)]
        changed = sorted(k for k in keys if olds.get(k) != news.get(k))
        # Same name in the same project: the new one would adopt the old image, which must go first.
        same_image = all(olds.get(k) == news.get(k) for k in ("project", "image_name"))
        return dynamic.DiffResult(changes=bool(changed), replaces=replaces,
                                  delete_before_replace=bool(replaces) and same_image)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        """Only build settings changed (diff replaces otherwise): the image stays as it is."""
        return dynamic.UpdateResult({**_inputs(news), **{k: olds[k] for k in ("self_link", "size_gb") if k in olds}})

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        spec = BakeSpec.from_props(props)
        api = self._client(spec)
        self._remove_builder(api, spec, reason="left by an earlier run")
        image = self._adoptable_image(api, spec)
        if image is not None:
            self.report(f"{spec.image_name}: adopting the existing image (label {HASH_LABEL}={spec.hash12})")
        else:
            try:
                image = self._bake(api, spec)
            except BaseException as err:
                self._remove_builder_after_failure(api, spec, err)
                raise
            self._remove_builder(api, spec, reason="the bake is over")
        return dynamic.CreateResult(spec.image_name, {**_inputs(props), **_image_outputs(image)})

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        spec = BakeSpec.from_props(props)
        api = self._client(spec)
        image = api.get(f"reading image {id_}", api.images.get, image=id_)
        if image is None:
            return dynamic.ReadResult(None, {})
        return dynamic.ReadResult(id_, {**_inputs(props), **_image_outputs(image)})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        spec = BakeSpec.from_props(props)
        api = self._client(spec)
        users = self._runtime_disks(api, spec)
        if users:
            shown = ", ".join(users[:5]) + (", ..." if len(users) > 5 else "")
            self.report(f"{id_}: deprecating instead of deleting: {len(users)} disk(s) labelled "
                        f"{HASH_LABEL}={spec.hash12} exist ({shown}), so nodes of that runtime may still need it. "
                        f"Delete it once they are gone: gcloud compute images delete {id_} --project {spec.project}")
            api.mutate(f"deprecating image {id_}", api.images.deprecate_unary, image=id_,
                       deprecation_status_resource=api.v1.DeprecationStatus(state="DEPRECATED"))
            return
        try:
            api.mutate(f"deleting image {id_}", api.images.delete_unary, expect=(api.errors.NotFound,), image=id_)
        except api.errors.NotFound:
            self.report(f"{id_}: already deleted")

    # ---- the bake ---------------------------------------------------------------------------------

    def _adoptable_image(self, api: ComputeClient, spec: BakeSpec) -> Any | None:
        """A READY image of this name made by an earlier run; a FAILED one is removed, a foreign one refused."""
        image = api.get(f"looking up image {spec.image_name}", api.images.get, image=spec.image_name)
        if image is None:
            return None
        label = image.labels.get(HASH_LABEL)
        if label != spec.hash12:
            raise BakeError(f"image {spec.image_name} exists with label {HASH_LABEL}={label!r}, expected "
                            f"{spec.hash12!r}: it was not made by this program; delete or rename it")
        if image.status == "FAILED":
            self.report(f"{spec.image_name}: an earlier run left a FAILED image; deleting it and baking again")
            api.mutate(f"deleting failed image {spec.image_name}", api.images.delete_unary, image=spec.image_name)
            return None
        return self._ready_image(api, spec)

    def _bake(self, api: ComputeClient, spec: BakeSpec) -> Any:
        where = f"builder VM {spec.builder} in {spec.zone}"
        self.report(f"{spec.image_name}: creating {where}")
        api.mutate(f"creating {where}", api.instances.insert_unary, zone=spec.zone,
                   instance_resource=builder_instance(api.v1, spec))
        self._follow(api, spec)
        self.report(f"{spec.image_name}: bake done; stopping {where}")
        api.mutate(f"stopping {where}", api.instances.stop_unary, zone=spec.zone, instance=spec.builder)
        self.report(f"{spec.image_name}: creating the image in family {spec.family}")
        image = api.v1.Image(
            name=spec.image_name,
            source_disk=f"projects/{spec.project}/zones/{spec.zone}/disks/{spec.data_disk}",
            family=spec.family,
            labels={HASH_LABEL: spec.hash12, "managed-by": "pulumi"},
            description=f"sd-gke runtime, identity sha256 {spec.identity_hash}, baked in {spec.base_image}",
        )
        try:
            api.mutate(f"creating image {spec.image_name}", api.images.insert_unary, expect=(api.errors.Conflict,),
                       image_resource=image)
        except api.errors.Conflict:
            adopted = self._adoptable_image(api, spec)  # made meanwhile by a concurrent run of the same identity
            if adopted is None:
                raise BakeError(f"creating image {spec.image_name}: it exists, then it did not") from None
            return adopted
        return self._ready_image(api, spec)

    def _ready_image(self, api: ComputeClient, spec: BakeSpec) -> Any:
        deadline = time.monotonic() + OPERATION_DEADLINE_SECONDS
        while True:
            image = api.call(f"reading image {spec.image_name}", api.images.get, {"image": spec.image_name})
            if image.status == "READY":
                return image
            if image.status not in ("PENDING", "CREATING") or time.monotonic() > deadline:
                raise BakeError(f"image {spec.image_name} is {image.status}, expected READY")
            time.sleep(self.pacing.poll_seconds)

    def _follow(self, api: ComputeClient, spec: BakeSpec) -> None:
        """Report each step the builder publishes until done, failed, a stopped VM, or the timeout."""
        deadline = time.monotonic() + spec.timeout_seconds
        seen = ("", "")
        while True:
            values = self._guest_attributes(api, spec)
            step, status = values.get("step", ""), values.get("status", "")
            if step and (step, status) != seen:
                seen = (step, status)
                self.report(f"{spec.image_name}: bake step {step}: {status}")
            if status == "done":
                return
            if status == "failed":
                raise BakeError(f"bake of {spec.image_name} failed at step {step or '?'}: "
                                f"{values.get('error') or 'no reason published'}{self._serial_tail(api, spec)}")
            if status not in ("", "running"):
                raise BakeError(f"bake of {spec.image_name}: guest attribute {GUEST_NAMESPACE}/status is {status!r}; "
                                f"expected running, done or failed{self._serial_tail(api, spec)}")
            vm = api.call(f"reading {spec.builder}", api.instances.get, {"zone": spec.zone, "instance": spec.builder})
            if vm.status not in ("PROVISIONING", "STAGING", "RUNNING"):
                raise BakeError(f"bake of {spec.image_name}: builder VM {spec.builder} is {vm.status} before the "
                                f"bake finished (last step: {step or 'none'}){self._serial_tail(api, spec)}")
            if time.monotonic() >= deadline:
                raise BakeError(f"bake of {spec.image_name} timed out after {spec.timeout_seconds:g} s at step "
                                f"{step or 'none (nothing published)'}; raise runtime.bakeTimeoutMinutes if it is "
                                f"only slow{self._serial_tail(api, spec)}")
            time.sleep(min(self.pacing.poll_seconds, max(deadline - time.monotonic(), 0.0)))

    def _guest_attributes(self, api: ComputeClient, spec: BakeSpec) -> dict[str, str]:
        found = api.get(f"reading the progress of {spec.builder}", api.instances.get_guest_attributes,
                        zone=spec.zone, instance=spec.builder, query_path=f"{GUEST_NAMESPACE}/")
        if found is None:
            return {}
        return {item.key: item.value for item in found.query_value.items if item.namespace == GUEST_NAMESPACE}

    def _serial_tail(self, api: ComputeClient, spec: BakeSpec) -> str:
        try:
            output = api.call(f"reading the serial console of {spec.builder}", api.instances.get_serial_port_output,
                              {"zone": spec.zone, "instance": spec.builder, "port": 1})
        except BakeError as err:
            return f"\n(serial console unavailable: {err})"
        lines = output.contents.splitlines()[-SERIAL_TAIL_LINES:]
        return f"\n--- last {len(lines)} lines of the serial console of {spec.builder} ---\n" + "\n".join(lines)

    # ---- cleanup ----------------------------------------------------------------------------------

    def _remove_builder(self, api: ComputeClient, spec: BakeSpec, *, reason: str) -> None:
        """Delete the builder VM and every disk of the builder, then check that nothing is left."""
        for vm in self._builder_instances(api, spec):
            self.report(f"{spec.image_name}: deleting builder VM {vm} ({reason})")
            api.mutate(f"deleting builder VM {vm}", api.instances.delete_unary, zone=spec.zone, instance=vm)
        for disk in self._builder_disks(api, spec):
            self.report(f"{spec.image_name}: deleting builder disk {disk} ({reason})")
            api.mutate(f"deleting builder disk {disk}", api.disks.delete_unary, zone=spec.zone, disk=disk)
        left = self._builder_instances(api, spec) + self._builder_disks(api, spec)
        if left:
            raise BakeError(f"builder resources in {spec.zone} still exist after deleting them: {left}; "
                            "delete them by hand with gcloud compute instances/disks delete")

    def _remove_builder_after_failure(self, api: ComputeClient, spec: BakeSpec, failure: BaseException) -> None:
        try:
            self._remove_builder(api, spec, reason="the bake did not finish")
        except Exception as cleanup:  # noqa: BLE001 - whatever broke, the first failure must still be told
            raise BakeError(f"{failure}\n\nremoving the builder afterwards failed too: {cleanup}") from failure

    def _builder_instances(self, api: ComputeClient, spec: BakeSpec) -> list[str]:
        vm = api.get(f"looking up {spec.builder}", api.instances.get, zone=spec.zone, instance=spec.builder)
        return [vm.name] if vm is not None else []

    def _builder_disks(self, api: ComputeClient, spec: BakeSpec) -> list[str]:
        """By name and by label, so a disk of an older layout is found too."""
        labelled = api.listed(f"listing builder disks in {spec.zone}", api.disks.list, zone=spec.zone,
                              filter=f"labels.{BUILDER_LABEL} = {spec.hash12}")
        named = [api.get(f"looking up disk {name}", api.disks.get, zone=spec.zone, disk=name)
                 for name in (spec.builder, spec.data_disk)]
        return sorted({d.name for d in labelled} | {d.name for d in named if d is not None})

    def _runtime_disks(self, api: ComputeClient, spec: BakeSpec) -> list[str]:
        """Disks (zone/name) made from this runtime, found by label in the node zones."""
        found = []
        for zone in spec.disk_zones:
            disks = api.listed(f"listing disks of runtime {spec.hash12} in {zone}", api.disks.list, zone=zone,
                               filter=f"labels.{HASH_LABEL} = {spec.hash12}")
            found += [f"{zone}/{d.name}" for d in disks]
        return found


def _inputs(props: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in props.items() if k not in _STATE_KEYS}


def _image_outputs(image: Any) -> dict[str, Any]:
    return {"self_link": image.self_link, "size_gb": int(image.disk_size_gb)}
