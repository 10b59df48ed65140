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
