"""The project's disks, images and instances as compute.v1 holds them, and what its methods do to them.

State changes happen when a request is accepted; a created resource keeps its transitional status
(disk CREATING, instance PROVISIONING, image PENDING) until its operation is polled DONE (the
operation's on_done), and the API refuses to use a resource that is not READY. Errors follow GCP:
missing things 404 notFound, an existing name 409 alreadyExists, a disk in use 400 with reason
resourceInUseByAnotherResource, a stale label fingerprint 412 conditionNotMet, an attachment READ_ONLY
with autoDelete 400 (READ_ONLY disks cannot be auto-deleted). A guest attribute (or namespace) without
values is 404, which is how we read GCP before the guest writes it: callers must take NotFound as
"nothing yet". A seeded instance has a boot disk of its own name, like a GKE node. A field the schema
allows but the fake does not model is answered 400 and recorded (FakeLimitation). Lists take the
filters of listing.py; orderBy: `name` (default) or `creationTimestamp desc`.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tests.fakes.compute.errors import (
    ApiError,
    FakeLimitation,
    in_use,
    invalid,
    not_found,
    not_ready,
    read_only_auto_delete,
)
from tests.fakes.compute.listing import matches, parse_filter
from tests.fakes.compute.schema import schema_checker

API_ROOT = "https://www.googleapis.com/compute/v1/"
_ROOTS = (API_ROOT, "https://compute.googleapis.com/compute/v1/")
DISK_TYPES = ("pd-standard", "pd-balanced", "pd-ssd", "pd-extreme", "hyperdisk-balanced", "hyperdisk-extreme",
              "hyperdisk-ml", "hyperdisk-throughput")
_NAME = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
_DISK_REF = re.compile(r"(?:projects/(?P<project>[^/]+)/)?zones/(?P<zone>[^/]+)/disks/(?P<name>[^/]+)")
_IMAGE_REF = re.compile(r"(?:projects/(?P<project>[^/]+)/)?global/images/(?:family/(?P<family>[^/]+)|(?P<name>[^/]+))")
_TYPE_REF = re.compile(r"(?:projects/(?P<project>[^/]+)/)?zones/(?P<zone>[^/]+)/(?P<kind>diskTypes|machineTypes)/"
                       r"(?P<name>[a-z][-a-z0-9]*)")


def timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _fingerprint(value: Any) -> str:
    """An opaque 8-byte base64 fingerprint like GCP's, changing whenever the value changes."""
    return base64.b64encode(hashlib.sha256(json.dumps(value, sort_keys=True).encode()).digest()[:8]).decode()


def relative(reference: str) -> str:
    for root in _ROOTS:
        if reference.startswith(root):
            return reference[len(root):]
    return reference


def _check_labels(labels: dict[str, str], field: str) -> None:
    if len(labels) > 64:
        raise invalid(field, len(labels), "At most 64 labels are allowed.")
    for key, value in labels.items():
        if not _LABEL_KEY.fullmatch(key):
            raise invalid(f"{field}.{key}", key, f"Label keys must match {_LABEL_KEY.pattern}.")
        if not _LABEL_VALUE.fullmatch(value):
            raise invalid(f"{field}.{key}", value, f"Label values must match {_LABEL_VALUE.pattern}.")


def _only_modelled(obj: dict[str, Any], modelled: set[str], where: str) -> None:
    extra = sorted(set(obj) - modelled)
    if extra:
        raise FakeLimitation(f"{where} fields {extra} are valid but not modelled (modelled: {sorted(modelled)})")


