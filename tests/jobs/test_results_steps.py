"""The batch agent's result writes, step by step, in-process: which objects an attempt creates, with what
content type, precondition and retry, what the commit returns, and what an operator reads when the bucket fails.

test_agent.py and test_faults.py show that results survive the real storage client against
tests/fakes/storage.py; these pin down what those cannot see. The stand-in bucket behaves as Cloud Storage does
for the one precondition used here: a create with ifGenerationMatch=0 on an existing object, or with any other
generation on a missing one, is refused with 412 (https://cloud.google.com/storage/docs/request-preconditions),
and each call is bound to google-cloud-storage's own method signature."""

from __future__ import annotations

import inspect
import json

import pytest
from google.api_core import exceptions
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY

from tests.jobs.harness import BucketResults, agent

BUCKET = "results"
JOB_ID = "job-1"
ATTEMPT = "a1b2c3d4e5f6"
IMAGES = [b"\x89PNG one", b"\x89PNG two"]
METADATA = {"seed": 7, "job": {"prompt": "a lighthouse at dusk"}}


class Blob:
    def __init__(self, bucket: Bucket, name: str):
        self.bucket, self.name = bucket, name

    def exists(self, *args, **kwargs) -> bool:
        inspect.signature(storage.Blob.exists).bind(self, *args, **kwargs)
        self.bucket.calls.append(("exists", self.name, kwargs))
        self.bucket.fail("exists", self.name)
        return self.name in self.bucket.objects

    def upload_from_string(self, *args, **kwargs) -> None:
        bound = inspect.signature(storage.Blob.upload_from_string).bind(self, *args, **kwargs)
        bound.apply_defaults()
        self.bucket.calls.append(("upload", self.name, kwargs))
        self.bucket.fail("upload", self.name)
        generation = bound.arguments["if_generation_match"]
        present = self.name in self.bucket.objects
        if generation is not None and (present if generation == 0 else not present):
            raise exceptions.PreconditionFailed(f"At least one of the pre-conditions you specified did not hold: "
                                                f"{self.name}")
        self.bucket.objects[self.name] = (bound.arguments["data"], bound.arguments["content_type"])


class Bucket:
    """Objects by name, as (content, content type); `failures` maps (call, name) to the error that call raises."""

    def __init__(self):
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.calls: list[tuple[str, str, dict]] = []
        self.failures: dict[tuple[str, str], Exception] = {}

    def blob(self, *args, **kwargs) -> Blob:
        bound = inspect.signature(storage.Bucket.blob).bind(self, *args, **kwargs)
        return Blob(self, bound.arguments["blob_name"])

    def fail(self, call: str, name: str) -> None:
        if (call, name) in self.failures:
            raise self.failures[(call, name)]


class Client:
    def __init__(self):
        self.buckets: dict[str, Bucket] = {}

    def bucket(self, *args, **kwargs) -> Bucket:
        bound = inspect.signature(storage.Client.bucket).bind(self, *args, **kwargs)
        return self.buckets.setdefault(bound.arguments["bucket_name"], Bucket())


@pytest.fixture(autouse=True)
def fixed_attempt(monkeypatch):
    monkeypatch.setattr(agent, "new_attempt", lambda: ATTEMPT)


def results(retry_seconds: float = 30.0) -> tuple[BucketResults, Bucket]:
    client = Client()
    return BucketResults(client, BUCKET, retry_seconds), client.bucket(BUCKET)


def image_names() -> list[str]:
    return [f"{JOB_ID}/{ATTEMPT}/{i}.png" for i in range(len(IMAGES))]


def test_an_attempts_images_are_written_under_its_own_prefix_as_png():
    bucket_results, bucket = results()
    bucket_results.commit(JOB_ID, IMAGES, METADATA)
    assert [bucket.objects[name] for name in image_names()] == [(image, "image/png") for image in IMAGES]


