"""Proof with real processes (issue 17 item 5): the request queue, workers and stand-in WebUIs on loopback,
driven by tools/loadtest.py, measured against the ideal shared queue (tools/sim/ideal.py).

    python -m tools.e2e [--generation-seconds 0.3] [--json out.json]      (make e2e)

Every scenario starts its own processes: the real request queue (`python -m request_queue`,
images/request-queue), and per pod a stand-in WebUI (tools/standin_webui.py: one FIFO generation lock, as
WebUI v1.10.1's queue_lock) with the real worker beside it (`python -m queue_agent` with QUEUE_FRONT_URL,
images/queue-agent), started as components/worker.py starts it. The batch scenario adds the real Pub/Sub
emulator and the jobs queue of tests/jobs/harness.py. Generation times are scaled down so a run fits in
minutes; every criterion is relative to them.

- spike: 100 requests at once with no pod; pod A starts at once, pod B `stagger` seconds later. 0 errors;
  while a request waits, each pod starts its next generation within 1 s of ending one (the stand-ins'
  own logs); p99 within 10% of the ideal shared queue fed with the recorded ready times and durations.
- steady: Poisson arrivals at 60% of 2 ready pods: p99 within 10% of the ideal on the same arrivals; the
  path's own overhead (latency - X-Queue-Wait - generation) p50 at most 50 ms.
- batch: the same kind of interactive load while 1,000 batch jobs wait on Pub/Sub, against the same
  arrivals with no batch: p95 within one generation time.
- overload: more requests at once than 2 pods and QUEUE_MAX_DEPTH hold: the excess gets 429 within one
  generation time, every accepted request succeeds.
Exit 0 when every criterion holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as `python tools/e2e.py`
    sys.path.insert(0, str(ROOT))

from tests.fakes.storage import FakeStorage  # noqa: E402
from tests.jobs.harness import Queue, pubsub_emulator, wait_until  # noqa: E402
from tools import loadtest  # noqa: E402
from tools.sim.ideal import ideal_latencies  # noqa: E402
from tools.sim.stats import percentile  # noqa: E402

QUEUE_ROOT = ROOT / "images" / "request-queue"
AGENT_ROOT = ROOT / "images" / "queue-agent"
AUTH = "sd:secret"
STARTUP_SECONDS = 60.0
RATIO_LIMIT = 1.10  # p99 within 10% of the ideal shared queue
GAP_LIMIT_S = 1.0  # a pod starts its next generation within 1 s of ending one while work waits
OVERHEAD_LIMIT_S = 0.050  # the path's own overhead per request, p50, on loopback


def queue_settings(max_depth: int) -> dict[str, str]:
    """The request queue's environment here: loopback, no Gateway in front (the peer is the caller)."""
    return {"QUEUE_MAX_DEPTH": str(max_depth), "QUEUE_MAX_WAIT_SECONDS": "120", "GENERATION_TIMEOUT_SECONDS": "30",
            "MARGIN_SECONDS": "5", "UI_KEEPALIVE_SECONDS": "300", "WORKER_TTL_SECONDS": "60", "DRAIN_SECONDS": "5",
            "FORWARDED_FOR_ENTRIES": "0", "HTTP_PORT": "0", "WORKER_PORT": "0", "SD_API_AUTH": AUTH}


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


# --- processes -----------------------------------------------------------------------------------

def _listening(process: subprocess.Popen, what: str, log: Path) -> dict:
    """The `{"event": "listening", ...}` line a process prints once it serves."""
    line = process.stdout.readline()
    if not line:
        process.wait(timeout=10)
        raise RuntimeError(f"{what} did not start (exit {process.returncode}); see {log}")
    return json.loads(line)


