"""Runtime delivery: the disk attacher DaemonSet, or the GPU pool's own secondary boot disk.

Every test runs over the registered plan of dev and prod in both capacity settings (tests/variants.py).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from components import config
from components.gpu_pool import REPLACED_ON
from components.runtime_layout import (
    MANIFEST,
    READY_MARKER,
    RUNTIME_NODE_LABEL,
    RUNTIME_ROOT,
    STARTUP_TAINT,
    secondary_boot_disk_path,
)
from tests.test_cluster import stack_config
from tests.test_config import stack_values
from tests.variants import CAPACITIES, IDS, STACKS, VARIANTS, variant
from tools import plan, policy_check

NODE_POOL = "gcp:container/nodePool:NodePool"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
DYNAMIC = "pulumi-python:dynamic:Resource"
BOOT = [(s, c) for s in STACKS for c in CAPACITIES]
BOOT_IDS = [f"{s}-{c}" for s, c in BOOT]


def gpu_pools(run) -> list[dict]:
    """The GPU pools' inputs by resource name (`sd-gpu`, then `sd-gpu-on-demand`): pools whose inputs
    resolve together register in either order."""
    pools = sorted((r for r in run.of_type(NODE_POOL) if r.inputs["nodeConfig"].get("guestAccelerators")),
                   key=lambda r: r.name)
    return [r.inputs for r in pools]


def webui_pod(run) -> dict:
    return run.one(DEPLOYMENT, "webui-deployment").inputs["spec"]["template"]["spec"]


def image_path(run) -> str:
    image = run.one(DYNAMIC, "runtime-image").inputs
    return f"projects/{image['project']}/global/images/{image['image_name']}"


def hash12(run) -> str:
    return run.one(DYNAMIC, "runtime-image").inputs["identity_hash"][:12]


@pytest.fixture(params=BOOT, ids=BOOT_IDS)
def boot(request):
    return variant(request.param[0], "secondaryBootDisk", request.param[1])


@pytest.fixture(params=BOOT, ids=BOOT_IDS)
def daemonset(request):
    return variant(request.param[0], "daemonset", request.param[1])


# --- secondaryBootDisk ----------------------------------------------------------------------------

def test_every_gpu_pool_carries_the_runtime_image_as_a_data_mode_secondary_boot_disk(boot):
    for pool in gpu_pools(boot):
        assert pool["nodeConfig"]["secondaryBootDisks"] == [{"diskImage": image_path(boot)}], "no mode: data"


def test_boot_disk_delivery_needs_no_attacher_no_custom_role_and_nothing_privileged(boot):
    types = {r.type for r in boot.resources}
    assert "kubernetes:apps/v1:DaemonSet" not in types
    assert "gcp:projects/iAMCustomRole:IAMCustomRole" not in types
    assert not [r.name for r in boot.resources if r.type.startswith("sdgke:disk_attacher")]
    pods = [plan._get(r.inputs, "spec.template.spec") or plan._get(r.inputs, "spec.jobTemplate.spec.template.spec")
            for r in boot.kubernetes_objects()]
    privileged = [c["name"] for p in pods if p for c in p.get("containers", []) + p.get("initContainers", [])
                  if (c.get("securityContext") or {}).get("privileged")]
    assert privileged == []


def test_webui_mounts_the_runtime_where_gke_mounts_the_boot_disk(boot):
    image = boot.one(DYNAMIC, "runtime-image").inputs["image_name"]
    runtime = next(v for v in webui_pod(boot)["volumes"] if v["name"] == "runtime")
    assert runtime["hostPath"] == {"path": f"/mnt/disks/gke-secondary-disks/gke-{image}-disk", "type": "Directory"}
    mount = next(m for m in webui_pod(boot)["containers"][0]["volumeMounts"] if m["name"] == "runtime")
    assert mount == {"name": "runtime", "mountPath": RUNTIME_ROOT, "readOnly": True}, "GKE mounts it before kubelet"


def test_boot_disk_pools_carry_no_startup_taint_since_no_agent_lifts_it(boot):
    for pool in gpu_pools(boot):
        assert STARTUP_TAINT["key"] not in [t["key"] for t in pool["nodeConfig"].get("taints", [])]


def test_a_new_runtime_image_replaces_the_boot_disk_pools(boot):
    assert REPLACED_ON == ["nodeConfig.labels", "nodeConfig.secondaryBootDisks"]
    for r in boot.of_type(NODE_POOL):
        if r.inputs["nodeConfig"].get("guestAccelerators"):
            assert r.replace_on_changes == REPLACED_ON
            assert r.inputs["nodeConfig"]["labels"][RUNTIME_NODE_LABEL] == hash12(boot)


def test_boot_disk_path_is_the_image_name_between_gke_and_disk():
    assert secondary_boot_disk_path("projects/p/global/images/sd-runtime-0123456789ab") == \
        "/mnt/disks/gke-secondary-disks/gke-sd-runtime-0123456789ab-disk"
    assert secondary_boot_disk_path("sd-runtime-0123456789ab") == \
        "/mnt/disks/gke-secondary-disks/gke-sd-runtime-0123456789ab-disk"


@pytest.mark.parametrize("stack, delivery, capacity", VARIANTS, ids=IDS)
def test_every_variant_passes_the_policy_pack(stack, delivery, capacity):
    run = variant(stack, delivery, capacity)
    assert [str(v) for v in policy_check.mandatory(policy_check.evaluate(run, policy_check.stack_config(stack)))] == []


# --- daemonset ------------------------------------------------------------------------------------

def test_daemonset_delivery_keeps_the_attacher_its_startup_taint_and_no_boot_disk(daemonset):
    assert daemonset.one("kubernetes:apps/v1:DaemonSet", "runtime-disk-daemonset")
    for pool in gpu_pools(daemonset):
        assert "secondaryBootDisks" not in pool["nodeConfig"]
        assert STARTUP_TAINT["key"] in [t["key"] for t in pool["nodeConfig"]["taints"]]
    runtime = next(v for v in webui_pod(daemonset)["volumes"] if v["name"] == "runtime")
    assert runtime["hostPath"]["path"] == "/mnt/disks/sd-runtime"


def test_the_shipped_stacks_deliver_with_the_daemonset(runs):
    for run in runs.values():
        assert stack_config(run).runtime.delivery == "daemonset"
        assert run.outputs["runtime_delivery"] == "daemonset"


# --- the init check: the pod refuses a runtime that is not the one it is for ----------------------

def prepare(run, tmp_path):
    """The WebUI's init step with /runtime and /data moved under tmp_path."""
    command = next(c for c in webui_pod(run)["initContainers"] if c["name"] == "prepare")["command"]
    script = command[-1].replace(RUNTIME_ROOT + "/", f"{tmp_path}/runtime/").replace("/data/", f"{tmp_path}/data/")
    (tmp_path / "runtime").mkdir(exist_ok=True)
    (tmp_path / "data").mkdir(exist_ok=True)
    return subprocess.run([*command[:-1], script], capture_output=True, text=True, check=False)


