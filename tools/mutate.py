"""Mutation testing: how many one-line bugs in the guarded code does the suite catch?

`make mutate` (or `python -m tools.mutate`). The mutants are mutmut's (pinned in requirements-mutate.in,
locked in requirements-mutate.lock):
its libcst operators make every one-node change mutmut would make (comparison and boolean operators
swapped, numbers +1, True/False flipped, `in`/`is` negated, `not` dropped, call arguments dropped or
set to None, strings changed, assignments set to None, ...). mutmut's own runner instruments whole
packages through trampolines; this runner instead copies the project to build/mutate/tree-<pid>, writes one
mutant at a time into the copy's source file and runs, in a forked child, only the tests that cover
that module: subprocess tests see the mutant too, each mutant costs seconds, not a full suite, and
the work tree is never touched (editing or committing during a run is safe). Of those tests, the ones
that called the mutated function run first (tools/mutate_select.py); a mutant they miss runs them all.

A mutant is killed when its tests fail (or error, or time out); it survives when they pass.
Results go to build/mutate/results.json; survivors are printed with their line before and after.
Not part of `make test`: a full run takes tens of minutes on two cores.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import shutil
import signal
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "mutate"
TREE = OUT / f"tree-{os.getpid()}"
"""The copy of the project the mutants are written into: one per run, so that two runs at once (on different
targets) never write into each other's copy; removed when the run ends."""
NOT_COPIED = (".git", ".venv*", "build", "__pycache__", "*.pyc", ".ruff_cache", ".pytest_cache", "node_modules")


@dataclass(frozen=True)
class Target:
    path: str
    tests: tuple[str, ...]
    functions: tuple[str, ...] | None = None
    """Only mutants inside these functions ("name" or "Class.method"); None: the whole module,
    module-level constants included (that is where the config bounds and the policy lists live)."""
    plays_no_part_in_the_program: bool = False
    """True for a module the program never imports (the policy pack): each program run its tests make is
    made once, in the unmutated run, and a mutant's tests get a copy of it."""
    pubsub_emulator: bool = False
    """Its tests use the Pub/Sub emulator: one is started for all of the target's runs (tests/jobs/harness.py,
    SHARED_EMULATOR), not one per run."""


POLICY_TESTS = ("tests/test_policy.py", "tests/test_policy_rules.py")
"""Every policy's compliant and non-compliant cases; a module's own tests come on top (tests/test_policy.py,
`test_every_policy_has_a_non_compliant_case`, says where each policy's cases live)."""
POLICY_MODULES = {
    "resources": ("tests/test_policy_rollout_rules.py", "tests/test_policy_scaling_rules.py",
                  "tests/test_policy_storage_rules.py", "tests/test_one_way_in.py", "tests/test_pod_security.py",
                  "tests/test_delivery.py"),
    "gke": ("tests/test_policy_gke_rules.py", "tests/test_delivery.py"),
    "workloads": ("tests/test_pod_security.py", "tests/test_request_queue.py", "tests/test_autoscaling.py"),
    "iam": (),
    "stack": ("tests/test_policy_stack_rules.py", "tests/test_upgrade.py", "tests/test_delivery.py"),
    "rollout": ("tests/test_policy_rollout_rules.py", "tests/test_await.py"),
    "scaling": ("tests/test_policy_scaling_rules.py", "tests/test_autoscaling.py"),
    "way_in": ("tests/test_gateway_policy_rules.py", "tests/test_one_way_in.py", "tests/test_gateway.py"),
    "storage": ("tests/test_policy_storage_rules.py",),
    "sdgke_policies": (),
    "pod_security": ("tests/test_pod_security.py", "tests/test_pod_security_checks.py"),
}
"""The whole policy pack (policy/): each module and the tests of the policies it holds (resources.py's names and
helpers are read by every module, so every module's rule cases are among its tests)."""
CONFIG_TESTS = ("tests/test_config.py", "tests/test_config_bounds.py", "tests/test_config_queue.py",
                "tests/test_config_guards.py")
"""The config loader's (components/config/): every part of it (parse and the sources, the types, the per-key
checks, the cross-key rules) is tested through `parse`. Its __init__'s module level is only re-exports."""
CROSS_KEY_TESTS = ("tests/test_optional_parts.py", "tests/test_delivery.py", "tests/test_compute_class.py",
                   "tests/test_autoscaling.py", "tests/test_gateway.py")
