"""The offline plan: what it prints, what it writes, and when it fails."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from tests.conftest import ROOT
from tools import policy_check


def plan(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.plan", "--out", str(tmp_path), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def test_plan_writes_every_resource_with_its_registered_inputs(tmp_path):
    result = plan(tmp_path, "--stack", "dev")
    assert result.returncode == 0, result.stderr
    written = json.loads((tmp_path / "dev.json").read_text())
    assert written["stack"] == "dev"
    assert all(set(r) >= {"urn", "type", "name", "parent", "inputs"} for r in written["resources"])
    cluster = next(r for r in written["resources"] if r["type"] == "gcp:container/cluster:Cluster")
    assert cluster["inputs"]["clusterAutoscaling"]["autoscalingProfile"] == "OPTIMIZE_UTILIZATION"


def test_plan_never_writes_a_secret(tmp_path):
    plan(tmp_path, "--stack", "dev")
    secret = yaml.safe_load((tmp_path / "dev" / "manifests" / "secret-sd-webui-webui-api-auth.yaml").read_text())
    assert secret["stringData"] == {"SD_API_AUTH": "[secret]"}
    assert "mock-" not in (tmp_path / "dev.json").read_text()


def test_plan_prints_the_tree_with_the_runtime_identity_and_the_policy_result(tmp_path):
    out = plan(tmp_path, "--stack", "dev").stdout
    assert "sdgke:runtime_image:RuntimeDiskImage runtime" in out
    assert "identity_hash=" in out and "image_name=sd-runtime-" in out
    assert "kubernetes:apps/v1:DaemonSet runtime-disk-daemonset" in out
    assert "gcp:projects/iAMCustomRole:IAMCustomRole runtime-disk-agent-role" in out
    assert f"policy pack: {len(policy_check.policies())} policies, 0 violation(s)" in out


def test_plan_fails_on_a_mandatory_policy_violation(tmp_path):
    values = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())
    values["config"]["sd-gke:gpuPool"]["maxNodes"] = 40
    stack_file = tmp_path / "Pulumi.prod.yaml"
    stack_file.write_text(yaml.safe_dump(values))
    result = plan(tmp_path, "--stack", "prod", "--stack-file", str(stack_file))
    assert result.returncode == 1
    assert "[mandatory] gke-gpu-pool-autoscaling: GPU node pool may grow to 40 nodes" in result.stdout
    assert "mandatory policy violations" in result.stderr


def test_plan_of_an_unknown_stack_names_the_stacks_there(tmp_path):
    result = plan(tmp_path, "--stack", "staging")
    assert result.returncode == 2
    assert "no stack file Pulumi.staging.yaml; stacks here: dev, prod" in result.stderr
    assert "Traceback" not in result.stderr


def test_plan_of_a_broken_stack_file_says_what_is_wrong_without_a_traceback(tmp_path):
    stack_file = tmp_path / "Pulumi.dev.yaml"
    stack_file.write_text("config:\n  sd-gke:zones: [us-central1-a\n")
    result = plan(tmp_path, "--stack", "dev", "--stack-file", str(stack_file))
    assert result.returncode == 2
    assert "Pulumi.dev.yaml: not valid YAML" in result.stderr
    assert "Traceback" not in result.stderr


def test_plan_of_a_stack_file_without_config_says_what_is_expected(tmp_path):
    stack_file = tmp_path / "Pulumi.dev.yaml"
    stack_file.write_text("- just\n- a list\n")
    result = plan(tmp_path, "--stack", "dev", "--stack-file", str(stack_file))
    assert result.returncode == 2
    assert "expected a mapping with a `config:` mapping" in result.stderr
