"""Contracts between parts that never import each other at run time.

The bake runs on a builder VM, the agent in its own image, the WebUI in the base image; these tests
check that what each expects of the others is what the others do, on the registered resources.
"""

from __future__ import annotations

from pathlib import Path

from components import runtime_layout as layout
from components.source import load_source
from components.webui import launch_args
from tests.conftest import ROOT

DAEMONSET = "kubernetes:apps/v1:DaemonSet"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
DYNAMIC = "pulumi-python:dynamic:Resource"


bake = load_source(ROOT / "images" / "runtime" / "bake.py", "sdgke_bake")
agent_names = load_source(ROOT / "images" / "attacher" / "attacher" / "names.py", "sdgke_agent_names")


def agent(run) -> dict:
    return run.one(DAEMONSET, "runtime-disk-daemonset").inputs["spec"]["template"]["spec"]


def agent_env(run) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in agent(run)["containers"][0]["env"]}


def webui_pod(run) -> dict:
    return run.one(DEPLOYMENT, "webui-deployment").inputs["spec"]["template"]["spec"]


def taint(t: dict) -> tuple[str, str, str]:
    return t["key"], t["value"], t["effect"]


def test_webui_host_path_is_where_the_attacher_mounts(run):
    runtime = next(v for v in webui_pod(run)["volumes"] if v["name"] == "runtime")
    assert runtime["hostPath"]["path"] == agent_env(run)["SDGKE_MOUNT_PATH"] == layout.HOST_MOUNT_PATH
    assert agent_names.DEFAULT_MOUNT_PATH == layout.HOST_MOUNT_PATH


def test_attacher_mount_propagates_to_the_host_under_the_webui_path(run):
    mount = next(m for m in agent(run)["containers"][0]["volumeMounts"] if m.get("mountPropagation") == "Bidirectional")
    assert layout.HOST_MOUNT_PATH.startswith(mount["mountPath"] + "/")
    disks = next(v for v in agent(run)["volumes"] if v["name"] == mount["name"])
    assert disks["hostPath"]["path"] == mount["mountPath"]


def test_pod_runs_the_venv_and_webui_the_bake_writes():
    baked = bake.Bake({}, Path(layout.RUNTIME_ROOT), "0" * 64)
    assert str(baked.venv / "bin" / "python") == layout.VENV_PYTHON
    assert str(baked.webui) == layout.WEBUI_DIR
    assert launch_args_of_webui()[0] == f"{baked.webui}/launch.py"


def launch_args_of_webui() -> list[str]:
    from components.config import WebuiConfig

    return launch_args(WebuiConfig())


def test_pod_launches_webui_with_the_flags_the_bake_prepared_for():
    assert set(bake.WEBUI_ARGS) <= set(launch_args_of_webui())


def test_bake_agent_and_pod_agree_on_the_ready_marker_and_manifest():
    assert bake.READY_MARKER == agent_names.READY_MARKER == layout.READY_MARKER
    assert f"{layout.RUNTIME_ROOT}/{bake.MANIFEST}" == layout.MANIFEST
    assert agent_names.MANIFEST_FILE == bake.MANIFEST


def test_agent_device_name_and_hash_label_are_the_shared_ones():
    assert agent_names.DEVICE_NAME == layout.DEVICE_NAME
    assert agent_names.LABEL_HASH == layout.HASH_LABEL


def test_bake_runs_in_the_image_the_pods_run(run):
    baked_in = run.one(DYNAMIC, "runtime-image").inputs["base_image"]
    assert baked_in == webui_pod(run)["containers"][0]["image"]
    assert baked_in == webui_pod(run)["initContainers"][0]["image"]


def test_attacher_uses_the_image_and_hash_the_bake_produced(run):
    image = run.one(DYNAMIC, "runtime-image").inputs
    env = agent_env(run)
    assert env["SDGKE_RUNTIME_IMAGE"] == f"projects/{image['project']}/global/images/{image['image_name']}"
    assert env["SDGKE_RUNTIME_HASH"] == image["identity_hash"][:12]
    assert image["image_name"].endswith(env["SDGKE_RUNTIME_HASH"])


