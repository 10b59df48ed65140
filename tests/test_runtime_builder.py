"""The builder VM's side of the bake: the metadata the provider gives it, and its startup script run with stub
system tools in place of Container-Optimized OS's and the metadata server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from components.recipe import BAKE_SCRIPT
from components.runtime_bake.builder import (
    BAKE_STATE_DIR,
    BUILDER_DEVICE,
    STARTUP_SCRIPT,
    BakeSpec,
    builder_metadata,
)
from components.source import load_source
from tests.test_runtime_bake import BASE, DIGEST, IDENTITY, props


def test_builder_settings_travel_as_metadata_beside_the_unchanged_startup_script():
    metadata = builder_metadata(BakeSpec.from_props(props()))

    assert metadata["startup-script"] == STARTUP_SCRIPT.read_text()
    assert {k: v for k, v in metadata.items() if k.startswith("sd-bake-") and k not in ("sd-bake-script", "sd-bake-recipe")} == {
        "sd-bake-namespace": "sd-bake", "sd-bake-image": BASE, "sd-bake-digest": DIGEST, "sd-bake-python": "python3.11",
        "sd-bake-expected-hash": IDENTITY, "sd-bake-runtime": "/runtime", "sd-bake-state-dir": ".bake",
    }
    assert re.findall(r"metadata (sd-bake-[a-z-]+)", STARTUP_SCRIPT.read_text()) == [
        "sd-bake-namespace", "sd-bake-image", "sd-bake-digest", "sd-bake-python", "sd-bake-expected-hash",
        "sd-bake-runtime", "sd-bake-state-dir", "sd-bake-script", "sd-bake-recipe"]


def test_startup_script_mounts_the_data_disk_by_the_device_name_the_vm_gives_it():
    assert re.findall(r"^DEVICE=(\S+)", STARTUP_SCRIPT.read_text(), flags=re.MULTILINE) == [
        f"/dev/disk/by-id/google-{BUILDER_DEVICE}"]


def test_the_bakes_temporary_files_go_to_the_bakes_own_state_directory():
    bake = load_source(BAKE_SCRIPT, "bake_for_the_builder_contract")
    assert BAKE_STATE_DIR == bake.STATE


# ---- the builder's startup script ----------------------------------------------------------------------------

STUB_CURL = """\
import json, os, sys
args = sys.argv[1:]
url = args[-1]
with open(sys.argv[0] + ".log", "a") as log:
    if "PUT" in args:
        log.write(f"{url.rsplit('/', 1)[1]}={sys.stdin.read()}\\n")
    else:
        metadata = json.loads(os.environ["METADATA"])
        name = url.rsplit("/", 1)[1]
        if name not in metadata:
            sys.exit(22)  # curl -f on the metadata server's 404
        sys.stdout.write(metadata[name])
