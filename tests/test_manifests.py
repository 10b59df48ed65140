"""Every Kubernetes object the program registers is a valid manifest for the cluster's Kubernetes.

kubernetes-validate checks each object against the real OpenAPI schemas of the minor version the
cluster config targets, in strict mode, so an unknown or misspelt field fails.
"""

from __future__ import annotations

import kubernetes_validate
import pytest

from tests.test_cluster import stack_config
from tools import plan


def test_program_registers_kubernetes_objects(run):
    kinds = {o.inputs["kind"] for o in run.kubernetes_objects()}
    assert {"Namespace", "Deployment", "DaemonSet", "Service", "CronJob"} <= kinds


def test_every_object_is_valid_for_the_target_kubernetes_version(run):
    minor = stack_config(run).cluster.kubernetes_minor
    errors = []
    for name, manifest in plan.manifests(run).items():
        try:
            kubernetes_validate.validate(manifest, minor, strict=True)
        except kubernetes_validate.ValidationError as err:
            errors.append(f"{name}: {err.message} at {'.'.join(str(p) for p in err.path)}")
    assert errors == []


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
