"""RuntimeDiskImage: bakes the sd-runtime disk image on a throwaway builder VM.

The image's identity is the hash of the recipe, the bake script and the base image digest
(components/recipe.py); it names the image `sd-runtime-<hash12>` and labels it, so the Pulumi
resource is replaced exactly when that hash changes and a re-run after a crash adopts an image it
already made. The bake itself is a dynamic provider on google-cloud-compute:

1. a builder VM (Container-Optimized OS, no external IP, its own service account) with a blank data
   disk; its startup script (images/runtime/builder-startup.sh) formats and mounts the disk, pulls the
   base image by digest (retried while the builder's new IAM grant propagates), runs `bake.py` in it
   with the disk at /runtime and its temporary files on that disk, and publishes each step in the
   guest attributes `sd-bake/`;
2. the provider follows those attributes into Pulumi's log; a failure or the timeout ends the run
   with the tail of the serial console in the error;
3. the VM is stopped and the image made from the disk in family `sd-runtime`;
4. the builder VM and its disks are always deleted, and their absence checked, whatever happened.

Deleting the resource keeps running nodes safe: a disk made from an image is a full copy and never
reads the image again, so nodes that already have their runtime disk are unaffected by the image
going away. Nodes created later would need it, so while any disk labelled
`sdgke-runtime-hash=<hash12>` exists in the node zones (i.e. nodes of that runtime may still be
running or scaling) the image is only deprecated: still usable by name, skipped by the family, and
left for an operator to delete once those disks are gone.
"""

from __future__ import annotations

import json
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import requests
from pulumi import dynamic
from pulumi.dynamic.dynamic import PROVIDER_KEY

from components.config import FIXED_DISK_TYPE
from components.iam import service_account_with_roles
from components.recipe import BAKE_SCRIPT, Recipe, RecipeError, image_name, load_recipe, recipe_hash
from components.runtime_layout import HASH_LABEL, IMAGE_FAMILY, RUNTIME_ROOT

BUILDER_ROLES = ("roles/artifactregistry.reader", "roles/logging.logWriter")
BUILDER_IMAGE = "projects/cos-cloud/global/images/family/cos-stable"
BUILDER_BOOT_DISK_GB = 30
"""Explicit, since a boot disk defaults to its image's size (compute.v1 AttachedDiskInitializeParams.diskSizeGb:
"the default size is the size of the sourceImage"), 10 GB for COS images. Docker keeps the pulled base
image on the boot disk (/var/lib/docker, on COS's stateful partition:
https://cloud.google.com/container-optimized-os/docs/concepts/disks-and-filesystem), compressed layers
and extracted ones during the pull; the bake's own files and temporary files go to the data disk."""
STARTUP_SCRIPT = Path(__file__).resolve().parent.parent / "images" / "runtime" / "builder-startup.sh"
BAKE_STATE_DIR = ".bake"
"""bake.py's STATE, under the runtime root: the bake's temporary files go there, on the data disk (the
torch wheels alone are gigabytes, too much for the container's /tmp on the boot disk). bake.py makes it
before its first step and leaves it out of the manifest's sizes."""
BUILDER_DEVICE = "sd-runtime-build"
"""deviceName of the blank disk on the builder: /dev/disk/by-id/google-sd-runtime-build."""
BUILDER_LABEL = "sdgke-builder"
"""Label (value hash12) on the builder VM and its disks, so leftovers are found whatever their names."""
GUEST_NAMESPACE = "sd-bake"
SERIAL_TAIL_LINES = 40
OPERATION_DEADLINE_SECONDS = 45 * 60
"""Bound on any single Compute operation (a 50 GB image takes minutes, not close to this)."""
REPLACE_ON = ("project", "family", "image_name", "identity_hash")
"""Inputs whose change makes a different image; every other input only affects how it is built."""


# --- the component -----------------------------------------------------------------------------


@dataclass
class RuntimeDiskImageArgs:
    project: str
    zone: str
    """Where the builder VM runs."""
    recipe_path: Path
    base_image: pulumi.Input[str]
    """The base image by digest: REGION-docker.pkg.dev/P/R/sd-base@sha256:..."""
    subnetwork: pulumi.Input[str]
    """The builder has no external IP: this subnet needs Cloud NAT and Private Google Access."""
    base_python: str
    """The base image's Python minor: the recipe must name the same one (the venv links to it)."""
    machine_type: str
    disk_size_gb: int
    timeout_minutes: int
    node_zones: list[str] = field(default_factory=list)
    """Zones where nodes make disks from the image; deletion looks there for disks still using it.
    Empty: the builder zone only."""
    compute_endpoint: str | None = None
    """Tests point the provider at a fake Compute API; None is the real one."""


