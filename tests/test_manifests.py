"""Every Kubernetes object the program registers is a valid manifest for the cluster's Kubernetes.

kubernetes-validate checks each object against the real OpenAPI schemas of the minor version the
cluster config targets, in strict mode (its schemas parsed once: tests/kube_schemas.py), so an
unknown or misspelt field fails; custom resources against their CRDs' schemas at the pinned chart
and API versions (tests/crd_schemas.py).
"""

from __future__ import annotations

import kubernetes_validate
import pytest

from tests import crd_schemas, kube_schemas
from tests.test_cluster import stack_config
from tools import plan


def test_program_registers_kubernetes_objects(run):
    kinds = {o.inputs["kind"] for o in run.kubernetes_objects()}
    assert {"Namespace", "Deployment", "DaemonSet", "Service", "CronJob"} <= kinds


def manifest_errors(run) -> list[str]:
    """Every object checked against the schemas of the stack's Kubernetes minor, custom resources against
    their CRD's (tests/crd_schemas.py)."""
    minor = stack_config(run).cluster.kubernetes_minor
    errors = []
    for name, manifest in plan.manifests(run).items():
        if crd_schemas.knows(manifest):
            errors += [f"{name}: {e}" for e in crd_schemas.validate(manifest)]
            continue
        try:
            kube_schemas.validate(manifest, minor)
        except kubernetes_validate.ValidationError as err:
            errors.append(f"{name}: {err.message} at {'.'.join(str(p) for p in err.path)}")
    return errors


def test_every_object_is_valid_for_the_target_kubernetes_version(run):
    assert manifest_errors(run) == []


def test_validation_rejects_an_unknown_field(run):
    """The oracle itself: a misspelt field in a recorded manifest fails strict validation."""
    minor = stack_config(run).cluster.kubernetes_minor
    manifest = next(m for m in plan.manifests(run).values() if m["kind"] == "Deployment")
    broken = {**manifest, "spec": {**manifest["spec"], "replica": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, minor, strict=True)


def test_offline_plan_writes_every_manifest(run, tmp_path):
    plan.write(run, tmp_path)
    written = sorted(p.name for p in (tmp_path / run.stack / "manifests").glob("*.yaml"))
    assert written == sorted(plan.manifests(run))
    assert len(written) == len(run.kubernetes_objects())


@pytest.fixture(scope="module")
def checkov_report(runs, tmp_path_factory):
    """One checkov process over both stacks' manifests (out/<stack>/manifests/): its start is most of its cost."""
    from tools import checks

    out = tmp_path_factory.mktemp("plans")
    for run in runs.values():
        plan.write(run, out)
    report = checks.run_checkov(out, frameworks=("kubernetes",))
    unplaced = [f.file for f in (*report.failed, *report.skipped)
                if not any(f.file.startswith(f"{stack}/manifests/") for stack in runs)]
    assert unplaced == [], "findings the per-stack tests would not see"
    return report


def of_stack(findings, stack: str) -> list:
    return [f for f in findings if f.file.startswith(f"{stack}/manifests/")]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_checkov_finds_nothing_in_the_manifests(checkov_report, stack):
    assert checkov_report.resource_count > 0
    assert [str(f) for f in of_stack(checkov_report.failed, stack)] == []


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_checkov_skip_in_the_manifests_has_a_reason(checkov_report, stack):
    skipped = of_stack(checkov_report.skipped, stack)
    assert skipped, "the attacher's privileged container is skipped, with reasons"
    assert [s for s in skipped if not s.explained] == []


def test_only_the_disk_attacher_the_webui_and_the_request_queue_carry_checkov_skips(run):
    skipping = {o.inputs["metadata"]["name"] for o in run.kubernetes_objects()
                if any(k.startswith("checkov.io/skip") for k in (o.inputs["metadata"].get("annotations") or {}))}
    assert skipping == {"disk-attacher", "webui", "request-queue"}


def test_checkov_skip_reasons_cannot_hide_an_equals_sign():
    from components.webui import checkov_skips

    with pytest.raises(ValueError, match="^a checkov skip reason cannot contain '='$"):
        checkov_skips({"CKV_K8S_1": "a=b"})
