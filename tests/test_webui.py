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


def env_values(c: dict) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in c["env"]}


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
    env = env_values(container(run))
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
    env = env_values(container(run))
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


def test_a_node_that_has_the_pinned_image_starts_the_pod_without_asking_the_registry(run):
    """The image is pinned by digest, so what the node holds is what the pod wants: no pull on a warm node."""
    assert [c["imagePullPolicy"] for c in pod(run)["initContainers"] + pod(run)["containers"]] == ["IfNotPresent"] * 3


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


def test_webui_runs_offline_with_its_caches_home_and_timeouts_from_the_stack(run):
    """Each variable says why it is there: offline model hubs, caches and HOME in the writable data dir, no .pyc
    written beside the read-only runtime, and the probe's warm-up and drain budgets from the timeout chain."""
    from components.timeouts import TimeoutChain
    from tests.test_cluster import stack_config

    env = env_values(container(run))
    assert {k: v for k, v in env.items() if k != "SD_API_AUTH"} == {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": f"{RUNTIME_ROOT}/cache/huggingface",
        "SD_WEBUI_CACHE_FILE": "/data/cache.json",
        "SD_WEBUI_CACHE_DIR": "/data/cache",
        "HOME": "/data/home",
        "PYTHONDONTWRITEBYTECODE": "1",
        "SD_WARM_TIMEOUT": str(webui_module.WARM_TIMEOUT_SECONDS),
        "SD_DRAIN_SECONDS": str(TimeoutChain.of(stack_config(run)).webui_drain),
    }


def test_the_credentials_are_the_api_user_and_the_generated_password(run):
    """What WebUI checks each API call against, and what the stack exports for the operator's client."""
    password = run.one("random:index/randomPassword:RandomPassword", "webui-api-password").state["result"]
    secret = run.one("kubernetes:core/v1:Secret", "webui-api-auth").inputs
    assert secret["stringData"]["SD_API_AUTH"] == f"{webui_module.API_USER}:{password}"
    assert (run.outputs["webui_api_user"], run.outputs["webui_api_password"]) == (webui_module.API_USER, password)


def test_the_api_password_has_no_character_that_webui_reads_as_a_separator(run):
    """--api-auth is `user:password[,user:password]` (modules/api/api.py splits on ',' then ':')."""
    password = run.one("random:index/randomPassword:RandomPassword", "webui-api-password").inputs
    assert password["special"] is False


