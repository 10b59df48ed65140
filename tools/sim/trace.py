"""An operator's own trace: when requests arrived and how many images each asked for.

Two formats, told apart by their first line that is not blank or a `#` comment:
- CSV: `arrival_s,images[,route]` per line, an optional header line naming those columns;
- JSON lines: `{"t": 12.5, "images": 1}` per line, with an optional `"route"`.
`arrival_s`/`t` are seconds from the run's start (>= 0, any order); `images` a whole number 1..1000 per
generation request; `route` is `api` (the default) or `ui`, a browser's page visit, which asks for no
image (`images` 0 or left out) and keeps a pod wanted for the UI keep-alive window.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

from tools.sim.scenario import Session

ROUTES = ("api", "ui")
MAX_IMAGES = 1000
HEADER = ("arrival_s", "images", "route")


@dataclass(frozen=True)
class TraceRow:
    t: float
    images: int
    route: str = "api"


class TraceError(ValueError):
    """Every problem found in a trace, one per line, each naming the line, the value and what is allowed."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def _row(where: str, t: object, images: object, route: object) -> tuple[TraceRow | None, list[str]]:
    problems = []
    try:
        seconds = float(t)
        if isinstance(t, bool) or not math.isfinite(seconds) or seconds < 0:
            raise ValueError
    except (TypeError, ValueError):
        seconds = 0.0
        problems.append(f"{where}: arrival {t!r}: expected seconds from the run's start, a finite number >= 0")
    if route not in ROUTES:
        problems.append(f"{where}: route {route!r}: expected one of {', '.join(ROUTES)}")
    low = 0 if route == "ui" else 1
    high = 0 if route == "ui" else MAX_IMAGES
    try:
        count = int(images) if not isinstance(images, bool) and float(images) == int(float(images)) else None
    except (TypeError, ValueError, OverflowError):
        count = None
    if count is None or not low <= count <= high:
        allowed = "0 (a page visit asks for no image)" if route == "ui" else f"a whole number from 1 to {MAX_IMAGES}"
        problems.append(f"{where}: images {images!r}: expected {allowed}")
    return (None if problems else TraceRow(seconds, count, route)), problems


def _csv_rows(name: str, lines: list[tuple[int, str]]) -> tuple[list[TraceRow], list[str]]:
    rows, problems = [], []
    for index, (number, line) in enumerate(lines):
        cells = [cell.strip() for cell in next(csv.reader([line]))]
        if index == 0 and cells and cells[0] == HEADER[0]:
            if tuple(cells) not in (HEADER[:2], HEADER):
                problems.append(f"{name}:{number}: header {line.strip()!r}: expected {','.join(HEADER[:2])}[,route]")
            continue
        if len(cells) not in (2, 3):
            problems.append(f"{name}:{number}: {line.strip()!r}: expected arrival_s,images[,route] (2 or 3 columns)")
            continue
        route = cells[2] if len(cells) == 3 and cells[2] else "api"
        images = cells[1] if cells[1] or route != "ui" else "0"
        row, found = _row(f"{name}:{number}", cells[0], images, route)
        problems += found
        rows += [row] if row else []
    return rows, problems


def _json_rows(name: str, lines: list[tuple[int, str]]) -> tuple[list[TraceRow], list[str]]:
    rows, problems = [], []
    for number, line in lines:
        where = f"{name}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            problems.append(f"{where}: not JSON ({error.msg}): expected an object such as {{\"t\": 12.5, \"images\": 1}}")
            continue
        if not isinstance(record, dict):
            problems.append(f"{where}: {line.strip()!r}: expected an object such as {{\"t\": 12.5, \"images\": 1}}")
            continue
        unknown = sorted(set(record) - {"t", "images", "route"})
        if unknown or "t" not in record:
            problems.append(f"{where}: keys {sorted(record)}: expected \"t\", \"images\" and optionally \"route\"")
            continue
        route = record.get("route", "api")
        row, found = _row(where, record["t"], record.get("images", 0 if route == "ui" else None), route)
        problems += found
        rows += [row] if row else []
    return rows, problems


def parse_trace(path: Path) -> list[TraceRow]:
    """The trace's rows in time order; TraceError lists every problem found."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise TraceError([f"{path}: cannot read the trace ({error}): expected a UTF-8 CSV or JSON lines file"]) from error
    lines = [(number, line) for number, line in enumerate(text.splitlines(), 1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise TraceError([f"{path}: no rows: expected at least one arrival (CSV arrival_s,images or JSON lines)"])
    parse = _json_rows if lines[0][1].lstrip().startswith("{") else _csv_rows
    rows, problems = parse(str(path), lines)
    if problems:
        raise TraceError(problems)
    if not any(row.route == "api" for row in rows):
        raise TraceError([f"{path}: only page visits: expected at least one generation request (route api)"])
    return sorted(rows, key=lambda row: row.t)


def to_demand(rows: list[TraceRow]) -> tuple[list[Session], list[float]]:
    """Requests as sessions of one (an open loop: arrivals as recorded) and the browser visits."""
    return ([Session(row.t, images=row.images) for row in rows if row.route == "api"],
            [row.t for row in rows if row.route == "ui"])


def write_csv(rows: list[TraceRow], path: Path, comment: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"{row.t:.1f},{row.images},{row.route}\n" for row in rows)
    path.write_text(f"# {comment}\n{','.join(HEADER)}\n{body}")