"""Where the cross-key rules of the delivery and Spot fallback, demand scaling, the public way in and the optional
parts are tested (the 2026-12-04 run of rules.py against CONFIG_TESTS alone: 397/561 killed, 127 of the 164
survivors in `_check_demand_scaling`, `_check_delivery_and_capacity` and `_check_parts`)."""

POD_SPEC_TESTS = (
    "tests/test_pod_security.py", "tests/test_contracts.py",
    *(f"tests/test_inventory.py::{test}" for test in (
        "test_program_registers_exactly_the_expected_resources",
        "test_every_resource_is_a_child_of_the_component_its_name_starts_with",
        "test_every_kubernetes_object_names_itself",
        "test_every_namespaced_object_lives_in_a_namespace_the_stack_declares",
        "test_every_kubernetes_object_goes_through_the_cluster_provider",
        "test_every_kubernetes_object_carries_the_common_labels")),
    "tests/test_await.py", "tests/test_manifests.py",
)
"""What holds a component's pods and objects to the platform's rules, after its own spec tests: Pod Security, the
contracts with the images and the bake, the inventory's rules (parents, providers, labels), the rollout await
annotations, and the Kubernetes schemas and checkov (a test id, `file::test`, runs that test alone)."""

AGENT_COMMIT_AND_RELEASE = ("Agent._work", "Agent._process", "Agent._settle", "Agent._persist", "Agent._complete",
                            "Agent._notify", "Agent._dead_letter", "Agent._ack", "Agent._nack", "Agent._release",
                            "_fits_an_attribute")
"""The batch agent's path from a pulled job to its one result (or dead letter), and the hand-back at SIGTERM."""


def _rules_first(tests: tuple[str, ...]) -> tuple[str, ...]:
    """The in-process rule cases (tests/test_policy_*rules.py, under a second) before the stacks' tests: `-x`
    stops a killed mutant there."""
    return tuple(sorted(tests, key=lambda t: not t.endswith("rules.py")))


