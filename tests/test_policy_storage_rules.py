"""The storage and Pub/Sub policies at their boundaries, over small hand-written resources (policy/storage.py)."""

from __future__ import annotations

import pytest

from tests.test_policy_rules import check

BUCKET = "gcp:storage/bucket:Bucket"
SUBSCRIPTION = "gcp:pubsub/subscription:Subscription"
EXPIRING = [{"action": {"type": "Delete"}, "condition": {"age": 30}}]
FOREVER = "Bucket keeps objects forever: add a lifecycle rule that deletes them after an age."


def bucket(**changes) -> dict:
    """A compliant results bucket; `changes` replace its keys (None drops one)."""
    inputs = {"uniformBucketLevelAccess": True, "publicAccessPrevention": "enforced", "lifecycleRules": EXPIRING}
    inputs.update(changes)
    return {k: v for k, v in inputs.items() if v is not None}


def test_a_private_expiring_bucket_passes():
    assert check("storage-private-expiring", BUCKET, bucket()) == []


@pytest.mark.parametrize("uniform", [False, None, "true"])
def test_a_bucket_without_uniform_bucket_level_access_is_refused(uniform):
    assert check("storage-private-expiring", BUCKET, bucket(uniformBucketLevelAccess=uniform)) == [
        "Bucket without uniform bucket-level access: set uniformBucketLevelAccess = true."]


@pytest.mark.parametrize("prevention", ["inherited", None])
def test_a_bucket_without_public_access_prevention_enforced_is_refused(prevention):
    assert check("storage-private-expiring", BUCKET, bucket(publicAccessPrevention=prevention)) == [
        "Bucket without public access prevention: set publicAccessPrevention = \"enforced\"."]


@pytest.mark.parametrize("rules", [None, []])
def test_a_bucket_without_lifecycle_rules_keeps_objects_forever(rules):
    assert check("storage-private-expiring", BUCKET, bucket(lifecycleRules=rules)) == [FOREVER]


def test_a_lifecycle_rule_that_only_changes_the_storage_class_does_not_expire_objects():
    rules = [{"action": {"type": "SetStorageClass", "storageClass": "NEARLINE"}, "condition": {"age": 30}}]
    assert check("storage-private-expiring", BUCKET, bucket(lifecycleRules=rules)) == [FOREVER]


def test_a_delete_rule_without_an_age_does_not_expire_objects():
    rules = [{"action": {"type": "Delete"}, "condition": {"numNewerVersions": 3}}]
    assert check("storage-private-expiring", BUCKET, bucket(lifecycleRules=rules)) == [FOREVER]


def test_one_delete_rule_by_age_among_others_expires_objects():
    rules = [{"action": {"type": "SetStorageClass", "storageClass": "NEARLINE"}, "condition": {"age": 7}}, *EXPIRING]
    assert check("storage-private-expiring", BUCKET, bucket(lifecycleRules=rules)) == []


def test_every_fault_of_a_bucket_is_reported_together():
    assert check("storage-private-expiring", BUCKET, {}) == [
        "Bucket without uniform bucket-level access: set uniformBucketLevelAccess = true.",
        "Bucket without public access prevention: set publicAccessPrevention = \"enforced\".", FOREVER]


def never_dead_letters(name: str) -> list[str]:
    return [f"Subscription {name!r} has no dead-letter policy: a job failing every attempt would be redelivered "
            "until it expires."]


def test_a_job_subscription_without_a_dead_letter_policy_is_refused():
    assert check("pubsub-dead-letter", SUBSCRIPTION, {"name": "sd-jobs"}) == never_dead_letters("sd-jobs")


def test_a_dead_letter_policy_without_a_topic_is_refused():
    inputs = {"name": "sd-jobs", "deadLetterPolicy": {"maxDeliveryAttempts": 5}}
    assert check("pubsub-dead-letter", SUBSCRIPTION, inputs) == never_dead_letters("sd-jobs")


def test_a_job_subscription_that_dead_letters_passes():
    inputs = {"name": "sd-jobs", "deadLetterPolicy": {"deadLetterTopic": "projects/p/topics/sd-jobs-dead-letter"}}
    assert check("pubsub-dead-letter", SUBSCRIPTION, inputs) == []


def test_the_dead_letter_topics_own_subscription_needs_no_dead_letter_policy():
    assert check("pubsub-dead-letter", SUBSCRIPTION, {"name": "sd-jobs-dead-letter"}) == []


def test_a_subscription_merely_mentioning_dead_letter_is_not_exempt():
    assert check("pubsub-dead-letter", SUBSCRIPTION, {"name": "dead-letter-replay"}) == never_dead_letters(
        "dead-letter-replay")
