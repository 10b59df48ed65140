"""The fault matrix: agents killed and stopped mid-run, a failing WebUI and bucket, duplicate deliveries,
jobs no attempt can save; afterwards every job has exactly one result or sits in the dead-letter topic."""

from __future__ import annotations

from tests.jobs import harness


def test_under_every_fault_each_job_has_one_result_or_a_dead_letter_with_its_reason(pubsub_emulator):
    plan = harness.FaultPlan()
    ledger = harness.run_fault_matrix(plan)
    assert ledger.lost == set() and ledger.duplicated == set()
    assert len(ledger.completed) == plan.jobs - plan.doomed - plan.refused
    assert ledger.redelivered >= 1  # the faults met jobs: some results come from a later delivery
    reasons = ledger.dead_lettered
    assert len(reasons) == plan.doomed + plan.refused
    assert sum("failed 5 attempts" in r and "HTTP 500" in r for r in reasons.values()) == plan.doomed
    assert sum("stepz: unknown field" in r for r in reasons.values()) == plan.refused


def test_writes_whose_replies_are_lost_lose_no_job(pubsub_emulator):
    plan = harness.FaultPlan(jobs=60, lost_image_replies=20, webui_fault_every=1_000, bucket_fault_every=1_000,
                             duplicates=0, doomed=0, refused=0, kill_after=10)
    ledger = harness.run_fault_matrix(plan)
    assert ledger.replies_lost == plan.lost_image_replies
    assert ledger.lost == set() and ledger.duplicated == set() and ledger.dead_lettered == {}