TARGETS = (
    *(Target(f"policy/{module}.py", _rules_first(POLICY_TESTS + tests), plays_no_part_in_the_program=True)
      for module, tests in POLICY_MODULES.items()),
    Target("components/config/__init__.py", CONFIG_TESTS, functions=("parse", "decode", "load", "load_stack")),
    Target("components/config/model.py", CONFIG_TESTS + ("tests/test_optional_parts.py",)),  # PARTS: its names
    Target("components/config/reader.py", CONFIG_TESTS),
    Target("components/config/rules.py", CONFIG_TESTS + CROSS_KEY_TESTS),
    Target("images/attacher/attacher/retry.py", ("tests/attacher/test_units.py", "tests/attacher/test_retry.py")),
    Target("images/attacher/attacher/gc.py", ("tests/attacher/test_gc.py", "tests/attacher/test_gc_rules.py")),
    Target(
        "components/runtime_bake/compute.py",
        ("tests/test_runtime_bake_cleanup.py", "tests/test_runtime_bake.py"),  # the quick one first: -x stops there
        functions=("ComputeClient.call",),
    ),
    Target(
        "components/runtime_bake/provider.py",
        ("tests/test_runtime_bake_cleanup.py", "tests/test_runtime_bake.py"),
        functions=(
            "RuntimeImageProvider.create", "RuntimeImageProvider._remove_builder",
            "RuntimeImageProvider._remove_builder_after_failure", "RuntimeImageProvider._builder_instances",
            "RuntimeImageProvider._builder_disks",
        ),
    ),
    Target(
        "images/attacher/attacher/__main__.py",
        ("tests/attacher/test_cli.py", "tests/attacher/test_interrupts.py"),
        functions=("_on_sigterm", "<module>"),  # the SIGTERM and Ctrl-C handling; run_agent/run_gc are the CLI
    ),
    Target(
        "images/attacher/attacher/agent.py",
        # test_upgrade: a node holding another runtime's disk (_refuse_another_runtime)
        ("tests/attacher/test_agent.py", "tests/attacher/test_units.py", "tests/attacher/test_upgrade.py"),
        functions=("_check_image", "_check_reused_disk", "_wait_disk_ready", "_refuse_another_runtime", "_attach"),
    ),
    Target(
        "images/attacher/attacher/kube.py",
        ("tests/attacher/test_units.py", "tests/attacher/test_agent.py"),
        functions=("_taint_indexes", "remove_taint"),
    ),
    Target(
        "images/runtime/bake.py",
        ("tests/test_bake_runner.py", "tests/test_bake.py"),  # the in-process runner tests first: -x stops there
        functions=("Bake.run", "Bake.prepare_root", "Bake.write_marker"),
    ),
    Target(
        "images/request-queue/request_queue/buffer.py",  # admission at QUEUE_MAX_DEPTH and the hand-over to polls
        ("tests/request_queue/test_buffer.py", "tests/request_queue/test_ui_hold.py",
         "tests/request_queue/test_dispatch.py", "tests/request_queue/test_admission.py",
         "tests/request_queue/test_cancel.py"),
    ),
    Target("components/timeouts.py", ("tests/test_timeout_chain.py",)),
    Target(
        "images/request-queue/request_queue/worker_api.py",  # the dispatch path: next, release, result, cancel
        ("tests/request_queue/test_worker_api_steps.py", "tests/request_queue/test_dispatch.py",
         "tests/request_queue/test_release.py", "tests/request_queue/test_cancel.py", "tests/request_queue/test_admission.py",
         "tests/request_queue/test_ui_hold.py", "tests/request_queue/test_lifecycle.py",
         "tests/request_queue/test_browser_ui.py", "tests/request_queue/test_registry.py"),
    ),
    Target(
        "images/queue-agent/queue_agent/agent.py",  # the batch job's commit, settle and release
        ("tests/jobs/test_agent_steps.py", "tests/jobs/test_agent.py", "tests/jobs/test_faults.py"),
        functions=AGENT_COMMIT_AND_RELEASE,
        pubsub_emulator=True,
    ),
    Target(
        "images/queue-agent/queue_agent/results.py",
        ("tests/jobs/test_results_steps.py", "tests/jobs/test_agent.py", "tests/jobs/test_faults.py"),
        pubsub_emulator=True,
    ),
    Target(
        "images/queue-agent/queue_agent/worker.py",  # an interactive job run, handed back or reported
        ("tests/jobs/test_worker_steps.py", "tests/jobs/test_worker.py", "tests/jobs/test_worker_fronts.py",
         "tests/jobs/test_worker_with_request_queue.py"),
        functions=("Worker._run_job", "Worker._hand_back", "Worker._report", "Worker._next"),
        pubsub_emulator=True,
    ),
    Target("components/webui.py", (
        "tests/test_webui.py", *POD_SPEC_TESTS,
        # the init gate run for real against finished, unfinished and foreign runtimes, and the data dir it lays out
        # replayed on a real read-only mount; the boot-disk delivery's runtime mount
        *(f"tests/test_delivery.py::{test}" for test in (
            "test_the_init_check_passes_the_runtime_the_pod_is_for",
            "test_the_init_check_refuses_a_runtime_that_is_not_finished_or_not_this_one",
            "test_webui_mounts_the_runtime_where_gke_mounts_the_boot_disk")),
        "tests/test_readonly_runtime.py",
        # the worker container beside WebUI: its batch part, identity and probes
        *(f"tests/test_jobs.py::{test}" for test in (
            "test_the_sidecar_gets_what_the_agent_reads", "test_the_sidecar_is_probed_and_restricted",
            "test_only_the_webui_pods_service_account_may_act_as_the_agent",
            "test_without_jobs_the_worker_has_no_batch_part_no_identity_and_no_queue")),
    )),
    Target("components/disk_attacher.py", (
        "tests/test_disk_attacher.py", *POD_SPEC_TESTS,
        # the runtime volume it hands the WebUI pod: the host path, read-only, propagated from the host, and the
        # runtime the pod's gate checks it for
        "tests/test_webui.py::test_runtime_comes_read_only_from_the_attacher_mount_with_host_to_container_propagation",
        "tests/test_webui.py::test_the_gate_checks_the_ready_marker_and_the_manifest_for_this_runtime_then_lays_out_the_data_dir",
    )),
)
# Imported once in the parent so that each forked child starts warm; nothing of the project is
# imported here, so every child reads the (mutated) project sources afresh.
WARM = ("pytest", "requests", "yaml", "google.api_core.exceptions", "google.cloud.compute_v1", "pulumi",
        "pulumi_policy", "pulumi_gcp", "pulumi_kubernetes")


