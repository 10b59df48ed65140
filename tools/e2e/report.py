"""The report: every scenario run once, a table row per criterion, and the command line around it."""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict
from pathlib import Path

from tools import e2e, loadtest
from tools.e2e.scenarios import SCENARIOS, Result, Settings

COLUMNS = ("scenario", "n", "errors", "p50 s", "p99 s", "ideal p99 s", "ratio", "criterion", "measured", "pass")


def _figure(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(results: list[Result]) -> str:
    """One Markdown table: a row per criterion, the scenario's figures on its first row."""
    rows = [COLUMNS, ("---",) * len(COLUMNS)]
    for result in results:
        for i, check in enumerate(result.checks):
            figures = (result.scenario, str(result.n), str(result.errors), _figure(result.p50), _figure(result.p99),
                       _figure(result.ideal_p99), _figure(result.ratio, 3)) if i == 0 else ("",) * 7
            rows.append((*figures, check.criterion, check.measured, "yes" if check.ok else "NO"))
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def run_all(settings: Settings) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="sd-gke-e2e-") as workdir:
        return [scenario(settings, Path(workdir)) for scenario in SCENARIOS]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.e2e", description=e2e.__doc__.split("\n\n")[0])
    p.add_argument("--generation-seconds", type=loadtest._positive_float, default=Settings.generation_s)
    p.add_argument("--json", type=Path, help="also write every result as JSON")
    args = p.parse_args(argv)
    settings = Settings(generation_s=args.generation_seconds)
    print(f"generation {settings.generation_s:g} s, {settings.pods} pods", flush=True)
    results = run_all(settings)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps([{**asdict(r), "ratio": r.ratio, "ok": r.ok} for r in results], indent=2) + "\n")
    return 0 if all(result.ok for result in results) else 1

