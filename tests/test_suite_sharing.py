"""How the suite shares its expensive parts: each distinct mock run once per test process
(tests/shared_runs.py), each file's tests on one xdist worker and the queue tests in two groups, each
with its own Pub/Sub emulator (tests/conftest.py), and `make test` running the suite in parallel that way."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import variants
from tests.conftest import AGENT_GROUP, ROOT, WORKER_GROUP, worker_group
from tests.shared_runs import SharedRuns, edited, fingerprint
from tools import mockrun

QUEUE_OFF = {"jobs": {"enabled": False}}


@dataclass
class Asked:
    shared: SharedRuns
    first: mockrun.Run
    again: mockrun.Run
    other: mockrun.Run


@pytest.fixture(scope="module")
def asked() -> Asked:
    shared = SharedRuns()
    first = shared.get("dev", QUEUE_OFF)
    again = shared.get("dev", QUEUE_OFF)
    other = shared.get("dev", {})
    return Asked(shared, first, again, other)


def test_the_same_stack_and_overrides_run_the_program_once(asked):
    assert asked.shared.programs_run == 2
    assert [r.to_json() for r in asked.again.resources] == [r.to_json() for r in asked.first.resources]


def test_other_overrides_run_the_program_again(asked):
    def topics(run):
        return run.of_type("gcp:pubsub/topic:Topic")

    assert topics(asked.first) == [] and topics(asked.other) != []


def test_each_caller_gets_a_copy_of_its_own(asked):
    asked.first.resources[0].inputs["edited"] = True
    asked.first.config.clear()
    after = asked.shared.get("dev", QUEUE_OFF)
    assert "edited" not in after.resources[0].inputs and after.config == asked.again.config != {}


def test_each_test_file_is_a_worker_group_of_its_own():
    assert worker_group(ROOT / "tests" / "test_delivery.py") == "tests/test_delivery.py"
    assert worker_group(ROOT / "tests" / "attacher" / "test_gc.py") == "tests/attacher/test_gc.py"


def test_the_batch_agents_queue_tests_share_one_group():
    assert {worker_group(ROOT / "tests" / "jobs" / name) for name in ("test_agent.py", "test_faults.py")} \
        == {AGENT_GROUP}


def test_every_other_queue_test_file_shares_the_second_group():
    others = sorted(p for p in (ROOT / "tests" / "jobs").glob("test_*.py") if p.name not in ("test_agent.py", "test_faults.py"))
    assert len(others) >= 3 and {worker_group(p) for p in others} == {WORKER_GROUP} != {AGENT_GROUP}


def test_every_collected_test_carries_its_files_group_and_no_other(request):
    assert [[m.args[0] for m in i.iter_markers("xdist_group")] for i in request.session.items] \
        == [[worker_group(Path(i.path))] for i in request.session.items]


def test_make_test_runs_the_suite_in_parallel_by_those_groups():
    recipe = (ROOT / "Makefile").read_text().split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "-m pytest -n $(XDIST_WORKERS) --dist loadgroup" in recipe


def test_make_test_runs_one_worker_more_than_the_machine_has_cores():
    makefile = (ROOT / "Makefile").read_text()
    assert "XDIST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))" in makefile


def test_an_edit_of_a_shared_run_is_named(asked):
    before = fingerprint(asked.other)
    edited_run = copy.deepcopy(asked.other)
    scaled = edited_run.one("kubernetes:keda.sh/v1alpha1:ScaledObject")
    scaled.inputs["spec"]["triggers"][0]["metadata"]["targetValue"] = 1
    assert edited(before, edited_run) == [scaled.name]


def test_an_untouched_run_has_no_edits(asked):
    assert edited(fingerprint(asked.other), asked.other) == []


def test_an_edit_of_a_shared_variant_is_named_with_the_variant(monkeypatch):
    monkeypatch.setattr(variants, "_made", {})
    shared = variants.variant("dev", "daemonset", "spotFirst")
    assert variants.edits() == {}
    shared.one("kubernetes:keda.sh/v1alpha1:ScaledObject").inputs["spec"]["minReplicaCount"] = 3
    assert variants.edits() == {"dev-daemonset-spotFirst": ["autoscaling-scaled-object"]}
    assert variants.variant("dev", "daemonset", "spotFirst") is shared


def test_the_suite_bench_runs_as_many_workers_as_make_test():
    from tools import bench_suite

    assert bench_suite.PARALLEL[:2] == ("-n", str(len(os.sched_getaffinity(0)) + 1))