def bake(tmp_path, marker: str | None, recipe_hash: str | None):
    root = tmp_path / "runtime"
    root.mkdir()
    if recipe_hash is not None:  # as images/runtime/bake.py writes it
        (root / MANIFEST.rsplit("/", 1)[1]).write_text(json.dumps({"recipe_hash": recipe_hash}, indent=2, sort_keys=True))
    if marker is not None:
        (root / READY_MARKER).write_text(marker + "\n")


def test_the_init_check_passes_the_runtime_the_pod_is_for(boot, tmp_path):
    full = boot.one(DYNAMIC, "runtime-image").inputs["identity_hash"]
    bake(tmp_path, full, full)
    result = prepare(boot, tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("marker, recipe_hash, says", [
    (None, "RIGHT", ".sd-runtime-ready is missing"),
    ("0" * 64, "RIGHT", ".sd-runtime-ready is not runtime"),
    ("RIGHT", "0" * 64, "MANIFEST.json: recipe_hash is not runtime"),
    ("RIGHT", None, "MANIFEST.json: recipe_hash is not runtime"),
], ids=["unfinished", "other-marker", "other-manifest", "no-manifest"])
def test_the_init_check_refuses_a_runtime_that_is_not_finished_or_not_this_one(runs, tmp_path, marker, recipe_hash, says):
    run = runs["dev"]
    full = run.one(DYNAMIC, "runtime-image").inputs["identity_hash"]
    bake(tmp_path, marker and marker.replace("RIGHT", full), recipe_hash and recipe_hash.replace("RIGHT", full))
    result = prepare(run, tmp_path)
    assert result.returncode == 1
    assert says in result.stderr
    assert not (tmp_path / "data" / "home").exists(), "nothing laid out for a refused runtime"


# --- the config loader refuses what cannot work -----------------------------------------------------

def parse(stack: str, **sections):
    values = stack_values(stack)
    for key, change in sections.items():
        values[key] = {**values.get(key, {}), **change}
    return config.parse(values)


def test_delivery_must_be_one_the_program_knows():
    with pytest.raises(config.ConfigError) as err:
        parse("dev", runtime={"delivery": "nfs"})
    assert err.value.problems == ['runtime.delivery: "nfs" is not allowed; expected one of daemonset, secondaryBootDisk']


def test_boot_disk_delivery_refuses_a_runtime_disk_type_gke_would_not_give_it():
    with pytest.raises(config.ConfigError) as err:
        parse("prod", runtime={"delivery": "secondaryBootDisk"})
    assert err.value.problems == [
        'runtime.diskType: "pd-ssd" is not allowed; expected unset or \'pd-balanced\' (gpuPool.diskType) with delivery '
        "secondaryBootDisk: GKE gives the runtime disk the type of the node's boot disk"]


def test_boot_disk_delivery_takes_a_runtime_disk_type_equal_to_the_boot_disk():
    assert parse("prod", runtime={"delivery": "secondaryBootDisk", "diskType": "pd-balanced"}).runtime.delivery == \
        "secondaryBootDisk"


def test_every_master_version_the_loader_takes_has_secondary_boot_disks():
    """1.28.3-gke.1067000 is below every minor the loader takes (config.KUBERNETES_MINORS)."""
    for minor in config.KUBERNETES_MINORS:
        assert config.version_at_least(minor, config.SECONDARY_BOOT_DISK_MIN_VERSION)
        parse("dev", cluster={"minMasterVersion": minor}, runtime={"delivery": "secondaryBootDisk"})


@pytest.mark.parametrize("version, enough", [
    ("1.33", True), ("1.31", True), ("1.30", False), ("1.30.4", True), ("1.30.3", False),
    ("1.30.3-gke.1451000", True), ("1.30.3-gke.1450999", False), ("1.29.9-gke.9999999", False),
])
def test_gke_versions_compare_by_what_they_guarantee(version, enough):
    assert config.version_at_least(version, config.COMPUTE_CLASS_MIN_VERSION) is enough


# --- every GKE field the boot disk delivery sends is one container.v1 defines -----------------------

def test_secondary_boot_disk_fields_are_the_apis(boot):
    from tests.test_gke_api_oracle import SCHEMAS

    assert SCHEMAS["NodeConfig"]["properties"]["secondaryBootDisks"]["items"] == {"$ref": "SecondaryBootDisk"}
    allowed = SCHEMAS["SecondaryBootDisk"]["properties"]
    for pool in gpu_pools(boot):
        for disk in pool["nodeConfig"]["secondaryBootDisks"]:
            assert set(disk) <= set(allowed)
            assert disk.get("mode", "MODE_UNSPECIFIED") in allowed["mode"]["enum"]
            assert disk.get("mode") != "CONTAINER_IMAGE_CACHE", "the runtime is data, not a container image cache"


# --- the policy pack follows the chosen mode ---------------------------------------------------------

def policy_messages(run, policy, resources):
    from tests.test_policy import violations_of

    assert violations_of(run, policy) == [], "compliant as recorded"
    return violations_of(run, policy, resources)


def test_policy_refuses_a_webui_that_mounts_another_boot_disk(boot):
    from tests.test_policy import mutate

    def elsewhere(d):
        runtime = next(v for v in d["spec"]["template"]["spec"]["volumes"] if v["name"] == "runtime")
        runtime["hostPath"]["path"] = "/mnt/disks/gke-secondary-disks/gke-sd-runtime-000000000000-disk"

    found = policy_messages(boot, "stack-runtime-paths-agree", mutate(boot, DEPLOYMENT, "webui-deployment", elsewhere))
    assert found == ["The WebUI mounts the runtime from ['/mnt/disks/gke-secondary-disks/gke-sd-runtime-000000000000-disk'] "
                     f"but GKE mounts the pools' secondary boot disk at ['{secondary_boot_disk_path(image_path(boot))}']."]


def test_policy_refuses_a_pool_whose_boot_disk_is_another_runtime(boot):
    from tests.test_policy import _set, mutate

    other = mutate(boot, NODE_POOL, "sd-gpu", _set(f"nodeConfig.labels.{RUNTIME_NODE_LABEL}", "000000000000"))
    found = policy_messages(boot, "stack-runtime-selection-agrees", other)
    assert found == [f"A GPU pool labelled {RUNTIME_NODE_LABEL}=000000000000 carries the runtime image {image_path(boot)}: "
                     "its nodes would hold another runtime than their label says."]


def test_policy_refuses_boot_disks_without_image_streaming(boot):
    from tests.test_policy import _set, mutate

    found = policy_messages(boot, "gke-secondary-boot-disks-supported",
                            mutate(boot, NODE_POOL, "sd-gpu", _set("nodeConfig.gcfsConfig.enabled", False)))
    assert found == ["Node pool with secondary boot disks but without Image Streaming: GKE requires "
                     "nodeConfig.gcfsConfig.enabled = true for them."]


def test_policy_refuses_both_deliveries_at_once(daemonset):
    from tests.test_policy import _set, mutate

    both = mutate(daemonset, NODE_POOL, "sd-gpu", _set("nodeConfig.secondaryBootDisks", [{"diskImage": image_path(daemonset)}]))
    found = policy_messages(daemonset, "stack-runtime-paths-agree", both)
    assert found[0] == ("The GPU pools carry the runtime as a secondary boot disk and a disk attacher mounts it too: "
                        "choose one delivery (runtime.delivery).")


# --- the offline plan in either mode -----------------------------------------------------------------

def test_the_offline_plan_runs_the_stack_in_boot_disk_delivery(tmp_path):
    from tests.test_plan import plan as run_plan

    result = run_plan(tmp_path, "--stack", "dev", "--set", "runtime.delivery=secondaryBootDisk",
                      "--set", "gpuPool.onDemandFallback=true")
    assert result.returncode == 0, result.stderr
    assert "diskImage=projects/sd-gke-dev/global/images/sd-runtime-" in result.stdout
    assert "kubernetes:cloud.google.com/v1:ComputeClass gpu-compute-class  [name=sd-gpu, optimizeRulePriority=True]" \
        in result.stdout
    assert "DaemonSet" not in result.stdout and "policy pack: " in result.stdout and " 0 violation(s)" in result.stdout


def test_plan_settings_set_one_key_of_a_section_and_read_values_as_yaml():
    from tools.plan import with_settings

    config = {"sd-gke:runtime": '{"recipe": "r.yaml"}', "sd-gke:project": "p"}
    out = with_settings(config, ["runtime.delivery=secondaryBootDisk", "gpuPool.spot=false", "project=q"])
    assert json.loads(out["sd-gke:runtime"]) == {"recipe": "r.yaml", "delivery": "secondaryBootDisk"}
    assert json.loads(out["sd-gke:gpuPool"]) == {"spot": False}
    assert out["sd-gke:project"] == "q" and config["sd-gke:project"] == "p"


def test_a_plan_setting_without_a_value_is_refused_with_an_example():
    from tools.mockrun import StackFileError
    from tools.plan import with_settings

    with pytest.raises(StackFileError, match=r"--set 'runtime\.delivery': expected KEY=VALUE"):
        with_settings({}, ["runtime.delivery"])


@pytest.mark.parametrize("stack, delivery, capacity", VARIANTS, ids=IDS)
def test_every_variant_registers_valid_kubernetes_objects(stack, delivery, capacity):
    from tests.test_manifests import manifest_errors

    assert manifest_errors(variant(stack, delivery, capacity)) == []


def test_checkov_finds_nothing_in_the_boot_disk_and_compute_class_manifests(tmp_path):
    from tools import checks

    run = variant("dev", "secondaryBootDisk", "spotFirst")
    plan.write(run, tmp_path)
    report = checks.run_checkov(tmp_path / "dev" / "manifests", frameworks=("kubernetes",))
    assert [str(f) for f in report.failed] == []
    assert list(report.unexplained_skips) == []


def test_the_policy_pack_and_the_layout_agree_on_where_gke_mounts_the_runtime():
    policy_check.policies()  # puts the pack on the import path
    import resources

    from components.runtime_layout import IMAGE_FAMILY

    path = secondary_boot_disk_path(f"projects/p/global/images/{IMAGE_FAMILY}-0123456789ab")
    assert resources.BOOT_DISK_HOST_PATH.match(path)
    assert not resources.BOOT_DISK_HOST_PATH.match(path.replace("gke-secondary-disks", "sd-runtime"))


@pytest.mark.parametrize("stack, delivery, capacity", VARIANTS, ids=IDS)
def test_webui_pods_land_only_on_nodes_of_the_delivery_they_mount(stack, delivery, capacity):
    """After a switch of delivery the old pool lives on until the rollout is done; its nodes hold the
    runtime at the other mode's path."""
    from components.runtime_layout import RUNTIME_DELIVERY_LABEL

    run = variant(stack, delivery, capacity)
    assert webui_pod(run)["nodeSelector"][RUNTIME_DELIVERY_LABEL] == delivery
    assert {p["nodeConfig"]["labels"][RUNTIME_DELIVERY_LABEL] for p in gpu_pools(run)} == {delivery}
