"""The CI workflows: lint-clean (yamllint, actionlint), every action pinned to a commit, previews
of dev and prod checked by the policy pack on each pull request, dev-then-prod deploys behind an
approval, a scheduled drift check, and Google credentials only through Workload Identity Federation.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools import base_pins, checks

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS_DIR = ROOT / ".github" / "workflows"
WORKFLOWS = sorted(WORKFLOWS_DIR.glob("*.y*ml"))
LOCAL_ACTIONS = sorted((ROOT / ".github" / "actions").glob("*/action.y*ml"))
STACKS = ["dev", "prod"]
SETUP_ACTION = "./.github/actions/pulumi-env"
PINNED_USES = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+(\.\d+)*$")


def _load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    if True in document:  # YAML 1.1 reads the `on:` key as the boolean true
        document["on"] = document.pop(True)
    return document


def _workflow(name: str) -> dict[str, Any]:
    return _load(WORKFLOWS_DIR / f"{name}.yml")


def _steps_using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [step for step in job["steps"] if step.get("uses", "").split("@")[0] == action]


def _pulumi_step(job: dict[str, Any]) -> dict[str, Any]:
    steps = _steps_using(job, "pulumi/actions")
    assert len(steps) == 1, f"want one pulumi/actions step, found {len(steps)}"
    return steps[0]["with"]


def _uses_lines(path: Path) -> list[str]:
    """Every `uses:` value with its trailing comment, as written (YAML parsing drops comments)."""
    return [
        match.group(1).strip()
        for match in re.finditer(r"^\s*(?:-\s+)?uses:\s*(.+)$", path.read_text(), re.M)
    ]


def test_the_three_workflows_exist():
    assert {p.name for p in WORKFLOWS} >= {"preview.yml", "deploy.yml", "drift.yml"}


def test_yamllint_finds_nothing_in_workflows_and_local_actions():
    findings = checks.run_yamllint([*WORKFLOWS, *LOCAL_ACTIONS, checks.YAMLLINT_CONFIG])
    assert findings == [], "\n".join(map(str, findings))


def test_yamllint_reports_a_duplicated_key(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    runs-on: x\n    runs-on: y\n")
    assert [finding.line for finding in checks.run_yamllint([broken])] == [5]


def test_actionlint_finds_nothing_in_the_workflows():
    findings = checks.run_actionlint(WORKFLOWS)
    assert findings == [], "\n".join(map(str, findings))


def test_actionlint_reports_an_undefined_matrix_property(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - run: echo ${{ matrix.stack }}\n"
    )
    findings = checks.run_actionlint([broken])
    assert [(f.line, f.code) for f in findings] == [(6, "expression")]


@pytest.mark.parametrize("path", WORKFLOWS + LOCAL_ACTIONS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_action_is_pinned_to_a_commit_with_its_version(path):
    uses = _uses_lines(path)
    assert uses
    unpinned = [u for u in uses if not (u.startswith("./") or PINNED_USES.match(u))]
    assert unpinned == [], "pin as owner/repo@<40-hex commit> # vX.Y.Z; local ./ actions are exempt"


def test_no_workflow_or_action_reads_a_service_account_key():
    for path in [*WORKFLOWS, *LOCAL_ACTIONS]:
        assert "credentials_json" not in path.read_text(), path


def test_google_auth_is_workload_identity_federation():
    (action,) = [p for p in LOCAL_ACTIONS if p.parent.name == Path(SETUP_ACTION).name]
    steps = _load(action)["runs"]["steps"]
    (auth,) = [s for s in steps if s.get("uses", "").startswith("google-github-actions/auth@")]
    assert set(auth["with"]) == {"workload_identity_provider", "service_account"}
    (gcloud,) = [s for s in steps if s.get("uses", "").startswith("google-github-actions/setup-gcloud@")]
    assert "gke-gcloud-auth-plugin" in gcloud["with"]["install_components"]


@pytest.mark.parametrize("name", ["preview", "deploy", "drift"])
def test_jobs_that_reach_google_may_mint_an_oidc_token_and_nothing_else_can(name):
    workflow = _workflow(name)
    assert "id-token" not in workflow.get("permissions", {}), "id-token only on the jobs that need it"
    for job_name, job in workflow["jobs"].items():
        uses_google = bool(_steps_using(job, SETUP_ACTION))
        assert (job.get("permissions", {}).get("id-token") == "write") == uses_google, job_name
        if uses_google:
            inputs = _steps_using(job, SETUP_ACTION)[0]["with"]
            assert inputs["workload-identity-provider"] == "${{ vars.GCP_WORKLOAD_IDENTITY_PROVIDER }}"


def test_preview_runs_on_pull_requests_to_main():
    workflow = _workflow("preview")
    assert workflow["on"] == {"pull_request": {"branches": ["main"]}}
    assert workflow["permissions"] == {"contents": "read"}


def test_preview_runs_the_test_suite_first():
    jobs = _workflow("preview")["jobs"]
    assert [step["run"] for step in jobs["test"]["steps"] if "run" in step][-1] == "bash .ci/run"
    assert jobs["preview"]["needs"] == "test"


def test_preview_tests_inside_the_base_image_with_its_interpreter():
    """The bake's venv and the image's size estimate need Debian bookworm's python3.11 and apt."""
    job = _workflow("preview")["jobs"]["test"]
    base = base_pins.dockerfile_base(base_pins.DOCKERFILE.read_text())
    assert job["container"]["image"] == base
    (packages,) = [step["run"] for step in job["steps"] if "apt-get install" in step.get("run", "")]
    assert {"python3.11", "python3.11-venv", "git", "make"} <= set(packages.split())
    steps = [step.get("uses", step.get("run", "")).split("@")[0] for step in job["steps"]]
    assert steps.index(packages) < steps.index("actions/checkout")  # checkout clones with git


