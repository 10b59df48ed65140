"""Asynchronous jobs from the command line: submit a file of prompts, wait for the batch, get the results.

    python -m tools.jobs submit prompts.jsonl --topic projects/P/topics/sd-jobs --bucket B
    python -m tools.jobs wait prompts.batch.json
    python -m tools.jobs get prompts.batch.json --out results/

The prompt file is JSON lines, one txt2img payload per line (at least "prompt"; the fields allowed are
images/queue-agent/queue_agent/contract.py TXT2IMG_FIELDS). The whole file is checked before anything
is published, so a bad line publishes nothing. Job ids come from the file's content (batch id = its
sha256, job id = batch id + line number): submitting the same file again after a failed publish
re-sends the same jobs, and the agent acks those whose result exists without generating them again.
`pulumi stack output jobs_topic` and `results_bucket` name the topic and the bucket; the Google client
libraries honour PUBSUB_EMULATOR_HOST and STORAGE_EMULATOR_HOST.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "images" / "queue-agent"))

from queue_agent import contract  # noqa: E402


class UsageError(Exception):
    """Input the client refuses, with every problem found."""


def read_prompts(path: Path) -> list[dict[str, Any]]:
    """Every payload of a JSON-lines file, or UsageError naming each bad line (blank lines are skipped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"{path}: cannot read it: {err}") from None
    payloads, problems = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            payloads.append(contract.check_payload(json.loads(line)))
        except json.JSONDecodeError as err:
            problems.append(f"{path}:{number}: not a JSON object on one line (JSON lines): {err.msg}")
        except contract.JobError as err:
            problems.append(f"{path}:{number}: {err}")
    if not payloads and not problems:
        problems.append(f"{path}: no prompts; expected one JSON object per line")
    if problems:
        raise UsageError(f"{len(problems)} problem(s), nothing submitted:\n" + "\n".join(f"  - {p}" for p in problems))
    return payloads


def batch_of(path: Path, payloads: list[dict[str, Any]], topic: str, bucket: str) -> dict[str, Any]:
    batch_id = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return {"batch_id": batch_id, "topic": topic, "bucket": bucket,
            "jobs": [{"job_id": f"{batch_id}-{i:05d}", "payload": p} for i, p in enumerate(payloads)]}


def submit(path: Path, topic: str, bucket: str, manifest: Path, publisher: Any) -> dict[str, Any]:
    """Check the file, write the batch manifest, then publish every job; UsageError lists what failed."""
    batch = batch_of(path, read_prompts(path), topic, bucket)
    manifest.write_text(json.dumps(batch, indent=2))
    futures = [(job["job_id"], publisher.publish(topic, json.dumps(job["payload"]).encode(),
                                                 job_id=job["job_id"], batch_id=batch["batch_id"]))
               for job in batch["jobs"]]
    failed = []
    for job_id, future in futures:
        try:
            future.result(timeout=60)
        except Exception as err:  # noqa: BLE001 - reported per job below
            failed.append(f"{job_id}: {err}")
    if failed:
        raise UsageError(f"{len(failed)} of {len(futures)} job(s) not published (run the same submit again: "
                         "jobs already published are not generated twice):\n" + "\n".join(f"  - {f}" for f in failed))
    return batch


def done_jobs(storage_client: Any, batch: dict[str, Any]) -> set[str]:
    """Jobs of the batch whose result is committed (one listing of the batch's prefix)."""
    names = (blob.name for blob in storage_client.list_blobs(batch["bucket"], prefix=batch["batch_id"] + "-"))
    return {name.split("/", 1)[0] for name in names if name.endswith("/" + contract.RESULT)}


def progress(done: int, total: int, width: int = 30) -> str:
    filled = width * done // total if total else width
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


def wait(batch: dict[str, Any], storage_client: Any, timeout: float, interval: float,
         show: Callable[[str], None], clock: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep) -> set[str]:
    """Poll until every job has a result or `timeout` passes; the jobs still missing."""
    wanted = {job["job_id"] for job in batch["jobs"]}
    deadline = clock() + timeout
    while True:
        missing = wanted - done_jobs(storage_client, batch)
        show(progress(len(wanted) - len(missing), len(wanted)))
        if not missing or clock() >= deadline:
            return missing
        sleep(interval)


def get(batch: dict[str, Any], storage_client: Any, out: Path) -> int:
    """Download each finished job's result.json and images into out/<job_id>/; how many jobs."""
    bucket = storage_client.bucket(batch["bucket"])
    count = 0
    for job_id in sorted(done_jobs(storage_client, batch)):
        result = json.loads(bucket.blob(contract.result_name(job_id)).download_as_bytes())
        target = out / job_id
        target.mkdir(parents=True, exist_ok=True)
        (target / contract.RESULT).write_text(json.dumps(result, indent=2))
        for index, name in enumerate(result["images"]):
            (target / f"{index}.png").write_bytes(bucket.blob(name).download_as_bytes())
        count += 1
    return count


def _load_batch(path: Path) -> dict[str, Any]:
    try:
        batch = json.loads(path.read_text())
        assert {"batch_id", "bucket", "jobs"} <= set(batch)
        return batch
    except (OSError, ValueError, AssertionError, TypeError):
        raise UsageError(f"{path}: not a batch file written by `submit`") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.jobs", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser("submit", help="check a JSON-lines prompt file and publish one job per line")
    sub.add_argument("prompts", type=Path)
    sub.add_argument("--topic", required=True, help="projects/P/topics/T (pulumi stack output jobs_topic)")
    sub.add_argument("--bucket", required=True, help="the results bucket (pulumi stack output results_bucket)")
    sub.add_argument("--batch", type=Path, help="where to write the batch file (default: PROMPTS.batch.json)")
    for name, text in (("wait", "wait for a batch's results, with a progress bar"),
                       ("get", "download a batch's results")):
        command = commands.add_parser(name, help=text)
        command.add_argument("batch", type=Path)
    commands.choices["wait"].add_argument("--timeout", type=float, default=3600.0)
    commands.choices["wait"].add_argument("--interval", type=float, default=5.0)
    commands.choices["get"].add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except UsageError as err:
        print(f"jobs: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "submit":
        read_prompts(args.prompts)  # refuse bad input before any client is made
        from google.cloud import pubsub_v1

        manifest = args.batch or args.prompts.with_suffix(".batch.json")
        batch = submit(args.prompts, args.topic, args.bucket, manifest, pubsub_v1.PublisherClient())
        print(f"submitted {len(batch['jobs'])} job(s), batch {batch['batch_id']}: {manifest}")
        return 0
    batch = _load_batch(args.batch)
    from google.cloud import storage

    client = storage.Client()
    if args.command == "wait":
        missing = wait(batch, client, args.timeout, args.interval,
                       lambda line: print("\r" + line, end="", file=sys.stderr, flush=True))
        print(file=sys.stderr)
        if missing:
            print(f"{len(missing)} job(s) without a result after {args.timeout:g}s (failed jobs are in the "
                  "dead-letter topic with their reason): " + ", ".join(sorted(missing)[:10]), file=sys.stderr)
            return 1
        return 0
    print(f"downloaded {get(batch, client, args.out)} result(s) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
