"""kubernetes-validate's strict check, each schema parsed once per test process.

kubernetes_validate.validate (1.37.0, kubernetes_validate/utils.py) reads and parses the kind's
schema and the version's _definitions.json (1.6 MB) again on every call, and the suite checks
hundreds of manifests. This picks the schema version the same way, builds the same Draft 2020-12
validator over the same files and registry once per (version, kind, apiVersion), and raises the
library's own errors; tests/test_kube_schemas.py holds it to the library's verdicts.
"""

from __future__ import annotations

import re
from functools import cache

import jsonschema
from kubernetes_validate import ValidationError, utils
from referencing import Registry, Resource


@cache
def schema_version(minor: str) -> str:
    """The newest schema version not newer than `minor`, as the library picks it."""
    minor = minor.removeprefix("v")
    if utils.major_minor(minor) > utils.latest_version():
        raise utils.VersionNotSupportedError(version=utils.major_minor(minor))
    return [v for v in utils.all_versions() if utils.major_minor(v) <= utils.major_minor(minor)][-1]


@cache
def _definitions(schema_dir: str, minor: str) -> Resource:
    return Resource.from_contents(utils.schema_contents(f"kubernetes-json-schema/{schema_dir}/_definitions.json", minor))


@cache
def _validator(minor: str, kind: str, api_version: str) -> jsonschema.Draft202012Validator:
    schema_dir = f"v{schema_version(minor)}-local-strict"
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = utils.schema_contents(f"kubernetes-json-schema/{schema_dir}/{kind.lower()}-{group_version}.json", minor)
    except FileNotFoundError:
        raise utils.SchemaNotFoundError(version=utils.major_minor(minor), kind=kind, api_version=api_version) from None
    registry = _definitions(schema_dir, minor) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate(manifest: dict, minor: str) -> None:
    """kubernetes_validate.validate(manifest, minor, strict=True), with the schemas kept."""
    try:
        _validator(minor, manifest["kind"], manifest["apiVersion"]).validate(manifest)
    except jsonschema.ValidationError as err:
        raise ValidationError(err, version=utils.major_minor(schema_version(minor))) from None