def test_preview_previews_dev_and_prod_with_the_policy_pack_and_comments():
    job = _workflow("preview")["jobs"]["preview"]
    pulumi = _pulumi_step(job)
    assert job["strategy"]["matrix"]["stack"] == STACKS
    assert job["permissions"]["pull-requests"] == "write"
    assert pulumi["command"] == "preview"
    assert pulumi["stack-name"] == "${{ matrix.stack }}"
    assert pulumi["policyPacks"] == "policy"
    assert pulumi["policyPackConfigs"] == "policy/config/${{ matrix.stack }}.json"
    assert pulumi["comment-on-pr"] is True


def test_deploy_runs_on_push_to_main():
    assert _workflow("deploy")["on"] == {"push": {"branches": ["main"]}}


def test_deploy_updates_dev_then_prod_behind_the_prod_environment():
    jobs = _workflow("deploy")["jobs"]
    assert jobs["prod"]["needs"] == "dev"
    assert jobs["prod"]["environment"] == "prod"
    for stack in STACKS:
        pulumi = _pulumi_step(jobs[stack])
        assert (pulumi["command"], pulumi["stack-name"]) == ("up", stack)
        assert pulumi["policyPacks"] == "policy"
        assert pulumi["policyPackConfigs"] == f"policy/config/{stack}.json"


def test_drift_previews_every_stack_daily_expecting_no_changes():
    workflow = _workflow("drift")
    job = workflow["jobs"]["drift"]
    pulumi = _pulumi_step(job)
    assert len(workflow["on"]["schedule"]) == 1
    assert job["strategy"]["matrix"]["stack"] == STACKS
    assert (pulumi["command"], pulumi["stack-name"]) == ("preview", "${{ matrix.stack }}")
    assert pulumi["expect-no-changes"] is True
    assert pulumi["refresh"] is True


def test_every_pulumi_run_of_a_stack_shares_that_stacks_concurrency_group():
    groups = {stack: _workflow("deploy")["jobs"][stack]["concurrency"] for stack in STACKS}
    drift = _workflow("drift")["jobs"]["drift"]["concurrency"]
    for stack, group in groups.items():
        assert group == {"group": f"pulumi-{stack}", "cancel-in-progress": False}
        assert drift["group"].replace("${{ matrix.stack }}", stack) == group["group"]
    assert drift["cancel-in-progress"] is False


def test_every_pulumi_run_uses_the_cli_of_the_sdk_pin_and_the_backend_variable():
    sdk = re.search(r"^pulumi==(\S+)$", (ROOT / "requirements.in").read_text(), re.M)
    runs = [
        _pulumi_step(job)
        for name in ("preview", "deploy", "drift")
        for job in _workflow(name)["jobs"].values()
        if _steps_using(job, "pulumi/actions")
    ]
    assert len(runs) == 4
    assert sdk and {run["pulumi-version"] for run in runs} == {sdk.group(1)}
    assert {run["cloud-url"] for run in runs} == {"${{ vars.PULUMI_BACKEND_URL }}"}


def test_every_stack_the_workflows_name_has_a_stack_file_and_a_policy_config():
    for stack in STACKS:
        assert (ROOT / f"Pulumi.{stack}.yaml").is_file()
        assert (ROOT / "policy" / "config" / f"{stack}.json").is_file()