def base_image_digest(ref: str) -> str:
    """The digest of an image reference by digest (REPO@sha256:HEX); anything else is an error."""
    repository, at, digest = ref.partition("@")
    if not at or not repository or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise pulumi.RunError(f"runtime image: base_image {ref!r} is not allowed; expected a reference by digest, "
                              "REGION-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE@sha256:<64 hex digits>")
    return digest


def runtime_identity(recipe: Recipe, bake_script: bytes, base_image: str) -> str:
    """The image's identity: recipe, bake script and the digest of the base image it is baked in.

    The bake recomputes it on the builder and refuses to bake under another, so it covers exactly
    what the bake can see; the builder's startup script (plumbing around the bake) is not part of it.
    """
    return recipe_hash(recipe, bake_script, base_image_digest(base_image))


class RuntimeDiskImage(pulumi.ComponentResource):
    """The sd-runtime disk image for the current recipe, bake script and base image."""

    def __init__(self, name: str, args: RuntimeDiskImageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sdgke:runtime_image:RuntimeDiskImage", name, None, opts)
        try:
            recipe = load_recipe(args.recipe_path)
        except RecipeError as err:
            raise pulumi.RunError(str(err)) from None
        if recipe.python != args.base_python:
            raise pulumi.RunError(
                f"{args.recipe_path.name}: python {recipe.python!r} is not allowed; expected {args.base_python!r}, "
                "the Python of images/base/Dockerfile (the baked venv links to that interpreter)"
            )
        bake_script = BAKE_SCRIPT.read_bytes()
        identity = pulumi.Output.from_input(args.base_image).apply(
            lambda ref: runtime_identity(recipe, bake_script, ref))
        child = pulumi.ResourceOptions(parent=self)

        self.service_account, roles = service_account_with_roles(
            f"{name}-builder", args.project, "sd-gke runtime image builder VM", BUILDER_ROLES, child,
        )
        self.image = _BakedImage(
            f"{name}-image",
            {
                "project": args.project,
                "zone": args.zone,
                "node_zones": list(args.node_zones),
                "image_name": identity.apply(image_name),
                "family": IMAGE_FAMILY,
                "identity_hash": identity,
                "recipe_json": recipe.canonical_json(),
                "bake_script": bake_script.decode(),
                "base_image": args.base_image,
                "subnetwork": args.subnetwork,
                "machine_type": args.machine_type,
                "disk_size_gb": args.disk_size_gb,
                "timeout_seconds": args.timeout_minutes * 60,
                "service_account_email": self.service_account.email,
                "compute_endpoint": args.compute_endpoint,
            },
            pulumi.ResourceOptions(parent=self, depends_on=roles),
        )
        # Read back from the image resource, so whatever uses them waits until the image exists.
        self.self_link: pulumi.Output[str] = self.image.self_link
        self.image_name: pulumi.Output[str] = self.image.image_name
        self.size_gb: pulumi.Output[int] = self.image.size_gb
        self.identity_hash: pulumi.Output[str] = self.image.identity_hash
        self.hash12: pulumi.Output[str] = self.image.identity_hash.apply(lambda h: h[:12])
        self.register_outputs({
            "self_link": self.self_link,
            "image_name": self.image_name,
            "size_gb": self.size_gb,
            "identity_hash": self.identity_hash,
            "hash12": self.hash12,
        })


class _BakedImage(dynamic.Resource):
    """The image itself; registers as pulumi-python:dynamic:Resource."""

    self_link: pulumi.Output[str]
    size_gb: pulumi.Output[int]
    image_name: pulumi.Output[str]
    identity_hash: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions):
        super().__init__(RuntimeImageProvider(), name, {**props, "self_link": None, "size_gb": None}, opts)


# --- the provider ------------------------------------------------------------------------------


class BakeError(Exception):
    """The bake or one of its Compute calls failed; the message says what, where, and what is left."""


@dataclass(frozen=True)
class Pacing:
    """How often to poll and how to back off; tests shrink these to keep the suite fast."""

    poll_seconds: float = 5.0
    backoff_seconds: float = 1.0
    backoff_cap_seconds: float = 30.0
    attempts: int = 7
    """Tries per API call on 429/5xx or a lost connection (up to a minute of backoff at the defaults)."""


