"""The request queue's own overhead per request, on loopback (issue 17 item 5: p50 at most 50 ms).

    python tools/bench_request_queue.py [-n 500] [--json out.json]

Starts the real service (`python -m request_queue`, images/request-queue/) and one worker that follows the
protocol (docs/request-queue.md, "Workers": long-poll `next`, hold `cancel`, post the `result`) against a
backend that answers at once, then sends N txt2img calls one after another and times each from the client:
everything measured is the queue's work (admission, hand-over to the polling worker, the result's way back)
plus loopback HTTP. Prints p50, p95, p99 and max with N.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

from tools.sim.stats import latency_summary  # noqa: E402

IMAGE = ROOT / "images" / "request-queue"
TARGET_P50_SECONDS = 0.050
SETTINGS = {"QUEUE_MAX_DEPTH": "100", "QUEUE_MAX_WAIT_SECONDS": "60", "GENERATION_TIMEOUT_SECONDS": "60",
            "MARGIN_SECONDS": "5", "UI_KEEPALIVE_SECONDS": "300", "WORKER_TTL_SECONDS": "60",
            "DRAIN_SECONDS": "5", "FORWARDED_FOR_ENTRIES": "0", "HTTP_PORT": "0", "WORKER_PORT": "0"}
ANSWER = json.dumps({"images": [], "parameters": {}, "info": "{}"}).encode()


async def _worker(session: aiohttp.ClientSession, workers_url: str, stop: asyncio.Event) -> None:
    """Pull, hold cancel, answer at once: a WebUI with no generation time."""
    base = f"{workers_url}/v1/workers/bench"
    while not stop.is_set():
        async with session.post(f"{base}/next", json={"url": "http://127.0.0.1:9", "wait": 1}) as response:
            if response.status == 204:
                continue
            job = await response.json()
        held = asyncio.create_task(_hold_cancel(session, f"{base}/jobs/{job['id']}/cancel"))
        async with session.post(f"{base}/jobs/{job['id']}/result", data=ANSWER,
                                headers={"X-Upstream-Status": "200", "Content-Type": "application/json"}):
            pass
        await held


async def _hold_cancel(session: aiohttp.ClientSession, url: str) -> None:
    """Held while the job runs, as the worker does; answers 204 once the result is in."""
    async with session.get(url) as response:
        await response.read()


async def measure(url: str, workers_url: str, count: int) -> list[float]:
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        worker = asyncio.create_task(_worker(session, workers_url, stop))
        latencies = []
        for _ in range(count):
            started = time.perf_counter()
            async with session.post(url + "/sdapi/v1/txt2img", json={"prompt": "bench"}) as response:
                await response.read()
                if response.status != 200:
                    raise SystemExit(f"request failed: HTTP {response.status}")
            latencies.append(time.perf_counter() - started)
        stop.set()
        await worker
    return latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=500, help="requests to time (default 500)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(IMAGE), **SETTINGS}
    process = subprocess.Popen([sys.executable, "-m", "request_queue"], cwd=IMAGE, env=env,
                               stdout=subprocess.PIPE, text=True)
    try:
        ports = json.loads(process.stdout.readline())
        latencies = asyncio.run(measure(f"http://127.0.0.1:{ports['http_port']}",
                                        f"http://127.0.0.1:{ports['worker_port']}", args.n))
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    summary = {k: (round(v * 1000, 2) if v is not None else None) for k, v in latency_summary(latencies).items()}
    figures = {"requests": len(latencies), **{f"{k}_ms": v for k, v in summary.items()},
               "target_p50_ms": TARGET_P50_SECONDS * 1000}
    print(f"request queue overhead, loopback, {figures['requests']} requests: p50 {summary['p50']} ms, "
          f"p95 {summary['p95']} ms, p99 {summary['p99']} ms, max {summary['max']} ms "
          f"(target p50 <= {TARGET_P50_SECONDS * 1000:g} ms)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if summary["p50"] is not None and summary["p50"] <= TARGET_P50_SECONDS * 1000 else 1


if __name__ == "__main__":
    sys.exit(main())
