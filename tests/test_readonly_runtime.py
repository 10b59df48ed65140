"""WebUI on a read-only runtime: every path it writes at start, replayed against a real read-only mount.

The node mounts the runtime disk read-only and the pod mounts it readOnly, so WebUI's
`os.makedirs(..., exist_ok=True)` of a directory that does not exist fails with EROFS (exist_ok
only forgives a directory that is there). The bake's table (bake.WEBUI_STARTUP_WRITES, cited line by
line at WebUI v1.10.1) is replayed here, as root, in a private mount namespace against a tree
bind-mounted read-only, with the data dir laid out by the registered pod's own init step.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from components.runtime_layout import READY_MARKER, RUNTIME_ROOT
from components.webui import BAKE
from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="a read-only bind mount in a private mount namespace needs root and unshare(1); "
           "the suite runs as root here and in CI",
)


def webui_pod(run) -> dict:
    return run.one("kubernetes:apps/v1:Deployment", "webui-deployment").inputs["spec"]["template"]["spec"]


def pod_data_dir(run) -> str:
    args = next(c for c in webui_pod(run)["containers"] if c["name"] == "webui")["args"]
    return args[args.index("--data-dir") + 1]


def pod_path(run, write) -> str:
    """Where a startup write lands as the pod sees it."""
    return f"{pod_data_dir(run) if write.base == 'data' else RUNTIME_ROOT}/{write.path}"


def replay(run, tree: Path, work: Path) -> dict[str, str | None]:
    """Mount `tree` read-only where the pod mounts the runtime, lay out the data dir with the pod's
    init step, replay every startup write; returns {pod path: errno name or None}."""
    mount, data = work / "runtime", work / "data"
    mount.mkdir()
    data.mkdir()
    data_dir = pod_data_dir(run)
    to_host = {RUNTIME_ROOT: str(mount), data_dir: str(data)}
    pattern = re.compile(r"(?<![\w/.-])(" + "|".join(map(re.escape, to_host)) + r")(?=/|\s|$)")

    def host(path: str) -> str:
        return pattern.sub(lambda m: to_host[m.group(1)], path)

    init = next(c for c in webui_pod(run)["initContainers"] if c["name"] == "prepare")
    pod_paths = {pod_path(run, w): w for w in BAKE.WEBUI_STARTUP_WRITES}
    spec = {
        "source": str(tree),
        "mount": str(mount),
        "prepare": [*init["command"][:-1], host(init["command"][-1])],
        "writes": [{"kind": w.kind, "path": host(p), "content": w.content} for p, w in pod_paths.items()],
    }
    result = subprocess.run(
        ["unshare", "-m", "--propagation", "private", sys.executable, str(ROOT / "tests" / "readonly_replay.py")],
        input=json.dumps(spec), capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    return {pod: r["error"] for pod, r in zip(pod_paths, json.loads(result.stdout), strict=True)}


def identity(run) -> str:
    return run.one("pulumi-python:dynamic:Resource", "runtime-image").inputs["identity_hash"]


def finish(root: Path, recipe_hash: str) -> Path:
    """What the bake writes last: the manifest and the ready marker, both naming the runtime (bake.py)."""
    (root / BAKE.MANIFEST).write_text(json.dumps({"recipe_hash": recipe_hash}, indent=2, sort_keys=True) + "\n")
    (root / READY_MARKER).write_text(recipe_hash + "\n")
    return root


def baked_tree(root: Path, recipe_hash: str) -> Path:
    """The paths the bake's webui-config step creates, by the bake's own code, and the ready marker."""
    root.mkdir()
    BAKE.Bake({}, root, recipe_hash).make_startup_paths()
    return finish(root, recipe_hash)


def tree_without_startup_paths(root: Path, recipe_hash: str) -> Path:
    """What a bake laid out before it knew WebUI's startup writes: the model, the clones, the hub cache."""
    for d in ("models/Stable-diffusion", "webui/extensions", "cache/huggingface/hub/models--openai--clip/refs"):
        (root / d).mkdir(parents=True)
    (root / "models/Stable-diffusion/v1-5.safetensors").write_bytes(b"\0")
    return finish(root, recipe_hash)


def test_webui_starts_on_the_read_only_runtime_the_bake_lays_out(runs, tmp_path):
    errors = replay(runs["dev"], baked_tree(tmp_path / "tree", identity(runs["dev"])), tmp_path)
    assert {path: error for path, error in errors.items() if error} == {}


def test_without_the_baked_startup_paths_webui_meets_a_read_only_file_system(runs, tmp_path):
    tree = tree_without_startup_paths(tmp_path / "tree", identity(runs["dev"]))
    errors = replay(runs["dev"], tree, tmp_path)
    missing = {pod_path(runs["dev"], w) for w in BAKE.WEBUI_STARTUP_WRITES
               if BAKE.runtime_path(w) is not None and not (tree / BAKE.runtime_path(w)).exists()}
    assert f"{pod_data_dir(runs['dev'])}/models/hypernetworks" in missing
    assert {path: error for path, error in errors.items() if error} == dict.fromkeys(missing, "EROFS")