def test_the_result_document_is_the_metadata_and_the_image_names_as_indented_json():
    bucket_results, bucket = results()
    bucket_results.commit(JOB_ID, IMAGES, METADATA)
    document, content_type = bucket.objects[f"{JOB_ID}/result.json"]
    assert (document.decode(), content_type) == (json.dumps({**METADATA, "images": image_names()}, indent=2),
                                                 "application/json")


def test_the_result_document_is_written_after_every_image():
    bucket_results, bucket = results()
    bucket_results.commit(JOB_ID, IMAGES, METADATA)
    assert [name for call, name, _ in bucket.calls if call == "upload"] == [*image_names(), f"{JOB_ID}/result.json"]


def test_every_write_is_a_create_that_never_overwrites():
    bucket_results, bucket = results()
    bucket_results.commit(JOB_ID, IMAGES, METADATA)
    assert {kwargs["if_generation_match"] for call, _, kwargs in bucket.calls if call == "upload"} == {0}


def test_every_call_is_retried_for_the_configured_storage_retry_seconds():
    bucket_results, bucket = results(retry_seconds=17.0)
    bucket.objects[f"{JOB_ID}/result.json"] = (b"{}", "application/json")
    bucket_results.commit(JOB_ID, IMAGES, METADATA)
    retries = [kwargs["retry"] for _, _, kwargs in bucket.calls]
    assert [call for call, _, _ in bucket.calls] == ["upload", "upload", "upload", "exists"]
    assert all(retry._timeout == 17.0 and retry._predicate is DEFAULT_RETRY._predicate for retry in retries)


def test_a_commit_that_creates_the_result_document_reports_that_this_attempt_committed():
    bucket_results, _ = results()
    assert bucket_results.commit(JOB_ID, IMAGES, METADATA) is True


def test_a_commit_after_another_attempts_reports_that_another_committed_and_leaves_its_document():
    bucket_results, bucket = results()
    bucket.objects[f"{JOB_ID}/result.json"] = (b'{"images": []}', "application/json")
    assert bucket_results.commit(JOB_ID, IMAGES, METADATA) is False
    assert bucket.objects[f"{JOB_ID}/result.json"] == (b'{"images": []}', "application/json")


def test_an_image_that_already_exists_is_this_attempts_earlier_write_and_the_commit_goes_on():
    bucket_results, bucket = results()
    bucket.objects[image_names()[0]] = (IMAGES[0], "image/png")
    assert bucket_results.commit(JOB_ID, IMAGES, METADATA) is True


def test_a_412_on_a_result_document_that_does_not_exist_is_retryable_and_names_the_object():
    bucket_results, bucket = results()
    bucket.failures[("upload", f"{JOB_ID}/result.json")] = exceptions.PreconditionFailed("lost race")
    with pytest.raises(agent.RetryableError) as raised:
        bucket_results.commit(JOB_ID, IMAGES, METADATA)
    assert str(raised.value) == f"bucket: {JOB_ID}/result.json answered 412 but does not exist"


def test_a_failed_write_is_retryable_and_says_what_the_bucket_answered():
    bucket_results, bucket = results()
    bucket.failures[("upload", image_names()[1])] = exceptions.ServiceUnavailable("backend down")
    with pytest.raises(agent.RetryableError) as raised:
        bucket_results.commit(JOB_ID, IMAGES, METADATA)
    assert str(raised.value) == "bucket: 503 backend down"
    assert f"{JOB_ID}/result.json" not in bucket.objects


def test_a_failed_read_is_retryable_and_says_what_the_bucket_answered():
    bucket_results, bucket = results()
    bucket.failures[("exists", f"{JOB_ID}/result.json")] = exceptions.Forbidden("no storage.objects.get")
    with pytest.raises(agent.RetryableError) as raised:
        bucket_results.exists(JOB_ID)
    assert str(raised.value) == "bucket: 403 no storage.objects.get"


def test_exists_reads_the_jobs_result_document_in_the_configured_bucket():
    bucket_results, bucket = results()
    assert bucket_results.exists(JOB_ID) is False
    bucket.objects[f"{JOB_ID}/result.json"] = (b"{}", "application/json")
    assert bucket_results.exists(JOB_ID) is True
