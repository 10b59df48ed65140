"""Storage and Pub/Sub: private, expiring buckets; job subscriptions that dead-letter."""

from __future__ import annotations

from resources import get


def private_expiring_bucket(args, report):
    """Results are users' images: never public, one access model (IAM), and they expire
    (https://cloud.google.com/storage/docs/public-access-prevention, .../uniform-bucket-level-access)."""
    if args.props.get("uniformBucketLevelAccess") is not True:
        report("Bucket without uniform bucket-level access: set uniformBucketLevelAccess = true.")
    if args.props.get("publicAccessPrevention") != "enforced":
        report("Bucket without public access prevention: set publicAccessPrevention = \"enforced\".")
    rules = args.props.get("lifecycleRules") or []
    if not any(get(r, "action", "type") == "Delete" and get(r, "condition", "age") for r in rules):
        report("Bucket keeps objects forever: add a lifecycle rule that deletes them after an age.")


def dead_letter_policy(args, report):
    """A subscription that redelivers forever holds a poison job forever; the dead-letter topic's own
    subscription (nothing redelivers there) is named after it, `*-dead-letter`."""
    if str(args.props.get("name", "")).endswith("dead-letter"):
        return
    if not get(args.props, "deadLetterPolicy", "deadLetterTopic"):
        report(f"Subscription {args.props.get('name')!r} has no dead-letter policy: a job failing every attempt "
               "would be redelivered until it expires.")