@dataclass(frozen=True)
class BakeSpec:
    """The dynamic resource's inputs, typed (numbers arrive as floats from the engine)."""

    project: str
    zone: str
    node_zones: tuple[str, ...]
    image_name: str
    family: str
    identity_hash: str
    recipe_json: str
    bake_script: str
    base_image: str
    subnetwork: str
    machine_type: str
    disk_size_gb: int
    timeout_seconds: float
    service_account_email: str
    compute_endpoint: str | None

    @classmethod
    def from_props(cls, props: dict[str, Any]) -> BakeSpec:
        return cls(
            project=props["project"], zone=props["zone"], node_zones=tuple(props.get("node_zones") or ()),
            image_name=props["image_name"], family=props["family"], identity_hash=props["identity_hash"],
            recipe_json=props["recipe_json"], bake_script=props["bake_script"], base_image=props["base_image"],
            subnetwork=props["subnetwork"], machine_type=props["machine_type"],
            disk_size_gb=int(props["disk_size_gb"]), timeout_seconds=float(props["timeout_seconds"]),
            service_account_email=props["service_account_email"], compute_endpoint=props.get("compute_endpoint"),
        )

    @property
    def hash12(self) -> str:
        return self.identity_hash[:12]

    @property
    def builder(self) -> str:
        """The builder VM's name, also its boot disk's; deterministic so a later run finds leftovers."""
        return f"sd-runtime-build-{self.hash12}"

    @property
    def data_disk(self) -> str:
        return f"{self.builder}-data"

    @property
    def disk_zones(self) -> tuple[str, ...]:
        """Where disks made from the image may be: the node zones and the builder's."""
        return tuple(dict.fromkeys((*self.node_zones, self.zone)))


def builder_metadata(spec: BakeSpec) -> dict[str, str]:
    """The builder's metadata: its startup script (images/runtime/builder-startup.sh, unchanged), the bake
    script and recipe, and the settings the startup script reads as sd-bake-* attributes."""
    return {
        "enable-guest-attributes": "TRUE",
        "google-logging-enabled": "true",
        "startup-script": STARTUP_SCRIPT.read_text(),
        "sd-bake-script": spec.bake_script,
        "sd-bake-recipe": spec.recipe_json,
        "sd-bake-namespace": GUEST_NAMESPACE,
        "sd-bake-image": spec.base_image,
        "sd-bake-digest": base_image_digest(spec.base_image),
        "sd-bake-python": "python" + json.loads(spec.recipe_json)["python"],
        "sd-bake-expected-hash": spec.identity_hash,
        "sd-bake-runtime": RUNTIME_ROOT,
        "sd-bake-state-dir": BAKE_STATE_DIR,
    }


_TRANSIENT_STATUS = (429, 500, 502, 503, 504)
CALL_TIMEOUT_SECONDS = 180
"""Longer than the two minutes an operations.wait call may block."""
_RATE_LIMIT_REASONS = ("rateLimitExceeded", "userRateLimitExceeded")
_STATE_KEYS = (PROVIDER_KEY, "self_link", "size_gb")
"""Keys of the resource's state that are not inputs."""


