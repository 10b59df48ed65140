"""Custom resources checked against the openAPIV3Schema of the kinds that define them.

tests/schemas/<source>/<Kind>.json holds each schema, written by hand from the kind's public API
documentation (its `source` field names the pages; tests/schemas/README.md lists them).
kubernetes-validate knows only built-in kinds, so every custom resource the program registers goes
through here instead.

The API server prunes fields a structural schema does not declare and, with strict field validation
(kubectl's default since 1.27), refuses them: so an object schema with `properties` and no
`additionalProperties` is closed here, and a misspelt field fails as it would at `kubectl apply`.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMAS = Path(__file__).resolve().parent / "schemas"


@cache
def schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the schema document."""
    out = {}
    for path in sorted(SCHEMAS.glob("*/*.json")):
        doc = json.loads(path.read_text())
        out[(doc["apiVersion"], doc["kind"])] = doc
    return out


def _closed(schema: Any) -> Any:
    """Close every object schema that lists its properties, as strict field validation does."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out \
                and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


def _objectmeta_open(schema: dict) -> dict:
    """CRDs declare metadata as a bare object: the API server checks it as ObjectMeta itself."""
    schema = copy.deepcopy(schema)
    schema.setdefault("properties", {})["metadata"] = {"type": "object"}
    return schema


def knows(manifest: dict) -> bool:
    return (manifest.get("apiVersion"), manifest.get("kind")) in schemas()


def validate(manifest: dict) -> list[str]:
    """Every schema error of `manifest`, as 'path: message'; raises KeyError for a kind with no schema."""
    doc = schemas()[(manifest["apiVersion"], manifest["kind"])]
    validator = jsonschema.Draft7Validator(_closed(_objectmeta_open(doc["openAPIV3Schema"])))
    return sorted(f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
                  for e in validator.iter_errors(manifest))
