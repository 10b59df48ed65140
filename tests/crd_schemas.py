"""Custom resources checked against the openAPIV3Schema of the kinds that define them.

tests/schemas/<source>/<Kind>.json holds each schema, written by hand from the kind's public API
documentation (its `source` field names the pages; tests/schemas/README.md lists them).
kubernetes-validate knows only built-in kinds, so every custom resource the program registers goes
through here instead.

The API server prunes fields a structural schema does not declare and, with strict field validation
(kubectl's default since 1.27), refuses them: so an object schema with `properties` and no
`additionalProperties` is closed here, and a misspelt field fails as it would at `kubectl apply`.

The schemas also carry the published CRDs' `x-kubernetes-validations` (CEL rules, each with the CRD file
and commit it is quoted from), evaluated with cel-python the way kube-apiserver evaluates them
(kubernetes/kubernetes staging/src/k8s.io/apiextensions-apiserver: pkg/apiserver/schema/cel/validation.go
@00c30b354df7afc15258ecdbdd629555d200de5a validateExpressions, pkg/registry/customresource/strategy.go
@0304c567b68845a829d6d285418e650875a4701d hasBlockingErr):
- a rule runs at the node that declares it, with `self` bound to that node's value: once per array item
  for a rule under `items`, once per map value under `additionalProperties`; never for an absent or null field;
- a rule that names `oldSelf` is a transition rule: it runs only on an update, and only where the old
  object has a value to correlate (object properties, map keys, and items of a `listType: map` list by
  their keys);
- a rule that is false fails with its `message`; one that cannot be evaluated (a missing key, say)
  fails with the error, as "<error> evaluating rule: <message, or the rule without one>";
- on an update, a rule without `oldSelf` on a node whose value did not change does not fail (validation
  ratcheting, on by default since Kubernetes 1.30: the API server turns the error into a warning);
- the object is checked as the API server stores it: with the schema's `default`s filled in first
  (structural defaulting, pkg/apiserver/schema/defaulting/algorithm.go; the defaults are quoted from the
  same CRDs), and a property whose name is a CEL reserved word is seen by rules as `__<word>__`
  (k8s.io/apiserver pkg/cel/escaping.go@37005d1a7ef979c16295d682b37a5e01e45664b2: `p.__namespace__` in
  Gateway API's rules);
- none runs when the schema check found a type, enum, required or size error: the API server reports
  that the rules were not checked instead.
"""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import celpy
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


def declared_rules(api_version: str, kind: str) -> set[tuple[str, str]]:
    """(node path without indices, message) of every rule the kind's schema declares."""
    found = set()

    def walk(node: dict, path: str) -> None:
        found.update((path, rule["message"]) for rule in node.get("x-kubernetes-validations", []))
        for name, child in node.get("properties", {}).items():
            walk(child, f"{path}.{name}" if path else name)
        for nested in ("items", "additionalProperties"):
            if isinstance(node.get(nested), dict):
                walk(node[nested], path)
    walk(schemas()[(api_version, kind)]["openAPIV3Schema"], "")
    return found


def failed_rules(errors: list[str]) -> set[tuple[str, str]]:
    """(node path without indices, message) of each rule `validate` reported as failed."""
    out = set()
    for error in errors:
        found = re.fullmatch(r'(\S+): Invalid value: "\w+": (?:.* evaluating rule: )?(.*)', error)
        if found:
            out.add((re.sub(r"\.\d+", "", found[1]), found[2]))
    return out


BLOCKING = {"type", "enum", "required", "maxLength", "maxItems", "maxProperties"}
"""Schema errors that stop the CEL rules (strategy.go hasBlockingErr: TypeInvalid, NotSupported, Required,
TooLong, TooMany)."""
RULES_NOT_CHECKED = ("some validation rules were not checked because the object was invalid; "
                     "correct the existing errors to complete validation")


def validate(manifest: dict, old: dict | None = None) -> list[str]:
    """Every schema error and failed CEL rule of `manifest` (created, or updating `old`), as 'path: message';
    raises KeyError for a kind with no schema."""
    schema = schemas()[(manifest["apiVersion"], manifest["kind"])]["openAPIV3Schema"]
    validator = jsonschema.Draft7Validator(_closed(_objectmeta_open(schema)))
    manifest = defaulted(schema, manifest)
    old = defaulted(schema, old) if old is not None else None
    found = list(validator.iter_errors(manifest))
    errors = sorted(f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in found)
    if any(e.validator in BLOCKING for e in found):
        return errors + [RULES_NOT_CHECKED]
    return errors + rule_violations(schema, manifest, old)