"""

STUB_DOCKER = """\
import os, sys
log_path = sys.argv[0] + ".log"
with open(log_path, "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
if sys.argv[1] == "pull":
    pulls = sum(line.startswith("pull ") for line in open(log_path))
    sys.exit(1 if pulls <= int(os.environ["PULL_FAILURES"]) else 0)
if sys.argv[1] == "run":
    for line in os.environ["BAKE_OUTPUT"].split("|"):
        print(line, flush=True)
    sys.exit(int(os.environ["BAKE_STATUS"]))
"""


def run_startup_script(tmp_path: Path, bake_output: list[str], bake_status: int,
                       pull_failures: int = 0) -> tuple[int, Path]:
    """Run images/runtime/builder-startup.sh with stub system tools in place of COS's and the metadata server
    (which serves the builder's metadata as the provider sets it)."""
    bin_dir, work, mount, device = tmp_path / "bin", tmp_path / "work", tmp_path / "mnt", tmp_path / "device"
    bin_dir.mkdir()
    device.touch()
    for name, code in (("curl", STUB_CURL), ("docker", STUB_DOCKER)):
        (bin_dir / name).write_text(f"#!{sys.executable}\n{code}")
    for name, status in (("blkid", 2), ("mountpoint", 1), ("docker-credential-gcr", 0), ("mkfs.ext4", 0),
                         ("mount", 0), ("umount", 0), ("fstrim", 0), ("sleep", 0)):
        (bin_dir / name).write_text(f'#!/bin/bash\necho "{name} $*" >> "$0.log"\nexit {status}\n')
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    script = STARTUP_SCRIPT.read_text()
    for key, value in (("DEVICE", device), ("MOUNT", mount), ("WORK", work), ("CONSOLE", tmp_path / "console")):
        script, count = re.subn(rf"^{key}=\S*", f"{key}={value}", script, flags=re.MULTILINE)
        assert count == 1, f"the script sets {key} once"
    (tmp_path / "startup.sh").write_text(script)
    metadata = builder_metadata(BakeSpec.from_props(props()))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "BAKE_OUTPUT": "|".join(bake_output),
           "BAKE_STATUS": str(bake_status), "PULL_FAILURES": str(pull_failures), "METADATA": json.dumps(metadata)}
    done = subprocess.run(["bash", str(tmp_path / "startup.sh")], env=env, capture_output=True, text=True,
                          timeout=30, check=False)
    return done.returncode, bin_dir


def published(bin_dir: Path) -> list[str]:
    return (bin_dir / "curl.log").read_text().splitlines()


def test_startup_script_is_shellcheck_clean():
    from tools.checks import run_shellcheck

    assert [str(finding) for finding in run_shellcheck([STARTUP_SCRIPT])] == []


def test_shellcheck_reports_what_it_finds(tmp_path):
    from tools.checks import run_shellcheck

    script = tmp_path / "bad.sh"
    script.write_text('#!/bin/bash\nf() { local x=$(date); echo $x; }\nf\n')
    assert {finding.code for finding in run_shellcheck([script])} == {"SC2155", "SC2086"}


def test_startup_script_publishes_each_step_then_done_and_runs_the_bake_in_the_base_image(tmp_path):
    output = ["sd-bake-progress webui running", '{"step": "webui", "status": "done", "seconds": 1.0}',
              "sd-bake-progress webui done", "sd-bake-progress venv running", "sd-bake-progress venv done"]

    status, bin_dir = run_startup_script(tmp_path, output, 0)

    assert status == 0
    steps = ["format-disk", "pull-base-image", "webui", "venv", "unmount"]
    assert published(bin_dir) == [line for s in steps for line in (f"step={s}", "status=running")] + ["status=done"]
    run = (bin_dir / "docker.log").read_text().splitlines()[-1]
    assert run == (f"run --rm --user 0:0 --env TMPDIR=/runtime/.bake --volume {tmp_path}/mnt:/runtime "
                   f"--volume {tmp_path}/work:/bake:ro {BASE} "
                   f"python3.11 /bake/bake.py --recipe /bake/recipe.json --root /runtime --base-image-digest {DIGEST} "
                   f"--expected-hash {IDENTITY} --progress-cmd echo sd-bake-progress")
    assert (tmp_path / "work" / "bake.py").read_text() == "print('bake')\n"
    assert json.loads((tmp_path / "work" / "recipe.json").read_text()) == {"python": "3.11"}
    assert (bin_dir / "docker-credential-gcr.log").read_text() == \
        "docker-credential-gcr configure-docker --registries=us-central1-docker.pkg.dev\n"
    assert (bin_dir / "umount.log").read_text() == f"umount {tmp_path}/mnt\n"


def test_startup_script_publishes_the_bakes_failure_line_and_leaves_the_disk_mounted(tmp_path):
    output = ["sd-bake-progress models running", "sd-bake-progress models failed",
              "bake failed at models: sha256 mismatch for v1-5.safetensors"]

    status, bin_dir = run_startup_script(tmp_path, output, 1)

    assert status == 1
    assert published(bin_dir)[-4:] == ["step=models", "status=running",
                                       "error=bake failed at models: sha256 mismatch for v1-5.safetensors",
                                       "status=failed"]
    assert not (bin_dir / "umount.log").exists()


def test_startup_script_retries_the_pull_with_backoff_while_the_builders_iam_grant_propagates(tmp_path):
    status, bin_dir = run_startup_script(tmp_path, ["sd-bake-progress venv running"], 0, pull_failures=3)

    assert status == 0
    docker = (bin_dir / "docker.log").read_text().splitlines()
    assert [line.split()[0] for line in docker] == ["pull", "pull", "pull", "pull", "run"]
    assert (bin_dir / "sleep.log").read_text().splitlines() == ["sleep 5", "sleep 10", "sleep 20"]
    assert published(bin_dir)[-1] == "status=done"


def test_startup_script_stops_pulling_after_the_bound_and_says_what_to_check(tmp_path):
    status, bin_dir = run_startup_script(tmp_path, [], 0, pull_failures=1000)

    assert status == 1
    sleeps = [int(line.split()[1]) for line in (bin_dir / "sleep.log").read_text().splitlines()]
    assert sleeps[:5] == [5, 10, 20, 40, 60] and set(sleeps[5:]) == {60}
    assert 900 <= sum(sleeps) < 900 + 60, "retried for the 15 minutes IAM propagation may take, no longer"
    assert not any(line.startswith("run ") for line in (bin_dir / "docker.log").read_text().splitlines())
    assert published(bin_dir)[-2:] == [
        f"error=docker pull {BASE} still failed after {sum(sleeps)} s of retries: check that the builder service "
        "account has roles/artifactregistry.reader and that the image exists",
        "status=failed"]


