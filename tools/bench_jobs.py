"""Benchmark: the queue agent's throughput and the fault matrix, against the real Pub/Sub emulator.

    python -m tools.bench_jobs [--jobs 200] [--generation 0.2] [--pods 1] [--fault-jobs 200]

Throughput: `--jobs` jobs wait in the queue; `--pods` pods (a `python -m queue_agent` process beside a
stand-in WebUI that takes exactly `--generation` seconds per image, one at a time, like WebUI) work
them. Reported: jobs per second per pod against the stand-in's own limit (1 / generation), and the
agent's overhead per job (wall time per job minus the generation). The clock runs from the first
generation to the last committed result, so start-up and readiness are not counted.
Fault matrix: `--fault-jobs` jobs through tests/jobs/harness.py's FaultPlan (an agent SIGKILLed and one
SIGTERMed mid-run, WebUI and bucket failures, duplicate publishes, jobs that fail every attempt or that
no attempt can run); reported: submitted, completed, dead-lettered, duplicated (must be 0), lost (must be 0).
Needs the Google Cloud CLI's Pub/Sub emulator (gcloud beta emulators pubsub). Writes build/bench/jobs.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tests.jobs import harness

ROOT = Path(__file__).resolve().parent.parent


def throughput(jobs: int, generation: float, pods: int) -> dict:
    queue = harness.Queue(max_attempts=5, ack_deadline_seconds=60)
    with harness.FakeStorage(buckets=("results",)) as bucket, harness.ExitStackOf() as stack:
        webuis = [stack.enter(harness.FakeWebui(auth=harness.AUTH, generation_seconds=generation, model_loaded=True,
                                                image=harness.PNG)) for _ in range(pods)]
        for i in range(jobs):
            queue.publish(f"job-{i:04d}", {"prompt": f"prompt {i}", "seed": i})
        warmups = [len(w.txt2img_payloads) for w in webuis]
        for webui in webuis:
            stack.process(harness.agent_process(queue.settings("results", webui_url=webui.url), bucket.url))
        harness.wait_until(lambda: any(len(w.served) > 1 for w in webuis), timeout=120, what="the first job")
        start = time.monotonic()

        def results() -> int:
            return sum(1 for (_, name) in bucket.creates if name.endswith("/result.json"))

        harness.wait_until(lambda: results() == jobs, timeout=jobs * generation * 4 / pods + 120, what="every result")
        elapsed = time.monotonic() - start
        generated = sum(len(w.txt2img_payloads) for w in webuis) - sum(warmups) - pods  # minus readiness checks
    per_pod = jobs / elapsed / pods
    return {"jobs": jobs, "pods": pods, "generation_seconds": generation, "elapsed_seconds": round(elapsed, 2),
            "jobs_per_second_per_pod": round(per_pod, 3), "stand_in_limit_per_second": round(1 / generation, 3),
            "efficiency": round(per_pod * generation, 3),
            "agent_overhead_ms_per_job": round((1 / per_pod - generation) * 1000, 1),
            "generations": generated}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--generation", type=float, default=0.2)
    parser.add_argument("--pods", type=int, default=1)
    parser.add_argument("--fault-jobs", type=int, default=200)
    args = parser.parse_args(argv)
    with harness.pubsub_emulator():
        speed = throughput(args.jobs, args.generation, args.pods)
        print(f"throughput: {speed['jobs']} jobs, {speed['pods']} pod(s), {speed['generation_seconds']} s per "
              f"generation: {speed['jobs_per_second_per_pod']} jobs/s per pod against the stand-in's "
              f"{speed['stand_in_limit_per_second']} ({speed['efficiency']:.0%}); agent overhead "
              f"{speed['agent_overhead_ms_per_job']} ms per job")
        ledger = harness.run_fault_matrix(harness.FaultPlan(jobs=args.fault_jobs, doomed=5, refused=5, duplicates=20,
                                                            kill_after=args.fault_jobs // 4))
        counts = ledger.counts()
        print("fault matrix: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    out = ROOT / "build" / "bench" / "jobs.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"throughput": speed, "fault_matrix": counts}, indent=2))
    return 0 if counts["duplicated"] == 0 and counts["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