def _require_enum(name: str, value: str, allowed: list[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} {value!r} is not one of {', '.join(allowed)}")


@dataclass
class _GuestScript:
    namespace: str
    steps: list[dict[str, str]]
    revealed: int = 0


# A mutating handler's result: the operation's target link, target id, and what completes when it is DONE.
Mutation = tuple[str, str | None, Callable[[], None] | None]


class ComputeResources:
    """The fake's state: every resource of the project (and seeded images of others), and the method handlers."""

    def __init__(self, project: str, zones: tuple[str, ...], region: str):
        self.project, self.zones, self.region = project, tuple(zones), region
        self._schema = schema_checker()
        self._lock = threading.RLock()
        """Held by every request and every seeding or inspection call: one change at a time, as one API sees it."""
        self._ids = itertools.count(4_000_000_000_000_000_001)
        self._disks: dict[tuple[str, str], dict[str, Any]] = {}
        self._instances: dict[tuple[str, str], dict[str, Any]] = {}
        self._images: dict[tuple[str, str], dict[str, Any]] = {}
        self._guest_values: dict[tuple[str, str], dict[tuple[str, str], str]] = {}
        self._guest_scripts: dict[tuple[str, str], list[_GuestScript]] = {}
        self._serial: dict[tuple[str, str], bytes] = {}

    def handlers(self) -> dict[str, Callable[..., Any]]:
        """compute.v1 method id -> handler(path params, query, body) of the methods on these resources."""
        return {
            "compute.disks.get": self._disks_get, "compute.disks.list": self._disks_list,
            "compute.disks.insert": self._disks_insert, "compute.disks.delete": self._disks_delete,
            "compute.disks.setLabels": self._disks_set_labels,
            "compute.images.get": self._images_get, "compute.images.getFromFamily": self._images_get_from_family,
            "compute.images.list": self._images_list, "compute.images.insert": self._images_insert,
            "compute.images.delete": self._images_delete, "compute.images.setLabels": self._images_set_labels,
            "compute.images.deprecate": self._images_deprecate,
            "compute.instances.get": self._instances_get, "compute.instances.list": self._instances_list,
            "compute.instances.insert": self._instances_insert, "compute.instances.delete": self._instances_delete,
            "compute.instances.attachDisk": self._instances_attach_disk,
            "compute.instances.detachDisk": self._instances_detach_disk,
            "compute.instances.setDiskAutoDelete": self._instances_set_disk_auto_delete,
            "compute.instances.stop": self._instances_stop,
            "compute.instances.getGuestAttributes": self._instances_get_guest_attributes,
            "compute.instances.getSerialPortOutput": self._instances_get_serial_port_output,
        }

    def next_id(self) -> str:
        return str(next(self._ids))

    # ---- seeding and inspection ------------------------------------------------------------------------------

    def add_image(self, name: str, *, family: str | None = None, labels: dict[str, str] | None = None,
                  disk_size_gb: int = 20, status: str = "READY", project: str | None = None,
                  deprecated: str | None = None) -> dict[str, Any]:
        """Seed an image (in another project too, e.g. a public boot image); deprecated is a DeprecationStatus state."""
        _require_enum("status", status, self._schema.schemas["Image"]["properties"]["status"]["enum"])
        project = project or self.project
        with self._lock:
            if (project, name) in self._images:
                raise ValueError(f"image {name!r} already exists in project {project!r}")
            image = self._new_image(project, name, family=family, labels=labels or {}, size_gb=disk_size_gb,
                                    status=status)
            if deprecated:
                _require_enum("deprecated", deprecated,
                              self._schema.schemas["DeprecationStatus"]["properties"]["state"]["enum"])
                image["deprecated"] = {"state": deprecated}
            self._images[(project, name)] = image
            return copy.deepcopy(image)

    def add_instance(self, name: str, *, zone: str, labels: dict[str, str] | None = None, status: str = "RUNNING",
                     machine_type: str = "g2-standard-8") -> dict[str, Any]:
        """Seed a VM like a GKE node: with a boot disk of its own name (autoDelete, deviceName persistent-disk-0)."""
        self._require_zone(zone)
        _require_enum("status", status, self._schema.schemas["Instance"]["properties"]["status"]["enum"])
        with self._lock:
            if (zone, name) in self._instances or (zone, name) in self._disks:
                raise ValueError(f"instance or disk {name!r} already exists in zone {zone!r}")
            boot = self._new_disk(zone, name, size_gb=100, type_name="pd-balanced", image=None, labels={})
            boot["status"] = "READY"
            self._disks[(zone, name)] = boot
            instance = self._new_instance(zone, name, machine_type=self._type_link(zone, "machineTypes", machine_type),
                                          labels=labels or {}, status=status)
            self._instances[(zone, name)] = instance
            self._attach(instance, boot, device_name="persistent-disk-0", mode="READ_WRITE", auto_delete=True,
                         boot=True)
            return copy.deepcopy(instance)

    def remove_instance(self, name: str, *, zone: str) -> None:
        """The node vanishes as in a scale-down: its autoDelete disks go, its other disks are detached."""
        with self._lock:
            if (zone, name) not in self._instances:
                raise ValueError(f"no instance {name!r} in zone {zone!r}; instances: {sorted(self._instances)}")
            self._delete_instance(zone, name)

    def disks(self, zone: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy([d for (z, _), d in sorted(self._disks.items()) if zone in (None, z)])

    def instances(self, zone: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy([i for (z, _), i in sorted(self._instances.items()) if zone in (None, z)])

    def images(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy([i for _, i in sorted(self._images.items())])

    def set_guest_attributes(self, instance: str, *, zone: str, namespace: str, values: dict[str, str]) -> None:
        """Merge guest attribute values; works before the instance exists (tests set them for VMs the code creates)."""
        self._require_zone(zone)
        with self._lock:
            current = self._guest_values.setdefault((zone, instance), {})
            current.update({(namespace, k): str(v) for k, v in values.items()})

    def script_guest_attributes(self, instance: str, *, zone: str, namespace: str,
                                steps: list[dict[str, str]]) -> None:
        """Each getGuestAttributes call on the instance reveals the next step's values (cumulatively)."""
        self._require_zone(zone)
        with self._lock:
            self._guest_scripts.setdefault((zone, instance), []).append(_GuestScript(namespace, list(steps)))

    def set_serial_output(self, instance: str, *, zone: str, text: str) -> None:
        self._require_zone(zone)
        with self._lock:
            self._serial[(zone, instance)] = text.encode()

    # ---- references and scope --------------------------------------------------------------------------------

    def _require_zone(self, zone: str) -> None:
        if zone not in self.zones:
            raise ValueError(f"zone {zone!r} is not one of the fake's zones {self.zones}")

    def require_scope(self, p: dict[str, str]) -> None:
        if p["project"] != self.project and not any(proj == p["project"] for proj, _ in self._images):
            raise not_found(f"projects/{p['project']}")
        if "zone" in p and p["zone"] not in self.zones:
            raise not_found(f"projects/{p['project']}/zones/{p['zone']}")

    def zone_link(self, zone: str) -> str:
        return f"{API_ROOT}projects/{self.project}/zones/{zone}"

    def _type_link(self, zone: str, kind: str, name: str) -> str:
        return f"{self.zone_link(zone)}/{kind}/{name}"

    def _resolve_type(self, reference: str, field: str, kind: str, zone: str) -> str:
        match = _TYPE_REF.fullmatch(relative(reference))
        if not match or match["kind"] != kind or match["project"] not in (None, self.project):
            raise invalid(field, reference, f"Expected zones/{zone}/{kind}/NAME or its full URL.")
        if match["zone"] != zone:
            raise invalid(field, reference, f"The {kind} must be in the resource's zone {zone}.")
        if kind == "diskTypes" and match["name"] not in DISK_TYPES:
            raise invalid(field, reference, f"Disk type must be one of {', '.join(DISK_TYPES)}.")
        return self._type_link(zone, kind, match["name"])

    def _resolve_image(self, reference: str, field: str) -> dict[str, Any]:
        match = _IMAGE_REF.fullmatch(relative(reference))
        if not match:
            raise invalid(field, reference, "Expected projects/P/global/images/NAME, "
                                             "projects/P/global/images/family/FAMILY or a global/images/... form.")
        project = match["project"] or self.project
        if match["family"]:
            return self._image_from_family(project, match["family"])
        image = self._images.get((project, match["name"]))
        if image is None:
            raise not_found(f"projects/{project}/global/images/{match['name']}")
        return image

    def _image_from_family(self, project: str, family: str) -> dict[str, Any]:
        candidates = [(i, image) for i, image in enumerate(self._images.values())
                      if image["selfLink"].startswith(f"{API_ROOT}projects/{project}/")
                      and image.get("family") == family and image["status"] == "READY"
                      and image.get("deprecated", {}).get("state", "ACTIVE") == "ACTIVE"]
        if not candidates:
            raise not_found(f"projects/{project}/global/images/family/{family}")
        return max(candidates, key=lambda pair: (pair[1]["creationTimestamp"], pair[0]))[1]

    def _resolve_disk(self, reference: str, field: str, zone: str | None = None) -> dict[str, Any]:
        match = _DISK_REF.fullmatch(relative(reference))
        if not match or match["project"] not in (None, self.project):
            raise invalid(field, reference, f"Expected projects/{self.project}/zones/ZONE/disks/NAME or its URL.")
        if zone and match["zone"] != zone:
            raise invalid(field, reference, f"The disk must be in zone {zone}.")
        return self._disk(match["zone"], match["name"])

    def _disk(self, zone: str, name: str) -> dict[str, Any]:
        disk = self._disks.get((zone, name))
        if disk is None:
            raise not_found(f"projects/{self.project}/zones/{zone}/disks/{name}")
        return disk

    def _instance(self, p: dict[str, str]) -> dict[str, Any]:
        self.require_scope(p)
        instance = self._instances.get((p["zone"], p["instance"]))
        if instance is None:
            raise not_found(f"projects/{self.project}/zones/{p['zone']}/instances/{p['instance']}")
        return instance

    def _list(self, kind: str, resources: list[dict[str, Any]], link: str, q: dict[str, str]) -> dict[str, Any]:
        terms = parse_filter(q.get("filter", ""))
        items = sorted((r for r in resources if matches(r, terms)), key=lambda r: r["name"])
        order = q.get("orderBy", "name")
        if order not in ("name", "creationTimestamp desc"):
            raise invalid("orderBy", order, "Sorting is supported by 'name' or 'creationTimestamp desc' only.")
        if order != "name":
            items.sort(key=lambda r: r["creationTimestamp"], reverse=True)
        page_size = min(int(q.get("maxResults", "500")) or 500, 500)
        token = q.get("pageToken", "0")
        if not token.isdigit():
            raise invalid("pageToken", token, "Not a page token this list returned.")
        start = int(token)
        out: dict[str, Any] = {"kind": kind, "id": relative(link), "selfLink": link}
        if items[start:start + page_size]:
            out["items"] = copy.deepcopy(items[start:start + page_size])
        if start + page_size < len(items):
            out["nextPageToken"] = str(start + page_size)
        return out

    # ---- disks -----------------------------------------------------------------------------------------------

    def _new_disk(self, zone: str, name: str, *, size_gb: Any, type_name: str, image: dict[str, Any] | None,
                  labels: dict[str, str], description: str | None = None) -> dict[str, Any]:
        minimum = int(image["diskSizeGb"]) if image else 1
        size = int(size_gb) if size_gb is not None else (minimum if image else 500)
        if size < minimum:
            raise invalid("sizeGb", size, f"Requested disk size cannot be smaller than the image size ({minimum} GB).")
        disk = {"kind": "compute#disk", "id": self.next_id(), "creationTimestamp": timestamp(), "name": name,
                "sizeGb": str(size), "zone": self.zone_link(zone), "status": "CREATING",
                "selfLink": f"{self.zone_link(zone)}/disks/{name}",
                "type": self._type_link(zone, "diskTypes", type_name), "labelFingerprint": _fingerprint(labels),
                "physicalBlockSizeBytes": "4096"}
        if labels:
            disk["labels"] = dict(labels)
        if description:
            disk["description"] = description
        if image:
            disk.update(sourceImage=image["selfLink"], sourceImageId=image["id"])
        return disk

    def _disks_get(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        self.require_scope(p)
        return copy.deepcopy(self._disk(p["zone"], p["disk"]))

    def _disks_list(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        self.require_scope(p)
        disks = [d for (zone, _), d in self._disks.items() if zone == p["zone"]]
        return self._list("compute#diskList", disks, f"{self.zone_link(p['zone'])}/disks", q)

    def _disks_insert(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Mutation:
        zone, name = p["zone"], body["name"]
        _only_modelled(body, {"name", "sizeGb", "type", "sourceImage", "labels", "description"}, "Disk")
        _check_labels(body.get("labels", {}), "labels")
        if (zone, name) in self._disks:
            raise ApiError(409, "alreadyExists", f"The resource 'projects/{self.project}/zones/{zone}/disks/{name}' "
                                                 "already exists")
        source = body.get("sourceImage") or q.get("sourceImage")
        image = self._resolve_image(source, "sourceImage") if source else None
        if image and image["status"] != "READY":
            raise not_ready(relative(image["selfLink"]))
        type_link = self._resolve_type(body.get("type", f"zones/{zone}/diskTypes/pd-standard"), "type", "diskTypes",
                                       zone)
        disk = self._new_disk(zone, name, size_gb=body.get("sizeGb"), type_name=type_link.rsplit("/", 1)[-1],
                              image=image, labels=body.get("labels", {}), description=body.get("description"))
        self._disks[(zone, name)] = disk
        return disk["selfLink"], disk["id"], lambda: disk.update(status="READY")

    def _disks_delete(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Mutation:
        disk = self._disk(p["zone"], p["disk"])
        if disk.get("users"):
            raise in_use(relative(disk["selfLink"]), relative(disk["users"][0]))
        del self._disks[(p["zone"], p["disk"])]
        return disk["selfLink"], disk["id"], None

    def _disks_set_labels(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Mutation:
        disk = self._disk(p["zone"], p["resource"])
        self._set_labels(disk, body)
        return disk["selfLink"], disk["id"], None

    def _set_labels(self, resource: dict[str, Any], body: dict[str, Any]) -> None:
        if not body.get("labelFingerprint"):
            raise ApiError(400, "required", "Required field 'labelFingerprint' not specified")
        if body["labelFingerprint"] != resource["labelFingerprint"]:
            raise ApiError(412, "conditionNotMet", "Labels fingerprint either invalid or resource labels have changed")
        labels = body.get("labels") or {}
        _check_labels(labels, "labels")
        resource.pop("labels", None)
        if labels:
            resource["labels"] = dict(labels)
        resource["labelFingerprint"] = _fingerprint(labels)

    # ---- images ----------------------------------------------------------------------------------------------

    def _new_image(self, project: str, name: str, *, family: str | None, labels: dict[str, str], size_gb: int,
                   status: str, description: str | None = None) -> dict[str, Any]:
        image = {"kind": "compute#image", "id": self.next_id(), "creationTimestamp": timestamp(), "name": name,
                 "sourceType": "RAW", "status": status, "archiveSizeBytes": str(int(size_gb) * 2**30 // 4),
                 "diskSizeGb": str(int(size_gb)), "labelFingerprint": _fingerprint(labels),
                 "selfLink": f"{API_ROOT}projects/{project}/global/images/{name}", "storageLocations": ["us"]}
        for key, value in (("family", family), ("labels", dict(labels)), ("description", description)):
            if value:
                image[key] = value
        return image

    def _image(self, p: dict[str, str]) -> dict[str, Any]:
        self.require_scope(p)
        image = self._images.get((p["project"], p["image"]))
        if image is None:
            raise not_found(f"projects/{p['project']}/global/images/{p['image']}")
        return image

    def _images_get(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        return copy.deepcopy(self._image(p))

    def _images_get_from_family(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        self.require_scope(p)
        return copy.deepcopy(self._image_from_family(p["project"], p["family"]))

    def _images_list(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        self.require_scope(p)
        images = [i for (project, _), i in self._images.items() if project == p["project"]]
        return self._list("compute#imageList", images, f"{API_ROOT}projects/{p['project']}/global/images", q)

    def _images_insert(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Mutation:
        name = body["name"]
        _only_modelled(body, {"name", "sourceDisk", "sourceImage", "family", "labels", "description",
                              "storageLocations"}, "Image")
        _check_labels(body.get("labels", {}), "labels")
        if p["project"] != self.project:
            raise ApiError(403, "forbidden", f"Required 'compute.images.create' permission for "
                                             f"'projects/{p['project']}/global/images/{name}'")
        if (self.project, name) in self._images:
            raise ApiError(409, "alreadyExists", f"The resource 'projects/{self.project}/global/images/{name}' "
                                                 "already exists")
        if bool(body.get("sourceDisk")) == bool(body.get("sourceImage")):
            raise invalid("sourceDisk", body.get("sourceDisk", ""), "Exactly one of sourceDisk or sourceImage "
                                                                     "must be given (the fake models these two).")
        if body.get("sourceDisk"):
            source = self._resolve_disk(body["sourceDisk"], "sourceDisk")
            for instance, entry in self._attachments(source["selfLink"]):
                if entry["mode"] == "READ_WRITE" and instance["status"] == "RUNNING" and q.get("forceCreate") != "true":
                    raise in_use(relative(source["selfLink"]), relative(instance["selfLink"]))
            size = source["sizeGb"]
        else:
            source = self._resolve_image(body["sourceImage"], "sourceImage")
            size = source["diskSizeGb"]
        if source["status"] != "READY":
            raise not_ready(relative(source["selfLink"]))
        image = self._new_image(self.project, name, family=body.get("family"), labels=body.get("labels", {}),
                                size_gb=int(size), status="PENDING", description=body.get("description"))
        kind = "Disk" if body.get("sourceDisk") else "Image"
        image.update({f"source{kind}": source["selfLink"], f"source{kind}Id": source["id"]})
        if body.get("storageLocations"):
            image["storageLocations"] = list(body["storageLocations"])
        self._images[(self.project, name)] = image
        return image["selfLink"], image["id"], lambda: image.update(status="READY")

    def _images_delete(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Mutation:
        image = self._image(p)
        del self._images[(p["project"], p["image"])]
        return image["selfLink"], image["id"], None

    def _images_deprecate(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Mutation:
        """ACTIVE clears the status; any other state is recorded (getFromFamily skips them)."""
        image = self._image(p)
        _only_modelled(body, {"state", "replacement", "deprecated", "obsolete", "deleted"}, "DeprecationStatus")
        state = body.get("state", "ACTIVE")
        if state == "ACTIVE":
            image.pop("deprecated", None)
        else:
            image["deprecated"] = {k: v for k, v in body.items() if k in ("state", "replacement", "deprecated",
                                                                          "obsolete", "deleted")}
        return image["selfLink"], image["id"], None

    def _images_set_labels(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Mutation:
        image = self._image({**p, "image": p["resource"]})
        self._set_labels(image, body)
        return image["selfLink"], image["id"], None

    # ---- instances -------------------------------------------------------------------------------------------

    def _new_instance(self, zone: str, name: str, *, machine_type: str, labels: dict[str, str], status: str,
                      metadata: list[dict[str, str]] | None = None) -> dict[str, Any]:
        instance = {"kind": "compute#instance", "id": self.next_id(), "creationTimestamp": timestamp(),
                    "name": name, "machineType": machine_type, "status": status, "zone": self.zone_link(zone),
                    "disks": [], "selfLink": f"{self.zone_link(zone)}/instances/{name}",
                    "cpuPlatform": "Intel Cascade Lake", "labelFingerprint": _fingerprint(labels),
                    "fingerprint": _fingerprint(name), "startRestricted": False, "deletionProtection": False,
                    "metadata": {"kind": "compute#metadata", "fingerprint": _fingerprint(metadata or [])}}
        if metadata:
            instance["metadata"]["items"] = copy.deepcopy(metadata)
        if labels:
            instance["labels"] = dict(labels)
        return instance

    def _attachments(self, disk_link: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(instance, attachedDisk entry) for every instance the disk is attached to."""
        return [(instance, entry) for instance in self._instances.values() for entry in instance["disks"]
                if entry["source"] == disk_link]

    def _check_attachable(self, instance: dict[str, Any], disk: dict[str, Any], device_name: str, mode: str,
                          auto_delete: bool) -> None:
        disk_path = relative(disk["selfLink"])
        if mode == "READ_ONLY" and auto_delete:
            raise read_only_auto_delete(disk_path)
        if disk["status"] != "READY":
            raise not_ready(disk_path)
        if not _NAME.fullmatch(device_name):
            raise invalid("deviceName", device_name, f"Device names must match {_NAME.pattern}.")
        if any(entry["deviceName"] == device_name for entry in instance["disks"]):
            raise invalid("deviceName", device_name, f"The device name is already in use on instance "
                                                      f"'{relative(instance['selfLink'])}'.")
        if any(entry["source"] == disk["selfLink"] for entry in instance["disks"]):
            raise invalid("source", disk_path, f"The disk is already attached to '{relative(instance['selfLink'])}'.")
        for user, entry in self._attachments(disk["selfLink"]):
            if user is not instance and (mode == "READ_WRITE" or entry["mode"] == "READ_WRITE"):
                raise in_use(disk_path, relative(user["selfLink"]))

    def _attach(self, instance: dict[str, Any], disk: dict[str, Any], *, device_name: str, mode: str,
                auto_delete: bool, boot: bool, interface: str = "SCSI") -> None:
        index = max((entry["index"] for entry in instance["disks"]), default=-1) + 1
        instance["disks"].append({"kind": "compute#attachedDisk", "type": "PERSISTENT", "mode": mode,
                                  "source": disk["selfLink"], "deviceName": device_name, "index": index,
                                  "boot": boot, "autoDelete": auto_delete, "interface": interface,
                                  "diskSizeGb": disk["sizeGb"]})
        disk["users"] = [*disk.get("users", []), instance["selfLink"]]
        disk["lastAttachTimestamp"] = timestamp()

    def _detach(self, instance: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any] | None:
        """Remove the attachment; return the disk if nothing else uses it any more."""
        instance["disks"].remove(entry)
        zone, name = _DISK_REF.fullmatch(relative(entry["source"])).group("zone", "name")  # type: ignore[union-attr]
        disk = self._disks.get((zone, name))
        if disk is None:
            return None
        users = [u for u in disk.get("users", []) if u != instance["selfLink"]]
        disk.pop("users", None)
        if users:
            disk["users"] = users
        disk["lastDetachTimestamp"] = timestamp()
        return None if users else disk

    def _delete_instance(self, zone: str, name: str) -> dict[str, Any]:
        instance = self._instances.pop((zone, name))
        for entry in list(instance["disks"]):
            disk = self._detach(instance, entry)
            if disk is not None and entry["autoDelete"]:
                del self._disks[(zone, disk["name"])]
        return instance

    def _instances_get(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        return copy.deepcopy(self._instance(p))

    def _instances_list(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        self.require_scope(p)
        instances = [i for (zone, _), i in self._instances.items() if zone == p["zone"]]
        return self._list("compute#instanceList", instances, f"{self.zone_link(p['zone'])}/instances", q)

    def _instances_insert(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Mutation:
        zone, name = p["zone"], body["name"]
        stored_as_given = {"networkInterfaces", "guestAccelerators", "scheduling", "tags", "serviceAccounts",
                           "shieldedInstanceConfig", "minCpuPlatform", "description"}
        _only_modelled(body, {"name", "machineType", "disks", "metadata", "labels", *stored_as_given}, "Instance")
        _check_labels(body.get("labels", {}), "labels")
        if (zone, name) in self._instances:
            raise ApiError(409, "alreadyExists", f"The resource 'projects/{self.project}/zones/{zone}/instances/{name}'"
                                                 " already exists")
        if not body.get("machineType"):
            raise ApiError(400, "required", "Required field 'resource.machineType' not specified")
        machine_type = self._resolve_type(body["machineType"], "machineType", "machineTypes", zone)
        specs = body.get("disks", [])
        if not specs or not specs[0].get("boot") or any(s.get("boot") for s in specs[1:]):
            raise invalid("disks", len(specs), "Exactly one boot disk is needed and it must be disks[0].")
        instance = self._new_instance(zone, name, machine_type=machine_type, labels=body.get("labels", {}),
                                      status="PROVISIONING", metadata=body.get("metadata", {}).get("items"))
        instance.update({k: copy.deepcopy(v) for k, v in body.items() if k in stored_as_given})
        for i, nic in enumerate(instance.get("networkInterfaces", [])):
            nic.setdefault("kind", "compute#networkInterface")
            nic.setdefault("name", f"nic{i}")
        planned: list[tuple[dict[str, Any], dict[str, Any], bool]] = []  # (spec, disk, created here)
        for i, spec in enumerate(specs):
            _only_modelled(spec, {"boot", "autoDelete", "deviceName", "mode", "source", "initializeParams", "type",
                                  "interface"}, f"disks[{i}]")
            if spec.get("type", "PERSISTENT") != "PERSISTENT":
                raise FakeLimitation(f"disks[{i}].type {spec['type']!r}: only PERSISTENT disks are modelled")
            params = spec.get("initializeParams")
            if bool(params) == bool(spec.get("source")):
                raise invalid(f"disks[{i}]", "", "Give exactly one of source or initializeParams.")
            if spec.get("source"):
                planned.append((spec, self._resolve_disk(spec["source"], f"disks[{i}].source", zone), False))
                continue
            _only_modelled(params, {"diskName", "sourceImage", "diskSizeGb", "diskType", "labels", "description"},
                           f"disks[{i}].initializeParams")
            _check_labels(params.get("labels", {}), f"disks[{i}].initializeParams.labels")
            disk_name = params.get("diskName", name)
            existing = self._disks.get((zone, disk_name)) or next(
                (d for _, d, _ in planned if d["name"] == disk_name), None)
            if existing:  # documented: an existing disk of that name is attached instead of creating one
                planned.append((spec, existing, False))
                continue
            if spec.get("boot") and not params.get("sourceImage"):
                raise ApiError(400, "required", "Required field 'disks[0].initializeParams.sourceImage' not specified")
            image = self._resolve_image(params["sourceImage"], f"disks[{i}].initializeParams.sourceImage") if (
                params.get("sourceImage")) else None
            if image and image["status"] != "READY":
                raise not_ready(relative(image["selfLink"]))
            disk_type = self._resolve_type(params.get("diskType", f"zones/{zone}/diskTypes/pd-standard"),
                                           f"disks[{i}].initializeParams.diskType", "diskTypes", zone)
            disk = self._new_disk(zone, disk_name, size_gb=params.get("diskSizeGb"), image=image,
                                  type_name=disk_type.rsplit("/", 1)[-1], labels=params.get("labels", {}),
                                  description=params.get("description"))
            disk["status"] = "READY"  # the instance's operation covers the disk; attachability is checked below
            planned.append((spec, disk, True))
        probe = {**instance, "disks": []}
        for i, (spec, disk, _) in enumerate(planned):
            device = spec.get("deviceName", f"persistent-disk-{i}")
            self._check_attachable(probe, disk, device, spec.get("mode", "READ_WRITE"), spec.get("autoDelete", False))
            probe["disks"].append({"deviceName": device, "source": disk["selfLink"], "index": i})
        self._instances[(zone, name)] = instance
        for i, (spec, disk, created) in enumerate(planned):
            if created:
                self._disks[(zone, disk["name"])] = disk
            self._attach(instance, disk, device_name=spec.get("deviceName", f"persistent-disk-{i}"),
                         mode=spec.get("mode", "READ_WRITE"), auto_delete=spec.get("autoDelete", False),
                         boot=spec.get("boot", False), interface=spec.get("interface", "SCSI"))
        return instance["selfLink"], instance["id"], lambda: instance.update(status="RUNNING",
                                                                              lastStartTimestamp=timestamp())

    def _instances_delete(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Mutation:
        instance = self._instance(p)
        self._delete_instance(p["zone"], p["instance"])
        return instance["selfLink"], instance["id"], None

    def _instances_attach_disk(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Mutation:
        instance = self._instance(p)
        _only_modelled(body, {"source", "deviceName", "mode", "autoDelete", "type", "interface"}, "AttachedDisk")
        if not body.get("source"):
            raise ApiError(400, "required", "Required field 'source' not specified")
        if body.get("type", "PERSISTENT") != "PERSISTENT":
            raise FakeLimitation(f"AttachedDisk.type {body['type']!r}: only PERSISTENT disks are modelled")
        disk = self._resolve_disk(body["source"], "source", p["zone"])
        index = max((entry["index"] for entry in instance["disks"]), default=-1) + 1
        device, mode = body.get("deviceName", f"persistent-disk-{index}"), body.get("mode", "READ_WRITE")
        self._check_attachable(instance, disk, device, mode, body.get("autoDelete", False))
        self._attach(instance, disk, device_name=device, mode=mode, auto_delete=body.get("autoDelete", False),
                     boot=False, interface=body.get("interface", "SCSI"))
        return instance["selfLink"], instance["id"], None

    def _attached(self, instance: dict[str, Any], device_name: str) -> dict[str, Any]:
        for entry in instance["disks"]:
            if entry["deviceName"] == device_name:
                return entry
        names = [entry["deviceName"] for entry in instance["disks"]]
        raise invalid("deviceName", device_name, f"No attached disk found with this device name; attached: {names}.")

    def _instances_detach_disk(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Mutation:
        instance = self._instance(p)
        self._detach(instance, self._attached(instance, q["deviceName"]))
        return instance["selfLink"], instance["id"], None

    def _instances_set_disk_auto_delete(self, p: dict[str, str], q: dict[str, str],
                                        body: dict[str, Any]) -> Mutation:
        instance = self._instance(p)
        self._attached(instance, q["deviceName"])["autoDelete"] = q["autoDelete"] == "true"
        return instance["selfLink"], instance["id"], None

    def _instances_stop(self, p: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Mutation:
        instance = self._instance(p)
        instance["status"] = "STOPPING"
        return instance["selfLink"], instance["id"], lambda: instance.update(status="TERMINATED",
                                                                              lastStopTimestamp=timestamp())

    def _instances_get_guest_attributes(self, p: dict[str, str], q: dict[str, str],
                                        body: dict[str, Any]) -> dict[str, Any]:
        instance = self._instance(p)
        key = (p["zone"], p["instance"])
        values = self._guest_values.setdefault(key, {})
        for script in self._guest_scripts.get(key, []):
            if script.revealed < len(script.steps):
                values.update({(script.namespace, k): str(v) for k, v in script.steps[script.revealed].items()})
                script.revealed += 1
        link = f"{instance['selfLink']}/guestAttributes/"
        missing = not_found(f"{relative(link)}{q.get('variableKey') or q.get('queryPath', '')}")
        if "variableKey" in q:
            namespace, _, name = q["variableKey"].partition("/")
            if (namespace, name) not in values:
                raise missing
            return {"kind": "compute#guestAttributes", "variableKey": q["variableKey"],
                    "variableValue": values[(namespace, name)], "selfLink": link + q["variableKey"]}
        if "queryPath" not in q:
            raise invalid("queryPath", "", "Give queryPath (NAMESPACE/ or NAMESPACE/KEY) or variableKey.")
        namespace, _, name = q["queryPath"].partition("/")
        items = [{"namespace": ns, "key": k, "value": v} for (ns, k), v in sorted(values.items())
                 if ns == namespace and name in ("", k)]
        if not items:
            raise missing
        return {"kind": "compute#guestAttributes", "queryPath": q["queryPath"], "queryValue": {"items": items},
                "selfLink": link + q["queryPath"]}

    def _instances_get_serial_port_output(self, p: dict[str, str], q: dict[str, str],
                                          body: dict[str, Any]) -> dict[str, Any]:
        instance = self._instance(p)
        port = int(q.get("port", "1"))
        if not 1 <= port <= 4:
            raise invalid("port", port, "Serial ports are 1 to 4.")
        output = self._serial.get((p["zone"], p["instance"]), b"") if port == 1 else b""
        start = int(q.get("start", "0"))
        start = max(len(output) + start, 0) if start < 0 else min(start, len(output))
        return {"kind": "compute#serialPortOutput", "contents": output[start:].decode(errors="replace"),
                "start": str(start), "next": str(len(output)), "selfLink": f"{instance['selfLink']}/serialPort"}