def test_webui_reads_its_credentials_from_the_secret_the_stack_writes(run):
    secret = run.one("kubernetes:core/v1:Secret", "webui-api-auth").inputs
    assert (secret["type"], sorted(secret["stringData"])) == ("Opaque", ["SD_API_AUTH"])
    assert secret["metadata"]["namespace"] == webui_module.NAMESPACE
    for name in ("webui", "queue-agent"):
        ref = {e["name"]: e for e in container(run, name)["env"]}["SD_API_AUTH"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": secret["metadata"]["name"], "key": "SD_API_AUTH"}


def test_the_probes_run_the_shipped_probe_script_from_its_read_only_config_map(run):
    config_map = run.one("kubernetes:core/v1:ConfigMap", "webui-probe").inputs
    assert config_map["data"] == {"probe.py": webui_module.PROBE_SCRIPT.read_text()}
    assert config_map["metadata"]["namespace"] == webui_module.NAMESPACE
    assert volumes(run)["probe"]["configMap"] == {"name": config_map["metadata"]["name"], "defaultMode": 0o444}
    assert mounts(container(run))[webui_module.PROBE_DIR] == {"name": "probe", "mountPath": webui_module.PROBE_DIR,
                                                              "readOnly": True}
    c = container(run)
    script = f"{webui_module.PROBE_DIR}/probe.py"
    assert [c[probe]["exec"]["command"] for probe in ("startupProbe", "readinessProbe")] == [
        ["python3", script, "warm"], ["python3", script, "ready"]]
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["python3", script, "drain"]


def test_probe_timings_give_a_warm_up_its_time_and_a_busy_pod_its_readiness(run):
    c = container(run)
    assert c["startupProbe"] == {**c["startupProbe"], "periodSeconds": 10,
                                 "timeoutSeconds": webui_module.WARM_TIMEOUT_SECONDS + 5,
                                 "failureThreshold": webui_module.STARTUP_WINDOW_SECONDS // 10}
    assert {k: v for k, v in c["readinessProbe"].items() if k != "exec"} == {
        "periodSeconds": 10, "timeoutSeconds": 8, "failureThreshold": 3}
    assert c["livenessProbe"] == {"tcpSocket": {"port": webui_module.PORT}, "periodSeconds": 20, "timeoutSeconds": 5,
                                  "failureThreshold": 6}


def test_webui_listens_on_the_port_its_container_names_and_its_network_policy_opens(run):
    c = container(run)
    assert c["args"][c["args"].index("--port") + 1] == str(webui_module.PORT)
    assert c["ports"] == [{"name": "http", "containerPort": webui_module.PORT}]


def test_webui_works_in_its_data_dir_with_the_data_dir_flag_pointing_there(run):
    c = container(run)
    assert c["workingDir"] == "/data" == c["args"][c["args"].index("--data-dir") + 1]
    assert mounts(c)["/data"] == {"name": "data", "mountPath": "/data"}


def test_scratch_space_is_bounded_and_shared_memory_lives_in_memory(run):
    assert volumes(run)["data"] == {"name": "data", "emptyDir": {"sizeLimit": "8Gi"}}
    assert volumes(run)["tmp"] == {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}
    assert volumes(run)["shm"] == {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}
    assert {m["name"] for m in container(run)["volumeMounts"]} == {"runtime", "data", "tmp", "shm", "probe"}


def test_the_pods_ephemeral_storage_limit_holds_its_scratch_volumes(run):
    """Disk-backed emptyDir counts against the pod's ephemeral-storage limit, the sum of its containers' limits
    (https://kubernetes.io/docs/concepts/configuration/manage-resources-containers/#local-ephemeral-storage):
    below the volumes' own size limits, kubelet would evict a pod before its volumes are full."""
    gib = {"Mi": 1 / 1024, "Gi": 1}
    size = lambda q: float(q[:-2]) * gib[q[-2:]]  # noqa: E731
    limit = sum(size(c["resources"]["limits"]["ephemeral-storage"]) for c in pod(run)["containers"])
    scratch = sum(size(v["emptyDir"]["sizeLimit"]) for v in pod(run)["volumes"]
                  if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory")
    assert limit >= scratch


def test_webui_reserves_a_gpu_node_share_and_is_capped_in_memory_and_disk(run):
    """No CPU limit (CHECKOV_SKIPS says why); memory and disk limits above the requests, with room for the
    2Gi of shared memory, which counts against the memory limit."""
    assert container(run)["resources"] == {
        "requests": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1", "ephemeral-storage": "2Gi"},
        "limits": {"memory": "12Gi", "nvidia.com/gpu": "1", "ephemeral-storage": "10Gi"},
    }


def test_the_gate_runs_in_the_base_image_with_a_small_bounded_footprint(run):
    prepare = container(run, "prepare")
    assert prepare["image"] == container(run)["image"] and prepare["imagePullPolicy"] == "IfNotPresent"
    assert prepare["command"][:2] == ["sh", "-ec"]
    assert prepare["resources"] == {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}}
    assert prepare["securityContext"] == container(run)["securityContext"]
    assert [m["name"] for m in prepare["volumeMounts"]] == ["runtime", "data"]


def test_the_gate_checks_the_ready_marker_and_the_manifest_for_this_runtime_then_lays_out_the_data_dir(run):
    from components.runtime_layout import MANIFEST

    hash12 = run.one("pulumi-python:dynamic:Resource", "runtime-image").inputs["identity_hash"][:12]
    script = container(run, "prepare")["command"][-1]
    steps = script.split(" && ")
    assert steps[:3] == webui_module.runtime_checks(hash12)
    assert f'grep -q "^{hash12}" {RUNTIME_ROOT}/{READY_MARKER}' in steps[1]
    assert f"{MANIFEST}" in steps[2]
    assert steps[3] == "mkdir -p /data/home /data/cache /data/outputs"
    assert steps[4:] == [f"ln -sfn {RUNTIME_ROOT}/{target} /data/{name}"
                         for name, target in webui_module.BAKE.DATA_LINKS.items()]


def test_pods_take_no_kubernetes_token_and_no_service_links(run):
    spec = pod(run)
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False


def test_pods_run_as_the_base_images_user_with_its_group_owning_the_volumes(run):
    assert pod(run)["securityContext"] == {"runAsNonRoot": True, "runAsUser": webui_module.UID,
                                           "runAsGroup": webui_module.UID, "fsGroup": webui_module.UID,
                                           "seccompProfile": {"type": "RuntimeDefault"}}


def test_a_restricted_container_meets_restricted_on_its_own_as_its_user():
    """restricted_container is also the request queue's: it must not lean on a pod-level security context."""
    from tests.test_pod_security import pod_security

    sc = webui_module.restricted_container(1234)
    wire = {"allowPrivilegeEscalation": sc.allow_privilege_escalation, "runAsNonRoot": sc.run_as_non_root,
            "runAsUser": sc.run_as_user, "capabilities": {"drop": sc.capabilities.drop},
            "seccompProfile": {"type": sc.seccomp_profile.type}}
    assert pod_security.violations({}, {"containers": [{"name": "c", "securityContext": wire}]}, "restricted") == []
    assert (sc.run_as_user, sc.run_as_group, sc.read_only_root_filesystem) == (1234, 1234, True)


def test_a_rollout_surges_one_pod_and_keeps_every_old_pod_until_its_successor_is_ready(run):
    strategy = run.one(DEPLOYMENT, "webui-deployment").inputs["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def test_the_deployment_selects_exactly_its_pods(run):
    spec = run.one(DEPLOYMENT, "webui-deployment").inputs["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert spec["selector"]["matchLabels"]["app.kubernetes.io/name"] == "webui"


def test_with_batch_work_the_pods_act_as_the_queue_agents_google_account_through_workload_identity(run):
    from tests.test_cluster import stack_config

    sa = run.one("kubernetes:core/v1:ServiceAccount", "webui-service-account").inputs
    agent = run.one("gcp:serviceaccount/account:Account", "jobs-agent").state
    assert sa["metadata"]["annotations"] == {"iam.gke.io/gcp-service-account": agent["email"]}
    assert sa["automountServiceAccountToken"] is False, "Workload Identity needs no Kubernetes token"
    assert pod(run)["serviceAccountName"] == sa["metadata"]["name"] == webui_module.SERVICE_ACCOUNT
    binding = run.one("gcp:serviceaccount/iAMMember:IAMMember", "jobs-agent-workload-identity").inputs
    assert binding["member"] == (f"serviceAccount:{stack_config(run).project}.svc.id.goog"
                                 f"[{sa['metadata']['namespace']}/{sa['metadata']['name']}]")


def test_without_batch_work_the_pods_run_as_the_namespaces_default_account(run_stack):
    run = run_stack("dev", jobs={"enabled": False})
    assert "serviceAccountName" not in pod(run)
    assert not [r for r in run.of_type("kubernetes:core/v1:ServiceAccount") if r.name.startswith("webui")]



def test_webui_starts_with_exactly_the_flags_each_for_its_reason(run):
    """Listen for the request queue on PORT; the API, behind auth, logging one line per call (modules/api/api.py
    api_middleware; tools/coldstart.py finds the first image by it); nothing prepared, installed, checked or
    downloaded at start (the bake did it); no checkpoint hashing on the cold path; xformers attention, baked in;
    writes to the data dir; models from the runtime."""
    from tests.test_cluster import stack_config

    assert container(run)["args"] == [
        f"{RUNTIME_ROOT}/webui/launch.py", "--listen", "--port", str(webui_module.PORT), "--api", "--api-log",
        "--skip-prepare-environment", "--skip-install", "--skip-version-check", "--no-download-sd-model",
        "--no-hashing", "--xformers", "--data-dir", "/data",
        "--ckpt-dir", f"{RUNTIME_ROOT}/{stack_config(run).webui.model_path}", "--api-auth", "$(SD_API_AUTH)",
    ]


def test_the_worker_beside_webui_runs_the_queue_agent_image_the_stack_pushes(run):
    from components import worker

    image = container(run, worker.CONTAINER)["image"]
    pushed = run.one("docker-build:index:Image", "webui-worker-image").inputs
    assert f"/{worker.IMAGE}@sha256:" in image
    assert pushed["push"] is True and [f"/{worker.IMAGE}:" in tag for tag in pushed["tags"]] == [True]


def test_the_stack_exports_the_namespace_the_webui_runs_in(run):
    """`pulumi stack output webui_namespace` is where `kubectl -n` finds the pods (README: `kubectl -n sd-webui ...`)."""
    assert run.outputs["webui_namespace"] == webui_module.NAMESPACE == \
        run.one("kubernetes:core/v1:Namespace", "webui-namespace").inputs["metadata"]["name"]
