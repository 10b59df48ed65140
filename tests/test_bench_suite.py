"""tools/bench_suite.py: the suite's benchmark counts the mock program's runs in every test process."""

from __future__ import annotations

import json

from tools import bench_suite, mockrun


def test_the_probe_counts_each_run_of_the_mock_program_and_writes_it_at_the_end(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(mockrun, "run", lambda stack, **kwargs: calls.append(stack) or stack)
    monkeypatch.setattr(bench_suite, "_mock_runs", 0)
    monkeypatch.setenv(bench_suite.COUNTS_ENV, str(tmp_path))
    bench_suite.pytest_configure(None)
    assert [mockrun.run("dev"), mockrun.run("prod", overrides={})] == ["dev", "prod"]
    bench_suite.pytest_unconfigure(None)
    assert calls == ["dev", "prod"] and bench_suite.mock_runs(tmp_path) == [2]


def test_without_the_bench_the_probe_leaves_the_program_alone(monkeypatch, tmp_path):
    monkeypatch.delenv(bench_suite.COUNTS_ENV, raising=False)
    program = mockrun.run
    bench_suite.pytest_configure(None)
    bench_suite.pytest_unconfigure(None)
    assert mockrun.run is program


def test_each_test_processs_count_is_read(tmp_path):
    for pid, count in ((11, 0), (12, 9), (13, 4)):
        (tmp_path / f"{pid}.json").write_text(json.dumps({"mock_runs": count}))
    assert bench_suite.mock_runs(tmp_path) == [0, 4, 9]


def test_the_outcome_is_pytests_last_summary_line():
    output = "....\n[gw0] node down\n= 1 failed, 1918 passed, 74 warnings in 470.16s (0:07:50) =\n"
    assert bench_suite.outcome(output) == "1 failed, 1918 passed, 74 warnings in 470.16s (0:07:50)"


def test_a_run_without_a_summary_line_says_so():
    assert bench_suite.outcome("ERROR: usage\n") == "no summary line"
