"""The whole inventory: every resource the program registers, and the rules every one of them follows.

A resource added or dropped must show up here, so nothing lands on GCP that no test describes.
"""

from __future__ import annotations

import pytest

from tests.variants import PART_IDS, PART_VARIANTS, parts_variant

PART_RESOURCES = {
    "gateway": {
        ("sdgke:gateway:Gateway", "webui"),
        ("gcp:compute/firewall:Firewall", "webui-load-balancer-to-backend"),
        ("gcp:compute/subnetwork:Subnetwork", "webui-proxy-only"),
        ("kubernetes:gateway.networking.k8s.io/v1:Gateway", "webui-gateway"),
        ("kubernetes:gateway.networking.k8s.io/v1:HTTPRoute", "webui-route"),
        ("kubernetes:networking.gke.io/v1:GCPBackendPolicy", "webui-backend-policy"),
        ("kubernetes:networking.gke.io/v1:HealthCheckPolicy", "webui-health-check"),
    },
    "observability": {
        ("sdgke:observability:Observability", "sd"),
        ("gcp:logging/metric:Metric", "sd-bake-failures"),
        ("gcp:logging/metric:Metric", "sd-step-duration"),
        ("gcp:logging/metric:Metric", "sd-step-failures"),
        ("gcp:logging/metric:Metric", "sd-webui-errors"),
        ("gcp:monitoring/alertPolicy:AlertPolicy", "sd-attacher-failures"),
        ("gcp:monitoring/alertPolicy:AlertPolicy", "sd-bake-failures"),
        ("gcp:monitoring/alertPolicy:AlertPolicy", "sd-cold-start-over-budget"),
        ("gcp:monitoring/alertPolicy:AlertPolicy", "sd-dead-letter-not-empty"),
        ("gcp:monitoring/alertPolicy:AlertPolicy", "sd-gpu-pool-at-max"),
        ("gcp:monitoring/dashboard:Dashboard", "sd-dashboard"),
        ("gcp:monitoring/notificationChannel:NotificationChannel", "sd-email"),
    },
    "jobs": {
        ("sdgke:jobs:Jobs", "jobs"),
        ("gcp:monitoring/alertPolicy:AlertPolicy", "sd-dead-letter-not-empty"),
        ("gcp:projects/iAMMember:IAMMember", "jobs-keda-monitoring-viewer"),
        ("gcp:projects/service:Service", "apis-pubsub"),
        ("gcp:projects/service:Service", "apis-storage"),
        ("gcp:pubsub/subscription:Subscription", "jobs-dead-letters"),
        ("gcp:pubsub/subscription:Subscription", "jobs-subscription"),
        ("gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember", "jobs-agent-subscription-subscriber"),
        ("gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember", "jobs-forwarder-subscriber"),
        ("gcp:pubsub/topic:Topic", "jobs-completions"),
        ("gcp:pubsub/topic:Topic", "jobs-dead-letter"),
        ("gcp:pubsub/topic:Topic", "jobs-topic"),
        ("gcp:pubsub/topicIAMMember:TopicIAMMember", "jobs-agent-completions-publisher"),
        ("gcp:pubsub/topicIAMMember:TopicIAMMember", "jobs-agent-dead-letter-publisher"),
        ("gcp:pubsub/topicIAMMember:TopicIAMMember", "jobs-forwarder-publisher"),
        ("gcp:serviceaccount/account:Account", "jobs-agent"),
        ("gcp:serviceaccount/account:Account", "jobs-keda-metrics"),
        ("gcp:serviceaccount/iAMMember:IAMMember", "jobs-agent-workload-identity"),
        ("gcp:serviceaccount/iAMMember:IAMMember", "jobs-keda-workload-identity"),
        ("gcp:storage/bucket:Bucket", "jobs-results"),
        ("gcp:storage/bucketIAMMember:BucketIAMMember", "jobs-agent-bucket-objectCreator"),
        ("gcp:storage/bucketIAMMember:BucketIAMMember", "jobs-agent-bucket-objectViewer"),
        ("kubernetes:core/v1:ServiceAccount", "webui-service-account"),
        ("kubernetes:keda.sh/v1alpha1:TriggerAuthentication", "autoscaling-backlog-authentication"),
    },
}
"""What each optional part adds (the dead-letter alert needs both observability and the job queue): with the part
off, none of it is registered, no API, grant or firewall rule included."""

