"""Shared fixtures: the real program run under Pulumi mocks with a stack's own config file, each
distinct run once per test session; and how `pytest -n` (pytest-xdist) shares the tests out."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import variants
from tests.shared_runs import SharedRuns, edited, fingerprint, share_through, store
from tools import mockrun

ROOT = Path(__file__).resolve().parent.parent
STACKS = ("dev", "prod")
AGENT_GROUP, WORKER_GROUP = "pubsub-emulator-agent", "pubsub-emulator-worker"
"""The queue tests (tests/jobs/) in two groups of about 110 s and 85 s, mostly spent waiting on Pub/Sub's ack
deadlines: the batch agent's (test_agent.py, test_faults.py) and the rest. Each xdist worker that runs one
starts its own Pub/Sub emulator (a session fixture), so the two groups run side by side."""
AGENT_FILES = ("test_agent.py", "test_faults.py")
QUEUE_GROUPS_FIRST = (AGENT_GROUP, WORKER_GROUP)
GC_THRESHOLDS = (50_000, 20, 100)


def pytest_configure(config: pytest.Config) -> None:
    """Collect cyclic garbage less often. The suite keeps many long-lived objects (mock runs, the Compute
    client's message classes, schemas), and with CPython's default thresholds (700, 10, 10) the collector
    traversed them thousands of times: 5.9 s of a 35 s run of the plan-reading tests, 1.4 s with these."""
    gc.set_threshold(*GC_THRESHOLDS)


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection made (modules, classes, test items) lives for the session: leave it out of every later
    collection (gc.freeze)."""
    gc.freeze()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under `--dist loadgroup`, keep each file's tests on one worker, so a module-scoped fixture
    (a checkov scan, a bake) runs once, and the tests of tests/jobs/ in two groups, each on a worker with an
    emulator. tryfirst: xdist's worker reads the marks in its own hook of the same name
    (xdist 3.8.0 remote.py `WorkerInteractor.pytest_collection_modifyitems`). Without -n the
    marks do nothing.

    The two queue groups go first: they are the longest, mostly waiting, and one started late ends the session
    late. `make test` passes `--no-loadscope-reorder`, so xdist hands the groups out in this order instead of
    by their number of tests (xdist 3.8.0 scheduler/loadscope.py `LoadScopeScheduling.schedule`). Only there:
    a run without workers keeps the order it was given (tools/mutate.py lists the in-process tests first, so
    that `-x` stops a killed mutant in a second, not after a minute of emulator tests)."""
    for item in items:
        if any(item.iter_markers("xdist_group")):
            continue
        item.add_marker(pytest.mark.xdist_group(worker_group(Path(item.path))))
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=_queue_groups_first)


def _queue_groups_first(item: pytest.Item) -> int:
    group = worker_group(Path(item.path))
    return QUEUE_GROUPS_FIRST.index(group) if group in QUEUE_GROUPS_FIRST else len(QUEUE_GROUPS_FIRST)


def in_process_steps(test_file: Path) -> bool:
    """A file of step tests (`*_steps.py`): in-process, with stand-ins, no emulator or server process."""
    return test_file.stem.endswith("_steps")


def worker_group(test_file: Path) -> str:
    """The queue tests' group, or the test file's path from the repository root. The step files of tests/jobs/
    start no emulator: they go anywhere, not into the longest groups."""
    path = test_file.relative_to(ROOT)
    if path.parts[:2] != ("tests", "jobs") or in_process_steps(path):
        return path.as_posix()
    return AGENT_GROUP if path.name in AGENT_FILES else WORKER_GROUP


@pytest.fixture(scope="session", autouse=True)
def _runs_shared_by_the_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Under `pytest -n`, every worker's runs go through one directory: the parent of the workers' own base
    temporary directories, which is the session's (pytest-xdist's how-to, "Making session-scoped fixtures
    execute only once"). Without workers there is nobody to share with, and the process keeps its own."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        share_through(tmp_path_factory.getbasetemp().parent / "mock-runs")
    yield
    share_through(None)


@pytest.fixture(scope="session")
def runs() -> Iterator[dict[str, mockrun.Run]]:
    """One recorded run per stack, shared read-only by tests that only inspect the stack files' result.
    A test that edits it (rather than a copy) would change what later tests see: the session fails
    at the end, naming what was edited."""
    recorded = {stack: store().run(stack) for stack in STACKS}
    before = {stack: fingerprint(run) for stack, run in recorded.items()}
    yield recorded
    edits = {stack: found for stack, run in recorded.items() if (found := edited(before[stack], run))}
    assert not edits, f"a test edited the shared runs instead of a copy (copy.deepcopy first): {edits}"


@pytest.fixture(scope="session", autouse=True)
def _variants_unedited() -> Iterator[None]:
    """The stack variants (tests/variants.py) are shared the same way: the session fails at the end
    naming any resource a test edited in one."""
    yield
    assert not (found := variants.edits()), f"a test edited the shared variants instead of a copy: {found}"


@pytest.fixture(params=STACKS)
def run(request, runs) -> mockrun.Run:
    """The recorded run of each stack in turn: a test using it is checked against dev and prod."""
    return runs[request.param]


@pytest.fixture(scope="session")
def shared_runs() -> SharedRuns:
    return SharedRuns()


@pytest.fixture
def run_stack(shared_runs: SharedRuns) -> Callable[..., mockrun.Run]:
    """The program's run for a stack with config overrides (keys without the project prefix): each
    distinct one once per test session, a deep copy to every caller (tests/shared_runs.py)."""

    def _run(stack: str = "dev", **overrides: Any) -> mockrun.Run:
        return shared_runs.get(stack, overrides)

    return _run
