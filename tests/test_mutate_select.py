"""The mutation runner's shortcuts (tools/mutate_select.py, tools/mutate.py): which tests run first against a
mutant, and program runs shared by the tests of a module the program never imports."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import threading

import pytest

from tools import mockrun, mutate
from tools.mutate_select import MODULE, CallRecorder, first_tests, top_level

CALLS = {
    "tests/test_a.py::test_one": ["check_pool", "Rules.apply"],
    "tests/test_a.py::test_two": [],
    "tests/test_b.py::test_three[dev]": ["check_pool"],
}


def test_code_nested_in_a_function_belongs_to_that_function():
    assert top_level("check_pool.<locals>.<lambda>") == "check_pool"
    assert top_level("Rules.apply.<locals>.inner.<locals>.<genexpr>") == "Rules.apply"


def test_a_function_or_method_is_its_own_name():
    assert (top_level("check_pool"), top_level("Rules.apply")) == ("check_pool", "Rules.apply")


def test_the_tests_that_called_the_function_run_first_in_the_order_they_ran():
    assert first_tests(CALLS, "check_pool") == ("tests/test_a.py::test_one", "tests/test_b.py::test_three[dev]")


def test_a_module_level_mutant_runs_the_whole_list():
    assert first_tests({"t": [MODULE]}, MODULE) is None


def test_a_function_no_test_called_runs_the_whole_list():
    assert first_tests(CALLS, "never_called") is None


class _Item:
    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid


def _run_as(recorder: CallRecorder, nodeid: str, body) -> None:
    protocol = recorder.pytest_runtest_protocol(_Item(nodeid), None)
    next(protocol)
    body()
    with pytest.raises(StopIteration):
        next(protocol)


def test_the_recorder_gives_each_call_of_the_file_to_the_test_running_then_in_any_thread(tmp_path):
    source = tmp_path / "target.py"
    source.write_text("def used():\n    return [x for x in (1, 2)]\n\n\nclass Rules:\n    def apply(self):\n"
                      "        return (lambda: used())()\n\n\ndef unused():\n    return 0\n")
    spec = importlib.util.spec_from_file_location("mutate_select_target", source)
    target = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(target)
    recorder = CallRecorder(str(source))
    recorder.pytest_sessionstart(None)
    try:
        _run_as(recorder, "t::in_thread", lambda: _in_thread(target.Rules().apply))
        _run_as(recorder, "t::nothing", lambda: None)
        _run_as(recorder, "t::direct", target.used)
    finally:
        recorder.pytest_sessionfinish(None)
    target.unused()  # after the session: not recorded
    assert dict(recorder.calls) == {"t::in_thread": {"Rules.apply", "used"}, "t::nothing": set(), "t::direct": {"used"}}


def _in_thread(work) -> None:
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()


def test_a_program_run_already_made_is_handed_out_as_a_copy_and_a_new_one_runs(monkeypatch):
    made = []

    def program(stack, root=mockrun.ROOT, overrides=None, config=None):
        made.append((stack, overrides))
        return {"stack": stack, "overrides": overrides}

    monkeypatch.setattr(mockrun, "run", program)
    recorded: dict = {}
    mutate._share_program_runs(recorded)
    first = mockrun.run("dev", overrides={"jobs": {"enabled": False}})
    first["edited"] = True
    again = mockrun.run("dev", overrides={"jobs": {"enabled": False}})
    mockrun.run("dev")
    assert again == {"stack": "dev", "overrides": {"jobs": {"enabled": False}}}
    assert made == [("dev", {"jobs": {"enabled": False}}), ("dev", None)] and len(recorded) == 2


def test_the_runner_names_the_shared_emulator_as_the_queue_tests_read_it():
    from tests.jobs import harness

    assert mutate.SHARED_EMULATOR == harness.SHARED_EMULATOR


def test_the_shards_of_a_run_take_every_mutant_once():
    parts = [tuple(i for i in range(10) if mutate.in_shard(i, mutate.shard(f"{k}/3"))) for k in range(3)]
    assert parts == [(0, 3, 6, 9), (1, 4, 7), (2, 5, 8)]


def test_without_a_shard_a_run_takes_every_mutant():
    assert all(mutate.in_shard(i, None) for i in range(4))


@pytest.mark.parametrize("spec", ["3/3", "1", "a/b", "-1/2", "0/0"])
def test_a_shard_outside_its_count_is_refused_with_what_is_allowed(spec):
    with pytest.raises(Exception, match=rf"--shard '{re.escape(spec)}': expected K/N with 0 <= K < N"):
        mutate.shard(spec)


def _results(path, *outcomes: tuple[int, str]):
    mutants = [dataclasses.asdict(mutate.Mutant("t.py", i, 1, "f", "a", "b", outcome)) for i, outcome in outcomes]
    path.write_text(json.dumps({"mutants": mutants}))
    return path


def test_the_shards_results_are_scored_together_each_mutant_once(tmp_path):
    one = _results(tmp_path / "0.json", (0, "killed"), (2, "survived"))
    two = _results(tmp_path / "1.json", (1, "timeout"), (2, "survived"))
    assert mutate.summary(mutate.combined([one, two])).splitlines() == [
        "t.py: 2/3 killed (66.7%)", "total: 2/3 killed (66.7%)"]


def test_two_results_disagreeing_about_a_mutant_are_refused(tmp_path):
    one = _results(tmp_path / "0.json", (4, "killed"))
    two = _results(tmp_path / "1.json", (4, "survived"))
    with pytest.raises(SystemExit, match="t.py mutant 4: killed in one file, survived in .*1.json"):
        mutate.combined([one, two])


def test_only_takes_the_mutant_indexes_as_list_numbers_them():
    assert mutate.indexes("3,17,0") == (3, 17, 0)


@pytest.mark.parametrize("spec", ["", "a", "3,,4", "-1", "2,-5"])
def test_only_refuses_anything_but_indexes_with_what_is_allowed(spec):
    with pytest.raises(Exception, match=rf"--only {re.escape(repr(spec))}: expected mutant indexes 0 or more"):
        mutate.indexes(spec)


def test_only_beside_survivors_of_is_refused_rather_than_ignored(capsys):
    with pytest.raises(SystemExit):
        mutate.main(["--only", "3", "--survivors-of", "results.json"])
    assert "--only and --survivors-of each choose the mutants to run; give one of them" in capsys.readouterr().err
