"""Send N txt2img requests at concurrency C to the WebUI API and report latency, errors, refusals and cold starts.

    SD_API_AUTH=sd:PASSWORD python tools/loadtest.py https://sd.example.com -n 50 -c 5 [--json out.json]
    python tools/loadtest.py https://sd.example.com/sdapi/v1/txt2img -n 50 -c 5    (the full URL, as hey takes it)

Like the seeds' `hey -n 50 -c 5 -m POST ... URL/sdapi/v1/txt2img`, with the API's basic auth and a
report made for this service:
- latency p50/p95/p99/max of the successful requests (nearest rank, tools/sim/stats.py), with n beside
  them: below 100 results p99 is the maximum;
- errors by kind: `HTTP <status>`, `timeout` (`--timeout`, a limit on the whole request), requests cut
  by `--deadline` (the whole run's limit) and requests never sent before it, `connection refused`, ...;
- the request queue's refusals (docs/request-queue.md, "Clients"): 429 when its buffer is full and 503
  when a request was not dispatched in time, each with its Retry-After;
- cold starts and the wait in the queue, from the headers the request queue puts on every queued
  response: `X-Queue-Cold-Start: true|false` (no WebUI pod was registered when it arrived) and
  `X-Queue-Wait: <seconds>`. Sent straight to a pod (a port-forward) there are no such headers: the
  count is reported as unknown, and `--cold-threshold S` counts requests slower than S seconds, an
  upper bound (a request that waited behind others is slow too).

The default `--timeout` is the stack's client-facing budget (`client_budget_seconds`): a request the
platform may legitimately hold through a cold start is not cut early by the tool.

Bounded: it sends exactly N requests (fewer if the deadline passes or on Ctrl-C), never more than C
at once, and only to the URL given. Ctrl-C cuts the requests in flight and prints (and writes with
`--json`) what was measured so far. Exit 0 when all N succeeded, 1 otherwise, 2 on invalid arguments,
130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import random
import signal
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as `python tools/loadtest.py`: make the project importable
    sys.path.insert(0, str(ROOT))

from tools.sim.stats import latency_summary  # noqa: E402

TXT2IMG = "/sdapi/v1/txt2img"
API_PREFIX = "/sdapi/"
COLD_START_HEADER = "X-Queue-Cold-Start"
QUEUE_WAIT_HEADER = "X-Queue-Wait"
"""The request queue's marks on every queued response (docs/request-queue.md, "Clients")."""
TIMEOUT = "timeout"
CUT_BY_DEADLINE = "cut by --deadline"
NOT_SENT = "not sent (deadline)"
INTERRUPTED = "cut by Ctrl-C"
NOT_SENT_INTERRUPTED = "not sent (Ctrl-C)"
QUEUE_FULL = "HTTP 429 (queue full)"
QUEUE_WAIT_LIMIT = "HTTP 503 (not dispatched in time)"
"""The request queue's refusals at its bounds, QUEUE_MAX_DEPTH and QUEUE_MAX_WAIT_SECONDS; a 503
without Retry-After (a load balancer's) stays a plain `HTTP 503`."""
DEFAULT_PAYLOAD = {"prompt": "pretty dog", "steps": 20}
DEFAULT_STACK = "dev"
INTERRUPT_GRACE_SECONDS = 2.0
"""After Ctrl-C, how long a request still connecting may take to notice before it is reported as cut."""
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


def client_budget_seconds(stack: str) -> int:
    """How long the stack lets a client's request take, cold start included: the load balancer's timeout,
    the outermost link of the timeout chain (components/timeouts.py), so the tool never gives up on a
    request the stack is still working on."""
    from components import config
    from components.timeouts import TimeoutChain

    return TimeoutChain.of(config.load_stack(ROOT, stack)).load_balancer


@dataclass
class Outcome:
    index: int
    started_s: float | None = None  # since the run started
    latency_s: float | None = None
    status: int | None = None
    error: str | None = None  # None when the request succeeded
    cold_start: bool | None = None  # from X-Queue-Cold-Start; None without it
    queue_wait_s: float | None = None  # from X-Queue-Wait; None without it
    retry_after_s: float | None = None  # from Retry-After on a refusal


@dataclass(frozen=True)
class Plan:
    url: str  # the txt2img endpoint itself
    requests: int
    concurrency: int
    auth: str | None
    payload: dict
    timeout_s: float
    deadline_s: float
    host: str | None = None  # Host header, for a route matched by host name
    arrivals_s: tuple[float, ...] = ()  # when each request is due after the run starts (--rate); () sends at once


def poisson_arrivals(requests: int, rate: float, seed: int) -> tuple[float, ...]:
    """Send times of a Poisson process of `rate` requests per second (exponential gaps), the first at 0;
    the same seed gives the same times."""
    rng = random.Random(seed)
    times, now = [0.0], 0.0
    for _ in range(requests - 1):
        now += rng.expovariate(rate)
        times.append(now)
    return tuple(times)