def rule_violations(schema: dict, value: Any, old: Any = None, path: str = "") -> list[str]:
    """The x-kubernetes-validations of `schema` and of every node below it that `value` has, as the API
    server reports them: '<path>: Invalid value: "<type>": <message>'."""
    if value is None:
        return []
    shown = f'{path or "<root>"}: Invalid value: "{schema.get("type", "object")}"'
    unchanged = old is not None and old == value
    errors = [f"{shown}: {error}"
              for rule in schema.get("x-kubernetes-validations", [])
              if not (unchanged and "oldSelf" not in rule["rule"])
              and (error := _evaluate(rule, _as_rules_see_it(schema, value), _as_rules_see_it(schema, old))) is not None]
    for key, child, old_child in _children(schema, value, old):
        errors += rule_violations(child, value[key], old_child, f"{path}.{key}" if path else str(key))
    return errors


_ABSENT = object()


def defaulted(schema: dict, value: Any) -> Any:
    """`value` with every absent property that has a `default` set to it, at every level (defaults included)."""
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        out = {**{k: copy.deepcopy(p["default"]) for k, p in properties.items() if "default" in p and k not in value},
               **value}
        extra = schema.get("additionalProperties")
        return {k: defaulted(properties.get(k, extra if isinstance(extra, dict) else {}), v) for k, v in out.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [defaulted(schema["items"], v) for v in value]
    return value


CEL_RESERVED = {"true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function", "if",
                "import", "let", "loop", "package", "namespace", "return", "var", "void", "while"}
"""Property names a rule reads as `__<name>__` (k8s.io/apiserver pkg/cel/escaping.go, celReservedSymbols)."""


def _as_rules_see_it(schema: dict, value: Any) -> Any:
    """`value` with its declared properties named as CEL rules name them."""
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        return {(f"__{k}__" if k in properties and k in CEL_RESERVED else k):
                _as_rules_see_it(properties.get(k, extra if isinstance(extra, dict) else {}), v) for k, v in value.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_as_rules_see_it(schema["items"], v) for v in value]
    return value


def _children(schema: dict, value: Any, old: Any):
    """(key, child schema, correlated old value or None) for every child node `value` has."""
    if isinstance(value, dict):
        for key in value:
            child = schema.get("properties", {}).get(key)
            if child is None and isinstance(schema.get("additionalProperties"), dict):
                child = schema["additionalProperties"]
            if child is not None:
                yield key, child, old.get(key) if isinstance(old, dict) else None
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        items = schema["items"]
        keys = schema.get("x-kubernetes-list-map-keys") if schema.get("x-kubernetes-list-type") == "map" else None
        for index, item in enumerate(value):
            yield index, items, _correlated_item(item, old, keys)


def _correlated_item(item: Any, old: Any, keys: list[str] | None) -> Any:
    """Only items of a map list correlate with the old list, by their keys (validation.go)."""
    if not keys or not isinstance(old, list) or not isinstance(item, dict):
        return None
    return next((o for o in old if isinstance(o, dict) and all(o.get(k, _ABSENT) == item.get(k, _ABSENT) for k in keys)), None)


def _split(text: celpy.celtypes.StringType, separator: celpy.celtypes.StringType) -> celpy.celtypes.ListType:
    """`split` of cel-go's strings extension, which Kubernetes adds to CEL (kubernetes.io/docs/reference/using-api/cel/,
    "Kubernetes CEL libraries": extended strings) and cel-python 0.5.0 lacks; Gateway API's rules call it."""
    return celpy.celtypes.ListType([celpy.celtypes.StringType(part) for part in str(text).split(str(separator))])


def _conditional(condition: Any, when_true: Any, when_false: Any) -> Any:
    """CEL's `e ? x : y` is e's error when e is one (cel-spec doc/langdef.md, "Logical Operators");
    cel-python 0.5.0 reports a missing overload instead and loses the error, so it is passed on here."""
    if isinstance(condition, celpy.CELEvalError):
        return condition
    return celpy.celtypes.logical_condition(condition, when_true, when_false)


@cache
def _program(rule: str) -> celpy.Runner:
    environment = celpy.Environment()
    return environment.program(environment.compile(rule), functions={"_?_:_": _conditional, "split": _split})


def _evaluate(rule: dict, value: Any, old: Any) -> str | None:
    """None when the rule holds (or is a transition rule with nothing to compare), else the failure's detail."""
    activation = {"self": celpy.json_to_cel(value)}
    if "oldSelf" in rule["rule"]:
        if old is None:
            return None
        activation["oldSelf"] = celpy.json_to_cel(old)
    try:
        result = _program(rule["rule"]).evaluate(activation)
    except celpy.CELEvalError as error:
        result = error
    if isinstance(result, celpy.CELEvalError):
        return f"{result.args[0]} evaluating rule: {rule.get('message') or rule['rule']}"
    return None if result == celpy.celtypes.BoolType(True) else rule["message"]
