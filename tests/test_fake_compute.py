"""The fake Compute API behaves like compute.v1 for the real google-cloud-compute client, and refuses what GCP refuses."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from google.api_core import exceptions
from google.api_core.client_options import ClientOptions
from google.api_core.future import polling
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from tests.fakes.compute import API_ROOT, FakeCompute

P, Z, Z2 = "sdgke-test", "us-central1-a", "us-central1-b"
FAST_POLLING = polling.DEFAULT_POLLING.with_delay(initial=0.01, maximum=0.05)
DISKS = f"/compute/v1/projects/{P}/zones/{Z}/disks"


@dataclass
class Clients:
    disks: compute_v1.DisksClient
    images: compute_v1.ImagesClient
    instances: compute_v1.InstancesClient
    zone_operations: compute_v1.ZoneOperationsClient
    global_operations: compute_v1.GlobalOperationsClient


@pytest.fixture
def fake() -> Iterator[FakeCompute]:
    """A started fake; a test that provokes violations asserts and clears them, every other test ends clean."""
    with FakeCompute() as server:
        yield server
        server.assert_clean()


@pytest.fixture
def api(fake: FakeCompute) -> Clients:
    return Clients(fake.client(compute_v1.DisksClient), fake.client(compute_v1.ImagesClient),
                   fake.client(compute_v1.InstancesClient), fake.client(compute_v1.ZoneOperationsClient),
                   fake.client(compute_v1.GlobalOperationsClient))


def raw(fake: FakeCompute, method: str, path: str, body: Any = None, **params: str) -> requests.Response:
    return requests.request(method, fake.url + path, json=body, params=params, timeout=10)


def take_violations(fake: FakeCompute) -> list[str]:
    found = list(fake.violations)
    fake.violations.clear()
    return found


def make_disk(api: Clients, name: str, zone: str = Z, **fields: Any) -> compute_v1.Disk:
    api.disks.insert(project=P, zone=zone, disk_resource=compute_v1.Disk(name=name, **fields)).result(timeout=10)
    return api.disks.get(project=P, zone=zone, disk=name)


def attach(api: Clients, instance: str, disk: str, *, device: str, mode: str = "READ_WRITE",
           auto_delete: bool = False, zone: str = Z) -> None:
    resource = compute_v1.AttachedDisk(source=f"zones/{zone}/disks/{disk}", device_name=device, mode=mode,
                                       auto_delete=auto_delete)
    api.instances.attach_disk(project=P, zone=zone, instance=instance,
                              attached_disk_resource=resource).result(timeout=10)


# ---- schema oracle ----------------------------------------------------------------------------------------------

def test_client_sends_int64_fields_as_strings(fake: FakeCompute, api: Clients) -> None:
    make_disk(api, "d1", size_gb=30)
    insert = next(r for r in fake.requests if r.api_method == "compute.disks.insert")
    assert insert.body["sizeGb"] == "30"


def test_int64_as_json_number_is_accepted_like_proto3_json(fake: FakeCompute) -> None:
    answer = raw(fake, "POST", DISKS, {"name": "d1", "sizeGb": 30})
    assert answer.status_code == 200
    assert fake.disks(Z)[0]["sizeGb"] == "30"


@pytest.mark.parametrize(("body", "fragment"), [
    ({"name": "d1", "sizeGB": "30"}, "unknown field 'sizeGB' (did you mean 'sizeGb'?)"),
    ({"name": "d1", "sizeGb": 1.5}, "body.sizeGb: expected int64"),
    ({"name": "d1", "sizeGb": "ten"}, "body.sizeGb: expected int64"),
    ({"name": "d1", "sizeGb": "99999999999999999999"}, "outside the int64 range"),
    ({"name": "d1", "labels": {"team": 7}}, "body.labels['team']: expected a string"),
    ({"name": "d1", "licenses": "x"}, "body.licenses: expected an array"),
    ({"name": "d1", "accessMode": "READ_ONLY"}, "'READ_ONLY' is not one of READ_ONLY_MANY"),
    ({"name": "d1", "enableConfidentialCompute": "true"}, "expected true or false"),
    ({"name": "d1", "labelFingerprint": "not base64!"}, "is not base64"),
    ({"name": "Disk_1"}, "body.name: 'Disk_1' does not match"),
    ({"sizeGb": "10"}, "body.name: required by compute.disks.insert but missing"),
])
def test_bad_request_body_is_a_violation_answered_400(fake: FakeCompute, body: dict[str, Any],
                                                      fragment: str) -> None:
    answer = raw(fake, "POST", DISKS, body)
    assert answer.status_code == 400
    assert fragment in answer.json()["error"]["message"]
    assert any(fragment in v for v in take_violations(fake))
    assert fake.disks() == []


def test_unknown_query_parameter_is_a_violation(fake: FakeCompute) -> None:
    answer = raw(fake, "GET", DISKS, maxResult="5")
    assert answer.status_code == 400
    assert "unknown query parameter 'maxResult' (allowed: filter, maxResults" in take_violations(fake)[0]


def test_query_parameter_type_is_checked(fake: FakeCompute) -> None:
    answer = raw(fake, "GET", DISKS, maxResults="many")
    assert answer.status_code == 400
    assert "query maxResults: expected uint32" in take_violations(fake)[0]


def test_missing_required_query_parameter_is_a_violation(fake: FakeCompute) -> None:
    fake.add_instance("node-1", zone=Z)
    answer = raw(fake, "POST", f"/compute/v1/projects/{P}/zones/{Z}/instances/node-1/detachDisk")
    assert answer.status_code == 400
    assert "required query parameter 'deviceName' is missing" in take_violations(fake)[0]


def test_path_parameter_pattern_is_checked(fake: FakeCompute) -> None:
    answer = raw(fake, "GET", f"{DISKS}/Bad_Name")
    assert answer.status_code == 400
    assert "path parameter disk='Bad_Name' does not match" in take_violations(fake)[0]


def test_body_on_a_bodyless_method_is_a_violation(fake: FakeCompute) -> None:
    fake.add_instance("node-1", zone=Z)
    answer = raw(fake, "POST", f"/compute/v1/projects/{P}/zones/{Z}/instances/node-1/stop", {"force": True})
    assert answer.status_code == 400
    assert "takes no request body" in take_violations(fake)[0]


def test_path_of_no_api_method_is_a_violation(fake: FakeCompute) -> None:
    answer = raw(fake, "GET", f"/compute/v1/projects/{P}/zones/{Z}/diskz")
    assert answer.status_code == 404
    assert take_violations(fake) == [(f"request GET /compute/v1/projects/{P}/zones/{Z}/diskz: no compute.v1 "
                                     "method has this HTTP method and path")]


def test_unimplemented_api_method_is_a_recorded_limitation(fake: FakeCompute) -> None:
    answer = raw(fake, "GET", f"/compute/v1/projects/{P}/zones/{Z}/diskTypes")
    assert answer.status_code == 501
    assert take_violations(fake) == ["fake limitation: compute.diskTypes.list is not implemented by FakeCompute"]


def test_valid_but_unmodelled_field_is_a_recorded_limitation(fake: FakeCompute) -> None:
    answer = raw(fake, "POST", DISKS, {"name": "d1", "sourceSnapshot": "global/snapshots/s"})
    assert answer.status_code == 400
    assert "fields ['sourceSnapshot'] are valid but not modelled" in take_violations(fake)[0]


def test_response_with_unknown_field_is_a_violation(fake: FakeCompute, api: Clients) -> None:
    make_disk(api, "d1")
    fake._disks[(Z, "d1")]["sizeGbs"] = "10"
    api.disks.get(project=P, zone=Z, disk="d1")  # the client drops unknown fields silently
    assert take_violations(fake) == [("response compute.disks.get: body: unknown field 'sizeGbs' "
                                     "(did you mean 'sizeGb'?)")]


def test_response_int64_as_number_is_a_violation(fake: FakeCompute, api: Clients) -> None:
    make_disk(api, "d1")
    fake._disks[(Z, "d1")]["sizeGb"] = 10
    api.disks.get(project=P, zone=Z, disk="d1")
    assert take_violations(fake) == [("response compute.disks.get: body.sizeGb: expected int64 as a decimal "
                                     "string, got number 10")]


def test_a_bug_of_the_fake_is_a_violation_and_a_500(fake: FakeCompute, api: Clients,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(fake._handlers, "compute.images.get", lambda *_: {}["image"])
    with pytest.raises(exceptions.InternalServerError):
        api.images.get(project=P, image="img")
    assert take_violations(fake) == ["fake bug in compute.images.get: KeyError('image')"]


def test_assert_clean_lists_violations(fake: FakeCompute) -> None:
    raw(fake, "GET", f"{DISKS}/Bad_Name")
    with pytest.raises(AssertionError, match="disk='Bad_Name'"):
        fake.assert_clean()
    take_violations(fake)


# ---- disks ------------------------------------------------------------------------------------------------------

def test_disk_from_image_family_has_the_api_fields(fake: FakeCompute, api: Clients) -> None:
    image = fake.add_image("sd-runtime-abc", family="sd-runtime", disk_size_gb=40)
    disk = make_disk(api, "d1", source_image=f"projects/{P}/global/images/family/sd-runtime",
                     type_=f"zones/{Z}/diskTypes/pd-ssd", labels={"sdgke-runtime-hash": "abc"})
    assert (disk.status, disk.size_gb, disk.source_image, disk.source_image_id) == (
        "READY", 40, image["selfLink"], image["id"])
    assert disk.self_link == f"{API_ROOT}projects/{P}/zones/{Z}/disks/d1"
    assert disk.type_ == f"{API_ROOT}projects/{P}/zones/{Z}/diskTypes/pd-ssd"
    assert disk.id > 0 and disk.creation_timestamp[:4].isdigit() and disk.labels == {"sdgke-runtime-hash": "abc"}


def test_disk_smaller_than_its_image_is_refused(fake: FakeCompute, api: Clients) -> None:
    fake.add_image("img", disk_size_gb=40)
    with pytest.raises(exceptions.BadRequest, match="cannot be smaller than the image size"):
        make_disk(api, "d1", source_image="global/images/img", size_gb=10)


def test_disk_is_creating_until_its_operation_is_done(fake: FakeCompute, api: Clients) -> None:
    fake.operation_polls_until_done = 2
    operation = api.disks.insert(project=P, zone=Z, disk_resource=compute_v1.Disk(name="d1"))
    assert operation.status == compute_v1.Operation.Status.RUNNING
    assert api.disks.get(project=P, zone=Z, disk="d1").status == "CREATING"
    operation.result(timeout=30, polling=FAST_POLLING)
    assert api.disks.get(project=P, zone=Z, disk="d1").status == "READY"
    assert sum(r.api_method == "compute.zoneOperations.get" for r in fake.requests) == 3


def test_list_filters_on_labels_and_name(fake: FakeCompute, api: Clients) -> None:
    make_disk(api, "a", labels={"managed-by": "sd-gke"})
    make_disk(api, "b", labels={"managed-by": "sd-gke"})
    make_disk(api, "c")

    def names(expression: str) -> list[str]:
        request = compute_v1.ListDisksRequest(project=P, zone=Z, filter=expression)
        return [d.name for d in api.disks.list(request=request)]

    assert names("labels.managed-by=sd-gke") == ["a", "b"]
    assert names('(labels.managed-by = "sd-gke") AND (name != "a")') == ["b"]
    assert names("name = c") == ["c"]
    assert names("name eq '[ab]'") == ["a", "b"]


def test_unsupported_filter_is_a_recorded_limitation(fake: FakeCompute, api: Clients) -> None:
    request = compute_v1.ListDisksRequest(project=P, zone=Z, filter="name:a OR name:b")
    with pytest.raises(exceptions.BadRequest, match="fake limitation: filter"):
        list(api.disks.list(request=request))
    assert "filter 'name:a OR name:b' is not supported" in take_violations(fake)[0]


def test_list_pages_through_max_results(fake: FakeCompute, api: Clients) -> None:
    for name in ("a", "b", "c"):
        make_disk(api, name)
    pages = api.disks.list(request=compute_v1.ListDisksRequest(project=P, zone=Z, max_results=2))
    assert [d.name for d in pages] == ["a", "b", "c"]
    assert sum(r.api_method == "compute.disks.list" for r in fake.requests) == 2


def test_list_is_per_zone(fake: FakeCompute, api: Clients) -> None:
    make_disk(api, "a", zone=Z2)
    assert list(api.disks.list(project=P, zone=Z)) == []
    assert [d.name for d in api.disks.list(project=P, zone=Z2)] == ["a"]


def test_deleted_disk_is_not_found(fake: FakeCompute, api: Clients) -> None:
    make_disk(api, "d1")
    api.disks.delete(project=P, zone=Z, disk="d1").result(timeout=10)
    with pytest.raises(exceptions.NotFound, match=f"projects/{P}/zones/{Z}/disks/d1' was not found"):
        api.disks.get(project=P, zone=Z, disk="d1")


def test_disk_insert_with_existing_name_is_a_conflict(fake: FakeCompute, api: Clients) -> None:
    make_disk(api, "d1")
    with pytest.raises(exceptions.Conflict, match="already exists"):
        make_disk(api, "d1")


def test_disk_from_missing_image_is_not_found(fake: FakeCompute, api: Clients) -> None:
    with pytest.raises(exceptions.NotFound, match="global/images/family/sd-runtime' was not found"):
        make_disk(api, "d1", source_image="global/images/family/sd-runtime")


def test_deleting_a_disk_in_use_is_refused(fake: FakeCompute, api: Clients) -> None:
    fake.add_instance("node-1", zone=Z)
    with pytest.raises(exceptions.BadRequest, match="already being used by .*instances/node-1"):
        api.disks.delete(project=P, zone=Z, disk="node-1")


def test_set_labels_needs_the_current_fingerprint(fake: FakeCompute, api: Clients) -> None:
    disk = make_disk(api, "d1", labels={"a": "1"})
    stale = compute_v1.ZoneSetLabelsRequest(labels={"a": "2"}, label_fingerprint="AAAAAAAAAAA=")
    with pytest.raises(exceptions.PreconditionFailed, match="fingerprint"):
        api.disks.set_labels(project=P, zone=Z, resource="d1", zone_set_labels_request_resource=stale)
    current = compute_v1.ZoneSetLabelsRequest(labels={"a": "2"}, label_fingerprint=disk.label_fingerprint)
    api.disks.set_labels(project=P, zone=Z, resource="d1", zone_set_labels_request_resource=current).result()
    relabelled = api.disks.get(project=P, zone=Z, disk="d1")
    assert relabelled.labels == {"a": "2"} and relabelled.label_fingerprint != disk.label_fingerprint


def test_label_values_must_follow_gcp_rules(fake: FakeCompute, api: Clients) -> None:
    with pytest.raises(exceptions.BadRequest, match="labels.owner.*Node-1"):
        make_disk(api, "d1", labels={"owner": "Node-1"})


# ---- images -----------------------------------------------------------------------------------------------------

def test_image_family_resolves_to_newest_ready_non_deprecated(fake: FakeCompute, api: Clients) -> None:
    fake.add_image("old", family="sd-runtime")
    newest = fake.add_image("new", family="sd-runtime")
    fake.add_image("newer-deprecated", family="sd-runtime", deprecated="DEPRECATED")
    fake.add_image("newest-pending", family="sd-runtime", status="PENDING")
    fake.add_image("other", family="other")
    found = api.images.get_from_family(project=P, family="sd-runtime")
    assert (found.name, found.id) == ("new", int(newest["id"]))


def test_deprecating_an_image_takes_it_out_of_its_family_and_active_restores_it(fake: FakeCompute, api: Clients) -> None:
    fake.add_image("old", family="sd-runtime")
    fake.add_image("new", family="sd-runtime")
    api.images.deprecate(project=P, image="new",
                         deprecation_status_resource=compute_v1.DeprecationStatus(state="DEPRECATED")).result(timeout=10)
    assert api.images.get(project=P, image="new").deprecated.state == "DEPRECATED"
    assert api.images.get_from_family(project=P, family="sd-runtime").name == "old"
    api.images.deprecate(project=P, image="new",
                         deprecation_status_resource=compute_v1.DeprecationStatus(state="ACTIVE")).result(timeout=10)
    assert api.images.get_from_family(project=P, family="sd-runtime").name == "new"


def test_image_from_disk_is_pending_until_its_global_operation_is_done(fake: FakeCompute, api: Clients) -> None:
    make_disk(api, "bake", size_gb=50)
    image = compute_v1.Image(name="sd-runtime-abc", source_disk=f"zones/{Z}/disks/bake", family="sd-runtime",
                             labels={"sdgke-runtime-hash": "abc"})
    operation = api.images.insert(project=P, image_resource=image)
    assert operation.zone == "" and api.images.get(project=P, image="sd-runtime-abc").status == "PENDING"
    operation.result(timeout=10)
    created = api.images.get(project=P, image="sd-runtime-abc")
    assert (created.status, created.disk_size_gb, created.family) == ("READY", 50, "sd-runtime")
    assert created.source_disk == f"{API_ROOT}projects/{P}/zones/{Z}/disks/bake"
    assert any(r.api_method == "compute.globalOperations.get" for r in fake.requests)


def test_image_from_disk_attached_read_write_to_running_vm_needs_force_create(fake: FakeCompute,
                                                                              api: Clients) -> None:
    fake.add_instance("builder", zone=Z)
    source = compute_v1.Image(name="img", source_disk=f"zones/{Z}/disks/builder")
    with pytest.raises(exceptions.BadRequest, match="already being used by .*instances/builder"):
        api.images.insert(project=P, image_resource=source)
    api.images.insert(request=compute_v1.InsertImageRequest(project=P, image_resource=source,
                                                            force_create=True)).result(timeout=10)
    assert [i["name"] for i in fake.images()] == ["img"]


def test_image_in_another_project_serves_as_boot_image(fake: FakeCompute, api: Clients) -> None:
    fake.add_image("cos-117", family="cos-stable", project="cos-other")
    found = api.images.get_from_family(project="cos-other", family="cos-stable")
    assert found.self_link == f"{API_ROOT}projects/cos-other/global/images/cos-117"


def test_image_delete_removes_it(fake: FakeCompute, api: Clients) -> None:
    fake.add_image("img")
    api.images.delete(project=P, image="img").result(timeout=10)
    assert fake.images() == []


# ---- instances --------------------------------------------------------------------------------------------------

def builder_instance(name: str = "builder") -> compute_v1.Instance:
    boot = compute_v1.AttachedDisk(boot=True, auto_delete=True, initialize_params=compute_v1.AttachedDiskInitializeParams(
        source_image="projects/cos-other/global/images/family/cos-stable", disk_size_gb=20))
    work = compute_v1.AttachedDisk(auto_delete=False, device_name="sd-runtime",
                                   initialize_params=compute_v1.AttachedDiskInitializeParams(
                                       disk_name=f"{name}-work", disk_size_gb=30,
                                       disk_type=f"zones/{Z}/diskTypes/pd-balanced"))
    return compute_v1.Instance(
        name=name, machine_type=f"zones/{Z}/machineTypes/e2-standard-4", disks=[boot, work],
        labels={"managed-by": "sd-gke"},
        metadata=compute_v1.Metadata(items=[compute_v1.Items(key="enable-guest-attributes", value="TRUE")]),
        service_accounts=[compute_v1.ServiceAccount(email="default",
                                                    scopes=["https://www.googleapis.com/auth/cloud-platform"])],
        network_interfaces=[compute_v1.NetworkInterface(network="global/networks/default")])


def test_instance_insert_creates_its_disks_named_as_the_api_does(fake: FakeCompute, api: Clients) -> None:
    fake.add_image("cos-117", family="cos-stable", project="cos-other", disk_size_gb=10)
    api.instances.insert(project=P, zone=Z, instance_resource=builder_instance()).result(timeout=10)
    instance = api.instances.get(project=P, zone=Z, instance="builder")
    assert instance.status == "RUNNING" and instance.metadata.items[0].value == "TRUE"
    assert [(d.device_name, d.boot, d.auto_delete, d.mode, d.source.rsplit("/", 1)[-1]) for d in instance.disks] == [
        ("persistent-disk-0", True, True, "READ_WRITE", "builder"), ("sd-runtime", False, False, "READ_WRITE",
                                                                     "builder-work")]
    boot = api.disks.get(project=P, zone=Z, disk="builder")
    assert (boot.size_gb, list(boot.users)) == (20, [instance.self_link])


def test_instance_insert_with_existing_name_is_a_conflict(fake: FakeCompute, api: Clients) -> None:
    fake.add_image("cos-117", family="cos-stable", project="cos-other")
    api.instances.insert(project=P, zone=Z, instance_resource=builder_instance()).result(timeout=10)
    with pytest.raises(exceptions.Conflict):
        api.instances.insert(project=P, zone=Z, instance_resource=builder_instance())


def test_attach_disk_puts_the_instance_in_disk_users(fake: FakeCompute, api: Clients) -> None:
    node = fake.add_instance("node-1", zone=Z)
    make_disk(api, "runtime")
    attach(api, "node-1", "runtime", device="sd-runtime", mode="READ_WRITE", auto_delete=True)
    assert list(api.disks.get(project=P, zone=Z, disk="runtime").users) == [node["selfLink"]]
    entry = api.instances.get(project=P, zone=Z, instance="node-1").disks[-1]
    assert (entry.device_name, entry.mode, entry.auto_delete, entry.boot) == ("sd-runtime", "READ_WRITE", True, False)


def test_read_only_attach_with_auto_delete_is_refused_and_changes_nothing(fake: FakeCompute, api: Clients) -> None:
    fake.add_instance("node-1", zone=Z)
    make_disk(api, "runtime")
    with pytest.raises(exceptions.BadRequest, match="READ_ONLY mode cannot be auto-deleted"):
        attach(api, "node-1", "runtime", device="sd-runtime", mode="READ_ONLY", auto_delete=True)
    assert [d.device_name for d in api.instances.get(project=P, zone=Z, instance="node-1").disks] == [
        "persistent-disk-0"]
    assert not api.disks.get(project=P, zone=Z, disk="runtime").users


def test_instance_insert_with_a_read_only_auto_delete_disk_is_refused(fake: FakeCompute, api: Clients) -> None:
    fake.add_image("cos-117", family="cos-stable", project="cos-other", disk_size_gb=10)
    make_disk(api, "runtime")
    instance = builder_instance()
    instance.disks[1] = compute_v1.AttachedDisk(source=f"zones/{Z}/disks/runtime", device_name="sd-runtime",
                                                mode="READ_ONLY", auto_delete=True)
    with pytest.raises(exceptions.BadRequest, match="READ_ONLY mode cannot be auto-deleted"):
        api.instances.insert(project=P, zone=Z, instance_resource=instance)
    assert fake.instances() == [] and [d["name"] for d in fake.disks()] == ["runtime"]


def test_the_read_only_auto_delete_rule_is_compute_engines_own():
    """The rule the fake enforces is stated in the compute.v1 discovery document it checks against."""
    from tests.fakes.compute.schema import discovery_document

    schemas = discovery_document()["schemas"]
    for schema in ("StatefulPolicyPreservedStateDiskDevice", "PreservedStatePreservedDisk"):
        note = " ".join(schemas[schema]["properties"]["autoDelete"]["description"].split())
        assert "READ_ONLY mode cannot be auto-deleted" in note.replace("inREAD_ONLY", "in READ_ONLY")


def test_read_only_disk_attaches_to_many_instances(fake: FakeCompute, api: Clients) -> None:
    fake.add_instance("node-1", zone=Z)
    fake.add_instance("node-2", zone=Z)
    make_disk(api, "runtime")
    attach(api, "node-1", "runtime", device="sd-runtime", mode="READ_ONLY")
    attach(api, "node-2", "runtime", device="sd-runtime", mode="READ_ONLY")
    assert len(api.disks.get(project=P, zone=Z, disk="runtime").users) == 2


def test_read_write_disk_used_elsewhere_is_refused(fake: FakeCompute, api: Clients) -> None:
    fake.add_instance("node-1", zone=Z)
    fake.add_instance("node-2", zone=Z)
    make_disk(api, "runtime")
    attach(api, "node-1", "runtime", device="sd-runtime", mode="READ_ONLY")
    with pytest.raises(exceptions.BadRequest, match="already being used by .*instances/node-1") as raised:
        attach(api, "node-2", "runtime", device="sd-runtime", mode="READ_WRITE")
    assert raised.value.errors[0]["reason"] == "resourceInUseByAnotherResource"


def test_attach_with_a_device_name_in_use_is_refused(fake: FakeCompute, api: Clients) -> None:
    fake.add_instance("node-1", zone=Z)
    make_disk(api, "a")
    make_disk(api, "b")
    attach(api, "node-1", "a", device="sd-runtime")
    with pytest.raises(exceptions.BadRequest, match="'deviceName': 'sd-runtime'.*already in use"):
        attach(api, "node-1", "b", device="sd-runtime")


def test_attach_of_a_disk_not_ready_is_refused(fake: FakeCompute, api: Clients) -> None:
    fake.add_instance("node-1", zone=Z)
    api.disks.insert(project=P, zone=Z, disk_resource=compute_v1.Disk(name="d1"))  # operation never polled
    with pytest.raises(exceptions.BadRequest, match="disks/d1' is not ready"):
        attach(api, "node-1", "d1", device="sd-runtime")


def test_attach_of_a_disk_in_another_zone_is_refused(fake: FakeCompute, api: Clients) -> None:
    fake.add_instance("node-1", zone=Z)
    make_disk(api, "d1", zone=Z2)
    elsewhere = compute_v1.AttachedDisk(source=f"zones/{Z2}/disks/d1")
    with pytest.raises(exceptions.BadRequest, match="must be in zone us-central1-a"):
        api.instances.attach_disk(project=P, zone=Z, instance="node-1", attached_disk_resource=elsewhere)


def test_instance_delete_deletes_auto_delete_disks_and_keeps_others(fake: FakeCompute, api: Clients) -> None:
    fake.add_instance("node-1", zone=Z)
    make_disk(api, "scratch")
    make_disk(api, "kept")
    attach(api, "node-1", "scratch", device="scratch", auto_delete=True)
    attach(api, "node-1", "kept", device="kept", auto_delete=False)
    api.instances.delete(project=P, zone=Z, instance="node-1").result(timeout=10)
    assert [(d["name"], d.get("users")) for d in fake.disks()] == [("kept", None)]
    assert fake.disks()[0]["lastDetachTimestamp"]


def test_disk_shared_read_only_survives_one_instance(fake: FakeCompute, api: Clients) -> None:
    fake.add_instance("node-1", zone=Z)
    node_2 = fake.add_instance("node-2", zone=Z)
    make_disk(api, "runtime")
    attach(api, "node-1", "runtime", device="sd-runtime", mode="READ_ONLY")
    attach(api, "node-2", "runtime", device="sd-runtime", mode="READ_ONLY")
    fake.remove_instance("node-1", zone=Z)
    assert list(api.disks.get(project=P, zone=Z, disk="runtime").users) == [node_2["selfLink"]]


def test_remove_instance_is_a_scale_down(fake: FakeCompute, api: Clients) -> None:
    fake.add_instance("node-1", zone=Z)
    make_disk(api, "runtime")
    attach(api, "node-1", "runtime", device="sd-runtime", mode="READ_WRITE", auto_delete=True)
    fake.remove_instance("node-1", zone=Z)
    assert fake.instances() == [] and fake.disks() == []
    with pytest.raises(ValueError, match="no instance 'node-1' in zone 'us-central1-a'"):
        fake.remove_instance("node-1", zone=Z)


def test_detach_disk_clears_users(fake: FakeCompute, api: Clients) -> None:
    fake.add_instance("node-1", zone=Z)
    make_disk(api, "runtime")
    attach(api, "node-1", "runtime", device="sd-runtime")
    api.instances.detach_disk(project=P, zone=Z, instance="node-1", device_name="sd-runtime").result(timeout=10)
    assert api.disks.get(project=P, zone=Z, disk="runtime").users == []
    assert [d.device_name for d in api.instances.get(project=P, zone=Z, instance="node-1").disks] == [
        "persistent-disk-0"]


def test_detach_of_unknown_device_names_the_attached_ones(fake: FakeCompute, api: Clients) -> None:
    fake.add_instance("node-1", zone=Z)
    with pytest.raises(exceptions.BadRequest, match=r"'nope'.*attached: \['persistent-disk-0'\]"):
        api.instances.detach_disk(project=P, zone=Z, instance="node-1", device_name="nope")


def test_set_disk_auto_delete_changes_the_attachment(fake: FakeCompute, api: Clients) -> None:
    fake.add_instance("node-1", zone=Z)
    api.instances.set_disk_auto_delete(project=P, zone=Z, instance="node-1", auto_delete=False,
                                       device_name="persistent-disk-0").result(timeout=10)
    fake.remove_instance("node-1", zone=Z)
    assert [d["name"] for d in fake.disks()] == ["node-1"]


def test_stop_terminates_the_instance(fake: FakeCompute, api: Clients) -> None:
    fake.add_instance("node-1", zone=Z)
    operation = api.instances.stop(project=P, zone=Z, instance="node-1")
    assert api.instances.get(project=P, zone=Z, instance="node-1").status == "STOPPING"
    operation.result(timeout=10)
    assert api.instances.get(project=P, zone=Z, instance="node-1").status == "TERMINATED"


def test_missing_instance_is_not_found(fake: FakeCompute, api: Clients) -> None:
    with pytest.raises(exceptions.NotFound, match=f"zones/{Z}/instances/ghost' was not found"):
        api.instances.get(project=P, zone=Z, instance="ghost")


def test_unknown_zone_is_not_found(fake: FakeCompute, api: Clients) -> None:
    with pytest.raises(exceptions.NotFound, match="zones/europe-west4-a' was not found"):
        api.disks.get(project=P, zone="europe-west4-a", disk="d1")


def test_instances_list_filters_on_labels(fake: FakeCompute, api: Clients) -> None:
    fake.add_instance("gpu-1", zone=Z, labels={"pool": "gpu"})
    fake.add_instance("cpu-1", zone=Z, labels={"pool": "cpu"})
    request = compute_v1.ListInstancesRequest(project=P, zone=Z, filter="labels.pool=gpu")
    assert [i.name for i in api.instances.list(request=request)] == ["gpu-1"]


# ---- guest attributes and serial port ---------------------------------------------------------------------------

def guest_attributes(**query: str) -> compute_v1.GetGuestAttributesInstanceRequest:
    return compute_v1.GetGuestAttributesInstanceRequest(project=P, zone=Z, instance="builder", **query)


def serial_output(start: int) -> compute_v1.GetSerialPortOutputInstanceRequest:
    return compute_v1.GetSerialPortOutputInstanceRequest(project=P, zone=Z, instance="builder", start=start)


def test_guest_attribute_script_reveals_one_step_per_call(fake: FakeCompute, api: Clients) -> None:
    fake.add_instance("builder", zone=Z)
    fake.script_guest_attributes("builder", zone=Z, namespace="sd-bake",
                                 steps=[{}, {"step": "venv"}, {"step": "models", "progress": "60"}])

    def read() -> dict[str, str]:
        try:
            found = api.instances.get_guest_attributes(request=guest_attributes(query_path="sd-bake/"))
        except exceptions.NotFound:
            return {}
        return {item.key: item.value for item in found.query_value.items}

    assert [read(), read(), read(), read()] == [
        {}, {"step": "venv"}, {"step": "models", "progress": "60"}, {"step": "models", "progress": "60"}]


def test_guest_attribute_variable_key(fake: FakeCompute, api: Clients) -> None:
    fake.add_instance("builder", zone=Z)
    fake.set_guest_attributes("builder", zone=Z, namespace="sd-bake", values={"status": "done"})
    found = api.instances.get_guest_attributes(request=guest_attributes(variable_key="sd-bake/status"))
    assert found.variable_value == "done"
    with pytest.raises(exceptions.NotFound, match="guestAttributes/sd-bake/error' was not found"):
        api.instances.get_guest_attributes(request=guest_attributes(variable_key="sd-bake/error"))


def test_guest_attributes_of_a_missing_instance_are_not_found(fake: FakeCompute, api: Clients) -> None:
    fake.set_guest_attributes("builder", zone=Z, namespace="sd-bake", values={"status": "done"})
    with pytest.raises(exceptions.NotFound, match="instances/builder' was not found"):
        api.instances.get_guest_attributes(request=guest_attributes(query_path="sd-bake/"))


def test_serial_output_reads_from_start_and_reports_next(fake: FakeCompute, api: Clients) -> None:
    fake.add_instance("builder", zone=Z)
    fake.set_serial_output("builder", zone=Z, text="boot\nbake: pip failed\n")
    first = api.instances.get_serial_port_output(request=serial_output(0))
    assert (first.contents, first.start, first.next_) == ("boot\nbake: pip failed\n", 0, 22)
    later = api.instances.get_serial_port_output(request=serial_output(5))
    assert (later.contents, later.start) == ("bake: pip failed\n", 5)
    tail = api.instances.get_serial_port_output(request=serial_output(-7))
    assert (tail.contents, tail.start) == ("failed\n", 15)


# ---- operations -------------------------------------------------------------------------------------------------

def test_insert_returns_a_running_zone_operation(fake: FakeCompute, api: Clients) -> None:
    operation = api.disks.insert(project=P, zone=Z, disk_resource=compute_v1.Disk(name="d1"))
    assert operation.status == compute_v1.Operation.Status.RUNNING
    assert (operation.operation_type, operation.target_link, operation.zone) == (
        "insert", f"{API_ROOT}projects/{P}/zones/{Z}/disks/d1", f"{API_ROOT}projects/{P}/zones/{Z}")
    assert operation.self_link == f"{API_ROOT}projects/{P}/zones/{Z}/operations/{operation.name}"


def test_wait_with_a_client_built_like_the_others(fake: FakeCompute) -> None:
    """The pattern production code uses: its own ZoneOperationsClient with the same client options."""
    options = ClientOptions(api_endpoint=fake.url)
    disks = compute_v1.DisksClient(credentials=AnonymousCredentials(), transport="rest", client_options=options)
    operations = compute_v1.ZoneOperationsClient(credentials=AnonymousCredentials(), transport="rest",
                                                 client_options=options)
    fake.operation_polls_until_done = 1
    name = disks.insert(project=P, zone=Z, disk_resource=compute_v1.Disk(name="d1")).name
    states = [operations.wait(project=P, zone=Z, operation=name).status for _ in range(2)]
    assert states == [compute_v1.Operation.Status.RUNNING, compute_v1.Operation.Status.DONE]


def test_extended_operation_result_polls_the_default_endpoint_not_the_client_one(fake: FakeCompute) -> None:
    """Pins a google-cloud-compute trait: result() ignores client_options, hence FakeCompute.client()."""
    options = ClientOptions(api_endpoint=fake.url)
    disks = compute_v1.DisksClient(credentials=AnonymousCredentials(), transport="rest", client_options=options)
    assert disks._transport._zone_operations_client._transport._host == "https://compute.googleapis.com"
    assert fake.client(compute_v1.DisksClient)._transport._zone_operations_client._transport._host == fake.url


def test_missing_operation_is_not_found(fake: FakeCompute, api: Clients) -> None:
    with pytest.raises(exceptions.NotFound, match="operations/operation-1' was not found"):
        api.global_operations.get(project=P, operation="operation-1")


def test_request_id_makes_a_retried_insert_idempotent(fake: FakeCompute, api: Clients) -> None:
    request = compute_v1.InsertDiskRequest(project=P, zone=Z, disk_resource=compute_v1.Disk(name="d1"),
                                           request_id="5f0c8a64-7a54-4f7b-9c8e-3b1f1f0a2d11")
    first, again = api.disks.insert(request=request), api.disks.insert(request=request)
    assert first.name == again.name and again.client_operation_id == request.request_id
    assert len(fake.disks()) == 1


# ---- faults -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "error"), [(503, exceptions.ServiceUnavailable),
                                               (429, exceptions.TooManyRequests),
                                               (500, exceptions.InternalServerError)])
def test_fail_next_surfaces_as_the_client_exception(fake: FakeCompute, api: Clients, status: int,
                                                    error: type[Exception]) -> None:
    fake.fail_next(method="POST", path_regex=r"/disks$", status=status)
    with pytest.raises(error, match="fault injected by FakeCompute"):
        api.disks.insert(project=P, zone=Z, disk_resource=compute_v1.Disk(name="d1"))
    make_disk(api, "d1")  # the fault was used up
    assert [r.status for r in fake.requests if r.api_method == "compute.disks.insert"] == [status, 200]


def test_fail_next_only_hits_matching_requests(fake: FakeCompute, api: Clients) -> None:
    fake.fail_next(method="DELETE", times=2)
    make_disk(api, "d1")
    for _ in range(2):
        with pytest.raises(exceptions.ServiceUnavailable):
            api.disks.delete(project=P, zone=Z, disk="d1")
    api.disks.delete(project=P, zone=Z, disk="d1").result(timeout=10)
    assert fake.disks() == []


def test_client_retries_a_get_through_a_503(fake: FakeCompute, api: Clients) -> None:
    make_disk(api, "d1")
    fake.fail_next(method="GET", path_regex="/disks/d1$")
    assert api.disks.get(project=P, zone=Z, disk="d1").name == "d1"
    assert [r.status for r in fake.requests if r.api_method == "compute.disks.get"][-2:] == [503, 200]


def test_operation_error_surfaces_from_result_and_changes_nothing(fake: FakeCompute, api: Clients) -> None:
    fake.fail_operation(kind="compute.disks.insert", code="QUOTA_EXCEEDED", message="Quota 'SSD_TOTAL_GB' exceeded.")
    operation = api.disks.insert(project=P, zone=Z, disk_resource=compute_v1.Disk(name="d1"))
    with pytest.raises(exceptions.Forbidden) as raised:
        operation.result(timeout=10)
    assert [(e.code, e.message) for e in raised.value.errors] == [("QUOTA_EXCEEDED", "Quota 'SSD_TOTAL_GB' exceeded.")]
    assert fake.disks() == []


@pytest.mark.parametrize(("code", "status"), [("RESOURCE_ALREADY_EXISTS", 409), ("RESOURCE_NOT_FOUND", 404)])
def test_operation_error_is_in_the_waited_operation(fake: FakeCompute, api: Clients, code: str, status: int) -> None:
    fake.add_instance("node-1", zone=Z)
    fake.fail_operation(kind="attachDisk", path_regex="/instances/node-1/", code=code)
    started = api.instances.attach_disk(project=P, zone=Z, instance="node-1",
                                        attached_disk_resource=compute_v1.AttachedDisk(source=f"zones/{Z}/disks/x"))
    done = api.zone_operations.wait(project=P, zone=Z, operation=started.name)
    assert (done.status, done.http_error_status_code, done.error.errors[0].code) == (
        compute_v1.Operation.Status.DONE, status, code)
    assert done.target_link == f"{API_ROOT}projects/{P}/zones/{Z}/instances/node-1"


@pytest.mark.parametrize(("arguments", "message"), [
    ({"kind": "insert", "code": "OUT_OF_LUCK"}, "code 'OUT_OF_LUCK' is not one of"),
    ({"kind": "compute.disks.inssert"}, "kind 'compute.disks.inssert' names no mutating method"),
])
def test_fail_operation_rejects_what_it_cannot_inject(fake: FakeCompute, arguments: dict[str, str],
                                                      message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fake.fail_operation(**arguments)


def test_latency_is_added_to_every_request(fake: FakeCompute, api: Clients) -> None:
    fake.latency = 0.2
    began = time.monotonic()
    with pytest.raises(exceptions.NotFound):
        api.disks.get(project=P, zone=Z, disk="d1")
    assert time.monotonic() - began >= 0.2
    recorded = fake.requests[-1]
    assert recorded.finished - recorded.started >= 0.2


def test_requests_are_recorded_with_their_mutating_flag(fake: FakeCompute, api: Clients) -> None:
    make_disk(api, "d1")
    assert [(r.method, r.api_method, r.mutating, r.status) for r in fake.requests] == [
        ("POST", "compute.disks.insert", True, 200), ("GET", "compute.zoneOperations.get", False, 200),
        ("GET", "compute.disks.get", False, 200)]


def test_concurrent_inserts_of_one_name_make_one_disk(fake: FakeCompute) -> None:
    outcomes: list[int] = []

    def insert() -> None:
        outcomes.append(raw(fake, "POST", DISKS, {"name": "d1"}).status_code)

    threads = [threading.Thread(target=insert) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(outcomes) == [200] + [409] * 7
    assert len(fake.disks()) == 1


def test_seeding_refuses_unknown_zone_and_status(fake: FakeCompute) -> None:
    with pytest.raises(ValueError, match="zone 'europe-west4-a' is not one of"):
        fake.add_instance("n", zone="europe-west4-a")
    with pytest.raises(ValueError, match="status 'UP' is not one of"):
        fake.add_instance("n", zone=Z, status="UP")


def test_stop_shuts_the_server_down() -> None:
    fake = FakeCompute().start()
    url = fake.url
    fake.stop()
    fake.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(url + DISKS, timeout=2)


def test_held_requests_wait_until_release(fake: FakeCompute, api: Clients) -> None:
    fake.add_instance("node-1", zone=Z)
    answered = threading.Event()
    fake.hold()
    caller = threading.Thread(target=lambda: (api.instances.get(project=P, zone=Z, instance="node-1"), answered.set()))
    caller.start()
    try:
        assert not answered.wait(0.3)
    finally:
        fake.release()
    caller.join(timeout=10)
    assert answered.is_set()
