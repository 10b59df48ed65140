"""Custom resources the program registers, validated against their CRDs' schemas (tests/schemas/README.md).

kubernetes-validate knows only the built-in kinds; a custom resource is held to the schema its CRD
publishes, with unknown fields refused (the vendored schemas set additionalProperties false).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
SCHEMAS = {("cloud.google.com/v1", "ComputeClass"): "computeclass_v1.json"}


def covers(manifest: dict[str, Any]) -> bool:
    return (manifest.get("apiVersion"), manifest.get("kind")) in SCHEMAS


@cache
def _validator(file: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMA_DIR / file).read_text())
    return jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)(schema)


def errors(manifest: dict[str, Any]) -> list[str]:
    """Every schema violation of `manifest`, as `path: message`."""
    validator = _validator(SCHEMAS[(manifest["apiVersion"], manifest["kind"])])
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
            for e in sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path)))]