def test_attacher_tolerates_exactly_the_taints_gpu_nodes_carry(run):
    pool = run.one("gcp:container/nodePool:NodePool", "sd-gpu").inputs["nodeConfig"]
    declared = {(t["key"], t["value"], {"NO_SCHEDULE": "NoSchedule"}[t["effect"]]) for t in pool["taints"]}
    carried = declared | {taint(layout.GPU_TAINT)}
    assert {taint(t) for t in agent(run)["tolerations"]} == carried


def test_webui_tolerates_the_gpu_taint_and_waits_out_the_startup_taint(run):
    tolerated = {taint(t) for t in webui_pod(run)["tolerations"]}
    assert tolerated == {taint(layout.GPU_TAINT)}
    assert taint(layout.STARTUP_TAINT) not in tolerated


# The key prefixes whose taints the cluster autoscaler leaves out of a node group's template when it
# simulates a scale-up (kubernetes/autoscaler cluster-autoscaler/utils/taints/taints.go, NewTaintConfig;
# which one sd-gke uses on GKE, and why: components/runtime_layout.py).
AUTOSCALER_IGNORED_TAINT_PREFIXES = ("ignore-taint.cluster-autoscaler.kubernetes.io/",
                                     "startup-taint.cluster-autoscaler.kubernetes.io/")


def test_a_pending_webui_pod_can_scale_the_gpu_pool_up_from_zero(run):
    """Every taint the pool declares is tolerated by the WebUI or left out of the autoscaler's node
    template; one that is neither makes the autoscaler conclude a new node would not help, forever."""
    pool = run.one("gcp:container/nodePool:NodePool", "sd-gpu").inputs
    tolerated = {taint(t) for t in webui_pod(run)["tolerations"]}
    blocking = [t["key"] for t in pool["nodeConfig"]["taints"]
                if (t["key"], t["value"], {"NO_SCHEDULE": "NoSchedule"}[t["effect"]]) not in tolerated
                and not t["key"].startswith(AUTOSCALER_IGNORED_TAINT_PREFIXES)]
    assert blocking == []
    assert pool["autoscaling"]["totalMinNodeCount"] == 0


def test_startup_taint_is_the_one_the_agent_removes(run):
    pool = run.one("gcp:container/nodePool:NodePool", "sd-gpu").inputs["nodeConfig"]
    assert [t["key"] for t in pool["taints"]] == [agent_env(run)["SDGKE_STARTUP_TAINT"]]
    assert agent_names.DEFAULT_STARTUP_TAINT_KEY == layout.STARTUP_TAINT_KEY