class _Compute:
    """The Compute calls the bake needs: retried on 429/5xx, operations waited on with these same clients.

    google-cloud-compute is imported here, in the provider, so the program itself never loads it.
    """

    def __init__(self, spec: BakeSpec, pacing: Pacing):
        from google.api_core import exceptions
        from google.cloud import compute_v1

        self.v1, self.errors = compute_v1, exceptions
        self.project, self.pacing = spec.project, pacing
        kwargs: dict[str, Any] = {"transport": "rest"}
        if spec.compute_endpoint:
            from google.api_core.client_options import ClientOptions
            from google.auth.credentials import AnonymousCredentials

            kwargs.update(credentials=AnonymousCredentials(),
                          client_options=ClientOptions(api_endpoint=spec.compute_endpoint))
        self.instances = compute_v1.InstancesClient(**kwargs)
        self.disks = compute_v1.DisksClient(**kwargs)
        self.images = compute_v1.ImagesClient(**kwargs)
        self.zone_operations = compute_v1.ZoneOperationsClient(**kwargs)
        self.global_operations = compute_v1.GlobalOperationsClient(**kwargs)

    def call(self, what: str, method: Callable[..., Any], request: dict[str, Any],
             expect: tuple[type[Exception], ...] = ()) -> Any:
        """One API call for this project. 429, 5xx and rate-limit 403s are retried with capped exponential
        backoff and jitter; errors in `expect` propagate as they are, others say what was being done."""
        for attempt in range(1, self.pacing.attempts + 1):
            try:
                return method(request={"project": self.project, **request}, retry=None, timeout=CALL_TIMEOUT_SECONDS)
            except self.errors.GoogleAPICallError as err:
                if isinstance(err, expect):
                    raise
                transient = err.code in _TRANSIENT_STATUS or (err.code == 403 and any(
                    isinstance(e, dict) and e.get("reason") in _RATE_LIMIT_REASONS for e in err.errors))
                if not transient:
                    raise BakeError(f"{what}: {err}") from None
                failure: Exception = err
            except (requests.ConnectionError, requests.Timeout) as err:
                failure = err
            if attempt == self.pacing.attempts:
                raise BakeError(f"{what}: still failing after {attempt} attempts: {failure}") from None
            delay = min(self.pacing.backoff_cap_seconds, self.pacing.backoff_seconds * 2 ** (attempt - 1))
            time.sleep(random.uniform(delay / 2, delay))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def get(self, what: str, method: Callable[..., Any], **request: Any) -> Any | None:
        """The resource, or None when it does not exist."""
        try:
            return self.call(what, method, request, expect=(self.errors.NotFound,))
        except self.errors.NotFound:
            return None

    def listed(self, what: str, method: Callable[..., Any], **request: Any) -> list[Any]:
        return self.call(what, lambda **kw: list(method(**kw)), request)

    def mutate(self, what: str, method: Callable[..., Any], expect: tuple[type[Exception], ...] = (),
               **request: Any) -> None:
        """A mutating call and its operation, to the end; one requestId for all retries keeps them idempotent."""
        operation = self.call(what, method, {**request, "request_id": str(uuid.uuid4())}, expect)
        done = self.v1.Operation.Status.DONE
        deadline = time.monotonic() + OPERATION_DEADLINE_SECONDS
        zone = request.get("zone")
        while operation.status != done:
            if time.monotonic() > deadline:
                raise BakeError(f"{what}: operation {operation.name} not done after {OPERATION_DEADLINE_SECONDS} s")
            waiter = self.zone_operations.wait if zone else self.global_operations.wait
            operation = self.call(what, waiter, {"operation": operation.name, **({"zone": zone} if zone else {})})
            if operation.status != done:
                time.sleep(self.pacing.poll_seconds)
        if operation.error.errors:
            problems = "; ".join(f"{e.code}: {e.message}" for e in operation.error.errors)
            raise BakeError(f"{what} failed: {problems}")