SAMPLE_ABOVE = 300
"""--sample applies to targets with more mutants than this (the policy pack and the config); the others run whole."""


@dataclass
class Mutant:
    target: str
    index: int
    line: int
    function: str
    before: str
    after: str
    outcome: str = "pending"  # killed | survived | timeout
    seconds: float = 0.0
    first_tests: int = 0
    """How many tests ran first, those that called the mutant's function (0: the whole list at once)."""


def _qualnames(module) -> dict[int, str]:
    import libcst as cst

    names: dict[int, str] = {}
    for node in module.body:
        if isinstance(node, cst.FunctionDef):
            names[id(node)] = node.name.value
        elif isinstance(node, cst.ClassDef) and isinstance(node.body, cst.IndentedBlock):
            for method in node.body.body:
                if isinstance(method, cst.FunctionDef):
                    names[id(method)] = f"{node.name.value}.{method.name.value}"
    return names


def mutants_of(target: Target, root: Path = ROOT) -> list[tuple[Mutant, str]]:
    """Every mutant of the target as (description, mutated source), in source order."""
    import libcst as cst
    from mutmut.mutation.file_mutation import create_mutations, deep_replace

    path = root / target.path
    code = path.read_text()
    module, mutations, _, _ = create_mutations(str(path), code)
    names = _qualnames(module)
    original = module.code.splitlines()
    out: list[tuple[Mutant, str]] = []
    for mutation in mutations:
        function = names.get(id(mutation.contained_by_top_level_function), "<module>")
        if target.functions is not None and function not in target.functions:
            continue
        if function == "<module>" and _inside_import(module, mutation.original_node):
            continue
        mutated = deep_replace(module, mutation.original_node, mutation.mutated_node)
        source = cst.ensure_type(mutated, cst.Module).code
        if source == code:
            continue
        changed = _changed_lines(original, source.splitlines())
        if changed is None:
            continue
        line, before, after = changed
        if before != after and before.lower() == after.lower():
            continue  # mutmut's upper/lower-case string variants: a test that sees a changed string sees "XX...XX"
        out.append((Mutant(target.path, len(out), line, function, before, after), source))
    return out


_IMPORT_NODES: dict[int, set[int]] = {}


def _inside_import(module, node) -> bool:
    import libcst as cst

    key = id(module)
    if key not in _IMPORT_NODES:
        inside: set[int] = set()

        class Collect(cst.CSTVisitor):
            def visit_Import(self, n):
                inside.update(id(x) for x in _walk(n))

            def visit_ImportFrom(self, n):
                inside.update(id(x) for x in _walk(n))

        module.visit(Collect())
        _IMPORT_NODES[key] = inside
    return id(node) in _IMPORT_NODES[key]


def _walk(node):
    yield node
    for child in node.children:
        yield from _walk(child)


def _changed_lines(before: list[str], after: list[str]) -> tuple[int, str, str] | None:
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    changes = [op for op in matcher.get_opcodes() if op[0] != "equal"]
    if not changes:
        return None
    _, i1, i2, j1, j2 = changes[0]
    old = " / ".join(s.strip() for s in before[i1:i2])
    new = " / ".join(s.strip() for s in after[j1:j2])
    return i1 + 1, old, new


# --- running -----------------------------------------------------------------------------------

def _run_tests(tests: tuple[str, ...], timeout: float, plugins: tuple = (), then=None) -> tuple[str, float]:
    """Run `tests` (paths or node ids) in a forked child (its own process group) with these pytest plugins, then
    `then()` in the child; 'passed', 'failed' or 'timeout'."""
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # child
        os.setsid()
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            os.chdir(TREE)
            import pytest

            code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *tests],
                               plugins=list(plugins))
            if then is not None:
                then()
            os._exit(int(code))
        except BaseException:  # noqa: BLE001 - anything raised here is a failed test run
            os._exit(99)
    deadline = started + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            elapsed = time.monotonic() - started
            ok = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
            return ("passed" if ok else "failed"), elapsed
        if time.monotonic() > deadline:
            _kill_group(pid)
            os.waitpid(pid, 0)
            return "timeout", time.monotonic() - started
        time.sleep(0.05)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _share_program_runs(recorded: dict[str, object]) -> None:
    """From here on, in this process and its forks, a program run already in `recorded` returns a copy of it
    and one that is not runs and is added (in the process that ran it).

    This process never runs the program itself: once Pulumi's mock runtime has run in a process, runs in
    that process's forks hang. The unmutated run (a fork) makes the runs and hands them back (`run_target`)."""
    import copy

    from tools import mockrun

    program_run = mockrun.run

    def run(stack, root=mockrun.ROOT, overrides=None, config=None):
        if root != mockrun.ROOT:
            return program_run(stack, root, overrides, config)
        key = json.dumps([stack, overrides or {}, config], sort_keys=True)
        if key not in recorded:
            recorded[key] = program_run(stack, root, overrides, config)
        return copy.deepcopy(recorded[key])

    mockrun.run = run


