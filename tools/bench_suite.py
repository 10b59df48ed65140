"""The test suite's cost: wall time, the CPU time of pytest and every process it started, and how
many times the mock program ran in the test processes.

    python -m tools.bench_suite            the suite as `make test` runs it (pytest -n <cores + 2> --dist loadgroup)
    python -m tools.bench_suite --serial   the same tests in one process, as before pytest-xdist

Wall seconds move with whatever else the machine runs, so the load average at the start and the end
is printed beside them; the CPU seconds and the run count do not. Writes build/bench/suite-<mode>.json
and pytest's output beside it (.log).
Timing belongs here, never in a test. Loaded into each test process as a pytest plugin
(`-p tools.bench_suite`), it counts the calls of tools.mockrun.run there; `python -m tools.plan`
started by a test runs the program in a process of its own, which this does not count.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "bench"
COUNTS_ENV = "SDGKE_BENCH_MOCK_RUN_COUNTS"
"""A directory: each test process writes its count of mock-program runs there, one file per process."""
PARALLEL = ("-n", str(len(os.sched_getaffinity(0)) + 2), "--dist", "loadgroup", "--no-loadscope-reorder")
"""As the Makefile's test recipe: two workers more than the cores `nproc` counts (this process's affinity), the
groups handed out in collection order."""
PYTEST = ("-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tools.bench_suite")

_mock_runs = 0


def pytest_configure(config) -> None:
    """Count the mock program's runs in this process, when the bench asked for it."""
    if not os.environ.get(COUNTS_ENV):
        return
    from tools import mockrun

    program = mockrun.run

    def counted(*args, **kwargs):
        global _mock_runs
        _mock_runs += 1
        return program(*args, **kwargs)

    mockrun.run = counted


def pytest_unconfigure(config) -> None:
    out = os.environ.get(COUNTS_ENV)
    if out:
        (Path(out) / f"{os.getpid()}.json").write_text(json.dumps({"mock_runs": _mock_runs}))


def mock_runs(counts_dir: Path) -> list[int]:
    """Each test process's count (the xdist controller's 0 included)."""
    return sorted(json.loads(p.read_text())["mock_runs"] for p in counts_dir.glob("*.json"))


def outcome(pytest_output: str) -> str:
    """pytest's summary line, e.g. '1919 passed in 140.2s'."""
    lines = [line.strip("= ") for line in pytest_output.splitlines()
             if re.search(r"\d+ (passed|failed|error)", line) and " in " in line]
    return lines[-1] if lines else "no summary line"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_suite")
    parser.add_argument("--serial", action="store_true", help="one process, no pytest-xdist")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as counts:
        command = [sys.executable, *PYTEST, *(() if args.serial else PARALLEL)]
        load_before = os.getloadavg()
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        result = subprocess.run(command, cwd=ROOT, env={**os.environ, COUNTS_ENV: counts},
                                capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        runs = mock_runs(Path(counts))
    summary = {
        "mode": "serial" if args.serial else "parallel",
        "command": " ".join(command[1:]),
        "exit_code": result.returncode,
        "outcome": outcome(result.stdout),
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round((cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime), 1),
        "mock_runs": sum(runs),
        "mock_runs_per_process": runs,
        "load_average_1min": {"start": round(load_before[0], 2), "end": round(os.getloadavg()[0], 2)},
        "cores": os.cpu_count(),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"suite-{summary['mode']}.json").write_text(json.dumps(summary, indent=2) + "\n")
    (OUT / f"suite-{summary['mode']}.log").write_text(result.stdout + result.stderr)
    print(json.dumps(summary, indent=2))
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