class Processes:
    """Everything one scenario started, stopped (SIGTERM, then SIGKILL) on exit; logs in `workdir`."""

    def __init__(self, workdir: Path, generation_s: float):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.generation_s = generation_s
        self.started: list[subprocess.Popen] = []
        self.logs: list = []
        self.webui_logs: list[Path] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.started:
            if process.poll() is None:
                process.terminate()
        for process in self.started:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self.logs:
            log.close()

    def _spawn(self, name: str, argv: list[str], cwd: Path, env: dict[str, str], listens: bool
               ) -> tuple[subprocess.Popen, Path]:
        """Output to `<name>.log`; stdout piped only for a process that prints its `listening` line."""
        path = self.workdir / f"{name}.log"
        log = path.open("w")
        self.logs.append(log)
        process = subprocess.Popen(argv, cwd=cwd, env={"PATH": os.environ.get("PATH", ""), **env},
                                   stdout=subprocess.PIPE if listens else log, stderr=log, text=True)
        self.started.append(process)
        return process, path

    def request_queue(self, max_depth: int) -> tuple[str, str]:
        """The real request queue; (client URL, workers URL)."""
        env = {"PYTHONPATH": str(QUEUE_ROOT), **queue_settings(max_depth)}
        process, log = self._spawn("request-queue", [sys.executable, "-m", "request_queue"], QUEUE_ROOT, env,
                                    listens=True)
        ports = _listening(process, "the request queue", log)
        return f"http://127.0.0.1:{ports['http_port']}", f"http://127.0.0.1:{ports['worker_port']}"

    def pod(self, workers_url: str, batch_env: dict[str, str] | None = None) -> None:
        """A stand-in WebUI and the real worker beside it, as components/worker.py runs them."""
        index = len(self.webui_logs)
        generations = self.workdir / f"webui-{index}.jsonl"
        generations.touch()
        self.webui_logs.append(generations)
        webui, log = self._spawn(f"webui-{index}", [
            sys.executable, "-m", "tools.standin_webui", "--generation-seconds", str(self.generation_s),
            "--log", str(generations), "--auth", AUTH], ROOT, {"PYTHONPATH": str(ROOT)}, listens=True)
        port = _listening(webui, f"stand-in WebUI {index}", log)["port"]
        env = {"PYTHONPATH": str(AGENT_ROOT), "QUEUE_FRONT_URL": workers_url, "POD_NAME": f"pod-{index}",
               "POD_IP": "127.0.0.1", "SD_API_URL": f"http://127.0.0.1:{port}", "SD_API_AUTH": AUTH,
               **(batch_env or {})}
        self._spawn(f"worker-{index}", [sys.executable, "-W", "ignore", "-m", "queue_agent"], AGENT_ROOT, env,
                    listens=False)

    def generations(self) -> list[list[dict]]:
        """Each pod's generations, in the order it ran them (the first, untagged, is the worker's warm-up)."""
        return [[json.loads(line) for line in path.read_text().splitlines() if line.strip()]
                for path in self.webui_logs]


def demand(workers_url: str) -> dict:
    with urllib.request.urlopen(f"{workers_url}/v1/demand", timeout=5) as response:
        return json.loads(response.read())


# --- measurements --------------------------------------------------------------------------------

@dataclass
class Run:
    """One loadtest run: its outcomes, on the same clock (time.monotonic) as the stand-ins' logs."""

    started: float  # read just before loadtest.run reads its own (outcomes' started_s count from that)
    outcomes: list[loadtest.Outcome]

    def arrival(self, outcome: loadtest.Outcome) -> float:
        return self.started + outcome.started_s

    @property
    def latencies(self) -> list[float]:
        return [o.latency_s for o in self.outcomes if o.error is None]

    @property
    def errors(self) -> int:
        return sum(o.error is not None for o in self.outcomes)


def drive(url: str, requests: int, arrivals: tuple[float, ...] = ()) -> Run:
    """tools/loadtest.py against the request queue; every request in flight at once (arrivals pace them)."""
    plan = loadtest.Plan(loadtest.endpoint(url), requests, requests, AUTH, dict(loadtest.DEFAULT_PAYLOAD),
                         timeout_s=120.0, deadline_s=600.0, arrivals_s=arrivals)
    started = time.monotonic()
    return Run(started, loadtest.run(plan))


