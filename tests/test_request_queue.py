"""The request queue as registered (components/request_queue.py), and the worker beside every WebUI that pulls
from it (components/worker.py): the names, ports and environment docs/request-queue.md fixes."""

from __future__ import annotations

import pytest

from components import request_queue
from tests.test_cluster import stack_config
from tests.test_policy import _drop, mutate, violations_of

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"
SECRET = "kubernetes:core/v1:Secret"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
IMAGE = "docker-build:index:Image"
ENV = ("QUEUE_MAX_DEPTH", "QUEUE_MAX_WAIT_SECONDS", "GENERATION_TIMEOUT_SECONDS", "MARGIN_SECONDS",
       "UI_KEEPALIVE_SECONDS", "WORKER_TTL_SECONDS", "DRAIN_SECONDS", "HTTP_PORT", "WORKER_PORT", "FORWARDED_FOR_ENTRIES",
       "SD_API_AUTH")


def deployment(run) -> dict:
    return run.one(DEPLOYMENT, "request-queue-deployment").inputs


def container(run) -> dict:
    [only] = deployment(run)["spec"]["template"]["spec"]["containers"]
    return only


def env(run) -> dict[str, dict]:
    return {e["name"]: e for e in container(run)["env"]}


def worker(run) -> dict:
    pod = run.one(DEPLOYMENT, "webui-deployment").inputs["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "queue-agent")


# --- the request queue ----------------------------------------------------------------------

def test_it_lives_in_its_own_namespace_that_enforces_restricted_pod_security(run):
    ns = run.one("kubernetes:core/v1:Namespace", "request-queue-namespace").inputs["metadata"]
    assert ns["name"] == "request-queue" and ns["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert deployment(run)["metadata"]["namespace"] == "request-queue"
    assert violations_of(run, "k8s-pod-security-admission") == []


def test_its_image_is_built_from_images_request_queue_and_run_by_digest(run):
    built = run.one(IMAGE, "request-queue-image").inputs
    assert built["context"] == {"location": str(request_queue.CONTEXT)}
    assert built["tags"][0].split(":")[0].endswith("/sd-images/sd-request-queue")
    assert built["push"] is True and built["buildOnPreview"] is False
    assert "@sha256:" in container(run)["image"] and container(run)["image"].startswith(built["tags"][0].split(":")[0])


def test_one_replica_on_the_system_pool_rolled_without_a_gap(run):
    spec = deployment(run)["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert spec["template"]["spec"]["nodeSelector"] == {"sd-gke/pool": "system"}


def test_its_container_is_restricted_with_a_read_only_root(run):
    security = container(run)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]} and security["runAsNonRoot"] is True
    assert deployment(run)["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_it_is_probed_on_healthz_and_has_resources(run):
    c = container(run)
    assert {c[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")} == {"/healthz"}
    assert c["readinessProbe"]["httpGet"]["port"] == "http", "503 while draining takes it out of the load balancer"
    assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_its_settings_come_from_the_stack_and_the_timeout_chain(runs, stack):
    run = runs[stack]
    cfg = stack_config(run)
    values = {k: e.get("value") for k, e in env(run).items()}
    assert sorted(values) == sorted(ENV)
    assert values["QUEUE_MAX_DEPTH"] == str(cfg.queue.max_depth)
    assert values["QUEUE_MAX_WAIT_SECONDS"] == str(cfg.queue.max_wait_seconds)
    assert values["GENERATION_TIMEOUT_SECONDS"] == str(cfg.webui.generation_timeout_seconds)
    assert (values["HTTP_PORT"], values["WORKER_PORT"]) == ("8080", "8081")


def test_clients_are_checked_against_its_own_copy_of_the_api_credentials(run):
    """A Secret is namespaced: the request queue cannot read the WebUI's."""
    ref = env(run)["SD_API_AUTH"]["valueFrom"]["secretKeyRef"]
    copy = run.one(SECRET, "request-queue-api-auth").inputs
    assert (ref["name"], ref["key"]) == (copy["metadata"]["name"], "SD_API_AUTH")
    assert copy["metadata"]["namespace"] == "request-queue"
    assert copy["stringData"] == run.one(SECRET, "webui-api-auth").inputs["stringData"]


def test_without_api_auth_it_checks_no_credentials(run_stack):
    run = run_stack("dev", webui={"apiAuth": False, "public": False})
    assert "SD_API_AUTH" not in env(run) and not run.of_type(SECRET)


def test_its_service_serves_clients_on_8080_and_workers_on_8081(run):
    service = run.one(SERVICE, "request-queue-service").inputs
    assert service["metadata"]["name"] == "request-queue" and service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http"},
                                        {"name": "workers", "port": 8081, "targetPort": "workers"}]
    assert service["spec"]["selector"].items() <= deployment(run)["spec"]["template"]["metadata"]["labels"].items()


def test_workers_find_every_pod_ready_or_draining_through_a_headless_service(run):
    """During a rollout both pods hold a buffer; the draining one's readiness answers 503 (docs/request-queue.md,
    "Rollout"). The worker's QUEUE_FRONT_URL names this Service."""
    service = run.one(SERVICE, "request-queue-workers-service").inputs
    assert service["metadata"] == {**service["metadata"], "name": "request-queue-workers", "namespace": "request-queue"}
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["ports"] == [{"name": "workers", "port": 8081, "targetPort": "workers"}]
    assert service["spec"]["selector"] == run.one(SERVICE, "request-queue-service").inputs["spec"]["selector"]
    assert request_queue.FRONTS_URL.startswith("http://request-queue-workers.request-queue.svc.cluster.local.:")


def _peers(rule: dict) -> list[dict]:
    return rule.get("from") or rule.get("to") or []


def test_clients_reach_it_only_from_the_load_balancer_and_workers_only_from_webui_and_keda(run):
    spec = run.one(NETWORK_POLICY, "request-queue-network-policy").inputs["spec"]
    clients, workers = spec["ingress"]
    proxy_only = stack_config(run).gateway.proxy_only_cidr
    assert [p["ipBlock"]["cidr"] for p in _peers(clients)] == ["35.191.0.0/16", "130.211.0.0/22", proxy_only]
    assert clients["ports"] == [{"port": 8080, "protocol": "TCP"}]
    assert [p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in _peers(workers)] == [
        "sd-webui", "keda"]
    assert workers["ports"] == [{"port": 8081, "protocol": "TCP"}]


def test_it_reaches_only_the_webui_pods_port_and_dns(run):
    spec = run.one(NETWORK_POLICY, "request-queue-network-policy").inputs["spec"]
    webui, dns = spec["egress"]
    [pods] = _peers(webui)
    selector = run.one(DEPLOYMENT, "webui-deployment").inputs["spec"]["selector"]["matchLabels"]
    assert pods["podSelector"]["matchLabels"] == selector
    assert pods["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "sd-webui"}
    assert webui["ports"] == [{"port": 7860, "protocol": "TCP"}]
    assert {p["port"] for p in dns["ports"]} == {53} and "to" not in dns


# --- issue 18 item 5: its node is not drained under it ----------------------------------------

def test_its_pods_keep_their_node_from_a_scale_down_that_would_cut_held_requests(run):
    """The drain (the client budget) outlasts the cluster autoscaler's 600 s wait for an emptied node."""
    template = deployment(run)["spec"]["template"]
    assert template["metadata"]["annotations"] == {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}
    assert template["spec"]["terminationGracePeriodSeconds"] > 600
    assert violations_of(run, "k8s-long-drain-keeps-its-node") == []


def test_a_long_draining_pod_without_the_annotation_is_refused(runs):
    run = runs["dev"]
    evictable = mutate(run, DEPLOYMENT, "request-queue-deployment", _drop("spec.template.metadata.annotations"))
    assert violations_of(run, "k8s-long-drain-keeps-its-node", evictable) == [
        "Deployment request-queue/request-queue may take 810s to drain, longer than the cluster autoscaler waits "
        "when it empties a node (600s, max-graceful-termination-sec): annotate its pods "
        'cluster-autoscaler.kubernetes.io/safe-to-evict: "false".']



def test_a_pod_that_drains_within_the_autoscalers_wait_needs_no_annotation(runs):
    """The autoscaler waits max-graceful-termination-sec (600 s) for an emptied node's pods: exactly 600 fits."""
    run = runs["dev"]

    def within_the_wait(inputs: dict) -> None:
        _drop("spec.template.metadata.annotations")(inputs)
        inputs["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 600

    fits = mutate(run, DEPLOYMENT, "request-queue-deployment", within_the_wait)
    assert violations_of(run, "k8s-long-drain-keeps-its-node", fits) == []

# --- the worker beside every WebUI ----------------------------------------------------------

@pytest.mark.parametrize("jobs", [True, False])
def test_every_webui_pod_carries_the_worker_pointed_at_the_request_queue(run_stack, jobs):
    run = run_stack("dev", jobs={"enabled": jobs})
    values = {e["name"]: e for e in worker(run)["env"]}
    assert values["QUEUE_FRONT_URL"]["value"] == "http://request-queue-workers.request-queue.svc.cluster.local.:8081"
    assert values["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert values["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert ("JOBS_SUBSCRIPTION" in values) is jobs


def test_the_worker_is_ready_only_while_registered_and_alive_while_its_loop_beats(run):
    container = worker(run)
    alive = ["python", "-m", "queue_agent.alive"]
    assert container["readinessProbe"]["exec"]["command"] == [*alive, "--ready"]
    assert container["livenessProbe"]["exec"]["command"] == alive
    assert container["startupProbe"]["exec"]["command"] == alive


def test_the_worker_image_is_built_from_the_queue_agent(run):
    built = run.one(IMAGE, "webui-worker-image").inputs
    assert built["tags"][0].split(":")[0].endswith("/sd-images/sd-queue-agent")
    assert worker(run)["image"].startswith(built["tags"][0].split(":")[0] + "@sha256:")
