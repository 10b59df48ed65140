"""List filters as compute.v1 list methods take them, the part of the syntax the fake evaluates.

Terms `FIELD = V`, `FIELD != V` (exact), `FIELD eq RE`, `FIELD ne RE` (full-match regex); FIELD is a
top-level field or `labels.KEY`; V may be quoted; terms joined by spaces or AND, each optionally
parenthesised. A filter outside that is answered 400 and recorded (FakeLimitation).
"""

from __future__ import annotations

import re
from typing import Any

from tests.fakes.compute.errors import FakeLimitation

_FILTER_TERM = re.compile(
    r"""\s*(?P<open>\()?\s*(?P<field>[A-Za-z][\w.-]*)\s*(?P<op>!=|=|eq(?=\s)|ne(?=\s))\s*"""
    r"""(?P<value>"[^"]*"|'[^']*'|[^\s()"']+)\s*(?P<close>\))?\s*(?:AND(?:\s+|$))?""")


def _lookup(resource: dict[str, Any], field: str) -> Any:
    value: Any = resource
    for part in field.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def parse_filter(text: str) -> list[tuple[str, str, str]]:
    terms, pos, text = [], 0, text.strip()
    while pos < len(text):
        match = _FILTER_TERM.match(text, pos)
        if not match or bool(match["open"]) != bool(match["close"]) or match.end() == pos:
            raise FakeLimitation(f"filter {text!r} is not supported; use terms FIELD =|!=|eq|ne VALUE joined by "
                                 "spaces or AND")
        terms.append((match["field"], match["op"], match["value"].strip("\"'")))
        pos = match.end()
    return terms


def matches(resource: dict[str, Any], terms: list[tuple[str, str, str]]) -> bool:
    for field, op, expected in terms:
        actual = _lookup(resource, field)
        shown = None if actual is None else str(actual).lower() if isinstance(actual, bool) else str(actual)
        hit = shown == expected if op in ("=", "!=") else shown is not None and bool(re.fullmatch(expected, shown))
        if hit == (op in ("!=", "ne")):
            return False
    return True