def test_attacher_and_webui_select_the_same_gpu_nodes(run):
    term = agent(run)["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
    assert term["matchExpressions"][0] == {"key": layout.GPU_NODE_LABEL, "operator": "Exists"}
    assert sorted(webui_pod(run)["nodeSelector"]) == sorted([layout.GPU_NODE_LABEL, layout.RUNTIME_NODE_LABEL,
                                                             layout.RUNTIME_DELIVERY_LABEL])


def test_runtime_disk_settings_reach_the_agent(run):
    from tests.test_cluster import stack_config

    runtime = stack_config(run).runtime
    env = agent_env(run)
    assert (env["SDGKE_DISK_TYPE"], env["SDGKE_DISK_SIZE_GB"]) == (runtime.disk_type, str(runtime.disk_size_gb))


def test_bake_computes_the_identity_the_program_names_the_image_by(run, tmp_path):
    """The bake refuses any --expected-hash but its own: both sides must hash the same things."""
    import json

    image = run.one(DYNAMIC, "runtime-image").inputs
    (tmp_path / "recipe.json").write_text(image["recipe_json"])
    (tmp_path / "bake.py").write_text(image["bake_script"])
    digest = image["base_image"].split("@", 1)[1]
    _, identity = bake.load(tmp_path / "recipe.json", digest, image["identity_hash"])
    assert identity == image["identity_hash"]
    assert json.loads(image["recipe_json"])["python"] == "3.11"


def test_webui_model_path_holds_a_model_the_recipe_bakes(run):
    import json

    from tests.test_cluster import stack_config

    recipe = json.loads(run.one(DYNAMIC, "runtime-image").inputs["recipe_json"])
    model_dir = stack_config(run).webui.model_path
    assert any(m["destination"].startswith(model_dir + "/") for m in recipe["models"])


def test_webui_finds_the_baked_huggingface_cache(run):
    import json

    recipe = json.loads(run.one(DYNAMIC, "runtime-image").inputs["recipe_json"])
    env = {e["name"]: e.get("value") for e in webui_pod(run)["containers"][0]["env"]}
    assert recipe["huggingface"], "the CLIP tokenizer is baked"
    assert env["HF_HOME"] == f"{layout.RUNTIME_ROOT}/cache/huggingface"


def test_data_dir_links_lead_to_directories_the_bake_creates(tmp_path):
    """A link to a path the bake does not lay out would leave WebUI a dangling extensions_dir."""
    bake.Bake({}, tmp_path, "0" * 64).make_startup_paths()
    for target in bake.DATA_LINKS.values():
        assert (tmp_path / target).is_dir(), target


def test_what_webui_writes_at_every_start_lands_in_the_writable_data_dir():
    assert [w.path for w in bake.WEBUI_STARTUP_WRITES if w.kind == "file" and bake.runtime_path(w) is not None] == []


def test_pod_links_its_data_dir_onto_the_runtime_as_the_bake_expects(run):
    container = webui_pod(run)["containers"][0]
    data_dir = container["args"][container["args"].index("--data-dir") + 1]
    prepare = webui_pod(run)["initContainers"][0]["command"][-1]
    for name, target in bake.DATA_LINKS.items():
        assert f"ln -sfn {layout.RUNTIME_ROOT}/{target} {data_dir}/{name}" in prepare
    assert next(m for m in container["volumeMounts"] if m["mountPath"] == data_dir).get("readOnly") is not True


def test_gpu_pool_agent_and_webui_agree_on_the_runtime(run):
    runtime = agent_env(run)["SDGKE_RUNTIME_HASH"]
    pool = run.one("gcp:container/nodePool:NodePool", "sd-gpu").inputs["nodeConfig"]
    term = agent(run)["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
    assert pool["labels"][layout.RUNTIME_NODE_LABEL] == runtime
    assert {"key": layout.RUNTIME_NODE_LABEL, "operator": "In", "values": [runtime]} in term["matchExpressions"]
    assert webui_pod(run)["nodeSelector"][layout.RUNTIME_NODE_LABEL] == runtime
    assert agent_names.RUNTIME_NODE_LABEL == layout.RUNTIME_NODE_LABEL


def test_the_probe_and_the_worker_call_webui_on_the_port_it_listens_on(run):
    """Neither container is given SD_API_URL: the probe script's and the queue agent's defaults are the address."""
    import sys
    from urllib.parse import urlsplit

    from components import worker as worker_component
    from components.webui import PORT, PROBE_SCRIPT

    pod = webui_pod(run)
    for container in pod["containers"]:
        assert "SD_API_URL" not in {e["name"] for e in container.get("env", [])}, container["name"]
    webui = next(c for c in pod["containers"] if c["name"] == "webui")
    assert webui["args"][webui["args"].index("--port") + 1] == str(PORT)
    assert urlsplit(load_source(PROBE_SCRIPT, "sdgke_contract_probe").BASE).port == PORT
    if str(worker_component.CONTEXT) not in sys.path:
        sys.path.insert(0, str(worker_component.CONTEXT))
    from queue_agent import worker
    settings = worker.settings_from({"QUEUE_FRONT_URL": "http://q:8081", "POD_NAME": "p", "POD_IP": "10.0.0.7"})
    assert urlsplit(settings.webui_url).port == PORT
    assert settings.own_url == f"http://10.0.0.7:{PORT}", "the address the request queue sends browsers to"


def dockerfile_user(image_dir: str) -> str:
    """The user the image runs as: its last USER instruction."""
    from tests.test_dockerfiles import _instructions

    dockerfile = ROOT / "images" / image_dir / "Dockerfile"
    return [arguments for instruction, arguments in _instructions(dockerfile) if instruction == "USER"][-1]


def test_webui_pods_run_as_the_user_their_images_are_built_for(run):
    """The base image and the queue agent's both run as 1000:1000; the pod's uid and gid must be that user."""
    pod = webui_pod(run)
    for container in pod["initContainers"] + pod["containers"]:
        image_dir = "queue-agent" if container["name"] == "queue-agent" else "base"
        sc = {**pod["securityContext"], **container["securityContext"]}
        assert f"{sc['runAsUser']}:{sc['runAsGroup']}" == dockerfile_user(image_dir), container["name"]