def _save(path: Path, value: object) -> None:
    import pickle

    path.write_bytes(pickle.dumps(value))


def _load(path: Path):
    import pickle

    try:
        return pickle.loads(path.read_bytes())
    finally:
        path.unlink()


def _in_child(work, *args):
    """Run work(*args) in a forked process (so what it imports stays there); return its JSON result."""
    result = OUT / f"child-{os.getpid()}.json"
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            result.write_text(json.dumps(work(*args)))
            code = 0
        except SystemExit as exit_:
            print(exit_, file=sys.stderr)
        except BaseException:  # noqa: BLE001 - told on stderr, then the child ends with status 1
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
        raise SystemExit(f"{args[0].path if args else work.__name__}: the mutation run failed (status {status})")
    try:
        return json.loads(result.read_text())
    finally:
        result.unlink()


def _copy_tree() -> None:
    """A fresh copy of the project to mutate (sources, tests, stack files; no git, venvs or build output)."""
    if TREE.exists():
        shutil.rmtree(TREE)
    shutil.copytree(ROOT, TREE, symlinks=True, ignore=shutil.ignore_patterns(*NOT_COPIED))


def _use_tree() -> None:
    """From here on (in this process and its children) the project's modules come from the copy."""
    sys.path[:] = [str(TREE) if entry in ("", str(ROOT)) else entry for entry in sys.path]
    for name in [n for n in sys.modules if n.split(".")[0] in ("tools", "components", "tests", "attacher")]:
        del sys.modules[name]


def run_target(target: Target, sample: int, log, only: tuple[int, ...] | None = None,
               part: tuple[int, int] | None = None) -> list[dict]:
    """Every chosen mutant of `target` (or only those of these indexes), run in this process's children
    (call it through _in_child)."""
    _use_tree()
    if not target.pubsub_emulator:
        return _run_mutants(target, sample, log, only, part)
    holder = _start_shared_emulator()
    try:
        return _run_mutants(target, sample, log, only, part)
    finally:
        _stop(holder)


SHARED_EMULATOR = "SDGKE_SHARED_PUBSUB_EMULATOR"
"""tests/jobs/harness.py's SHARED_EMULATOR (not imported: see _start_shared_emulator)."""


def _start_shared_emulator() -> int:
    """A Pub/Sub emulator for every run of a target, named in SHARED_EMULATOR; the pid of the process holding
    it, which stops it on SIGTERM.

    Started from a fork: tests/jobs/harness.py imports the queue agent, which must not be imported here,
    where it would stay unmutated in every mutant's run."""
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.setsid()
        os.close(ready_read)
        try:
            from tests.jobs import harness

            with harness.pubsub_emulator() as host:  # entered once the emulator answers (or raises after 90 s)
                signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
                os.write(ready_write, f"{host}\n".encode())
                signal.pause()
        finally:
            os._exit(0)
    os.close(ready_write)
    with os.fdopen(ready_read, "rb") as ready:
        host = ready.readline().decode().strip()  # "" once the holder ended without starting it
    if not host:
        os.waitpid(pid, 0)
        raise SystemExit("the shared Pub/Sub emulator did not start; see its log under $TMPDIR")
    os.environ[SHARED_EMULATOR] = host
    return pid