def ready_times(generations: list[list[dict]]) -> list[float]:
    """When each pod could first serve: the end of its worker's warm-up generation (the first, untagged)."""
    times = []
    for pod, log in enumerate(generations):
        warm_up = next((g for g in log if g["tag"] is None), None)
        if warm_up is None:
            raise RuntimeError(f"pod {pod} never ran its warm-up generation")
        times.append(warm_up["end"])
    return times


def served(generations: list[list[dict]]) -> dict[str, dict]:
    """Each tagged generation by its X-Loadtest-Request tag."""
    return {g["tag"]: g for log in generations for g in log if g["tag"] is not None}


def ideal_p99(run: Run, generations: list[list[dict]]) -> float:
    """p99 of the ideal shared queue fed with this run's arrivals, ready times and generation durations."""
    by_tag = served(generations)
    answered = [o for o in run.outcomes if str(o.index) in by_tag]
    durations = [by_tag[str(o.index)]["end"] - by_tag[str(o.index)]["start"] for o in answered]
    latencies = ideal_latencies([run.arrival(o) for o in answered], durations, ready_times(generations))
    return percentile(latencies, 99)


def longest_idle_gap(run: Run, generations: list[list[dict]]) -> float:
    """The longest a pod stayed idle after a generation while a request of the run was waiting
    (arrived and not yet started anywhere): the dispatch's own delay."""
    by_tag = served(generations)
    waiting = [(run.arrival(o), by_tag[str(o.index)]["start"]) for o in run.outcomes if str(o.index) in by_tag]
    longest = 0.0
    for log in generations:
        for ended, following in zip(log, log[1:], strict=False):
            work_waited = any(arrived <= ended["end"] < started for arrived, started in waiting)
            if work_waited:
                longest = max(longest, following["start"] - ended["end"])
    return longest


def overheads(run: Run, generations: list[list[dict]]) -> list[float]:
    """Per request: latency - wait in the buffer (X-Queue-Wait) - its generation: what the path itself adds."""
    by_tag = served(generations)
    return [o.latency_s - o.queue_wait_s - (by_tag[str(o.index)]["end"] - by_tag[str(o.index)]["start"])
            for o in run.outcomes if o.error is None and o.queue_wait_s is not None and str(o.index) in by_tag]


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


# --- scenarios -----------------------------------------------------------------------------------

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


# --- report --------------------------------------------------------------------------------------

COLUMNS = ("scenario", "n", "errors", "p50 s", "p99 s", "ideal p99 s", "ratio", "criterion", "measured", "pass")


def _figure(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(results: list[Result]) -> str:
    """One Markdown table: a row per criterion, the scenario's figures on its first row."""
    rows = [COLUMNS, ("---",) * len(COLUMNS)]
    for result in results:
        for i, check in enumerate(result.checks):
            figures = (result.scenario, str(result.n), str(result.errors), _figure(result.p50), _figure(result.p99),
                       _figure(result.ideal_p99), _figure(result.ratio, 3)) if i == 0 else ("",) * 7
            rows.append((*figures, check.criterion, check.measured, "yes" if check.ok else "NO"))
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def run_all(settings: Settings) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="sd-gke-e2e-") as workdir:
        return [scenario(settings, Path(workdir)) for scenario in SCENARIOS]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.e2e", description=__doc__.split("\n\n")[0])
    p.add_argument("--generation-seconds", type=loadtest._positive_float, default=Settings.generation_s)
    p.add_argument("--json", type=Path, help="also write every result as JSON")
    args = p.parse_args(argv)
    settings = Settings(generation_s=args.generation_seconds)
    print(f"generation {settings.generation_s:g} s, {settings.pods} pods", flush=True)
    results = run_all(settings)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps([{**asdict(r), "ratio": r.ratio, "ok": r.ok} for r in results], indent=2) + "\n")
    return 0 if all(result.ok for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
