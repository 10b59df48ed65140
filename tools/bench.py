"""Benchmarks: the offline plan's time, the test suite's cost (tools/bench_suite.py), and the figures of the other benchmarks.

    python -m tools.bench [--runs 3] [--skip-tests]

Timing belongs here, never in a test. Writes build/bench/summary.json; the bake, attacher and base
image figures come from their own scripts (tools/bench_bake.py, tools/bench_attacher.py,
tools/estimate_base_image.py) when they have been run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "bench"


def timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench")
    parser.add_argument("--runs", type=int, default=3, help="plan runs per stack (median reported)")
    parser.add_argument("--skip-tests", action="store_true", help="do not time the test suite")
    args = parser.parse_args(argv)

    summary: dict[str, object] = {}
    for stack in ("dev", "prod"):
        times = [timed([sys.executable, "-m", "tools.plan", "--stack", stack, "--out", str(OUT / "plan")])
                 for _ in range(args.runs)]
        summary[f"plan_{stack}_seconds"] = {"median": round(statistics.median(times), 2), "runs": [round(t, 2) for t in times]}
        print(f"offline plan {stack}: median {statistics.median(times):.2f} s over {args.runs} runs")
    if not args.skip_tests:
        subprocess.run([sys.executable, "-m", "tools.bench_suite"], cwd=ROOT, check=False, stdout=subprocess.DEVNULL)
        suite = json.loads((OUT / "suite-parallel.json").read_text())
        summary["test_suite"] = suite
        print(f"test suite ({suite['command']}): {suite['wall_seconds']} s, {suite['cpu_seconds']} CPU s, "
              f"{suite['mock_runs']} mock-program runs; {suite['outcome']}")
    for name in ("base_image", "bake", "attacher"):
        path = OUT / f"{name}.json"
        if path.exists():
            summary[name] = json.loads(path.read_text())
            print(f"{name}: {path.relative_to(ROOT)}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
