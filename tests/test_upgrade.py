"""Runtime upgrades: two consecutive runs of the real program, the second with a recipe that pins one
package differently, as an operator would run `pulumi up` after editing images/runtime/recipe.yaml.

Pulumi compares the two registrations resource by resource (same URN); what it then does follows
from what changed and from the resource options, which these tests read from the recorded runs.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from pathlib import Path

import pytest

from components import runtime_layout as layout
from components.gpu_pool import REPLACED_ON
from tests.conftest import ROOT
from tools import mockrun, policy_check

NODE_POOL = "gcp:container/nodePool:NodePool"
DAEMONSET = "kubernetes:apps/v1:DaemonSet"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
IMAGE = "pulumi-python:dynamic:Resource"
RECIPE = Path("images") / "runtime" / "recipe.yaml"
PIN, NEXT_PIN = "Pillow==9.5.0", "Pillow==10.0.0"


def checkout_with_recipe(tmp_path: Path, recipe_text: str) -> Path:
    """A checkout of the project (symlinks to this one) whose runtime recipe reads `recipe_text`."""
    root = tmp_path / "project"
    _link_tree(ROOT, root, RECIPE)
    (root / RECIPE).write_text(recipe_text)
    return root


def _link_tree(source: Path, target: Path, except_for: Path) -> None:
    """Symlink `source`'s entries into `target`, descending along `except_for`, which is left out."""
    target.mkdir()
    head = except_for.parts[0]
    for entry in source.iterdir():
        if entry.name.startswith("."):
            continue
        if entry.name != head:
            (target / entry.name).symlink_to(entry)
        elif len(except_for.parts) > 1:
            _link_tree(entry, target / head, Path(*except_for.parts[1:]))


@pytest.fixture(scope="module")
def upgrade(runs, tmp_path_factory) -> tuple[mockrun.Run, mockrun.Run]:
    """`pulumi up` of today's recipe (the session's dev run), then of the recipe with one pin moved."""
    original = (ROOT / RECIPE).read_text()
    assert PIN in original, f"{RECIPE} no longer pins {PIN}: pick another pin to move"
    before = runs["dev"]
    checkout = checkout_with_recipe(tmp_path_factory.mktemp("next"), original.replace(PIN, NEXT_PIN))
    try:
        after = mockrun.run("dev", root=checkout)
    finally:
        if str(checkout) in sys.path:  # the runner puts the program's root on the import path
            sys.path.remove(str(checkout))
    return before, after


def runtime_hash(run: mockrun.Run) -> str:
    return run.one(IMAGE, "runtime-image").inputs["identity_hash"][:12]


def pool_label(run: mockrun.Run) -> str:
    return run.one(NODE_POOL, "sd-gpu").inputs["nodeConfig"]["labels"][layout.RUNTIME_NODE_LABEL]


def agent_pod(run: mockrun.Run) -> dict:
    return run.one(DAEMONSET, "runtime-disk-daemonset").inputs["spec"]["template"]["spec"]


def webui_pod(run: mockrun.Run) -> dict:
    return run.one(DEPLOYMENT, "webui-deployment").inputs["spec"]["template"]["spec"]


def agent_runtime_requirements(run: mockrun.Run) -> list[dict]:
    affinity = agent_pod(run)["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    return [x for term in affinity["nodeSelectorTerms"] for x in term["matchExpressions"]
            if x["key"] == layout.RUNTIME_NODE_LABEL]


