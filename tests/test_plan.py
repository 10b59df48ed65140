"""The offline plan: what it prints, what it writes, and when it fails."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tools import plan as plan_tool
from tools import policy_check


@dataclass
class Planned:
    """What `python -m tools.plan` answered: its exit status and what it printed."""
    returncode: int
    stdout: str
    stderr: str


def plan_process(tmp_path, *args: str) -> Planned:
    """The command itself, in a process of its own, as `make plan` runs it."""
    done = subprocess.run([sys.executable, "-m", "tools.plan", "--out", str(tmp_path), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    return Planned(done.returncode, done.stdout, done.stderr)


def plan(tmp_path, *args: str) -> Planned:
    """The command's main() in this process: what it prints and returns are the same, without the second or
    two a new interpreter spends importing Pulumi (dev_plan runs the command as a process)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            returncode = plan_tool.main(["--out", str(tmp_path), *args])
        except SystemExit as exited:
            returncode = exited.code
    return Planned(returncode, stdout.getvalue(), stderr.getvalue())


@dataclass
class DevPlan:
    out: Path
    result: Planned


@pytest.fixture(scope="module")
def dev_plan(tmp_path_factory) -> DevPlan:
    """`python -m tools.plan --stack dev`, run once for the tests that read what it printed and wrote."""
    out = tmp_path_factory.mktemp("plan")
    return DevPlan(out, plan_process(out, "--stack", "dev"))


def test_plan_writes_every_resource_with_its_registered_inputs(dev_plan):
    result = dev_plan.result
    assert result.returncode == 0, result.stderr
    written = json.loads((dev_plan.out / "dev.json").read_text())
    assert written["stack"] == "dev"
    assert all(set(r) >= {"urn", "type", "name", "parent", "inputs"} for r in written["resources"])
    cluster = next(r for r in written["resources"] if r["type"] == "gcp:container/cluster:Cluster")
    assert cluster["inputs"]["clusterAutoscaling"]["autoscalingProfile"] == "OPTIMIZE_UTILIZATION"


def test_plan_never_writes_a_secret(dev_plan):
    secret = yaml.safe_load((dev_plan.out / "dev" / "manifests" / "secret-sd-webui-webui-api-auth.yaml").read_text())
    assert secret["stringData"] == {"SD_API_AUTH": "[secret]"}
    assert "mock-" not in (dev_plan.out / "dev.json").read_text()


def test_plan_prints_the_tree_with_the_runtime_identity_and_the_policy_result(dev_plan):
    out = dev_plan.result.stdout
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


# --- order on a fresh project: every resource waits for the APIs it calls --------------------------------------

def _provider_urn(reference: str) -> str:
    """A provider reference is `URN::ID` (pulumi sdk/python/lib/pulumi/runtime/resource.py, _create_provider_ref)."""
    return reference.rsplit("::", 1)[0]


def _waits_for(plan: dict) -> dict[str, set[str]]:
    """URN -> every URN created before it: its dependencies and its provider, transitively (the edges the
    engine orders by; pulumi/pulumi pkg/resource/graph/dependency_graph.go, DependenciesOf)."""
    direct = {r["urn"]: set(r["dependencies"]) | ({_provider_urn(r["provider"])} if r["provider"] else set())
              for r in plan["resources"]}
    closure: dict[str, set[str]] = {}

    def walk(urn: str) -> set[str]:
        if urn not in closure:
            closure[urn] = set()
            for dep in direct.get(urn, ()):
                closure[urn] |= {dep} | walk(dep)
        return closure[urn]

    for urn in direct:
        walk(urn)
    return closure


def unmet_apis(plan: dict) -> list[str]:
    """Each resource whose API is not enabled before it, or whose type has no known API."""
    from components.apis import PREREQUISITE_APIS, RESOURCE_APIS

    services = {r["inputs"]["service"]: r["urn"] for r in plan["resources"] if r["type"] == "gcp:projects/service:Service"}
    before = _waits_for(plan)
    problems = []
    for r in plan["resources"]:
        if r["type"] not in RESOURCE_APIS:
            if r["type"].startswith("gcp:"):
                problems.append(f"{r['type']} {r['name']}: no API known for this type; add it to components/apis.py")
            continue
        for api in RESOURCE_APIS[r["type"]]:
            if api in PREREQUISITE_APIS:
                continue
            if api not in services:
                problems.append(f"{r['type']} {r['name']}: {api} is never enabled")
            elif services[api] not in before[r["urn"]]:
                problems.append(f"{r['type']} {r['name']}: created without waiting for {api}")
    return problems


def test_plan_records_each_resources_dependencies(dev_plan):
    assert dev_plan.result.returncode == 0
    written = {r["name"]: r for r in json.loads((dev_plan.out / "dev.json").read_text())["resources"]}
    image = written["runtime-image"]
    assert any(urn.endswith("::sd-subnet") for urn in image["propertyDependencies"]["subnetwork"])
    assert set(image["propertyDependencies"]["subnetwork"]) <= set(image["dependencies"])
    assert any(urn.endswith("::apis-compute") for urn in written["google"]["dependencies"])  # explicit depends_on
    assert unmet_apis(json.loads((dev_plan.out / "dev.json").read_text())) == []


def test_every_resource_waits_for_the_apis_it_calls(run):
    assert unmet_apis(run.to_json()) == []


def test_a_resource_that_does_not_wait_for_its_api_is_caught(runs):
    plan_json = runs["dev"].to_json()
    for r in plan_json["resources"]:
        if r["type"] == "pulumi:providers:gcp" and r["name"] == "google":
            r["dependencies"] = []
    problems = unmet_apis(plan_json)
    assert ("gcp:artifactregistry/repository:Repository sd-repository: created without waiting for "
            "artifactregistry.googleapis.com") in problems
    assert "pulumi-python:dynamic:Resource runtime-image: created without waiting for compute.googleapis.com" in problems


def test_a_gcp_resource_type_without_a_known_api_is_caught(runs):
    plan_json = runs["dev"].to_json()
    plan_json["resources"].append({"urn": "urn:x", "type": "gcp:dns/policy:Policy", "name": "b",
                                   "dependencies": [], "provider": None, "inputs": {}})
    assert unmet_apis(plan_json) == ["gcp:dns/policy:Policy b: no API known for this type; add it to components/apis.py"]


# --- optional parts ----------------------------------------------------------------------------------------------

def test_plan_of_the_smallest_stack_turns_every_part_off_and_passes_the_policy_pack(tmp_path):
    result = plan(tmp_path, "--stack", "dev", "--off", "gateway", "--off", "observability", "--off", "jobs")
    assert result.returncode == 0, result.stderr
    types = {r["type"] for r in json.loads((tmp_path / "dev.json").read_text())["resources"]}
    assert not types & {"sdgke:gateway:Gateway", "sdgke:observability:Observability", "sdgke:jobs:Jobs"}
    assert f"policy pack: {len(policy_check.policies())} policies, 0 violation(s)" in result.stdout


def test_plan_refuses_a_part_it_does_not_know_and_names_the_parts(tmp_path):
    result = plan(tmp_path, "--stack", "dev", "--off", "autoscaling")
    assert result.returncode == 2
    assert "invalid choice: 'autoscaling' (choose from 'gateway', 'observability', 'jobs')" in result.stderr


def test_the_program_runs_in_a_process_where_a_test_already_used_asyncio_run():
    """asyncio.run leaves the thread without an event loop, and Pulumi's mock runtime needs one."""
    import asyncio

    from tools import mockrun

    asyncio.run(asyncio.sleep(0))
    assert mockrun.run("dev").resources
