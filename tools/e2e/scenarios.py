"""The scenarios (spike, steady, batch mix, overload): each starts its own processes, drives its load and
checks its result against its criteria."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.fakes.storage import FakeStorage
from tests.jobs.harness import Queue, pubsub_emulator, wait_until
from tools import loadtest
from tools.e2e.load import Run, drive
from tools.e2e.measures import ideal_p99, longest_idle_gap, overheads, served
from tools.e2e.processes import Processes, demand
from tools.sim.stats import percentile

STARTUP_SECONDS = 60.0
RATIO_LIMIT = 1.10  # p99 within 10% of the ideal shared queue
GAP_LIMIT_S = 1.0  # a pod starts its next generation within 1 s of ending one while work waits
OVERHEAD_LIMIT_S = 0.050  # the path's own overhead per request, p50, on loopback


@dataclass(frozen=True)
class Settings:
    generation_s: float = 0.3
    pods: int = 2
    stagger_s: float = 2.0
    spike_requests: int = 100
    steady_requests: int = 100
    steady_load: float = 0.6
    batch_jobs: int = 1000
    mixed_requests: int = 60
    max_depth: int = 10
    overload_requests: int = 40
    seed: int = 17

    @property
    def steady_rate(self) -> float:
        """Requests per second that keep `pods` pods busy `steady_load` of the time."""
        return self.steady_load * self.pods / self.generation_s


@dataclass
class Check:
    key: str  # what tests/test_e2e.py asserts on
    criterion: str
    measured: str
    ok: bool


@dataclass
class Result:
    scenario: str
    n: int
    errors: int
    p50: float | None
    p99: float | None
    ideal_p99: float | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        return None if not self.ideal_p99 or self.p99 is None else self.p99 / self.ideal_p99

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    def check(self, key: str) -> Check:
        (found,) = [check for check in self.checks if check.key == key]
        return found


def _result(scenario: str, run: Run, ideal: float | None = None) -> Result:
    latencies = run.latencies
    return Result(scenario, len(run.outcomes), run.errors,
                  percentile(latencies, 50) if latencies else None,
                  percentile(latencies, 99) if latencies else None, ideal)


def _ratio_check(result: Result) -> Check:
    ratio = result.ratio
    return Check("ratio", f"p99 <= {RATIO_LIMIT:.2f} x ideal", "n/a" if ratio is None else f"{ratio:.3f}",
                 ratio is not None and ratio <= RATIO_LIMIT)


def _errors_check(run: Run, key: str = "errors", criterion: str = "0 errors") -> Check:
    kinds = sorted({o.error for o in run.outcomes if o.error is not None})
    return Check(key, criterion, f"{run.errors}" + (f" ({', '.join(kinds)})" if kinds else ""), run.errors == 0)


def spike(settings: Settings, workdir: Path) -> Result:
    with Processes(workdir / "spike", settings.generation_s) as processes:
        client_url, workers_url = processes.request_queue(max_depth=settings.spike_requests)
        runs: list[Run] = []
        sender = threading.Thread(target=lambda: runs.append(drive(client_url, settings.spike_requests)))
        sender.start()
        wait_until(lambda: demand(workers_url)["waiting"] == settings.spike_requests,
                   what="the spike to be queued", timeout=STARTUP_SECONDS)
        for pod in range(settings.pods):
            if pod:
                time.sleep(settings.stagger_s)  # the pods' staggered starts are the scenario itself
            processes.pod(workers_url)
        sender.join()
        generations = processes.generations()
    run = runs[0]
    result = _result("spike", run, ideal_p99(run, generations) if run.latencies else None)
    gap = longest_idle_gap(run, generations)
    split = "/".join(str(sum(g["tag"] is not None for g in log)) for log in generations)
    result.checks = [_errors_check(run),
                     Check("gap", f"idle gap while work waits <= {GAP_LIMIT_S:g} s",
                           f"{gap:.3f} s (split {split})", gap <= GAP_LIMIT_S),
                     _ratio_check(result)]
    return result


@contextmanager
def ready_pods(settings: Settings, workdir: Path, batch_env: dict[str, str] | None = None,
               max_depth: int | None = None) -> Iterator[tuple[str, Processes]]:
    """The request queue with `settings.pods` pods registered; its client URL."""
    with Processes(workdir, settings.generation_s) as processes:
        client_url, workers_url = processes.request_queue(max_depth=max_depth or settings.steady_requests)
        for _ in range(settings.pods):
            processes.pod(workers_url, batch_env)
        wait_until(lambda: demand(workers_url)["workers"] == settings.pods,
                   what="every pod's worker to register", timeout=STARTUP_SECONDS)
        yield client_url, processes


def steady(settings: Settings, workdir: Path) -> Result:
    arrivals = loadtest.poisson_arrivals(settings.steady_requests, settings.steady_rate, settings.seed)
    with ready_pods(settings, workdir / "steady") as (client_url, processes):
        run = drive(client_url, settings.steady_requests, arrivals)
        generations = processes.generations()
    result = _result(f"steady ({settings.steady_load:.0%} of {settings.pods} pods)", run,
                     ideal_p99(run, generations) if run.latencies else None)
    extra = overheads(run, generations)
    overhead = percentile(extra, 50) if extra else None
    result.checks = [_errors_check(run), _ratio_check(result),
                     Check("overhead", f"path overhead p50 <= {OVERHEAD_LIMIT_S * 1000:g} ms",
                           "n/a" if overhead is None else f"{overhead * 1000:.1f} ms",
                           overhead is not None and overhead <= OVERHEAD_LIMIT_S)]
    return result


def batch_mix(settings: Settings, workdir: Path) -> Result:
    """Interactive load with 1,000 batch jobs queued, against the same arrivals with none."""
    arrivals = loadtest.poisson_arrivals(settings.mixed_requests, settings.steady_rate, settings.seed + 1)
    with ready_pods(settings, workdir / "no-batch") as (client_url, _):
        alone = drive(client_url, settings.mixed_requests, arrivals)
    with ExitStack() as stack:
        emulator = stack.enter_context(pubsub_emulator())
        bucket = stack.enter_context(FakeStorage(buckets=("results",)))
        queue = Queue(max_attempts=5, ack_deadline_seconds=60)
        futures = [queue.publisher.publish(queue.topic, json.dumps({"prompt": f"batch {i}"}).encode(),
                                           job_id=f"batch-{i:04d}", batch_id="e2e")
                   for i in range(settings.batch_jobs)]
        for future in futures:
            future.result(timeout=60)
        batch_env = {"PUBSUB_EMULATOR_HOST": emulator, "STORAGE_EMULATOR_HOST": bucket.url,
                     "JOBS_SUBSCRIPTION": queue.subscription, "JOBS_COMPLETIONS_TOPIC": queue.completions_topic,
                     "JOBS_DEAD_LETTER_TOPIC": queue.dead_letter_topic, "JOBS_BUCKET": "results",
                     "JOBS_MAX_ATTEMPTS": "5", "JOBS_ACK_DEADLINE_SECONDS": "60",
                     "JOBS_STORAGE_RETRY_SECONDS": "1", "JOBS_DRAIN_SECONDS": "1"}
        with ready_pods(settings, workdir / "batch", batch_env) as (client_url, _):
            wait_until(lambda: _batch_results(bucket) > 0, what="the first batch result", timeout=STARTUP_SECONDS)
            mixed = drive(client_url, settings.mixed_requests, arrivals)
            batch_done = _batch_results(bucket)
    result = _result(f"batch mix ({settings.batch_jobs} queued)", mixed)
    p95_alone, p95_mixed = (percentile(run.latencies, 95) if run.latencies else None for run in (alone, mixed))
    slower = None if p95_alone is None or p95_mixed is None else p95_mixed - p95_alone
    result.checks = [_errors_check(mixed), _errors_check(alone, "errors without batch", "0 errors without batch"),
                     Check("batch p95", f"p95 - p95 without batch <= {settings.generation_s:g} s",
                           "n/a" if slower is None else f"{p95_mixed:.2f} - {p95_alone:.2f} = {slower:+.2f} s",
                           slower is not None and slower <= settings.generation_s),
                     Check("batch progress", "the batch progresses", f"{batch_done} of {settings.batch_jobs} done",
                           0 < batch_done < settings.batch_jobs)]
    return result


def _batch_results(bucket) -> int:
    return sum(1 for (_, name) in bucket.creates if name.endswith("/result.json"))


def overload(settings: Settings, workdir: Path) -> Result:
    with ready_pods(settings, workdir / "overload", max_depth=settings.max_depth) as (client_url, processes):
        run = drive(client_url, settings.overload_requests)
        generated = sorted(int(tag) for tag in served(processes.generations()))
    refused = [o for o in run.outcomes if o.status == 429]
    accepted = [o for o in run.outcomes if o.status != 429]
    failed = [o for o in accepted if o.error is not None]
    slowest_refusal = max((o.latency_s for o in refused), default=None)
    capacity = settings.max_depth + settings.pods
    result = _result(f"overload (maxDepth {settings.max_depth})", run)
    result.errors = len(failed)
    result.checks = [
        Check("refused", f"the excess over {capacity} gets 429", f"{len(refused)} of {len(run.outcomes)} refused",
              len(refused) >= len(run.outcomes) - capacity and len(refused) > 0),
        Check("refused at once", f"429 within {settings.generation_s:g} s",
              "n/a" if slowest_refusal is None else f"{slowest_refusal:.3f} s",
              slowest_refusal is not None and slowest_refusal <= settings.generation_s),
        Check("accepted served", "every accepted request succeeds", f"{len(accepted) - len(failed)} of {len(accepted)}",
              not failed),
        Check("generated once", "each accepted one generated once, no refused one",
              f"{len(generated)} generations", generated == sorted(o.index for o in accepted)),
    ]
    return result


SCENARIOS = (spike, steady, batch_mix, overload)
