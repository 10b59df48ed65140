"""The agent loads the four Compute services it calls, not the package's ~100 (its cold start)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.attacher.conftest import ATTACHER_ROOT

SERVICES = "google.cloud.compute_v1.services."


def run_python(code: str) -> dict:
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True,
                            timeout=120, check=True, env={"PYTHONPATH": str(ATTACHER_ROOT)})
    return json.loads(result.stdout)


def loaded_services() -> str:
    return f"sorted({{m.split('.')[4] for m in sys.modules if m.startswith({SERVICES!r})}})"


def test_a_pass_imports_only_the_services_it_calls():
    loaded = run_python(f"""
import json, sys
from google.auth.credentials import AnonymousCredentials
from attacher import __main__, agent, compute, gc
assert not any(m.startswith("google.cloud.compute_v1") for m in sys.modules), "imported before the pass"
compute.make_clients(AnonymousCredentials(), "http://127.0.0.1:9")
print(json.dumps({loaded_services()}))""")

    # global_operations: the images transport imports it for images' own long-running operations
    assert loaded == ["disks", "global_operations", "images", "instances", "zone_operations"]


def test_the_package_stays_whole_for_everyone_else():
    seen = run_python(f"""
import json, sys
from attacher import compute_api
from google.cloud import compute_v1
import google.cloud.compute_v1.services.regions
print(json.dumps({{"same_client": compute_v1.DisksClient is compute_api.DisksClient,
                  "same_types": compute_v1.Disk is compute_api.compute.Disk,
                  "other_client": compute_v1.NetworksClient.__name__,
                  "version": compute_v1.__version__,
                  "services": len({loaded_services()})}}))""")

    assert seen["same_client"] and seen["same_types"] and seen["other_client"] == "NetworksClient"
    assert seen["version"] and seen["services"] > 50
