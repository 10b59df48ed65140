"""Routes HTTP requests to a discovery document's methods and checks values against the methods' schemas.

Encoding rules (the proto3 JSON mapping, which the Compute REST front end implements):
- requests: 64-bit integers (int64/uint64) as decimal strings or JSON numbers, 32-bit integers as
  numbers or decimal strings, floats as numbers or "NaN"/"Infinity"/"-Infinity", null = unset.
  google-cloud-compute sends 64-bit integers as strings (json_format.MessageToJson).
- responses: only the canonical form the API emits: 64-bit integers as strings, 32-bit integers
  as numbers, no nulls. Enums by name. Unknown fields are violations both ways (the API rejects
  them in requests; the client silently drops them from responses, which would hide fake drift).
"""

from __future__ import annotations

import difflib
import functools
import importlib.resources
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "uint32": (0, 2**32 - 1), "int64": (-(2**63), 2**63 - 1),
               "uint64": (0, 2**64 - 1), "fixed64": (0, 2**64 - 1)}
_INT64_FORMATS = ("int64", "uint64", "fixed64")
_DECIMAL = re.compile(r"-?[0-9]+")
_FLOAT = re.compile(r"-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?")
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")
_DATETIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
_DURATION = re.compile(r"-?\d+(\.\d{1,9})?s")


@functools.cache
def discovery_document(api: str = "compute.v1") -> dict[str, Any]:
    """A discovery document google-api-python-client ships, compute.v1 by default (parsed once per process)."""
    path = importlib.resources.files("googleapiclient") / "discovery_cache" / "documents" / f"{api}.json"
    return json.loads(path.read_text(encoding="utf-8"))


def _show(value: Any) -> str:
    kind = {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}
    return f"{kind.get(type(value), type(value).__name__)} {json.dumps(value)[:80]}"


@dataclass(frozen=True)
class _Route:
    method: dict[str, Any]
    pattern: re.Pattern[str]
    literal_chars: int


