"""tools/jobs.py: bad input refused whole, submit -> wait -> get against the emulator and a running agent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.cloud import storage

from tests.jobs import harness
from tests.jobs.harness import AgentThread
from tools import jobs

PROMPTS = [{"prompt": "a red fox"}, {"prompt": "a blue whale", "seed": 7}, {"prompt": "a green owl", "batch_size": 2}]


def prompt_file(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


class RecordingPublisher:
    def __init__(self) -> None:
        self.published: list[tuple] = []

    def publish(self, *args, **kwargs):
        self.published.append((args, kwargs))
        raise AssertionError("nothing may be published")


@pytest.mark.parametrize(("line", "message"), [
    ("prompt: a red fox", "prompts.jsonl:2: not a JSON object on one line (JSON lines)"),
    ('{"seed": 1}', "prompts.jsonl:2: prompt: missing"),
    ('{"prompt": "x", "stepz": 1}', "prompts.jsonl:2: stepz: unknown field; allowed fields are"),
    ('{"prompt": "x", "steps": "20"}', 'prompts.jsonl:2: steps: "20" is not allowed; expected an integer'),
    ('["a red fox"]', "prompts.jsonl:2: a job is a JSON object"),
])
def test_a_bad_line_is_named_and_nothing_is_submitted(tmp_path, capsys, line, message):
    path = prompt_file(tmp_path, [json.dumps(PROMPTS[0]), line])
    publisher = RecordingPublisher()
    with pytest.raises(jobs.UsageError, match="nothing submitted") as raised:
        jobs.submit(path, "projects/p/topics/t", "results", tmp_path / "batch.json", publisher)
    assert message in str(raised.value)
    assert publisher.published == [] and not (tmp_path / "batch.json").exists()


def test_the_command_line_reports_bad_input_without_a_traceback(tmp_path, capsys):
    path = prompt_file(tmp_path, ['{"seed": 1}', "not json"])
    assert jobs.main(["submit", str(path), "--topic", "projects/p/topics/t", "--bucket", "results"]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s), nothing submitted" in err and "Traceback" not in err


def test_an_empty_file_is_refused(tmp_path):
    with pytest.raises(jobs.UsageError, match="no prompts"):
        jobs.read_prompts(prompt_file(tmp_path, [""]))


def test_job_ids_come_from_the_file_so_a_second_submit_sends_the_same_jobs(tmp_path):
    path = prompt_file(tmp_path, [json.dumps(p) for p in PROMPTS])
    first = jobs.batch_of(path, jobs.read_prompts(path), "t", "b")
    again = jobs.batch_of(path, jobs.read_prompts(path), "t", "b")
    assert [j["job_id"] for j in first["jobs"]] == [j["job_id"] for j in again["jobs"]]
    assert len({j["job_id"] for j in first["jobs"]}) == 3


def test_the_progress_bar_counts_finished_jobs():
    assert jobs.progress(1, 4, width=8) == "[##......] 1/4"


def test_submit_wait_get_round_trip_through_the_agent(queue, webui, bucket, settings, tmp_path):
    path = prompt_file(tmp_path, [json.dumps(p) for p in PROMPTS])
    batch = jobs.submit(path, queue.topic, "results", tmp_path / "batch.json", queue.publisher)
    client = storage.Client()
    shown: list[str] = []
    with AgentThread(settings):
        assert jobs.wait(batch, client, timeout=60, interval=0.1, show=shown.append) == set()
    assert shown[-1].endswith("3/3")
    assert jobs.get(batch, client, tmp_path / "out") == 3
    owl = tmp_path / "out" / batch["jobs"][2]["job_id"]
    assert json.loads((owl / "result.json").read_text())["payload"] == PROMPTS[2]
    assert sorted(p.name for p in owl.iterdir()) == ["0.png", "1.png", "result.json"]
    assert (owl / "0.png").read_bytes() == harness.PNG


def test_wait_gives_up_after_its_timeout_and_names_what_is_missing(bucket, tmp_path):
    path = prompt_file(tmp_path, [json.dumps(PROMPTS[0])])
    batch = jobs.batch_of(path, jobs.read_prompts(path), "t", "results")
    ticks = iter(range(100))
    missing = jobs.wait(batch, storage.Client(), timeout=3, interval=1, show=lambda _: None,
                        clock=lambda: next(ticks), sleep=lambda _: None)
    assert missing == {batch["jobs"][0]["job_id"]}