def _stop(holder: int) -> None:
    os.kill(holder, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if os.waitpid(holder, os.WNOHANG)[0]:
            return
        time.sleep(0.2)
    _kill_group(holder)
    os.waitpid(holder, 0)


def _run_mutants(target: Target, sample: int, log, only: tuple[int, ...] | None,
                 part: tuple[int, int] | None) -> list[dict]:
    from tools.mutate_select import CallRecorder, first_tests

    program_runs: dict[str, object] = {}
    if target.plays_no_part_in_the_program:
        _share_program_runs(program_runs)
    path = TREE / target.path
    original = path.read_text()
    tests = tuple(t for t in target.tests if (TREE / t.split("::")[0]).exists())
    recorder = CallRecorder(str(path))
    saved = OUT / f"baseline-{os.getpid()}.pickle"
    baseline, seconds = _run_tests(tests, timeout=600, plugins=(recorder,),
                                   then=lambda: _save(saved, ({t: sorted(f) for t, f in recorder.calls.items()},
                                                              program_runs)))
    calls, made = _load(saved) if saved.exists() else ({}, {})
    program_runs.update(made)
    if baseline != "passed":
        raise SystemExit(f"{target.path}: its tests {list(tests)} fail without any mutant; fix them first")
    timeout = max(10.0, 3 * seconds)
    candidates = mutants_of(target, TREE)
    chosen = candidates[::sample] if len(candidates) > SAMPLE_ABOVE else candidates
    if only is not None:
        chosen = [c for c in chosen if c[0].index in only]
    chosen = [c for c in chosen if in_shard(c[0].index, part)]
    log(f"{target.path}: {len(chosen)} mutant(s) of {len(candidates)}; tests {' '.join(tests)} "
        f"take {seconds:.1f}s unmutated")
    results = []
    for mutant, source in chosen:
        path.write_text(source)
        first = first_tests(calls, mutant.function)
        mutant.first_tests = len(first or ())
        outcome, mutant.seconds = _run_tests(first or tests, timeout)
        if first and outcome == "passed":
            outcome, more = _run_tests(tests, timeout)
            mutant.seconds += more
        path.write_text(original)
        mutant.outcome = {"passed": "survived", "failed": "killed"}.get(outcome, outcome)
        results.append(asdict(mutant))
        if mutant.outcome == "survived":
            log(f"  survived {target.path}:{mutant.line} ({mutant.function}): {mutant.before}  ->  {mutant.after}")
        if len(results) % 20 == 0:
            log(f"  {len(results)}/{len(chosen)} run, {sum(m['outcome'] != 'survived' for m in results)} killed")
    return results


def _earlier(path: Path, targets: list[Target]) -> dict[str, list[Mutant]]:
    """The mutants of each target in an earlier results file; refused if a target's mutants changed since."""
    recorded = [Mutant(**m) for m in json.loads(path.read_text())["mutants"]]
    earlier = {}
    for target in targets:
        mine = [m for m in recorded if m.target == target.path]
        now = [(m.line, m.before, m.after) for m, _ in mutants_of(target)]
        if not mine or [(m.line, m.before, m.after) for m in mine] != [now[m.index] for m in mine if m.index < len(now)]:
            raise SystemExit(f"{target.path}: its mutants differ from those in {path}; run it whole")
        earlier[target.path] = mine
    return earlier


def shard(spec: str) -> tuple[int, int]:
    """"K/N" (0 <= K < N) as (K, N): this run takes the mutants whose index is K modulo N."""
    try:
        k, n = (int(part) for part in spec.split("/"))
    except ValueError:
        k, n = -1, 0
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"--shard {spec!r}: expected K/N with 0 <= K < N, e.g. 0/3")
    return k, n


def indexes(spec: str) -> tuple[int, ...]:
    """"3,17,40" as (3, 17, 40): the indexes `--list` numbers the mutants by."""
    try:
        chosen = tuple(int(i) for i in spec.split(","))
    except ValueError:
        chosen = ()
    if not chosen or min(chosen) < 0:
        raise argparse.ArgumentTypeError(f"--only {spec!r}: expected mutant indexes 0 or more, comma-separated, "
                                         "e.g. 3,17 (as --list numbers them)")
    return chosen


def in_shard(index: int, part: tuple[int, int] | None) -> bool:
    """Whether this shard runs the mutant of this index (every one without a shard)."""
    return part is None or index % part[1] == part[0]


