"""Which tests run first against a mutant: those that called the function it is in.

The unmutated run of a target's tests records, per test, which functions of the target's file it
called (a profile hook on call events, in every thread). A mutant inside a function runs those tests
first; one that passes them runs the target's whole test list, so a kill that only a subprocess test or
an import-time effect can make is still made: the selection saves time and never changes an outcome.
A module-level mutant (a constant, a table, a decorator) runs the whole list: every importer sees it.
"""

from __future__ import annotations

import sys
import threading
from collections import defaultdict

import pytest

MODULE = "<module>"


def top_level(qualname: str) -> str:
    """The name tools/mutate.py gives a mutant's function ("name" or "Class.method") for a code object's
    qualified name: code nested in a function (`f.<locals>.g`, a lambda, a comprehension) belongs to it."""
    return qualname.split(".<locals>", 1)[0]


class CallRecorder:
    """A pytest plugin: test node id -> the top-level functions of `path` called during its setup, call and
    teardown, in the order the tests ran."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.calls: dict[str, set[str]] = defaultdict(set)
        self._current: str | None = None

    def _profile(self, frame, event, arg) -> None:
        if event == "call" and self._current is not None and frame.f_code.co_filename == self.path:
            self.calls[self._current].add(top_level(frame.f_code.co_qualname))

    def pytest_sessionstart(self, session) -> None:
        threading.setprofile(self._profile)
        sys.setprofile(self._profile)

    def pytest_sessionfinish(self, session) -> None:
        sys.setprofile(None)
        threading.setprofile(None)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        self._current = item.nodeid
        self.calls[item.nodeid]  # noqa: B018 - a test that calls nothing of the file still keeps its place
        yield
        self._current = None


def first_tests(calls: dict[str, list[str]], function: str) -> tuple[str, ...] | None:
    """The tests to run first against a mutant in `function`, in the order they ran; None for the whole list
    (a module-level mutant, or a function no test called in-process)."""
    if function == MODULE:
        return None
    chosen = tuple(test for test, functions in calls.items() if function in functions)
    return chosen or None
