"""The Stable Diffusion WebUI Deployment, as registered for dev and prod."""

from __future__ import annotations

import pytest

from components import webui as webui_module
from components.runtime_layout import GPU_TAINT, HOST_MOUNT_PATH, READY_MARKER, RUNTIME_ROOT, VENV_PYTHON
from tests.test_gateway import PUBLIC_GATEWAY

DEPLOYMENT = "kubernetes:apps/v1:Deployment"


def pod(run) -> dict:
    return run.one(DEPLOYMENT, "webui-deployment").inputs["spec"]["template"]["spec"]


def container(run, name="webui") -> dict:
    spec = pod(run)
    return next(c for c in spec["containers"] + spec.get("initContainers", []) if c["name"] == name)


def mounts(c: dict) -> dict[str, dict]:
    return {m["mountPath"]: m for m in c["volumeMounts"]}


def volumes(run) -> dict[str, dict]:
    return {v["name"]: v for v in pod(run)["volumes"]}


def test_one_gpu_per_pod(run):
    resources = container(run)["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == "1"
    assert resources["limits"]["nvidia.com/gpu"] == "1"


def test_pods_run_only_on_gpu_nodes_of_the_configured_type_and_runtime(run):
    from tests.test_cluster import stack_config

    hash12 = run.one("pulumi-python:dynamic:Resource", "runtime-image").inputs["identity_hash"][:12]
    assert pod(run)["nodeSelector"] == {"cloud.google.com/gke-accelerator": stack_config(run).gpu_pool.accelerator_type,
                                        "sd-gke/runtime": hash12,
                                        "sd-gke/runtime-delivery": stack_config(run).runtime.delivery}


def test_pods_tolerate_the_gpu_taint_but_not_the_startup_taint(run):
    assert pod(run)["tolerations"] == [{"key": GPU_TAINT["key"], "operator": "Equal", "value": GPU_TAINT["value"],
                                        "effect": GPU_TAINT["effect"]}]


def test_runtime_comes_read_only_from_the_attacher_mount_with_host_to_container_propagation(run):
    assert volumes(run)["runtime"]["hostPath"] == {"path": HOST_MOUNT_PATH, "type": "Directory"}
    mount = mounts(container(run))[RUNTIME_ROOT]
    assert mount == {"name": "runtime", "mountPath": RUNTIME_ROOT, "readOnly": True, "mountPropagation": "HostToContainer"}


def test_every_path_webui_writes_is_an_empty_dir(run):
    writable = {path for path, m in mounts(container(run)).items() if not m.get("readOnly")}
    assert writable == {"/data", "/tmp", "/dev/shm"}
    for name in ("data", "tmp", "shm"):
        assert "emptyDir" in volumes(run)[name]
    assert container(run)["securityContext"]["readOnlyRootFilesystem"] is True


def test_webui_caches_and_home_point_into_the_data_dir(run):
    env = {e["name"]: e.get("value") for e in container(run)["env"]}
    assert env["SD_WEBUI_CACHE_FILE"].startswith("/data/")
    assert env["SD_WEBUI_CACHE_DIR"].startswith("/data/")
    assert env["HOME"].startswith("/data/")


def test_launched_from_the_baked_venv_without_preparing_the_environment(run):
    c = container(run)
    assert c["command"] == [VENV_PYTHON]
    args = c["args"]
    assert args[0] == f"{RUNTIME_ROOT}/webui/launch.py"
    for flag in ("--skip-prepare-environment", "--skip-install", "--no-download-sd-model", "--api", "--listen"):
        assert flag in args


def test_huggingface_is_offline(run):
    env = {e["name"]: e.get("value") for e in container(run)["env"]}
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    assert env["HF_HOME"].startswith(RUNTIME_ROOT + "/")


def test_never_allows_insecure_extension_access(run):
    assert "--enable-insecure-extension-access" not in container(run)["args"]


def test_models_come_from_the_configured_path_on_the_runtime(run):
    from tests.test_cluster import stack_config

    args = container(run)["args"]
    assert args[args.index("--ckpt-dir") + 1] == f"{RUNTIME_ROOT}/{stack_config(run).webui.model_path}"


def test_api_auth_is_on_by_default_from_a_generated_secret(run):
    args = container(run)["args"]
    assert args[args.index("--api-auth") + 1] == "$(SD_API_AUTH)"
    env = {e["name"]: e for e in container(run)["env"]}
    assert env["SD_API_AUTH"]["valueFrom"]["secretKeyRef"]["key"] == "SD_API_AUTH"
    secret = run.one("kubernetes:core/v1:Secret", "webui-api-auth").inputs
    assert secret["stringData"]["SD_API_AUTH"].startswith(webui_module.API_USER + ":")
    password = run.one("random:index/randomPassword:RandomPassword", "webui-api-password").inputs
    assert password["length"] >= 32


def test_api_auth_can_be_turned_off_for_a_private_service(run_stack):
    run = run_stack("dev", webui={"apiAuth": False, "public": False})
    assert "--api-auth" not in container(run)["args"]
    assert not run.of_type("kubernetes:core/v1:Secret")


REQUEST_QUEUE_SERVICES = ["request-queue-service", "request-queue-workers-service"]
"""The Services there are: both select the request queue's pods (tests/test_request_queue.py)."""


def test_nothing_reaches_the_webui_through_a_service(run):
    """The request queue sends each request to the pod its worker registered (docs/request-queue.md)."""
    assert sorted(r.name for r in run.of_type("kubernetes:core/v1:Service")) == REQUEST_QUEUE_SERVICES


def test_a_public_webui_is_reached_only_through_the_request_queue_behind_the_gateway(run_stack):
    run = run_stack("dev", webui={"public": True, "apiAuth": True}, gateway=PUBLIC_GATEWAY)
    assert sorted(r.name for r in run.of_type("kubernetes:core/v1:Service")) == REQUEST_QUEUE_SERVICES
    assert "--api-auth" in container(run)["args"]


def test_startup_probe_allows_a_cold_node(run):
    probe = container(run)["startupProbe"]
    assert probe["exec"]["command"][-1] == "warm"
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 600
    assert probe["timeoutSeconds"] > webui_module.WARM_TIMEOUT_SECONDS


def test_readiness_means_the_model_is_warm_and_the_api_answers(run):
    assert container(run)["readinessProbe"]["exec"]["command"][-1] == "ready"


def test_liveness_does_not_kill_a_pod_mid_generation(run):
    from tests.test_cluster import stack_config

    probe = container(run)["livenessProbe"]
    assert "tcpSocket" in probe, "a TCP accept does not queue behind the generation lock"
    assert probe["periodSeconds"] * probe["failureThreshold"] >= stack_config(run).webui.generation_timeout_seconds


def test_termination_grace_covers_one_generation_and_pre_stop_drains(run):
    from tests.test_cluster import stack_config

    assert pod(run)["terminationGracePeriodSeconds"] > stack_config(run).webui.generation_timeout_seconds
    assert container(run)["lifecycle"]["preStop"]["exec"]["command"][-1] == "drain"


def test_pod_refuses_a_node_without_a_verified_runtime(run):
    prepare = container(run, "prepare")
    assert f"test -f {RUNTIME_ROOT}/{READY_MARKER}" in prepare["command"][-1]
    assert mounts(prepare)[RUNTIME_ROOT]["readOnly"] is True


def test_containers_cannot_escalate_privileges(run):
    for name in ("webui", "prepare"):
        sc = container(run, name)["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["runAsNonRoot"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert "privileged" not in sc


def test_pod_disruption_budget_lets_the_autoscaler_drain_one_pod_at_a_time(run):
    pdb = run.one("kubernetes:policy/v1:PodDisruptionBudget", "webui-pdb").inputs["spec"]
    assert pdb["maxUnavailable"] == 1
    assert pdb["selector"]["matchLabels"] == run.one(DEPLOYMENT, "webui-deployment").inputs["spec"]["selector"]["matchLabels"]


def test_the_deployment_leaves_its_replica_count_to_the_autoscaler(run):
    assert "replicas" not in run.one(DEPLOYMENT, "webui-deployment").inputs["spec"]


def test_pod_runs_the_base_image_by_digest(run):
    image = container(run)["image"]
    assert "@sha256:" in image and image == container(run, "prepare")["image"]
    assert image.split("@")[0].endswith("/sd-base")


@pytest.mark.parametrize("flag", ["--skip-prepare-environment", "--no-download-sd-model", "--data-dir"])
def test_launch_args_carry_the_offline_flags_whatever_the_config(flag):
    from components.config import WebuiConfig

    assert flag in webui_module.launch_args(WebuiConfig(api_auth=False))


FRONT = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "request-queue"}}}
DNS = {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
GOOGLE_APIS = {"ports": [{"port": p, "protocol": "TCP"} for p in (443, 80, 988)]}


def test_webui_serves_only_the_request_queue_and_reaches_dns_the_queue_google_apis_and_metadata(run):
    policy = run.one("kubernetes:networking.k8s.io/v1:NetworkPolicy", "webui-network-policy").inputs["spec"]
    assert policy["podSelector"]["matchLabels"] == pod_labels_selector(run)
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == [{"from": [FRONT], "ports": [{"port": webui_module.PORT, "protocol": "TCP"}]}]
    assert policy["egress"] == [DNS, {"to": [FRONT], "ports": [{"port": 8081, "protocol": "TCP"}]}, GOOGLE_APIS]


def test_without_batch_work_the_webui_reaches_no_google_api(run_stack):
    policy = run_stack("dev", jobs={"enabled": False}).one(
        "kubernetes:networking.k8s.io/v1:NetworkPolicy", "webui-network-policy").inputs["spec"]
    assert GOOGLE_APIS not in policy["egress"] and DNS in policy["egress"]


def pod_labels_selector(run) -> dict:
    return run.one(DEPLOYMENT, "webui-deployment").inputs["spec"]["selector"]["matchLabels"]
