"""Replay WebUI's startup writes against a runtime tree mounted read-only, as on a GPU node.

Run as root inside a private mount namespace (`unshare -m --propagation private`), so the mount
vanishes with the process. Reads a JSON spec on stdin:
  {"source": tree, "mount": mount point, "prepare": argv of the pod's init step,
   "writes": [{"kind": "dir" | "marker" | "file", "path": ..., "content": ...}]}
bind-mounts `source` read-only at `mount` (the kernel then answers EROFS, as for the node's ro disk
mount), runs `prepare` (which lays out the writable data dir), and prints a JSON list with, for
each write, the errno name it failed with or null.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys


def replay(write: dict) -> None:
    """Each kind as WebUI (or the package) does it: see bake.StartupWrite."""
    path = write["path"]
    if write["kind"] == "dir":
        os.makedirs(path, exist_ok=True)
        return
    if write["kind"] == "marker" and os.path.isfile(path):
        with open(path) as f:
            if f.read() == write["content"]:
                return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(write.get("content", ""))


def main() -> int:
    spec = json.load(sys.stdin)
    subprocess.run(["mount", "--bind", spec["source"], spec["mount"]], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", spec["mount"]], check=True)
    subprocess.run(spec["prepare"], check=True)
    results = []
    for write in spec["writes"]:
        try:
            replay(write)
            results.append({"path": write["path"], "error": None})
        except OSError as e:
            results.append({"path": write["path"], "error": errno.errorcode.get(e.errno, str(e.errno))})
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