class RuntimeImageProvider(dynamic.ResourceProvider):
    """Creates, adopts, replaces and retires the runtime disk image (see the module docstring)."""

    serialize_as_secret_always = False
    """The provider object holds pacing and a log function, nothing secret: keep the state readable."""

    def __init__(self, pacing: Pacing | None = None, report: Callable[[str], None] = pulumi.log.info):
        super().__init__()
        self.pacing = pacing or Pacing()
        self.report = report
        """Progress lines; pulumi.log.info prints them to the provider's stderr, which the engine shows."""

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
        api = _Compute(spec, self.pacing)
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
        api = _Compute(spec, self.pacing)
        image = api.get(f"reading image {id_}", api.images.get, image=id_)
        if image is None:
            return dynamic.ReadResult(None, {})
        return dynamic.ReadResult(id_, {**_inputs(props), **_image_outputs(image)})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        spec = BakeSpec.from_props(props)
        api = _Compute(spec, self.pacing)
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

    def _adoptable_image(self, api: _Compute, spec: BakeSpec) -> Any | None:
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

    def _bake(self, api: _Compute, spec: BakeSpec) -> Any:
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

    def _ready_image(self, api: _Compute, spec: BakeSpec) -> Any:
        deadline = time.monotonic() + OPERATION_DEADLINE_SECONDS
        while True:
            image = api.call(f"reading image {spec.image_name}", api.images.get, {"image": spec.image_name})
            if image.status == "READY":
                return image
            if image.status not in ("PENDING", "CREATING") or time.monotonic() > deadline:
                raise BakeError(f"image {spec.image_name} is {image.status}, expected READY")
            time.sleep(self.pacing.poll_seconds)

    def _follow(self, api: _Compute, spec: BakeSpec) -> None:
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

    def _guest_attributes(self, api: _Compute, spec: BakeSpec) -> dict[str, str]:
        found = api.get(f"reading the progress of {spec.builder}", api.instances.get_guest_attributes,
                        zone=spec.zone, instance=spec.builder, query_path=f"{GUEST_NAMESPACE}/")
        if found is None:
            return {}
        return {item.key: item.value for item in found.query_value.items if item.namespace == GUEST_NAMESPACE}

    def _serial_tail(self, api: _Compute, spec: BakeSpec) -> str:
        try:
            output = api.call(f"reading the serial console of {spec.builder}", api.instances.get_serial_port_output,
                              {"zone": spec.zone, "instance": spec.builder, "port": 1})
        except BakeError as err:
            return f"\n(serial console unavailable: {err})"
        lines = output.contents.splitlines()[-SERIAL_TAIL_LINES:]
        return f"\n--- last {len(lines)} lines of the serial console of {spec.builder} ---\n" + "\n".join(lines)

    # ---- cleanup ----------------------------------------------------------------------------------

    def _remove_builder(self, api: _Compute, spec: BakeSpec, *, reason: str) -> None:
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

    def _remove_builder_after_failure(self, api: _Compute, spec: BakeSpec, failure: BaseException) -> None:
        try:
            self._remove_builder(api, spec, reason="the bake did not finish")
        except Exception as cleanup:  # noqa: BLE001 - whatever broke, the first failure must still be told
            raise BakeError(f"{failure}\n\nremoving the builder afterwards failed too: {cleanup}") from failure

    def _builder_instances(self, api: _Compute, spec: BakeSpec) -> list[str]:
        vm = api.get(f"looking up {spec.builder}", api.instances.get, zone=spec.zone, instance=spec.builder)
        return [vm.name] if vm is not None else []

    def _builder_disks(self, api: _Compute, spec: BakeSpec) -> list[str]:
        """By name and by label, so a disk of an older layout is found too."""
        labelled = api.listed(f"listing builder disks in {spec.zone}", api.disks.list, zone=spec.zone,
                              filter=f"labels.{BUILDER_LABEL} = {spec.hash12}")
        named = [api.get(f"looking up disk {name}", api.disks.get, zone=spec.zone, disk=name)
                 for name in (spec.builder, spec.data_disk)]
        return sorted({d.name for d in labelled} | {d.name for d in named if d is not None})

    def _runtime_disks(self, api: _Compute, spec: BakeSpec) -> list[str]:
        """Disks (zone/name) made from this runtime, found by label in the node zones."""
        found = []
        for zone in spec.disk_zones:
            disks = api.listed(f"listing disks of runtime {spec.hash12} in {zone}", api.disks.list, zone=zone,
                               filter=f"labels.{HASH_LABEL} = {spec.hash12}")
            found += [f"{zone}/{d.name}" for d in disks]
        return found


def builder_instance(compute_v1: Any, spec: BakeSpec) -> Any:
    """The builder VM: COS, no external IP, the builder service account, a blank data disk, the bake script."""
    labels = {BUILDER_LABEL: spec.hash12, "managed-by": "pulumi"}
    disk_type = f"zones/{spec.zone}/diskTypes/{FIXED_DISK_TYPE}"
    return compute_v1.Instance(
        name=spec.builder,
        machine_type=f"zones/{spec.zone}/machineTypes/{spec.machine_type}",
        labels=labels,
        disks=[
            compute_v1.AttachedDisk(
                boot=True, auto_delete=True,
                initialize_params=compute_v1.AttachedDiskInitializeParams(
                    disk_name=spec.builder, source_image=BUILDER_IMAGE, disk_size_gb=BUILDER_BOOT_DISK_GB,
                    disk_type=disk_type, labels=labels),
            ),
            compute_v1.AttachedDisk(
                device_name=BUILDER_DEVICE, auto_delete=True,
                initialize_params=compute_v1.AttachedDiskInitializeParams(
                    disk_name=spec.data_disk, disk_size_gb=spec.disk_size_gb, disk_type=disk_type, labels=labels),
            ),
        ],
        network_interfaces=[compute_v1.NetworkInterface(subnetwork=spec.subnetwork)],
        service_accounts=[compute_v1.ServiceAccount(
            email=spec.service_account_email, scopes=["https://www.googleapis.com/auth/cloud-platform"])],
        shielded_instance_config=compute_v1.ShieldedInstanceConfig(
            enable_secure_boot=True, enable_vtpm=True, enable_integrity_monitoring=True),
        metadata=compute_v1.Metadata(items=[compute_v1.Items(key=k, value=v) for k, v in builder_metadata(spec).items()]),
    )


def _inputs(props: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in props.items() if k not in _STATE_KEYS}


def _image_outputs(image: Any) -> dict[str, Any]:
    return {"self_link": image.self_link, "size_gb": int(image.disk_size_gb)}
