"""tests/kube_schemas.py gives kubernetes-validate's own verdicts, with the schemas parsed once."""

from __future__ import annotations

import kubernetes_validate
import pytest
from kubernetes_validate import utils

from tests import crd_schemas, kube_schemas
from tests.test_cluster import stack_config
from tools import plan


def built_in(run) -> dict[str, dict]:
    return {name: m for name, m in plan.manifests(run).items() if not crd_schemas.knows(m)}


def library_error(manifest: dict, minor: str) -> tuple[str, list] | None:
    try:
        kubernetes_validate.validate(manifest, minor, strict=True)
    except kubernetes_validate.ValidationError as err:
        return err.message, list(err.path)
    return None


def kept_error(manifest: dict, minor: str) -> tuple[str, list] | None:
    try:
        kube_schemas.validate(manifest, minor)
    except kubernetes_validate.ValidationError as err:
        return err.message, list(err.path)
    return None


def test_every_manifest_of_the_stack_gets_the_librarys_verdict(run):
    minor = stack_config(run).cluster.kubernetes_minor
    manifests = built_in(run)
    assert manifests
    assert {n: kept_error(m, minor) for n, m in manifests.items()} == {n: library_error(m, minor) for n, m in manifests.items()}


def test_a_misspelt_field_gets_the_librarys_error_and_path(runs):
    minor = stack_config(runs["dev"]).cluster.kubernetes_minor
    deployment = next(m for m in built_in(runs["dev"]).values() if m["kind"] == "Deployment")
    template = deployment["spec"]["template"]
    broken = {**deployment, "spec": {**deployment["spec"], "template": {**template, "spec": {
        **template["spec"], "restartPolicyy": "Always"}}}}
    assert kept_error(broken, minor) == library_error(broken, minor) is not None


def test_the_schema_version_is_the_newest_not_newer_than_the_clusters():
    newest = utils.latest_version()
    assert kube_schemas.schema_version(utils.major_minor(newest)) == newest
    assert kube_schemas.schema_version("v" + utils.major_minor(newest)) == newest


def test_an_unknown_kind_raises_the_librarys_error(runs):
    minor = stack_config(runs["dev"]).cluster.kubernetes_minor
    manifest = {"apiVersion": "v1", "kind": "NoSuchKind", "metadata": {"name": "x"}}
    with pytest.raises(utils.SchemaNotFoundError):
        kubernetes_validate.validate(manifest, minor, strict=True)
    with pytest.raises(utils.SchemaNotFoundError):
        kube_schemas.validate(manifest, minor)


def test_each_schema_is_parsed_once_per_process(runs):
    minor = stack_config(runs["dev"]).cluster.kubernetes_minor
    deployment = next(m for m in built_in(runs["dev"]).values() if m["kind"] == "Deployment")
    kube_schemas.validate(deployment, minor)
    assert kube_schemas._validator(minor, "Deployment", "apps/v1") is kube_schemas._validator(minor, "Deployment", "apps/v1")