def changed_paths(old, new, path: str = "") -> list[str]:
    """Where two registrations' inputs differ, as Pulumi property paths."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [p for key in sorted(set(old) | set(new))
                for p in changed_paths(old.get(key), new.get(key), f"{path}.{key}" if path else key)]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [p for i, (a, b) in enumerate(zip(old, new, strict=True)) for p in changed_paths(a, b, f"{path}[{i}]")]
    return [] if old == new else [path]


def test_a_new_recipe_is_a_new_runtime_hash(upgrade):
    before, after = upgrade
    assert runtime_hash(before) != runtime_hash(after)


def test_each_run_labels_its_gpu_pool_with_its_runtime(upgrade):
    for run in upgrade:
        assert pool_label(run) == runtime_hash(run)


def test_the_agent_runs_only_on_nodes_of_its_own_runtime(upgrade):
    for run in upgrade:
        assert agent_runtime_requirements(run) == [
            {"key": layout.RUNTIME_NODE_LABEL, "operator": "In", "values": [runtime_hash(run)]}]
        env = {e["name"]: e.get("value") for e in agent_pod(run)["containers"][0]["env"]}
        assert env["SDGKE_RUNTIME_HASH"] == runtime_hash(run)


def test_the_webui_follows_the_runtime_label_to_the_new_pool(upgrade):
    for run in upgrade:
        assert webui_pod(run)["nodeSelector"][layout.RUNTIME_NODE_LABEL] == runtime_hash(run)


def test_the_upgrade_changes_only_the_pool_label_which_replaces_the_pool(upgrade):
    before, after = upgrade
    old, new = before.one(NODE_POOL, "sd-gpu"), after.one(NODE_POOL, "sd-gpu")
    assert old.urn == new.urn
    assert changed_paths(old.inputs, new.inputs) == [f"nodeConfig.labels.{layout.RUNTIME_NODE_LABEL}"]
    assert new.replace_on_changes == REPLACED_ON == ["nodeConfig.labels", "nodeConfig.secondaryBootDisks"]


def test_the_new_pool_is_created_before_the_old_one_is_deleted(upgrade):
    """Create-before-delete is Pulumi's default; it needs a pool name that differs from the old one,
    which the provider generates afresh for a replacement only when the program sets none."""
    for run in upgrade:
        pool = run.one(NODE_POOL, "sd-gpu")
        assert pool.delete_before_replace is False
        assert "name" not in pool.inputs and "namePrefix" not in pool.inputs


def test_what_runs_on_gpu_nodes_waits_for_the_pool_it_runs_on(upgrade):
    """So Pulumi updates the DaemonSet and the WebUI after creating the new pool, and deletes the
    old pool only after them."""
    for run in upgrade:
        pool = run.one(NODE_POOL, "sd-gpu").urn
        assert pool in run.one(DAEMONSET, "runtime-disk-daemonset").dependencies
        assert pool in run.one(DEPLOYMENT, "webui-deployment").dependencies


def test_the_webui_rollout_keeps_serving_while_it_moves(upgrade):
    """A new pod must be ready on the new pool before an old one goes (maxUnavailable 0)."""
    strategy = upgrade[1].one(DEPLOYMENT, "webui-deployment").inputs["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def test_the_upgrade_changes_only_the_image_the_pool_and_what_runs_on_gpu_nodes(upgrade):
    """The cluster, its system pool, identities and namespaces stay as they are."""
    before, after = upgrade
    old = {r.urn: r for r in before.resources}
    assert sorted(old) == sorted(r.urn for r in after.resources)
    changed = sorted(r.name for r in after.resources if r.custom and changed_paths(old[r.urn].inputs, r.inputs))
    assert changed == ["runtime-disk-daemonset", "runtime-image", "sd-gpu", "webui-deployment"]


def test_rolling_back_the_recipe_declares_the_first_runtime_again(upgrade):
    """Back to the previous recipe: the previous hash, so the image of that name (kept or deprecated
    while its disks exist, see components/runtime_bake/provider.py) and a pool of that label."""
    before, _ = upgrade
    again = mockrun.run("dev")
    assert runtime_hash(again) == runtime_hash(before)
    assert again.one(IMAGE, "runtime-image").inputs["image_name"] == before.one(IMAGE, "runtime-image").inputs["image_name"]
    assert again.one(NODE_POOL, "sd-gpu").inputs == before.one(NODE_POOL, "sd-gpu").inputs


def test_both_runs_satisfy_the_policy_pack(upgrade):
    for run in upgrade:
        assert [str(v) for v in policy_check.evaluate(run)] == []


def test_the_runtime_label_is_the_one_the_policy_pack_checks():
    policy_check.policies()  # puts the pack on the import path
    import resources

    assert resources.RUNTIME_NODE_LABEL == layout.RUNTIME_NODE_LABEL


def _with(run: mockrun.Run, type_: str, name: str, change) -> list[mockrun.Recorded]:
    target = run.one(type_, name)
    changed = dataclasses.replace(target, inputs=copy.deepcopy(target.inputs))
    change(changed.inputs)
    return [changed if r is target else r for r in run.resources]


def _violations(run: mockrun.Run, resources) -> list[str]:
    return [v.message for v in policy_check.evaluate(run, None, resources) if v.policy == "stack-runtime-selection-agrees"]


def test_policy_refuses_a_webui_selecting_the_old_runtime(upgrade):
    before, after = upgrade
    old = runtime_hash(before)

    def select_old(inputs):
        inputs["spec"]["template"]["spec"]["nodeSelector"][layout.RUNTIME_NODE_LABEL] = old

    assert _violations(after, _with(after, DEPLOYMENT, "webui-deployment", select_old)) == [
        f"The WebUI selects sd-gke/runtime={old} but the disk attacher mounts runtime {runtime_hash(after)}: "
        "its pods would run another runtime or never be scheduled."]


def test_policy_refuses_an_agent_that_may_land_on_another_runtimes_nodes(upgrade):
    after = upgrade[1]

    def any_gpu_node(inputs):
        term = inputs["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
        term["matchExpressions"] = [x for x in term["matchExpressions"] if x["key"] != layout.RUNTIME_NODE_LABEL]

    assert _violations(after, _with(after, DAEMONSET, "runtime-disk-daemonset", any_gpu_node)) == [
        f"The disk attacher does not require sd-gke/runtime In [{runtime_hash(after)}] in its node affinity: on a node "
        "of another runtime it would find that runtime's disk, refuse it and stay unready."]


def test_policy_refuses_a_runtime_no_gpu_pool_serves(upgrade):
    before, after = upgrade

    def keep_old_label(inputs):
        inputs["nodeConfig"]["labels"][layout.RUNTIME_NODE_LABEL] = runtime_hash(before)

    assert _violations(after, _with(after, NODE_POOL, "sd-gpu", keep_old_label)) == [
        f"No GPU node pool is labelled sd-gke/runtime={runtime_hash(after)}, the runtime the disk attacher mounts "
        f"(pools: ['{runtime_hash(before)}'])."]


def test_the_pool_is_made_after_its_runtime_image_and_deleted_before_it(upgrade):
    """Pulumi deletes in reverse dependency order: the old pool goes before the old image, whose
    delete then finds no node of that runtime left that could still need it."""
    for run in upgrade:
        assert run.one(IMAGE, "runtime-image").urn in run.one(NODE_POOL, "sd-gpu").dependencies


def test_the_old_pool_drains_within_the_webui_disruption_budget(upgrade):
    import json

    import googleapiclient

    discovery = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "container.v1.json"
    schemas = json.loads(discovery.read_text())["schemas"]
    assert schemas["NodePool"]["properties"]["nodeDrainConfig"]["$ref"] == "NodeDrainConfig"
    assert schemas["NodeDrainConfig"]["properties"]["respectPdbDuringNodePoolDeletion"]["type"] == "boolean"
    for run in upgrade:
        assert run.one(NODE_POOL, "sd-gpu").inputs["nodeDrainConfigs"] == [{"respectPdbDuringNodePoolDeletion": True}]
        budget = run.one("kubernetes:policy/v1:PodDisruptionBudget", "webui-pdb").inputs["spec"]
        template_labels = run.one(DEPLOYMENT, "webui-deployment").inputs["spec"]["template"]["metadata"]["labels"]
        assert budget["maxUnavailable"] == 1
        assert budget["selector"]["matchLabels"].items() <= template_labels.items()