CORE = {
    ("docker-build:index:Image", "base-image"),
    ("docker-build:index:Image", "runtime-disk-image"),
    ("gcp:artifactregistry/repository:Repository", "sd-repository"),
    ("gcp:compute/firewall:Firewall", "autoscaling-control-plane-to-keda"),
    ("gcp:compute/network:Network", "sd-network"),
    ("gcp:compute/router:Router", "sd-router"),
    ("gcp:compute/routerNat:RouterNat", "sd-nat"),
    ("gcp:compute/subnetwork:Subnetwork", "sd-subnet"),
    ("gcp:container/cluster:Cluster", "sd-gke"),
    ("gcp:container/nodePool:NodePool", "sd-gpu"),
    ("gcp:container/nodePool:NodePool", "sd-system"),
    ("gcp:projects/iAMCustomRole:IAMCustomRole", "runtime-disk-agent-role"),
    ("gcp:projects/iAMCustomRole:IAMCustomRole", "runtime-disk-gc-role"),
    ("gcp:projects/iAMMember:IAMMember", "runtime-builder-artifactregistry-reader"),
    ("gcp:projects/iAMMember:IAMMember", "runtime-builder-logging-logWriter"),
    ("gcp:projects/iAMMember:IAMMember", "runtime-disk-agent-role-binding"),
    ("gcp:projects/iAMMember:IAMMember", "runtime-disk-gc-role-binding"),
    ("gcp:projects/iAMMember:IAMMember", "sd-nodes-artifactregistry-reader"),
    ("gcp:projects/iAMMember:IAMMember", "sd-nodes-logging-logWriter"),
    ("gcp:projects/iAMMember:IAMMember", "sd-nodes-monitoring-metricWriter"),
    ("gcp:projects/iAMMember:IAMMember", "sd-nodes-monitoring-viewer"),
    ("gcp:projects/iAMMember:IAMMember", "sd-nodes-serviceusage-serviceUsageConsumer"),
    ("gcp:projects/iAMMember:IAMMember", "sd-nodes-stackdriver-resourceMetadata-writer"),
    ("gcp:projects/service:Service", "apis-artifactregistry"),
    ("gcp:projects/service:Service", "apis-compute"),
    ("gcp:projects/service:Service", "apis-container"),
    ("gcp:projects/service:Service", "apis-containerfilesystem"),
    ("gcp:projects/service:Service", "apis-iam"),
    ("gcp:projects/service:Service", "apis-logging"),
    ("gcp:projects/service:Service", "apis-monitoring"),
    ("gcp:serviceaccount/account:Account", "runtime-builder"),
    ("gcp:serviceaccount/account:Account", "runtime-disk-agent"),
    ("gcp:serviceaccount/account:Account", "runtime-disk-gc"),
    ("gcp:serviceaccount/account:Account", "sd-nodes"),
    ("gcp:serviceaccount/iAMMember:IAMMember", "runtime-disk-agent-workload-identity"),
    ("gcp:serviceaccount/iAMMember:IAMMember", "runtime-disk-gc-workload-identity"),
    ("kubernetes:apps/v1:DaemonSet", "runtime-disk-daemonset"),
    ("kubernetes:apps/v1:Deployment", "webui-deployment"),
    ("kubernetes:batch/v1:CronJob", "runtime-disk-gc"),
    ("kubernetes:core/v1:ConfigMap", "webui-probe"),
    ("kubernetes:core/v1:Namespace", "autoscaling-namespace"),
    ("kubernetes:core/v1:Namespace", "runtime-disk-namespace"),
    ("kubernetes:core/v1:Namespace", "webui-namespace"),
    ("kubernetes:core/v1:Secret", "webui-api-auth"),
    ("kubernetes:core/v1:ServiceAccount", "runtime-disk-agent-ksa"),
    ("kubernetes:core/v1:ServiceAccount", "runtime-disk-gc-ksa"),
    ("kubernetes:networking.k8s.io/v1:NetworkPolicy", "runtime-disk-network-policy"),
    ("kubernetes:networking.k8s.io/v1:NetworkPolicy", "webui-network-policy"),
    ("kubernetes:helm.sh/v3:Release", "autoscaling-keda"),
    ("kubernetes:keda.sh/v1alpha1:ScaledObject", "autoscaling-scaled-object"),
    ("kubernetes:policy/v1:PodDisruptionBudget", "webui-pdb"),
    ("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole", "runtime-disk-node-patcher"),
    ("kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding", "runtime-disk-node-patcher-binding"),
    ("kubernetes:scheduling.k8s.io/v1:PriorityClass", "runtime-disk-priority"),
    ("pulumi-python:dynamic:Resource", "runtime-image"),
    ("pulumi:providers:gcp", "google"),
    ("pulumi:providers:gcp", "google-apis"),
    ("pulumi:providers:kubernetes", "sd-k8s"),
    ("random:index/randomPassword:RandomPassword", "webui-api-password"),
    ("sdgke:apis:ProjectApis", "apis"),
    ("sdgke:autoscaling:Autoscaling", "autoscaling"),
    ("sdgke:base_image:BaseImage", "base"),
    ("sdgke:cluster:Cluster", "sd"),
    ("sdgke:disk_attacher:DiskAttacher", "runtime-disk"),
    ("sdgke:gpu_pool:GpuPool", "sd"),
    ("sdgke:registry:Registry", "sd"),
    ("sdgke:runtime_image:RuntimeDiskImage", "runtime"),
    ("sdgke:webui:Webui", "webui"),
    ("docker-build:index:Image", "webui-worker-image"),
    # the request queue in front of the WebUI (components/request_queue.py)
    ("sdgke:request_queue:RequestQueue", "request-queue"),
    ("docker-build:index:Image", "request-queue-image"),
    ("kubernetes:core/v1:Namespace", "request-queue-namespace"),
    ("kubernetes:core/v1:Secret", "request-queue-api-auth"),
    ("kubernetes:apps/v1:Deployment", "request-queue-deployment"),
    ("kubernetes:core/v1:Service", "request-queue-service"),
    ("kubernetes:core/v1:Service", "request-queue-workers-service"),
    ("kubernetes:networking.k8s.io/v1:NetworkPolicy", "request-queue-network-policy"),
}
"""What every stack registers, whatever its optional parts."""

