"""`python -m queue_agent.alive`: the probes.

Liveness (no argument): exit 0 while the agent's loop has beaten within $JOBS_HEARTBEAT_MAX_AGE seconds;
a loop that stopped (a hung pull, a deadlock) fails it, and kubelet restarts the container; a batch job
it held returns to the queue when its lease lapses.

Readiness (`--ready`): also the worker is registered with the request queue (its last `next` was
answered; the loop removes the mark while the request queue is unreachable or it is leaving) and its
WebUI answers the API now.
"""

from __future__ import annotations

import base64
import os
import sys
import time
import urllib.request

REGISTERED_SUFFIX = ".registered"
WEBUI_CHECK_SECONDS = 3.0
"""Within the probe's 5 s timeout, with the interpreter's start-up."""


def beat(heartbeat: str) -> None:
    with open(heartbeat, "w") as file:
        file.write(str(time.time()))


def mark_registered(heartbeat: str, registered: bool) -> None:
    """The worker's mark, next to its heartbeat: present while the request queue knows it."""
    path = heartbeat + REGISTERED_SUFFIX
    if registered:
        if not os.path.exists(path):
            with open(path, "w"):
                pass
    else:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def _beating(path: str, max_age: float) -> str | None:
    try:
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return f"no heartbeat at {path} yet"
    if age > max_age:
        return f"last heartbeat {age:.0f}s ago (limit {max_age:g}s)"
    return None


def _webui_answers(url: str, auth: str | None) -> str | None:
    request = urllib.request.Request(url.rstrip("/") + "/sdapi/v1/options")
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=WEBUI_CHECK_SECONDS) as response:
            response.read()
    except OSError as err:
        return f"WebUI at {url} does not answer: {err}"
    return None


def main(argv: list[str] | None = None, env: dict[str, str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    env = dict(os.environ) if env is None else env
    if argv not in ([], ["--ready"]):
        print("usage: python -m queue_agent.alive [--ready]", file=sys.stderr)
        return 2
    path, max_age = env["JOBS_HEARTBEAT"], float(env.get("JOBS_HEARTBEAT_MAX_AGE", "60"))
    problem = _beating(path, max_age)
    if problem is None and argv == ["--ready"]:
        if not os.path.exists(path + REGISTERED_SUFFIX):
            problem = "not registered with the request queue"
        else:
            problem = _webui_answers(env.get("SD_API_URL", "http://127.0.0.1:7860"), env.get("SD_API_AUTH") or None)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
