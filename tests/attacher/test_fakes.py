"""The fake metadata server and fake Kubernetes API refuse what the real ones refuse."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from tests.fakes.kube import FakeKube
from tests.fakes.metadata import FakeMetadata

TAINT = {"key": "ignore-taint.cluster-autoscaler.kubernetes.io/sd-runtime", "value": "pending", "effect": "NoSchedule"}
GPU = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
JSON_PATCH = "application/json-patch+json"


@pytest.fixture
def metadata() -> Iterator[FakeMetadata]:
    with FakeMetadata(zone="us-central1-b", instance="node-1", project_number="42") as fake:
        yield fake


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube() as fake:
        fake.add_node("node-1", taints=[TAINT, GPU])
        yield fake


def md(fake: FakeMetadata, path: str, **headers: str) -> requests.Response:
    return requests.get(f"http://{fake.host}/computeMetadata/v1/{path}", headers=headers, timeout=5)


def test_metadata_answers_identity_with_the_flavor_header(metadata: FakeMetadata):
    zone = md(metadata, "instance/zone", **{"Metadata-Flavor": "Google"})

    assert (zone.status_code, zone.text, zone.headers["Metadata-Flavor"]) == (200, "projects/42/zones/us-central1-b",
                                                                             "Google")
    assert md(metadata, "instance/hostname", **{"Metadata-Flavor": "Google"}).text == "node-1.us-central1-b.c.sdgke-test.internal"
    token = md(metadata, "instance/service-accounts/default/token", **{"Metadata-Flavor": "Google"}).json()
    assert set(token) == {"access_token", "expires_in", "token_type"}
    metadata.assert_clean()


def test_metadata_refuses_a_request_without_the_flavor_header(metadata: FakeMetadata):
    assert md(metadata, "instance/zone").status_code == 403
    assert metadata.violations == ["GET /computeMetadata/v1/instance/zone: missing header Metadata-Flavor: Google"]


def test_metadata_refuses_forwarded_requests(metadata: FakeMetadata):
    assert md(metadata, "instance/zone", **{"Metadata-Flavor": "Google", "X-Forwarded-For": "1.2.3.4"}).status_code == 403
    with pytest.raises(AssertionError, match="X-Forwarded-For"):
        metadata.assert_clean()


def test_metadata_does_not_serve_instance_name_like_the_gke_metadata_server(metadata: FakeMetadata):
    assert md(metadata, "instance/name", **{"Metadata-Flavor": "Google"}).status_code == 404
    assert "not served by the GKE metadata server" in metadata.violations[0]


def test_metadata_records_paths_it_does_not_serve_as_violations(metadata: FakeMetadata):
    assert md(metadata, "instance/attributes/kube-env", **{"Metadata-Flavor": "Google"}).status_code == 404
    assert "is not served by the fake" in metadata.violations[0]


def patch(fake: FakeKube, body: object, content_type: str = JSON_PATCH, token: str | None = None) -> requests.Response:
    return requests.patch(f"{fake.url}/api/v1/nodes/node-1", data=json.dumps(body), timeout=5, headers={
        "Content-Type": content_type, "Authorization": f"Bearer {token or fake.token}"})


def removal(index: int) -> list[dict]:
    return [{"op": "test", "path": f"/spec/taints/{index}/key", "value": TAINT["key"]},
            {"op": "remove", "path": f"/spec/taints/{index}"}]


def test_kube_applies_a_test_and_remove_taint_patch(kube: FakeKube):
    response = patch(kube, removal(0))

    assert response.status_code == 200 and response.json()["spec"]["taints"] == [GPU]
    assert kube.taints("node-1") == [GPU]
    kube.assert_clean()


def test_kube_answers_422_and_changes_nothing_when_the_test_fails(kube: FakeKube):
    response = patch(kube, removal(1))  # index 1 is the GPU taint

    assert response.status_code == 422 and response.json()["reason"] == "Invalid"
    assert kube.taints("node-1") == [TAINT, GPU]
    kube.assert_clean()  # a failed test is the API working, not a client bug


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        ({"spec": {"taints": [GPU]}}, "application/strategic-merge-patch+json", 415),
        ({"spec": {"taints": [GPU]}}, "application/merge-patch+json", 415),
        ([{"op": "remove", "path": "/spec/taints/0"}], JSON_PATCH, 422),
        ([{"op": "replace", "path": "/spec/taints", "value": [GPU]}], JSON_PATCH, 422),
        ([{"op": "test", "path": "/spec/taints/0/key", "value": TAINT["key"]},
          {"op": "remove", "path": "/spec/unschedulable"}], JSON_PATCH, 422),
        ([*removal(0), *removal(1)], JSON_PATCH, 422),  # ascending: the second index shifted
        ([{"op": "test", "path": "/spec/taints/0/key", "value": TAINT["key"], "extra": 1},
          {"op": "remove", "path": "/spec/taints/0"}], JSON_PATCH, 422),
    ],
)
def test_kube_refuses_any_other_patch_as_a_violation(kube: FakeKube, body, content_type, status):
    response = patch(kube, body, content_type)

    assert response.status_code == status
    assert kube.taints("node-1") == [TAINT, GPU]
    with pytest.raises(AssertionError):
        kube.assert_clean()


def test_kube_requires_the_bearer_token(kube: FakeKube):
    assert patch(kube, removal(0), token="wrong").status_code == 401
    assert requests.get(f"{kube.url}/api/v1/nodes/node-1", timeout=5).status_code == 401
    assert len(kube.violations) == 2


def test_kube_serves_only_get_and_patch_on_nodes(kube: FakeKube):
    headers = {"Authorization": f"Bearer {kube.token}"}
    assert requests.delete(f"{kube.url}/api/v1/nodes/node-1", headers=headers, timeout=5).status_code == 405
    assert requests.get(f"{kube.url}/api/v1/pods", headers=headers, timeout=5).status_code == 404
    assert requests.get(f"{kube.url}/api/v1/nodes/node-2", headers=headers, timeout=5).status_code == 404
    assert len(kube.violations) == 2  # a missing node is an answer, not a violation