def endpoint(url: str) -> str | None:
    """The txt2img URL for a base URL (`http://host[/prefix]`) or the endpoint itself; None for another API path."""
    target = urlsplit(url)
    path = target.path.rstrip("/")
    if path.endswith(TXT2IMG):
        return target._replace(path=path).geturl()
    if API_PREFIX in path + "/":
        return None
    return target._replace(path=path + TXT2IMG).geturl()


class _Request:
    """One request on the wire; `cut` shuts its socket from another thread, so a limit holds mid-read.

    The socket is kept here: http.client drops its own reference once a response that closes the
    connection has started (HTTPConnection.getresponse), while the response goes on reading from it."""

    def __init__(self, connection: http.client.HTTPConnection):
        self.connection = connection
        self.reason: str | None = None
        self._socket: socket.socket | None = None
        self._done = False
        self._lock = threading.Lock()

    def cut(self, reason: str) -> None:
        with self._lock:
            if self._done or self.reason is not None:
                return
            self.reason = reason
            if self._socket is not None:
                try:
                    self._socket.shutdown(socket.SHUT_RDWR)
                except OSError:  # the peer closed it already
                    pass

    def connected(self) -> None:
        """Keep the new socket; a cut that came while connecting (no socket yet to shut) takes effect now."""
        with self._lock:
            self._socket = self.connection.sock
            if self.reason is not None:
                raise ConnectionAbortedError(self.reason)

    def finish(self) -> bool:
        """Mark the request answered; False when a cut came first."""
        with self._lock:
            self._done = True
            return self.reason is None


def _error_kind(err: Exception, limit_kind: str) -> str:
    if isinstance(err, TimeoutError):  # socket.timeout is TimeoutError since Python 3.10
        return limit_kind
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, ConnectionResetError):
        return "connection reset"
    return type(err).__name__


def _seconds_header(response: http.client.HTTPResponse, name: str) -> float | None:
    try:
        return float(response.getheader(name, ""))
    except ValueError:
        return None


def _answer(outcome: Outcome, response: http.client.HTTPResponse) -> None:
    outcome.status = response.status
    cold = response.getheader(COLD_START_HEADER)
    outcome.cold_start = None if cold is None else cold.strip().lower() == "true"
    outcome.queue_wait_s = _seconds_header(response, QUEUE_WAIT_HEADER)
    outcome.retry_after_s = _seconds_header(response, "Retry-After")
    if response.status == 429:
        outcome.error = QUEUE_FULL
    elif response.status == 503 and outcome.retry_after_s is not None:
        outcome.error = QUEUE_WAIT_LIMIT
    elif response.status != 200:
        outcome.error = f"HTTP {response.status}"


def _send(plan: Plan, index: int, run_started: float, deadline: float, in_flight: dict[int, _Request]) -> Outcome:
    started = time.monotonic()
    outcome = Outcome(index, started_s=started - run_started)
    if started + plan.timeout_s <= deadline:
        limit_s, limit_kind = plan.timeout_s, TIMEOUT
    else:
        limit_s, limit_kind = deadline - started, CUT_BY_DEADLINE
    target = urlsplit(plan.url)
    connection_class = http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
    request = _Request(connection_class(target.hostname, target.port, timeout=max(0.001, limit_s)))
    in_flight[index] = request
    timer = threading.Timer(limit_s, request.cut, args=(limit_kind,))
    timer.daemon = True
    timer.start()
    headers = {"Content-Type": "application/json", "X-Loadtest-Request": str(index)}
    if plan.host:
        headers["Host"] = plan.host
    if plan.auth:
        headers["Authorization"] = "Basic " + base64.b64encode(plan.auth.encode()).decode()
    try:
        request.connection.connect()
        request.connected()
        request.connection.request("POST", target.path, body=json.dumps(plan.payload), headers=headers)
        response = request.connection.getresponse()
        response.read()
        if request.finish():
            outcome.latency_s = time.monotonic() - started
            _answer(outcome, response)
        else:
            outcome.error = request.reason
    except (OSError, http.client.HTTPException) as err:
        request.finish()
        outcome.error = request.reason or _error_kind(err, limit_kind)
    finally:
        timer.cancel()
        in_flight.pop(index, None)
        request.connection.close()
    return outcome