class SchemaChecker:
    """Routes HTTP requests to a discovery document's methods (compute.v1 for the fake) and checks values
    against the methods' schemas; tests/test_observability.py checks monitoring and logging bodies with it."""

    def __init__(self, document: dict[str, Any]):
        self.schemas: dict[str, Any] = document["schemas"]
        self.global_parameters: dict[str, Any] = document["parameters"]
        self.base_path: str = document["basePath"]
        self.methods: dict[str, dict[str, Any]] = {}
        self._routes: dict[str, list[_Route]] = {}
        pending = list(document["resources"].values())
        while pending:
            resource = pending.pop()
            pending.extend(resource.get("resources", {}).values())
            for method in resource.get("methods", {}).values():
                self.methods[method["id"]] = method
                parts = re.split(r"\{(\w+)\}", method.get("flatPath", method["path"]))
                regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts))
                route = _Route(method, re.compile(regex), sum(len(p) for p in parts[::2]))
                self._routes.setdefault(method["httpMethod"], []).append(route)

    def route(self, http_method: str, path: str) -> tuple[dict[str, Any], dict[str, str]] | None:
        """The method whose template matches most specifically, and its (decoded) path parameters."""
        if not path.startswith(self.base_path):
            return None
        rest = path[len(self.base_path):]
        matches = [(r, m) for r in self._routes.get(http_method, []) if (m := r.pattern.fullmatch(rest))]
        if not matches:
            return None
        route, match = max(matches, key=lambda pair: pair[0].literal_chars)
        return route.method, {k: unquote(v) for k, v in match.groupdict().items()}

    def check_request(self, method: dict[str, Any], path_params: dict[str, str], query: dict[str, list[str]],
                      body: Any) -> list[str]:
        where = f"request {method['id']}"
        params = method.get("parameters", {})
        problems = []
        for name, value in path_params.items():
            pattern = params.get(name, {}).get("pattern")
            if pattern and not re.fullmatch(pattern, value):
                problems.append(f"{where}: path parameter {name}={value!r} does not match {pattern}")
        own_query = {k: v for k, v in params.items() if v["location"] == "query"}
        for name, values in query.items():
            spec = own_query.get(name) or self.global_parameters.get(name)
            if spec is None:
                allowed = ", ".join(sorted(own_query)) or "none besides the standard ones"
                problems.append(f"{where}: unknown query parameter {name!r} (allowed: {allowed})")
                continue
            if len(values) > 1 and not spec.get("repeated"):
                problems.append(f"{where}: query parameter {name!r} given {len(values)} times, allowed once")
            problems += [p for v in values for p in self._check_query_value(spec, v, f"{where}: query {name}")]
        problems += [f"{where}: required query parameter {name!r} is missing"
                     for name, spec in own_query.items() if spec.get("required") and name not in query]
        if "request" in method:
            problems += self._check(method["request"], {} if body is None else body, f"{where}: body", method["id"])
        elif body not in (None, {}):
            problems.append(f"{where}: the method takes no request body, got {_show(body)}")
        return problems

    def check_response(self, method: dict[str, Any], body: Any) -> list[str]:
        return self._check(method["response"], body, f"response {method['id']}: body", None)

    def canonical(self, schema: dict[str, Any], value: Any) -> Any:
        """A valid request value in the form the API stores and emits (64-bit integers as strings, no nulls)."""
        if "$ref" in schema:
            schema = self.schemas[schema["$ref"]]
        kind, fmt = schema.get("type"), schema.get("format")
        if kind == "object" and isinstance(value, dict):
            props, extra = schema.get("properties") or {}, schema.get("additionalProperties")
            return {k: self.canonical(props.get(k) or extra or {}, v) for k, v in value.items() if v is not None}
        if kind == "array" and isinstance(value, list):
            return [self.canonical(schema["items"], item) for item in value]
        if fmt in _INT64_FORMATS:
            return str(int(value))
        if fmt in _INT_RANGES:
            return int(value)
        if kind == "number" and isinstance(value, str) and value not in ("NaN", "Infinity", "-Infinity"):
            return float(value)
        return value

    @staticmethod
    def _check_query_value(spec: dict[str, Any], value: str, where: str) -> list[str]:
        if "enum" in spec and value not in spec["enum"]:
            return [f"{where}={value!r} is not one of {', '.join(spec['enum'])}"]
        if spec.get("type") == "boolean" and value not in ("true", "false"):
            return [f"{where}={value!r} must be true or false"]
        if spec.get("type") == "integer" or spec.get("format") in _INT_RANGES:
            return _check_integer(value, spec.get("format", "int32"), where, request=True)
        return []

    def _check(self, schema: dict[str, Any], value: Any, where: str, method_id: str | None) -> list[str]:
        """Problems of `value` against `schema`; method_id is set for requests, None for responses."""
        if "$ref" in schema:
            schema = self.schemas[schema["$ref"]]
        if value is None:
            return [] if method_id else [f"{where}: null (the API omits unset fields)"]
        kind, fmt = schema.get("type"), schema.get("format")
        if kind == "any" or fmt == "google.protobuf.Any":
            return []
        if kind == "object":
            return self._check_object(schema, value, where, method_id)
        if kind == "array":
            if not isinstance(value, list):
                return [f"{where}: expected an array, got {_show(value)}"]
            return [p for i, item in enumerate(value) for p in self._check(schema["items"], item, f"{where}[{i}]",
                                                                           method_id)]
        if kind == "boolean":
            return [] if isinstance(value, bool) else [f"{where}: expected true or false, got {_show(value)}"]
        if kind == "integer" or fmt in _INT_RANGES:
            return _check_integer(value, fmt or "int32", where, request=method_id is not None)
        if kind == "number":
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return []
            if isinstance(value, str) and (value in ("NaN", "Infinity", "-Infinity")
                                           or (method_id and _FLOAT.fullmatch(value))):
                return []
            return [f"{where}: expected {fmt} as a JSON number, got {_show(value)}"]
        if not isinstance(value, str):
            return [f"{where}: expected a string, got {_show(value)}"]
        if "enum" in schema and value not in schema["enum"]:
            return [f"{where}: {value!r} is not one of {', '.join(schema['enum'])}"]
        if "pattern" in schema and not re.fullmatch(schema["pattern"], value):
            return [f"{where}: {value!r} does not match {schema['pattern']}"]
        checks = {"byte": (_BASE64, "base64"), "google-datetime": (_DATETIME, "an RFC 3339 time"),
                  "google-duration": (_DURATION, "a duration like '3.5s'")}
        if fmt in checks and not checks[fmt][0].fullmatch(value):
            return [f"{where}: {value!r} is not {checks[fmt][1]}"]
        return []

    def _check_object(self, schema: dict[str, Any], value: Any, where: str, method_id: str | None) -> list[str]:
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {_show(value)}"]
        props, extra = schema.get("properties"), schema.get("additionalProperties")
        problems = []
        for key, item in value.items():
            if props and key in props:
                problems += self._check(props[key], item, f"{where}.{key}", method_id)
            elif extra is not None:
                problems += self._check(extra, item, f"{where}[{key!r}]", method_id)
            elif props is not None:
                hint = difflib.get_close_matches(key, props, n=1)
                known = f"did you mean {hint[0]!r}?" if hint else f"not a field of {schema.get('id', 'this object')}"
                problems.append(f"{where}: unknown field {key!r} ({known})")
        for key, prop in (props or {}).items() if method_id else ():
            if method_id in prop.get("annotations", {}).get("required", ()) and value.get(key) in (None, ""):
                problems.append(f"{where}.{key}: required by {method_id} but missing")
        return problems


@functools.cache
def schema_checker() -> SchemaChecker:
    """One checker per process: building the routes of ~900 methods costs more than a test should."""
    return SchemaChecker(discovery_document())


def _check_integer(value: Any, fmt: str, where: str, *, request: bool) -> list[str]:
    as_string = fmt in _INT64_FORMATS
    number: int | None = None
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        number = value if request or not as_string else None
    elif isinstance(value, float):
        number = int(value) if request and value.is_integer() else None
    elif isinstance(value, str) and _DECIMAL.fullmatch(value):
        number = int(value) if request or as_string else None
    if number is None:
        wanted = "a decimal string or a JSON integer" if request else (
            "a decimal string" if as_string else "a JSON integer")
        return [f"{where}: expected {fmt} as {wanted}, got {_show(value)}"]
    low, high = _INT_RANGES[fmt]
    return [] if low <= number <= high else [f"{where}: {number} is outside the {fmt} range {low}..{high}"]
