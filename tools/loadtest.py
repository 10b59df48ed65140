"""Send N txt2img requests at concurrency C to one WebUI endpoint and report latency, errors and cold starts.

    SD_API_AUTH=sd:PASSWORD python -m tools.loadtest http://127.0.0.1:7860 -n 50 -c 5 [--json out.json]

Like the seeds' `hey -n 50 -c 5 -m POST ... URL/sdapi/v1/txt2img`, with the API's basic auth and a
report made for this service:
- latency p50/p95/p99/max of the successful requests (nearest rank, tools/sim/stats.py);
- errors by kind: `HTTP <status>`, `timeout`, `connection refused`, ..., and requests never sent
  because the total deadline passed;
- cold starts. A request "waited for a cold start" when the KEDA HTTP add-on's interceptor had to
  hold it because no WebUI pod was ready: the interceptor then answers with
  `X-KEDA-HTTP-Cold-Start: true` (`false` when a pod was ready), v0.15.0
  interceptor/middleware/endpoint_resolver.go:98, on by default (KEDA_HTTP_ENABLE_COLD_START_HEADER).
  Without the interceptor in the path (a port-forward to one pod) there is no header and the count
  is reported as unknown; `--cold-threshold S` then counts requests slower than S seconds, an upper
  bound: a request queued behind others in a busy pod is slow too.

Bounded: it sends exactly N requests (fewer if the deadline passes), never more than C at once, and
only to the URL given. Exit 0 when all N succeeded, 1 otherwise, 2 on invalid arguments.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tools.sim.stats import latency_summary

TXT2IMG = "/sdapi/v1/txt2img"
COLD_START_HEADER = "X-KEDA-HTTP-Cold-Start"
NOT_SENT = "not sent (deadline)"
DEFAULT_PAYLOAD = {"prompt": "pretty dog", "steps": 20}


@dataclass
class Outcome:
    index: int
    started_s: float | None = None  # since the run started
    latency_s: float | None = None
    status: int | None = None
    error: str | None = None  # None when the request succeeded
    cold_start: bool | None = None  # from the interceptor's header; None without it


@dataclass(frozen=True)
class Plan:
    url: str
    requests: int
    concurrency: int
    auth: str | None
    payload: dict
    timeout_s: float
    deadline_s: float
    host: str | None = None  # Host header, for an interceptor route matched by host


def _error_kind(err: Exception) -> str:
    if isinstance(err, TimeoutError):  # socket.timeout is TimeoutError since Python 3.10
        return "timeout"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, ConnectionResetError):
        return "connection reset"
    return type(err).__name__


def _send(plan: Plan, index: int, run_started: float, remaining_s: float) -> Outcome:
    target = urlsplit(plan.url)
    connection_class = http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(target.hostname, target.port, timeout=max(0.001, min(plan.timeout_s, remaining_s)))
    headers = {"Content-Type": "application/json", "X-Loadtest-Request": str(index)}
    if plan.host:
        headers["Host"] = plan.host
    if plan.auth:
        headers["Authorization"] = "Basic " + base64.b64encode(plan.auth.encode()).decode()
    started = time.monotonic()
    outcome = Outcome(index, started_s=started - run_started)
    try:
        connection.request("POST", target.path.rstrip("/") + TXT2IMG, body=json.dumps(plan.payload), headers=headers)
        response = connection.getresponse()
        response.read()
        outcome.latency_s = time.monotonic() - started
        outcome.status = response.status
        header = response.getheader(COLD_START_HEADER)
        outcome.cold_start = None if header is None else header.strip().lower() == "true"
        if response.status != 200:
            outcome.error = f"HTTP {response.status}"
    except (OSError, http.client.HTTPException) as err:
        outcome.error = _error_kind(err)
    finally:
        connection.close()
    return outcome


def run(plan: Plan) -> list[Outcome]:
    """Send the plan's requests from `concurrency` threads; one Outcome per request, in index order."""
    outcomes: list[Outcome] = [Outcome(i, error=NOT_SENT) for i in range(plan.requests)]
    next_index = iter(range(plan.requests))
    lock = threading.Lock()
    run_started = time.monotonic()
    deadline = run_started + plan.deadline_s

    def worker() -> None:
        while True:
            with lock:
                index = next(next_index, None)
            remaining = deadline - time.monotonic()
            if index is None or remaining <= 0:
                return
            outcomes[index] = _send(plan, index, run_started, remaining)

    threads = [threading.Thread(target=worker, name=f"loadtest-{i}", daemon=True)
               for i in range(min(plan.concurrency, plan.requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def summarise(outcomes: list[Outcome], cold_threshold_s: float | None = None) -> dict:
    ok = [o.latency_s for o in outcomes if o.error is None]
    answered = [o for o in outcomes if o.status is not None]
    with_header = [o for o in answered if o.cold_start is not None]
    summary = {
        "requests": len(outcomes),
        "sent": sum(o.error != NOT_SENT for o in outcomes),
        "succeeded": len(ok),
        "latency_s": latency_summary(ok),
        "errors": dict(sorted(Counter(o.error for o in outcomes if o.error is not None).items())),
        "cold_starts": sum(bool(o.cold_start) for o in with_header) if with_header else None,
        "responses_with_cold_start_header": len(with_header),
    }
    if cold_threshold_s is not None:
        summary["slower_than_cold_threshold"] = sum(latency > cold_threshold_s for latency in ok)
    return summary


def report(summary: dict, cold_threshold_s: float | None) -> str:
    latency = summary["latency_s"]
    lines = [f"requests: {summary['requests']}  sent: {summary['sent']}  succeeded: {summary['succeeded']}"]
    if latency["p50"] is None:
        lines.append("latency: no successful request")
    else:
        lines.append("latency (s): " + "  ".join(f"{key} {value:.2f}" for key, value in latency.items()))
    lines.append("errors: " + (", ".join(f"{kind} x{count}" for kind, count in summary["errors"].items()) or "none"))
    if summary["cold_starts"] is None:
        lines.append(f"waited for a cold start: unknown (no {COLD_START_HEADER} header: is the KEDA interceptor in the path?)")
    else:
        lines.append(f"waited for a cold start: {summary['cold_starts']} "
                     f"(of {summary['responses_with_cold_start_header']} responses carrying {COLD_START_HEADER})")
    if cold_threshold_s is not None:
        lines.append(f"slower than {cold_threshold_s:g} s: {summary['slower_than_cold_threshold']}")
    return "\n".join(lines)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of seconds > 0")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.loadtest", description=__doc__.split("\n\n")[0])
    p.add_argument("url", help="the WebUI API's base URL, e.g. http://127.0.0.1:7860 (POSTs go to <url>/sdapi/v1/txt2img)")
    p.add_argument("-n", "--requests", type=_positive_int, required=True, help="requests to send")
    p.add_argument("-c", "--concurrency", type=_positive_int, required=True, help="requests in flight at most")
    p.add_argument("--user", help="basic auth user:password (default: $SD_API_AUTH)")
    p.add_argument("--payload", default=json.dumps(DEFAULT_PAYLOAD), help="txt2img JSON body")
    p.add_argument("--host", help="Host header (like hey -host), e.g. when the interceptor routes by host name")
    p.add_argument("--timeout", type=_positive_float, default=600.0, help="seconds per request (a cold start takes minutes)")
    p.add_argument("--deadline", type=_positive_float, default=1800.0, help="seconds for the whole run")
    p.add_argument("--cold-threshold", type=float, help="also count requests slower than this many seconds")
    p.add_argument("--json", type=Path, help="write the summary and every request's outcome as JSON")
    return p


def plan_from(args: argparse.Namespace) -> tuple[Plan | None, list[str]]:
    problems = []
    target = urlsplit(args.url)
    if target.scheme not in ("http", "https") or not target.hostname or target.query or target.fragment:
        problems.append(f"url {args.url!r}: expected http(s)://host[:port][/prefix] without a query")
    auth = args.user if args.user is not None else os.environ.get("SD_API_AUTH")
    if auth is not None and ":" not in auth:
        source = "--user" if args.user is not None else "SD_API_AUTH"
        problems.append(f"{source}: expected user:password (the value is not shown)")
    try:
        payload = json.loads(args.payload)
        if not isinstance(payload, dict):
            raise ValueError("not an object")
    except ValueError as err:
        problems.append(f"--payload {args.payload!r}: expected a JSON object ({err})")
        payload = {}
    if problems:
        return None, problems
    return Plan(args.url, args.requests, args.concurrency, auth, payload, args.timeout, args.deadline, args.host), []


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    plan, problems = plan_from(args)
    if plan is None:
        print("invalid arguments:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    outcomes = run(plan)
    summary = summarise(outcomes, args.cold_threshold)
    print(report(summary, args.cold_threshold))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "outcomes": [asdict(o) for o in outcomes]}, indent=2) + "\n")
    return 0 if summary["succeeded"] == plan.requests else 1


if __name__ == "__main__":
    sys.exit(main())
