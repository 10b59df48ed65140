"""The program's mock runs, each distinct (stack, overrides) run once per test process.

A run takes about a second of CPU and many tests ask for the same one (the stack with the job queue
off, say). Each caller gets its own deep copy (milliseconds), so a test that edits what it got
cannot change what another test sees. The program's sources do not change within a session, so a
stored run cannot be stale; nothing is kept across sessions.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from tools import mockrun


class SharedRuns:
    def __init__(self) -> None:
        self._runs: dict[str, mockrun.Run] = {}
        self.programs_run = 0
        """How many times the program actually ran (the rest were copies)."""

    def get(self, stack: str, overrides: dict[str, Any]) -> mockrun.Run:
        key = json.dumps([stack, overrides], sort_keys=True)
        if key not in self._runs:
            self._runs[key] = mockrun.run(stack, overrides=overrides)
            self.programs_run += 1
        return copy.deepcopy(self._runs[key])


def fingerprint(run: mockrun.Run) -> dict[str, str]:
    """Each resource's inputs as canonical JSON, by URN: what a shared run must still hold at the end."""
    return {r.urn: json.dumps(r.inputs, sort_keys=True, default=str) for r in run.resources}


def edited(before: dict[str, str], run: mockrun.Run) -> list[str]:
    """The resources whose inputs differ from `before`, or that came or went."""
    now = fingerprint(run)
    return sorted(urn.rsplit("::", 1)[-1] for urn in before.keys() | now.keys() if before.get(urn) != now.get(urn))