def run(plan: Plan) -> list[Outcome]:
    """Send the plan's requests from `concurrency` threads; one Outcome per request, in index order.

    Ctrl-C (KeyboardInterrupt in the calling thread) cuts the requests in flight and returns what was
    measured so far, the rest marked as cut or not sent.
    """
    outcomes: list[Outcome] = [Outcome(i, error=NOT_SENT) for i in range(plan.requests)]
    next_index = iter(range(plan.requests))
    lock = threading.Lock()
    stopping = threading.Event()
    in_flight: dict[int, _Request] = {}
    run_started = time.monotonic()
    deadline = run_started + plan.deadline_s

    def worker() -> None:
        while not stopping.is_set():
            with lock:
                index = next(next_index, None)
            if index is None or time.monotonic() >= deadline:
                return
            if plan.arrivals_s:
                due = run_started + plan.arrivals_s[index]
                if due >= deadline or stopping.wait(max(0.0, due - time.monotonic())):
                    return
            outcomes[index] = _send(plan, index, run_started, deadline, in_flight)

    threads = [threading.Thread(target=worker, name=f"loadtest-{i}", daemon=True)
               for i in range(min(plan.concurrency, plan.requests))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    except KeyboardInterrupt:
        return _interrupted(outcomes, threads, stopping, in_flight, deadline)
    return outcomes


def _interrupted(outcomes: list[Outcome], threads: list[threading.Thread], stopping: threading.Event,
                 in_flight: dict[int, _Request], deadline: float) -> list[Outcome]:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the summary short
    interrupted_at = time.monotonic()
    stopping.set()
    for request in list(in_flight.values()):
        request.cut(INTERRUPTED)
    give_up = interrupted_at + INTERRUPT_GRACE_SECONDS
    for thread in threads:
        if thread.ident is not None:
            thread.join(timeout=max(0.0, give_up - time.monotonic()))
    unsent = NOT_SENT if interrupted_at >= deadline else NOT_SENT_INTERRUPTED
    snapshot = [Outcome(o.index, error=unsent) if o.error == NOT_SENT else o for o in outcomes]
    for index in list(in_flight):  # still connecting after the grace
        snapshot[index] = Outcome(index, error=INTERRUPTED)
    return snapshot


def summarise(outcomes: list[Outcome], cold_threshold_s: float | None = None) -> dict:
    ok = [o.latency_s for o in outcomes if o.error is None]
    answered = [o for o in outcomes if o.status is not None]
    with_header = [o for o in answered if o.cold_start is not None]
    waits = [o.queue_wait_s for o in answered if o.queue_wait_s is not None]
    retry_after: dict[str, list[float]] = {}
    for o in outcomes:
        if o.error in (QUEUE_FULL, QUEUE_WAIT_LIMIT) and o.retry_after_s is not None:
            retry_after.setdefault(o.error, []).append(o.retry_after_s)
    summary = {
        "requests": len(outcomes),
        "sent": sum(o.error not in (NOT_SENT, NOT_SENT_INTERRUPTED) for o in outcomes),
        "succeeded": len(ok),
        "interrupted": any(o.error in (INTERRUPTED, NOT_SENT_INTERRUPTED) for o in outcomes),
        "latency_s": {"n": len(ok), **latency_summary(ok)},
        "errors": dict(sorted(Counter(o.error for o in outcomes if o.error is not None).items())),
        "retry_after_s": {kind: {"min": min(values), "max": max(values)} for kind, values in sorted(retry_after.items())},
        "cold_starts": sum(bool(o.cold_start) for o in with_header) if with_header else None,
        "responses_with_cold_start_header": len(with_header),
        "queue_wait_s": {"n": len(waits), **latency_summary(waits)},
    }
    if cold_threshold_s is not None:
        summary["slower_than_cold_threshold"] = sum(latency > cold_threshold_s for latency in ok)
    return summary


def _percentiles(what: str, values: dict) -> str:
    n = values["n"]
    if n == 0:
        return f"{what}: none measured"
    figures = "  ".join(f"{key} {value:.2f}" for key, value in values.items() if key != "n")
    small = "  (n < 100: p99 is the maximum, nearest rank)" if n < 100 else ""
    return f"{what} (s, n={n}): {figures}{small}"


def report(summary: dict, cold_threshold_s: float | None, url: str | None = None) -> str:
    lines = []
    if summary["interrupted"]:
        lines.append("interrupted (Ctrl-C): what was measured until then")
    lines.append(f"requests: {summary['requests']}  sent: {summary['sent']}  succeeded: {summary['succeeded']}")
    lines.append(_percentiles("latency of the successful requests", summary["latency_s"]))
    errors = summary["errors"]
    lines.append("errors: " + (", ".join(f"{kind} x{count}" for kind, count in errors.items()) or "none"))
    for kind, seconds in summary["retry_after_s"].items():
        lines.append(f"  {kind}: Retry-After {seconds['min']:g}-{seconds['max']:g} s")
    if "HTTP 404" in errors and url:
        lines.append(f"  HTTP 404: nothing answers POST {url}; give the WebUI's base URL (https://host) or its full "
                     f"txt2img URL (https://host{TXT2IMG}), of a WebUI started with --api")
    if summary["cold_starts"] is None:
        lines.append(f"waited for a cold start: unknown (no {COLD_START_HEADER} header: is the request queue in the path?)")
    else:
        lines.append(f"waited for a cold start: {summary['cold_starts']} "
                     f"(of {summary['responses_with_cold_start_header']} responses carrying {COLD_START_HEADER})")
    if summary["queue_wait_s"]["n"]:
        lines.append(_percentiles(f"wait in the request queue ({QUEUE_WAIT_HEADER})", summary["queue_wait_s"]))
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
    p = argparse.ArgumentParser(prog="python tools/loadtest.py", description=__doc__.split("\n\n")[0])
    p.add_argument("url", help=f"the WebUI's base URL, e.g. http://127.0.0.1:7860, or its full txt2img URL (<url>{TXT2IMG})")
    p.add_argument("-n", "--requests", type=_positive_int, required=True, help="requests to send")
    p.add_argument("-c", "--concurrency", type=_positive_int, required=True, help="requests in flight at most")
    p.add_argument("--user", help="basic auth user:password (default: $SD_API_AUTH)")
    p.add_argument("--payload", default=json.dumps(DEFAULT_PAYLOAD), help="txt2img JSON body")
    p.add_argument("--rate", type=_positive_float,
                   help="Poisson arrivals at this many requests per second (still at most -c at once); default: all at once")
    p.add_argument("--seed", type=int, default=0, help="seed of the --rate arrivals")
    p.add_argument("--host", help="Host header (like hey -host), e.g. for a route matched by host name")
    p.add_argument("--stack", default=DEFAULT_STACK, help="the stack whose timeout chain gives the default --timeout")
    p.add_argument("--timeout", type=_positive_float,
                   help="seconds for a whole request, cold start included (default: the stack's client-facing budget)")
    p.add_argument("--deadline", type=_positive_float, default=1800.0, help="seconds for the whole run")
    p.add_argument("--cold-threshold", type=float, help="also count requests slower than this many seconds")
    p.add_argument("--json", type=Path, help="write the summary and every request's outcome as JSON")
    return p


def _default_timeout(stack: str) -> tuple[float | None, list[str]]:
    from components.config import ConfigError

    try:
        return float(client_budget_seconds(stack)), []
    except FileNotFoundError as err:
        return None, [f"--stack {stack!r}: {err}"]
    except ConfigError as err:
        return None, [f"--stack {stack!r}: its config is invalid, so it gives no default --timeout "
                      f"(or pass --timeout): {problem}" for problem in err.problems]


def plan_from(args: argparse.Namespace) -> tuple[Plan | None, list[str]]:
    problems = []
    target = urlsplit(args.url)
    url = endpoint(args.url)
    if target.scheme not in ("http", "https") or not target.hostname or target.query or target.fragment:
        problems.append(f"url {args.url!r}: expected http(s)://host[:port][/prefix] without a query")
    elif url is None:
        problems.append(f"url {args.url!r}: expected the WebUI's base URL or its txt2img endpoint (...{TXT2IMG})")
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
    timeout_s = args.timeout
    if timeout_s is None:
        timeout_s, stack_problems = _default_timeout(args.stack)
        problems += stack_problems
    if problems:
        return None, problems
    arrivals = poisson_arrivals(args.requests, args.rate, args.seed) if args.rate else ()
    return Plan(url, args.requests, args.concurrency, auth, payload, timeout_s, args.deadline, args.host, arrivals), []


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return _load_test(args)
    except KeyboardInterrupt:  # outside the run itself: before the first request or while writing the report
        print("interrupted (Ctrl-C)", file=sys.stderr)
        return EXIT_INTERRUPTED


def _load_test(args: argparse.Namespace) -> int:
    plan, problems = plan_from(args)
    if plan is None:
        print("invalid arguments:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    print(f"POST {plan.url}: {plan.requests} requests, {plan.concurrency} at a time, "
          f"timeout {plan.timeout_s:g} s each, deadline {plan.deadline_s:g} s", flush=True)
    outcomes = run(plan)
    summary = summarise(outcomes, args.cold_threshold)
    print(report(summary, args.cold_threshold, plan.url))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {"plan": {"url": plan.url, "requests": plan.requests, "concurrency": plan.concurrency,
                             "timeout_s": plan.timeout_s, "deadline_s": plan.deadline_s},
                    "summary": summary, "outcomes": [asdict(o) for o in outcomes]}
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    if summary["interrupted"]:
        return EXIT_INTERRUPTED
    return 0 if summary["succeeded"] == plan.requests else 1


if __name__ == "__main__":
    sys.exit(main())
