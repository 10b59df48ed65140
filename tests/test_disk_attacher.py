"""The disk attacher component: identities, roles, RBAC, the DaemonSet and the collector CronJob."""

from __future__ import annotations

from components import disk_attacher as module

ROLE = "gcp:projects/iAMCustomRole:IAMCustomRole"
DAEMONSET = "kubernetes:apps/v1:DaemonSet"
CRONJOB = "kubernetes:batch/v1:CronJob"


def agent_pod(run) -> dict:
    return run.one(DAEMONSET, "runtime-disk-daemonset").inputs["spec"]["template"]["spec"]


def agent_container(run) -> dict:
    return agent_pod(run)["containers"][0]


def gc_pod(run) -> dict:
    return run.one(CRONJOB, "runtime-disk-gc").inputs["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def test_agent_role_holds_exactly_the_permissions_its_calls_need(run):
    role = run.one(ROLE, "runtime-disk-agent-role").inputs
    assert sorted(role["permissions"]) == sorted(module.PERMISSIONS.AGENT_PERMISSIONS)
    assert "compute.instances.attachDisk" in role["permissions"]
    assert "compute.disks.use" in role["permissions"], "a READ_WRITE attach (the only auto-deleted kind) needs it"
    assert "compute.disks.delete" not in role["permissions"], "the agent never deletes; disks die with their node"


def test_collector_role_holds_exactly_the_permissions_its_calls_need(run):
    role = run.one(ROLE, "runtime-disk-gc-role").inputs
    assert sorted(role["permissions"]) == sorted(module.PERMISSIONS.GC_PERMISSIONS)
    assert "compute.instances.attachDisk" not in role["permissions"]


def test_roles_are_granted_to_their_own_service_accounts_only(run):
    for role_name in ("agent", "gc"):
        binding = run.one("gcp:projects/iAMMember:IAMMember", f"runtime-disk-{role_name}-role-binding").inputs
        account = run.one("gcp:serviceaccount/account:Account", f"runtime-disk-{role_name}").state
        role = run.one(ROLE, f"runtime-disk-{role_name}-role").state
        assert binding["member"] == f"serviceAccount:{account['email']}"
        assert binding["role"] == role["name"]


def test_kubernetes_service_accounts_impersonate_through_workload_identity(run):
    from tests.test_cluster import stack_config

    project = stack_config(run).project
    for role_name, ksa in (("agent", module.AGENT_KSA), ("gc", module.GC_KSA)):
        binding = run.one("gcp:serviceaccount/iAMMember:IAMMember", f"runtime-disk-{role_name}-workload-identity").inputs
        assert binding["role"] == "roles/iam.workloadIdentityUser"
        assert binding["member"] == f"serviceAccount:{project}.svc.id.goog[{module.NAMESPACE}/{ksa}]"
        account = run.one("gcp:serviceaccount/account:Account", f"runtime-disk-{role_name}").state
        sa = run.one("kubernetes:core/v1:ServiceAccount", f"runtime-disk-{role_name}-ksa").inputs["metadata"]
        assert sa["annotations"] == {"iam.gke.io/gcp-service-account": account["email"]}
        assert sa["name"] == ksa


def test_agent_may_only_read_and_patch_nodes(run):
    role = run.one("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole", "runtime-disk-node-patcher").inputs
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}]
    binding = run.one("kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding", "runtime-disk-node-patcher-binding").inputs
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": module.AGENT_KSA, "namespace": module.NAMESPACE}]


def test_agent_runs_on_gpu_nodes_before_anything_else(run):
    pod = agent_pod(run)
    assert pod["priorityClassName"] == "sd-gke-node-runtime"
    priority = run.one("kubernetes:scheduling.k8s.io/v1:PriorityClass", "runtime-disk-priority").inputs
    assert priority["value"] == module.PRIORITY and priority["globalDefault"] is False