EXPECTED = CORE.union(*PART_RESOURCES.values())
"""The full stack: every optional part on. Both stack files carry observability.notificationEmail (prod refuses to
run without it while observability is on), so both have its channel."""


def test_program_registers_exactly_the_expected_resources(run):
    assert sorted((r.type, r.name) for r in run.resources) == sorted(EXPECTED)


def test_resource_names_are_unique(run):
    urns = [r.urn for r in run.resources]
    assert len(urns) == len(set(urns))


def test_every_resource_is_a_child_of_the_component_its_name_starts_with(run):
    """Components sit at the stack's root; everything else is registered by a component, as its child
    (`ResourceOptions(parent=self)`), and named `f"{name}-<role>"` after it; only the Google providers, which
    the components share, sit at the root too."""
    by_urn = {r.urn: r for r in run.resources}
    at_root = "::pulumi:pulumi:Stack::sd-gke-" + run.stack
    misplaced = []
    for r in run.resources:
        parent = by_urn.get(r.parent)
        if parent is not None:
            ok = parent.type.startswith("sdgke:") and r.name.startswith(parent.name + "-")
        else:
            ok = r.parent.endswith(at_root) and r.type.startswith(("sdgke:", "pulumi:providers:gcp"))
        if not ok:
            misplaced.append(f"{r.type} {r.name} <- {r.parent}")
    assert misplaced == []


def test_every_kubernetes_object_names_itself(run):
    """An object without metadata.name gets a name Pulumi makes up, with a random suffix, new at each replacement
    (https://www.pulumi.com/docs/iac/concepts/resources/names/#autonaming): the names `kubectl`, the README, the
    policies and the other objects use must be the ones the program writes."""
    assert [o.name for o in run.kubernetes_objects() if not o.inputs["metadata"].get("name")] == []


CLUSTER_SCOPED = {"kubernetes:core/v1:Namespace", "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole",
                  "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding",
                  "kubernetes:scheduling.k8s.io/v1:PriorityClass", "kubernetes:cloud.google.com/v1:ComputeClass"}
"""The kinds the stack registers that belong to no namespace (`kubectl api-resources --namespaced=false`)."""


def test_every_namespaced_object_lives_in_a_namespace_the_stack_declares(run):
    """Without metadata.namespace, pulumi-kubernetes puts an object in its provider's default namespace, `default`:
    a PodDisruptionBudget or NetworkPolicy there selects no pod of the stack and protects nothing."""
    declared = {o.inputs["metadata"]["name"] for o in run.of_type("kubernetes:core/v1:Namespace")}
    misplaced = [f"{o.name}: {o.inputs['metadata'].get('namespace')}" for o in run.kubernetes_objects()
                 if o.type not in CLUSTER_SCOPED and o.inputs["metadata"].get("namespace") not in declared]
    assert misplaced == []
    assert [o.name for o in run.kubernetes_objects()
            if o.type in CLUSTER_SCOPED and "namespace" in o.inputs["metadata"]] == []


def test_every_kubernetes_object_goes_through_the_cluster_provider(run):
    objects = run.kubernetes_objects()
    assert objects
    assert all(o.provider and "pulumi:providers:kubernetes::sd-k8s" in o.provider for o in objects)


def test_every_kubernetes_object_carries_the_common_labels(run):
    from components.labels import k8s_labels
    from tests.test_cluster import stack_config

    environment = stack_config(run).environment
    for o in run.kubernetes_objects():
        labels = dict(o.inputs["metadata"].get("labels", {}))
        labels = {k: v for k, v in labels.items()
                  if not k.startswith("pod-security.kubernetes.io/")}
        assert labels == k8s_labels(labels.get("app.kubernetes.io/name", "?"), environment), o.name


@pytest.mark.parametrize("stack, protected", [("dev", set()), ("prod", {"sd-gke", "sd-repository", "jobs-subscription",
                                                                        "jobs-dead-letters", "jobs-results"})])
def test_stateful_resources_are_protected_in_prod_only(runs, stack, protected):
    assert {r.name for r in runs[stack].resources if r.protect} == protected


@pytest.mark.parametrize("stack, off", PART_VARIANTS, ids=PART_IDS)
def test_a_part_turned_off_registers_none_of_its_resources_and_everything_else(stack, off):
    expected = EXPECTED
    for part in off:
        expected = expected - PART_RESOURCES[part]
    assert sorted((r.type, r.name) for r in parts_variant(stack, off).resources) == sorted(expected)
