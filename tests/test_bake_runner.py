"""The bake's runner (Bake.run, prepare_root, write_marker) in-process, on scripted steps.

tests/test_bake.py bakes for real; these drive the runner itself through the cases a real bake reaches
only slowly or by chance: a resumed step that restarts an earlier one, a lost ready marker, a step that
fails with an unexpected error, the seconds each log line reports (read from a clock the test moves).
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

BAKE = Path(__file__).resolve().parent.parent / "images" / "runtime" / "bake.py"
IDENTITY = "1" * 64


class Clock:
    """bake.time: monotonic time moves only when a step says how long it took."""

    def __init__(self):
        self.now = 500.0

    def monotonic(self) -> float:
        return self.now


@dataclass
class Runner:
    """A Bake whose steps are scripted: each records that it ran, takes `seconds`, and may raise."""

    bake: ModuleType
    root: Path
    clock: Clock
    progress: list[tuple[str, str]] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    raises: dict[str, BaseException] = field(default_factory=dict)

    def new(self):
        runner = self.bake.Bake({}, self.root, IDENTITY, out=io.StringIO(), err=io.StringIO())
        runner.steps = [self.bake.Step(name, self._step(name), restart_from=restart)
                        for name, restart in (("webui", None), ("venv", None), ("torch", "venv"))]
        runner.steps.append(self.bake.Step("ready", self._step("ready", then=runner.write_marker)))
        return runner

    def _step(self, name: str, then=lambda: None):
        def run() -> None:
            self.ran.append(name)
            self.clock.now += self.seconds.get(name, 0.0)
            if name in self.raises:
                raise self.raises[name]
            then()
        return run


@pytest.fixture
def scripted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Runner:
    spec = importlib.util.spec_from_file_location("bake_runner", BAKE)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    clock = Clock()
    monkeypatch.setattr(module, "time", clock)
    scripted = Runner(module, tmp_path / "runtime", clock)
    monkeypatch.setattr(module, "report_progress", lambda cmd, step, status, err: scripted.progress.append(
        (step, status)))
    return scripted


def log_of(runner) -> list[dict]:
    return [json.loads(line) for line in runner.out.getvalue().splitlines()]


def test_each_step_reports_running_before_it_runs(scripted: Runner):
    assert scripted.new().run() == 0

    assert scripted.progress == [(step, status) for step in ("webui", "venv", "torch", "ready")
                                 for status in ("running", "done")]


def test_each_done_step_logs_the_seconds_it_took(scripted: Runner):
    scripted.seconds.update(webui=3.0, venv=4.5)
    runner = scripted.new()

    assert runner.run() == 0

    assert [(line["step"], line["seconds"]) for line in log_of(runner)] == [
        ("webui", 3.0), ("venv", 4.5), ("torch", 0.0), ("ready", 0.0)]


def test_a_failed_step_logs_the_seconds_it_took(scripted: Runner):
    scripted.seconds["venv"] = 2.5
    scripted.raises["venv"] = OSError("disk full")
    runner = scripted.new()

    assert runner.run() == 1

    assert log_of(runner)[-1] == {"step": "venv", "status": "failed", "seconds": 2.5, "reason": "OSError: disk full"}


def test_an_unexpected_error_prints_its_traceback_to_the_bakes_stderr(scripted: Runner, capsys):
    scripted.raises["venv"] = ValueError("a bug in the bake")
    runner = scripted.new()

    assert runner.run() == 1

    err = runner.err.getvalue()
    assert "Traceback (most recent call last)" in err and "ValueError: a bug in the bake" in err
    assert err.endswith("bake failed at venv: ValueError: a bug in the bake\n")
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("error", [lambda bake: OSError("disk full"), lambda bake: bake.BakeError("pip refused")],
                         ids=["OSError", "BakeError"])
def test_an_expected_error_is_one_line_without_a_traceback(scripted: Runner, error):
    scripted.raises["venv"] = error(scripted.bake)
    runner = scripted.new()

    assert runner.run() == 1

    assert "Traceback" not in runner.err.getvalue()


def test_a_rerun_logs_finished_steps_as_kept_in_no_time(scripted: Runner):
    scripted.raises["torch"] = OSError("disk full")
    assert scripted.new().run() == 1
    del scripted.raises["torch"]
    runner = scripted.new()

    assert runner.run() == 0

    assert log_of(runner)[0] == {"step": "webui", "status": "kept", "seconds": 0.0}


def test_a_step_that_restarts_from_an_earlier_one_reruns_that_one_on_resume(scripted: Runner):
    scripted.raises["torch"] = OSError("disk full")
    assert scripted.new().run() == 1
    del scripted.raises["torch"]
    scripted.ran.clear()

    assert scripted.new().run() == 0

    assert scripted.ran == ["venv", "torch", "ready"]


def test_a_lost_ready_marker_is_written_again_by_a_rerun(scripted: Runner):
    assert scripted.new().run() == 0
    (scripted.root / ".sd-runtime-ready").unlink()
    scripted.ran.clear()

    assert scripted.new().run() == 0

    assert scripted.ran == ["ready"]
    assert (scripted.root / ".sd-runtime-ready").read_text() == IDENTITY + "\n"


def test_a_marked_tree_of_this_identity_logs_unchanged_in_no_time(scripted: Runner):
    assert scripted.new().run() == 0
    runner = scripted.new()

    assert runner.run() == 0

    assert log_of(runner) == [{"step": "ready", "status": "unchanged", "seconds": 0.0}]


def test_a_root_whose_parents_do_not_exist_yet_is_created(scripted: Runner):
    scripted.root = scripted.root / "mnt" / "disks" / "runtime"

    assert scripted.new().run() == 0

    assert (scripted.root / ".sd-runtime-ready").is_file()


def test_a_refused_root_names_its_first_five_foreign_entries(scripted: Runner):
    scripted.root.mkdir()
    for name in ("f", "e", "d", "c", "b", "a"):
        (scripted.root / name).write_text("keep me")
    runner = scripted.new()

    assert runner.run() == 1

    assert log_of(runner)[-1]["reason"] == (
        f"root {scripted.root} holds a, b, c, d, e and no bake state; "
        "expected an empty directory or a tree this script baked")
    assert scripted.ran == []
