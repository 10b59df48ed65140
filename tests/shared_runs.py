"""The program's mock runs, each distinct (stack, overrides, config) run once per test session.

A run takes about a second of CPU and many tests ask for the same one (the stack with the job queue
off, say). Under `pytest -n` the workers share them through the session's temporary directory
(`share_through`, called by tests/conftest.py): the first worker to ask runs the program and pickles the run, the
others wait on its lock and load it. Each caller of SharedRuns gets its own deep copy (milliseconds), so a
test that edits what it got cannot change what another test sees. The program's sources do not change
within a session, so a stored run cannot be stale; nothing is kept across sessions.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any

from tools import mockrun


class RunStore:
    """Runs pickled in `directory`, one file per distinct request, made under a lock so that only one process
    runs the program for it; with no directory, the program runs on every request."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self.programs_run = 0
        """How many times this process ran the program (the rest were loaded)."""

    def run(self, stack: str, overrides: dict[str, Any] | None = None,
            config: dict[str, str] | None = None) -> mockrun.Run:
        if self.directory is None:
            return self._run(stack, overrides, config)
        request = json.dumps([stack, overrides or {}, config], sort_keys=True)
        path = self.directory / f"{hashlib.sha256(request.encode()).hexdigest()[:32]}.pickle"
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if path.is_file():
                return pickle.loads(path.read_bytes())
            run = self._run(stack, overrides, config)
            partial = path.with_suffix(f".{os.getpid()}")
            partial.write_bytes(pickle.dumps(run, protocol=pickle.HIGHEST_PROTOCOL))
            partial.rename(path)
            return run

    def _run(self, stack: str, overrides: dict[str, Any] | None, config: dict[str, str] | None) -> mockrun.Run:
        self.programs_run += 1
        return mockrun.run(stack, overrides=overrides, config=config)


_store = RunStore()


def store() -> RunStore:
    """Where this process gets its runs from."""
    return _store


def share_through(directory: Path | None) -> None:
    """Get runs through `directory` from now on (tests/conftest.py: the session's, under `pytest -n`); None: run
    the program on every request."""
    global _store
    _store = RunStore(directory)


class SharedRuns:
    def __init__(self) -> None:
        self._runs: dict[str, mockrun.Run] = {}
        self.programs_run = 0
        """How many distinct runs it fetched (the rest were copies)."""

    def get(self, stack: str, overrides: dict[str, Any]) -> mockrun.Run:
        key = json.dumps([stack, overrides], sort_keys=True)
        if key not in self._runs:
            self._runs[key] = _store.run(stack, overrides=overrides)
            self.programs_run += 1
        return copy.deepcopy(self._runs[key])


def fingerprint(run: mockrun.Run) -> dict[str, str]:
    """Each resource's inputs as canonical JSON, by URN: what a shared run must still hold at the end."""
    return {r.urn: json.dumps(r.inputs, sort_keys=True, default=str) for r in run.resources}


def edited(before: dict[str, str], run: mockrun.Run) -> list[str]:
    """The resources whose inputs differ from `before`, or that came or went."""
    now = fingerprint(run)
    return sorted(urn.rsplit("::", 1)[-1] for urn in before.keys() | now.keys() if before.get(urn) != now.get(urn))