def combined(paths: list[Path]) -> list[Mutant]:
    """The mutants of several results files (the shards of one run), each target's mutants once, by index;
    refused when two files disagree about a mutant's outcome."""
    seen: dict[tuple[str, int], Mutant] = {}
    for path in paths:
        for m in json.loads(path.read_text())["mutants"]:
            mutant = Mutant(**m)
            earlier = seen.setdefault((mutant.target, mutant.index), mutant)
            if earlier.outcome != mutant.outcome:
                raise SystemExit(f"{mutant.target} mutant {mutant.index}: {earlier.outcome} in one file, "
                                 f"{mutant.outcome} in {path}")
    return sorted(seen.values(), key=lambda m: (m.target, m.index))


def summary(results: list[Mutant]) -> str:
    lines = []
    for path in dict.fromkeys(m.target for m in results):
        mine = [m for m in results if m.target == path]
        killed = sum(m.outcome != "survived" for m in mine)
        lines.append(f"{path}: {killed}/{len(mine)} killed ({100 * killed / len(mine):.1f}%)")
    killed = sum(m.outcome != "survived" for m in results)
    lines.append(f"total: {killed}/{len(results)} killed ({100 * killed / max(len(results), 1):.1f}%)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.mutate", description=__doc__.split("\n")[0])
    parser.add_argument("--target", action="append", help="only these source paths (default: all targets)")
    parser.add_argument("--sample", type=int, default=1, metavar="K",
                        help=f"run every K-th mutant of a target of more than {SAMPLE_ABOVE} (deterministic; default 1 = all)")
    parser.add_argument("--list", action="store_true", help="only list the mutants")
    parser.add_argument("--output", type=Path, default=OUT / "results.json")
    parser.add_argument("--survivors-of", type=Path, metavar="RESULTS",
                        help="run again only the mutants that survived in this earlier results.json (the target's "
                             "source unchanged since, so its mutants are the same), e.g. after adding tests")
    parser.add_argument("--shard", type=shard, metavar="K/N",
                        help="only the mutants whose index is K modulo N: N runs side by side (each with its own "
                             "copy of the project and emulator) share a target whose tests mostly wait")
    parser.add_argument("--only", type=indexes, metavar="I,J",
                        help="only the mutants of these indexes (as --list numbers them), e.g. to run one again")
    parser.add_argument("--summary", type=Path, nargs="+", metavar="RESULTS",
                        help="print the score of these results files together (the shards of one run) and exit")
    args = parser.parse_args(argv)
    if args.only and args.survivors_of:
        parser.error("--only and --survivors-of each choose the mutants to run; give one of them")
    if args.summary:
        print(summary(combined(args.summary)))
        return 0
    targets = [t for t in TARGETS if not args.target or t.path in args.target]
    os.chdir(ROOT)  # mutmut reads its settings from setup.cfg here
    if args.list:
        for target in targets:
            for mutant, _ in mutants_of(target):
                print(f"{mutant.index} {target.path}:{mutant.line} ({mutant.function}): "
                      f"{mutant.before}  ->  {mutant.after}")
        return 0

    OUT.mkdir(parents=True, exist_ok=True)
    _copy_tree()
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"  # a mutant must never leave a .pyc the next run trusts
    sys.dont_write_bytecode = True
    for name in WARM:
        __import__(name)

    def log(message: str) -> None:
        print(message, flush=True)

    started = time.monotonic()
    earlier = _earlier(args.survivors_of, targets) if args.survivors_of else {}
    results: list[Mutant] = []
    try:
        for target in targets:
            if args.survivors_of:
                killed = [m for m in earlier[target.path] if m.outcome != "survived" and in_shard(m.index, args.shard)]
                again = tuple(m.index for m in earlier[target.path]
                              if m.outcome == "survived" and in_shard(m.index, args.shard))
                log(f"{target.path}: {len(killed)} killed earlier; running the {len(again)} survivor(s) again")
                results += killed + [Mutant(**m) for m in _in_child(run_target, target, args.sample, log, again)]
            else:
                results += [Mutant(**m) for m in _in_child(run_target, target, args.sample, log, args.only, args.shard)]
    finally:
        shutil.rmtree(TREE, ignore_errors=True)
    elapsed = time.monotonic() - started
    report = summary(results)
    print(report)
    print(f"took {elapsed / 60:.1f} min")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"seconds": round(elapsed), "sample": args.sample,
                                       "mutants": [asdict(m) for m in results]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
