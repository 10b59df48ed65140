"""Probes for the WebUI container: warm (startup), ready, drain (preStop).

Runs with the base image's python3 and the stdlib only. API auth comes from $SD_API_AUTH
("user:password") so the secret never appears in the pod spec.

- warm: one tiny txt2img; it only returns once the checkpoint is loaded and the GPU path works,
  then leaves a marker so later probes stay cheap.
- ready: the marker exists and the API answers (it does while a generation runs).
- drain: wait until no generation is in flight, so a scale-down does not cut one off.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request

BASE = os.environ.get("SD_API_URL", "http://127.0.0.1:7860")
MARKER = os.environ.get("SD_WARM_MARKER", "/tmp/sd-warm")
WARM_PAYLOAD = {"prompt": "warm-up", "steps": 1, "width": 64, "height": 64, "batch_size": 1,
                "save_images": False, "send_images": False}


def call(path: str, payload: dict | None = None, timeout: float = 10.0) -> dict:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(BASE + path, data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    auth = os.environ.get("SD_API_AUTH")
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"{}")


def warm() -> int:
    call("/sdapi/v1/txt2img", WARM_PAYLOAD, timeout=float(os.environ.get("SD_WARM_TIMEOUT", "50")))
    with open(MARKER, "w") as marker:
        marker.write(str(time.time()))
    return 0


def ready() -> int:
    if not os.path.exists(MARKER):
        print("not warm yet", file=sys.stderr)
        return 1
    call("/sdapi/v1/options", timeout=5.0)
    return 0


def drain() -> int:
    deadline = time.monotonic() + float(os.environ.get("SD_DRAIN_SECONDS", "120"))
    while time.monotonic() < deadline:
        try:
            state = call("/sdapi/v1/progress?skip_current_image=true", timeout=5.0).get("state", {})
        except (OSError, urllib.error.URLError, ValueError):
            return 0
        if not state.get("job_count"):
            return 0
        time.sleep(2)
    return 0


def main(argv: list[str]) -> int:
    modes = {"warm": warm, "ready": ready, "drain": drain}
    if len(argv) != 2 or argv[1] not in modes:
        print(f"usage: probe.py {{{'|'.join(modes)}}}", file=sys.stderr)
        return 2
    try:
        return modes[argv[1]]()
    except (OSError, urllib.error.URLError, ValueError) as err:
        print(f"{argv[1]} probe failed: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