def test_agent_is_privileged_for_the_mount_and_sees_host_devices(run):
    container = agent_container(run)
    assert container["securityContext"]["privileged"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/mnt/disks"]["mountPropagation"] == "Bidirectional"
    assert "mountPropagation" not in mounts["/dev"]
    volumes = {v["name"]: v["hostPath"] for v in agent_pod(run)["volumes"]}
    assert volumes == {"dev": {"path": "/dev", "type": "Directory"},
                       "disks": {"path": "/mnt/disks", "type": "DirectoryOrCreate"}}


def test_agent_is_ready_only_once_the_runtime_is_mounted(run):
    container = agent_container(run)
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["livenessProbe"]["tcpSocket"] == {"port": "health"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SDGKE_HEALTH_ADDRESS"].endswith(f":{module.HEALTH_PORT}")


def test_agent_learns_its_node_from_the_downward_api(run):
    env = {e["name"]: e for e in agent_container(run)["env"]}
    assert env["SDGKE_NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


def test_agent_requests_little(run):
    resources = agent_container(run)["resources"]
    assert resources["requests"] == {"cpu": "10m", "memory": "64Mi"}
    assert resources["limits"]["memory"] == "192Mi"


def test_agent_and_collector_run_the_agent_image_by_digest(run):
    agent_image = agent_container(run)["image"]
    assert "/sd-disk-attacher@sha256:" in agent_image
    assert gc_pod(run)["containers"][0]["image"] == agent_image
    built = run.one("docker-build:index:Image", "runtime-disk-image").inputs
    assert built["push"] is True and built["buildOnPreview"] is False


def test_collector_runs_off_gpu_nodes_without_kubernetes_credentials(run):
    pod = gc_pod(run)
    assert "tolerations" not in pod and "nodeSelector" not in pod
    assert pod["automountServiceAccountToken"] is False
    container = pod["containers"][0]
    assert container["args"] == ["gc", "--grace-seconds", str(module.GC_GRACE_SECONDS)]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_collector_covers_every_node_zone(run):
    from tests.test_cluster import stack_config

    env = {e["name"]: e["value"] for e in gc_pod(run)["containers"][0]["env"]}
    assert env["SDGKE_ZONES"].split(",") == list(stack_config(run).zones)


def test_collector_never_overlaps_itself(run):
    spec = run.one(CRONJOB, "runtime-disk-gc").inputs["spec"]
    assert spec["concurrencyPolicy"] == "Forbid" and spec["schedule"] == module.GC_SCHEDULE


def test_nothing_may_connect_to_the_agent_or_the_collector(run):
    policy = run.one("kubernetes:networking.k8s.io/v1:NetworkPolicy", "runtime-disk-network-policy").inputs
    assert policy["metadata"]["namespace"] == module.NAMESPACE
    assert policy["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}


def test_custom_roles_live_in_the_stacks_project_under_valid_distinct_ids(run):
    """A custom role ID is `[a-zA-Z0-9_.]{3,64}`, its title at most 100 characters, its description at most 300
    (https://cloud.google.com/iam/docs/reference/rest/v1/projects.roles#Role)."""
    import re

    from tests.test_cluster import stack_config

    roles = [run.one(ROLE, f"runtime-disk-{r}-role").inputs for r in ("agent", "gc")]
    assert [r["roleId"] for r in roles] == ["sdgkeDiskAttacher", "sdgkeDiskGc"]
    for role in roles:
        assert role["project"] == stack_config(run).project
        assert re.fullmatch(r"[a-zA-Z0-9_.]{3,64}", role["roleId"])
        assert 0 < len(role["title"]) <= 100 and 0 < len(role["description"]) <= 300


def test_google_accounts_are_named_for_their_kubernetes_accounts(run):
    for role_name, ksa in (("agent", module.AGENT_KSA), ("gc", module.GC_KSA)):
        account = run.one("gcp:serviceaccount/account:Account", f"runtime-disk-{role_name}").inputs
        assert (account["accountId"], account["displayName"]) == (f"sd-{ksa}", f"sd-gke {ksa}")


def test_only_the_agent_gets_a_kubernetes_token(run):
    tokens = {role_name: run.one("kubernetes:core/v1:ServiceAccount", f"runtime-disk-{role_name}-ksa")
              .inputs["automountServiceAccountToken"] for role_name in ("agent", "gc")}
    assert tokens == {"agent": True, "gc": False}


def test_the_node_patcher_binding_grants_the_cluster_role_the_stack_defines(run):
    role = run.one("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole", "runtime-disk-node-patcher").inputs
    binding = run.one("kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding", "runtime-disk-node-patcher-binding").inputs
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": role["metadata"]["name"]}


def test_the_agent_may_preempt_lower_priority_pods_but_is_no_ones_default(run):
    priority = run.one("kubernetes:scheduling.k8s.io/v1:PriorityClass", "runtime-disk-priority").inputs
    assert priority["preemptionPolicy"] == "PreemptLowerPriority"
    assert priority["value"] <= 1_000_000_000, "user-defined priority classes stop at one billion"
    assert priority["description"]


def test_the_agent_is_told_everything_it_needs_through_its_environment(run):
    from components.runtime_layout import HOST_MOUNT_PATH, STARTUP_TAINT_KEY
    from tests.test_cluster import stack_config

    cfg = stack_config(run).runtime
    image = run.one("pulumi-python:dynamic:Resource", "runtime-image").inputs
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in agent_container(run)["env"]}
    assert env == {
        "SDGKE_RUNTIME_IMAGE": f"projects/{image['project']}/global/images/{image['image_name']}",
        "SDGKE_RUNTIME_HASH": image["identity_hash"][:12],
        "SDGKE_DISK_TYPE": cfg.disk_type,
        "SDGKE_DISK_SIZE_GB": str(cfg.disk_size_gb),
        "SDGKE_MOUNT_PATH": HOST_MOUNT_PATH,
        "SDGKE_STARTUP_TAINT": STARTUP_TAINT_KEY,
        "SDGKE_HEALTH_ADDRESS": f"0.0.0.0:{module.HEALTH_PORT}",
        "SDGKE_NODE_NAME": {"fieldRef": {"fieldPath": "spec.nodeName"}},
    }


def test_the_agent_serves_its_health_on_the_port_its_probes_name(run):
    container = agent_container(run)
    assert container["ports"] == [{"name": "health", "containerPort": module.HEALTH_PORT}]
    assert isinstance(module.HEALTH_PORT, int) and 1024 <= module.HEALTH_PORT < 65536
    assert container["readinessProbe"] == {"httpGet": {"path": "/healthz", "port": "health"},
                                           "periodSeconds": 5, "failureThreshold": 2}
    assert container["livenessProbe"] == {"tcpSocket": {"port": "health"}, "periodSeconds": 30, "failureThreshold": 4}


def test_the_agent_runs_its_image_as_its_default_command(run):
    container = agent_container(run)
    assert (container["name"], container["imagePullPolicy"], container["args"]) == ("agent", "IfNotPresent", [])


def test_the_agent_is_capped_so_a_leak_cannot_starve_the_gpu_node(run):
    assert agent_container(run)["resources"]["limits"] == {"cpu": "500m", "memory": "192Mi"}


def test_the_agent_is_privileged_root_with_a_read_only_root_file_system_and_nothing_more(run):
    assert agent_container(run)["securityContext"] == {"privileged": True, "readOnlyRootFilesystem": True, "runAsUser": 0}
    assert agent_pod(run)["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}


def test_the_agent_mounts_host_devices_and_the_disks_directory_and_nothing_else(run):
    assert agent_container(run)["volumeMounts"] == [
        {"name": "dev", "mountPath": "/dev"},
        {"name": "disks", "mountPath": "/mnt/disks", "mountPropagation": "Bidirectional"},
    ]


def test_the_agent_runs_only_on_gpu_nodes_of_its_own_runtime(run):
    from components.runtime_layout import GPU_NODE_LABEL, RUNTIME_NODE_LABEL

    hash12 = run.one("pulumi-python:dynamic:Resource", "runtime-image").inputs["identity_hash"][:12]
    assert agent_pod(run)["affinity"] == {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": GPU_NODE_LABEL, "operator": "Exists"},
            {"key": RUNTIME_NODE_LABEL, "operator": "In", "values": [hash12]},
        ]}]}}}


