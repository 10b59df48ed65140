"""The disk attacher component: identities, roles, RBAC, the DaemonSet and the collector CronJob."""

from __future__ import annotations

from components import disk_attacher as module

ROLE = "gcp:projects/iAMCustomRole:IAMCustomRole"
DAEMONSET = "kubernetes:apps/v1:DaemonSet"
CRONJOB = "kubernetes:batch/v1:CronJob"


def agent_pod(run) -> dict:
    return run.one(DAEMONSET, "runtime-disk-daemonset").inputs["spec"]["template"]["spec"]


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
    container = agent_pod(run)["containers"][0]
    assert container["securityContext"]["privileged"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/mnt/disks"]["mountPropagation"] == "Bidirectional"
    assert "mountPropagation" not in mounts["/dev"]
    volumes = {v["name"]: v["hostPath"] for v in agent_pod(run)["volumes"]}
    assert volumes == {"dev": {"path": "/dev", "type": "Directory"},
                       "disks": {"path": "/mnt/disks", "type": "DirectoryOrCreate"}}


def test_agent_is_ready_only_once_the_runtime_is_mounted(run):
    container = agent_pod(run)["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["livenessProbe"]["tcpSocket"] == {"port": "health"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SDGKE_HEALTH_ADDRESS"].endswith(f":{module.HEALTH_PORT}")


def test_agent_learns_its_node_from_the_downward_api(run):
    env = {e["name"]: e for e in agent_pod(run)["containers"][0]["env"]}
    assert env["SDGKE_NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


def test_agent_requests_little(run):
    resources = agent_pod(run)["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "10m", "memory": "64Mi"}
    assert resources["limits"]["memory"] == "192Mi"


def test_agent_and_collector_run_the_agent_image_by_digest(run):
    agent_image = agent_pod(run)["containers"][0]["image"]
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
