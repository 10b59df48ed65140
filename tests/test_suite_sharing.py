"""How the suite shares its expensive parts: each distinct mock run once per test session
(tests/shared_runs.py), each file's tests on one xdist worker and the queue tests in two groups, each
with its own Pub/Sub emulator (tests/conftest.py), and `make test` running the suite in parallel that way."""

from __future__ import annotations

import copy
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import shared_runs, variants
from tests.conftest import (
    AGENT_FILES,
    AGENT_GROUP,
    ROOT,
    WORKER_GROUP,
    in_process_steps,
    pytest_collection_modifyitems,
    worker_group,
)
from tests.shared_runs import RunStore, SharedRuns, edited, fingerprint
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
    assert {worker_group(ROOT / "tests" / "jobs" / name) for name in AGENT_FILES} \
        == {AGENT_GROUP}


def test_every_other_queue_test_file_that_starts_an_emulator_shares_the_second_group():
    others = sorted(p for p in (ROOT / "tests" / "jobs").glob("test_*.py")
                    if p.name not in AGENT_FILES and not in_process_steps(p))
    assert len(others) >= 3 and {worker_group(p) for p in others} == {WORKER_GROUP} != {AGENT_GROUP}


def test_the_in_process_step_files_of_the_queue_tests_are_groups_of_their_own():
    steps = sorted((ROOT / "tests" / "jobs").glob("test_*_steps.py"))
    assert len(steps) >= 3
    assert [worker_group(p) for p in steps] == [p.relative_to(ROOT).as_posix() for p in steps]


def test_no_step_file_of_the_queue_tests_needs_the_emulator(request):
    steps = [item for item in request.session.items
             if Path(item.path).parent.name == "jobs" and in_process_steps(Path(item.path))]
    if not steps:
        pytest.skip(reason="it reads the collected step files of tests/jobs/, and this run collects none")
    assert [item.nodeid for item in steps if "pubsub_emulator" in item.fixturenames] == []


def test_every_collected_test_carries_its_files_group_and_no_other(request):
    assert [[m.args[0] for m in i.iter_markers("xdist_group")] for i in request.session.items] \
        == [[worker_group(Path(i.path))] for i in request.session.items]


class Collected:
    """As much of a pytest item as the collection hook reads: its path and its (already set) group mark."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def iter_markers(self, name):
        return iter([pytest.mark.xdist_group(worker_group(self.path)).mark])


NAMES = ["attacher/test_gc.py", "jobs/test_worker.py", "test_plan.py", "jobs/test_agent.py", "test_bake.py",
         "jobs/test_faults.py"]


def test_the_queue_groups_are_handed_out_first_the_batch_agents_before_the_other(monkeypatch):
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    items = [Collected(ROOT / "tests" / name) for name in NAMES]
    pytest_collection_modifyitems(items)
    assert [str(i.path.relative_to(ROOT / "tests")) for i in items] == [
        "jobs/test_agent.py", "jobs/test_faults.py", "jobs/test_worker.py", "attacher/test_gc.py", "test_plan.py",
        "test_bake.py"]


def test_a_run_without_workers_keeps_the_order_it_was_given(monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    items = [Collected(ROOT / "tests" / name) for name in NAMES]
    pytest_collection_modifyitems(items)
    assert [str(i.path.relative_to(ROOT / "tests")) for i in items] == NAMES


def test_make_test_runs_the_suite_in_parallel_by_those_groups_in_collection_order():
    recipe = (ROOT / "Makefile").read_text().split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "-m pytest -n $(XDIST_WORKERS) --dist loadgroup --no-loadscope-reorder" in recipe


def test_make_test_runs_two_workers_more_than_the_machine_has_cores():
    makefile = (ROOT / "Makefile").read_text()
    assert "XDIST_WORKERS ?= $(shell echo $$(( $$(nproc) + 2 )))" in makefile


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

    assert bench_suite.PARALLEL == ("-n", str(len(os.sched_getaffinity(0)) + 2), "--dist", "loadgroup",
                                    "--no-loadscope-reorder")


# --- one run per session, shared by the workers (tests/shared_runs.py RunStore) ----------------------------------

@pytest.fixture
def program(monkeypatch):
    """mockrun.run replaced by a quick stand-in that counts its calls and can be made slow or failing."""

    class Program:
        calls: list[tuple] = []
        seconds = 0.0
        fails = False

        def __call__(self, stack, overrides=None, config=None):
            self.calls.append((stack, overrides, config))
            time.sleep(self.seconds)
            if self.fails:
                raise RuntimeError("the program failed")
            return mockrun.Run(stack=stack, resources=[], outputs={"asked": [overrides, config]}, config={})

    stand_in = Program()
    stand_in.calls = []
    monkeypatch.setattr(mockrun, "run", stand_in)
    return stand_in


def test_a_second_process_loads_the_run_the_first_made(program, tmp_path):
    first, second = RunStore(tmp_path), RunStore(tmp_path)
    made = first.run("dev", overrides={"jobs": {"enabled": False}})
    loaded = second.run("dev", overrides={"jobs": {"enabled": False}})
    assert (first.programs_run, second.programs_run, len(program.calls)) == (1, 0, 1)
    assert loaded.outputs == made.outputs and loaded is not made


def test_each_distinct_request_runs_the_program(program, tmp_path):
    store = RunStore(tmp_path)
    store.run("dev")
    store.run("prod")
    store.run("dev", overrides={"jobs": {"enabled": False}})
    store.run("dev", config={"sd-gke:project": "p"})
    assert len(program.calls) == 4


def test_no_overrides_and_empty_overrides_are_the_same_request(program, tmp_path):
    store = RunStore(tmp_path)
    store.run("dev")
    store.run("dev", overrides={})
    assert len(program.calls) == 1


def test_two_workers_asking_at_once_run_the_program_once(program, tmp_path):
    program.seconds = 0.3
    got = []
    askers = [threading.Thread(target=lambda: got.append(RunStore(tmp_path).run("dev"))) for _ in range(2)]
    for asker in askers:
        asker.start()
    for asker in askers:
        asker.join()
    assert len(program.calls) == 1 and len(got) == 2


def test_a_failed_run_is_not_stored_and_the_next_request_runs_again(program, tmp_path):
    store = RunStore(tmp_path)
    program.fails = True
    with pytest.raises(RuntimeError, match="the program failed"):
        store.run("dev")
    program.fails = False
    assert store.run("dev").stack == "dev" and len(program.calls) == 2
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".lock", ".pickle"]


def test_without_a_directory_every_request_runs_the_program(program):
    store = RunStore()
    store.run("dev")
    store.run("dev")
    assert len(program.calls) == 2


def test_under_xdist_the_workers_share_the_sessions_directory(tmp_path_factory):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        assert shared_runs.store().directory == tmp_path_factory.getbasetemp().parent / "mock-runs"
    else:
        assert shared_runs.store().directory is None
