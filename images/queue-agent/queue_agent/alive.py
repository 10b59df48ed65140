"""`python -m queue_agent.alive`: the probe. Exit 0 while the agent's loop has beaten within
$JOBS_HEARTBEAT_MAX_AGE seconds; a loop that stopped (a hung pull, a deadlock) fails it, and kubelet
restarts the container; the job it held returns to the queue when its lease lapses."""

from __future__ import annotations

import os
import sys
import time


def main() -> int:
    path, max_age = os.environ["JOBS_HEARTBEAT"], float(os.environ.get("JOBS_HEARTBEAT_MAX_AGE", "60"))
    try:
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        print(f"no heartbeat at {path} yet", file=sys.stderr)
        return 1
    if age > max_age:
        print(f"last heartbeat {age:.0f}s ago (limit {max_age:g}s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