def test_the_agent_daemonset_rolls_a_quarter_of_the_nodes_at_a_time_and_stops_quickly(run):
    daemonset = run.one(DAEMONSET, "runtime-disk-daemonset").inputs
    assert daemonset["metadata"]["name"] == "disk-attacher"
    assert daemonset["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%"}}
    assert daemonset["spec"]["selector"]["matchLabels"].items() <= daemonset["spec"]["template"]["metadata"]["labels"].items()
    assert agent_pod(run)["terminationGracePeriodSeconds"] == 10
    assert agent_pod(run)["serviceAccountName"] == module.AGENT_KSA


def test_each_workload_waits_for_the_google_account_it_acts_as(run):
    for workload, role_name in ((run.one(DAEMONSET, "runtime-disk-daemonset"), "agent"),
                                (run.one(CRONJOB, "runtime-disk-gc"), "gc")):
        account = run.one("gcp:serviceaccount/account:Account", f"runtime-disk-{role_name}")
        assert account.urn in workload.dependencies


def test_the_collector_runs_as_the_agent_images_unprivileged_user(run):
    """images/attacher/Dockerfile's USER: the pod's own uid and gid must be those the image's files are for."""
    from tests.test_contracts import dockerfile_user

    sc = gc_pod(run)["securityContext"]
    assert f"{sc['runAsUser']}:{sc['runAsGroup']}" == dockerfile_user("attacher")
    assert sc["runAsNonRoot"] is True and sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_the_collector_keeps_disks_younger_than_an_hour(run):
    """A disk is unattached between its create and its attach; an hour is far longer than that takes."""
    assert gc_pod(run)["containers"][0]["args"] == ["gc", "--grace-seconds", "3600"]


def test_a_collector_run_is_bounded_retried_once_and_cleaned_up(run):
    spec = run.one(CRONJOB, "runtime-disk-gc").inputs["spec"]
    assert spec["schedule"] == "*/15 * * * *"
    assert (spec["successfulJobsHistoryLimit"], spec["failedJobsHistoryLimit"]) == (1, 3)
    job = spec["jobTemplate"]["spec"]
    assert (job["backoffLimit"], job["activeDeadlineSeconds"], job["ttlSecondsAfterFinished"]) == (1, 600, 3600)
    assert spec["jobTemplate"]["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "disk-gc"
    pod = gc_pod(run)
    assert (pod["restartPolicy"], pod["serviceAccountName"]) == ("Never", module.GC_KSA)


def test_the_collector_container_drops_everything_and_asks_little(run):
    container = gc_pod(run)["containers"][0]
    assert (container["name"], container["imagePullPolicy"]) == ("gc", "IfNotPresent")
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    assert container["resources"] == {"requests": {"cpu": "10m", "memory": "64Mi"},
                                      "limits": {"cpu": "500m", "memory": "192Mi"}}

