"""The jobs component as the program registers it: queue, bucket, identities, the WebUI's sidecar."""

from __future__ import annotations

import sys

import pytest

from components import jobs as jobs_module
from components import worker
from tests.test_cluster import stack_config

sys.path.insert(0, str(worker.CONTEXT))
from queue_agent import __main__ as agent_cli  # noqa: E402

SUBSCRIPTION = "gcp:pubsub/subscription:Subscription"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
AGENT_MEMBER = "serviceAccount:sd-queue-agent@"


def sidecar(run) -> dict:
    pod = run.one(DEPLOYMENT, "webui-deployment").inputs["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "queue-agent")


def test_the_jobs_subscription_retries_with_backoff_then_dead_letters(run):
    cfg = stack_config(run).jobs
    sub = run.one(SUBSCRIPTION, "jobs-subscription").inputs
    assert sub["ackDeadlineSeconds"] == cfg.ack_deadline_seconds
    assert sub["deadLetterPolicy"]["maxDeliveryAttempts"] == cfg.max_delivery_attempts
    assert sub["topic"] == "jobs-topic-id"  # mocked ids: the resource's name + "-id"
    assert sub["deadLetterPolicy"]["deadLetterTopic"] == "jobs-dead-letter-id"
    assert sub["retryPolicy"] == {"minimumBackoff": f"{cfg.min_retry_backoff_seconds}s",
                                  "maximumBackoff": f"{cfg.max_retry_backoff_seconds}s"}
    assert sub["expirationPolicy"] == {"ttl": ""}


def test_dead_letters_are_kept_by_a_subscription_of_their_own(run):
    kept = run.one(SUBSCRIPTION, "jobs-dead-letters").inputs
    assert "deadLetterPolicy" not in kept and kept["messageRetentionDuration"] == jobs_module.MESSAGE_RETENTION


def test_the_results_bucket_is_private_and_expires_results_after_the_configured_days(run):
    bucket = run.one("gcp:storage/bucket:Bucket", "jobs-results").inputs
    assert bucket["uniformBucketLevelAccess"] is True and bucket["publicAccessPrevention"] == "enforced"
    assert bucket["lifecycleRules"] == [{"action": {"type": "Delete"},
                                         "condition": {"age": stack_config(run).jobs.result_retention_days}}]


def test_the_agent_holds_only_its_roles_each_on_one_resource(run):
    grants = sorted((r.type.rsplit(":", 1)[-1], r.inputs["role"]) for r in run.resources
                    if str(r.inputs.get("member", "")).startswith(AGENT_MEMBER))
    assert grants == [("BucketIAMMember", "roles/storage.objectCreator"), ("BucketIAMMember", "roles/storage.objectViewer"),
                      ("SubscriptionIAMMember", "roles/pubsub.subscriber"),
                      ("TopicIAMMember", "roles/pubsub.publisher"), ("TopicIAMMember", "roles/pubsub.publisher")]


def test_only_the_webui_pods_service_account_may_act_as_the_agent(run):
    binding = run.one("gcp:serviceaccount/iAMMember:IAMMember", "jobs-agent-workload-identity").inputs
    assert binding["role"] == "roles/iam.workloadIdentityUser"
    assert binding["member"] == f"serviceAccount:{stack_config(run).project}.svc.id.goog[sd-webui/webui]"
    ksa = run.one("kubernetes:core/v1:ServiceAccount", "webui-service-account").inputs["metadata"]
    assert ksa["name"] == "webui" and ksa["annotations"]["iam.gke.io/gcp-service-account"].startswith("sd-queue-agent@")


def test_pubsub_itself_may_forward_dead_letters(run):
    forwarders = {r.name: r.inputs for r in run.resources if r.name.startswith("jobs-forwarder-")}
    assert {f["role"] for f in forwarders.values()} == {"roles/pubsub.publisher", "roles/pubsub.subscriber"}
    assert all(f["member"] == "serviceAccount:service-123456789012@gcp-sa-pubsub.iam.gserviceaccount.com"
               for f in forwarders.values())


def test_the_sidecar_gets_what_the_agent_reads(run):
    env = {e["name"]: e for e in sidecar(run)["env"]}
    settings = agent_cli.settings_from({k: e.get("value", "from-secret") for k, e in env.items()})
    assert settings.max_attempts == stack_config(run).jobs.max_delivery_attempts
    assert settings.ack_deadline_seconds == stack_config(run).jobs.ack_deadline_seconds
    assert settings.webui_url == "http://127.0.0.1:7860" and "secretKeyRef" in env["SD_API_AUTH"]["valueFrom"]


def test_the_agent_refuses_to_start_without_its_queue():
    with pytest.raises(SystemExit, match="missing environment JOBS_SUBSCRIPTION, JOBS_COMPLETIONS_TOPIC"):
        agent_cli.settings_from({"JOBS_DEAD_LETTER_TOPIC": "t", "JOBS_BUCKET": "b", "JOBS_MAX_ATTEMPTS": "5"})


def test_the_sidecar_is_probed_and_restricted(run):
    container = sidecar(run)
    assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(container)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["image"].startswith("us-central1-docker.pkg.dev/") and "@sha256:" in container["image"]


def test_without_jobs_the_worker_has_no_batch_part_no_identity_and_no_queue(run_stack):
    run = run_stack("dev", jobs={"enabled": False})
    pod = run.one(DEPLOYMENT, "webui-deployment").inputs["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["webui", "queue-agent"] and "serviceAccountName" not in pod
    assert not [e["name"] for e in sidecar(run)["env"] if e["name"].startswith("JOBS_") and "HEARTBEAT" not in e["name"]]
    assert not [r for r in run.resources if r.type.startswith("gcp:pubsub") or r.name.startswith("jobs")]


def test_keda_reads_the_backlog_as_its_operator_with_monitoring_viewer_only(run):
    role = run.one("gcp:projects/iAMMember:IAMMember", "jobs-keda-monitoring-viewer").inputs
    assert role["role"] == "roles/monitoring.viewer" and role["member"].startswith("serviceAccount:sd-keda-metrics@")
    binding = run.one("gcp:serviceaccount/iAMMember:IAMMember", "jobs-keda-workload-identity").inputs
    assert binding["member"] == f"serviceAccount:{stack_config(run).project}.svc.id.goog[keda/keda-operator]"
    assert run.outputs["keda_service_account"].startswith("sd-keda-metrics@")


PROMETHEUS_SCALER_METADATA = {
    "required": {"serverAddress", "query", "threshold"},
    "optional": {"activationThreshold", "namespace", "customHeaders", "ignoreNullValues", "queryParameters",
                 "unsafeSsl", "timeout", "authModes", "awsRegion", "identityOwner"},
}
"""The prometheus trigger's metadata keys, written from https://keda.sh/docs/2.20/scalers/prometheus/ (parameter
list, authentication parameters) and the prometheusMetadata fields of kedacore/keda@v2.20.2
pkg/scalers/prometheus_scaler.go."""


def test_the_queue_trigger_scales_on_undelivered_jobs_from_zero():
    trigger = jobs_module.queue_trigger("proj", "sd-jobs", 5)
    assert trigger["type"] == "prometheus" and trigger["authenticationRef"] == {"name": jobs_module.KEDA_AUTHENTICATION}
    assert trigger["metadata"] == {
        "serverAddress": "https://monitoring.googleapis.com/v1/projects/proj/location/global/prometheus",
        "query": jobs_module.backlog_query("proj", "sd-jobs"),
        "threshold": "5", "activationThreshold": "0", "ignoreNullValues": "true"}


def test_an_idle_or_new_subscription_reads_as_an_empty_queue_not_an_error():
    """No series is an error unless ignoreNullValues is true (kedacore/keda@v2.20.2 prometheus_scaler.go ExecutePromQuery)."""
    assert jobs_module.queue_trigger("proj", "sd-jobs", 5)["metadata"]["ignoreNullValues"] == "true"


def test_the_backlog_query_is_the_subscriptions_undelivered_messages_in_its_own_project():
    assert jobs_module.backlog_query("proj", "sd-jobs") == (
        'sum(last_over_time({"__name__"="pubsub.googleapis.com/subscription/num_undelivered_messages",'
        '"monitored_resource"="pubsub_subscription","project_id"="proj","subscription_id"="sd-jobs"}[300s]))')


def test_the_backlog_query_looks_back_past_the_metrics_sampling_and_visibility_delay():
    """Sampled every 60 s, visible up to 240 s later (https://cloud.google.com/monitoring/api/metrics_gcp_p_z#gcp-pubsub):
    a shorter window would read a waiting backlog as no data, and no data as an empty queue."""
    assert jobs_module.BACKLOG_WINDOW_SECONDS >= 60 + 240


def test_the_queue_trigger_uses_only_keys_the_prometheus_scaler_reads(run):
    keys = set(run.one("kubernetes:keda.sh/v1alpha1:ScaledObject", "autoscaling-scaled-object")
               .inputs["spec"]["triggers"][-1]["metadata"])
    assert PROMETHEUS_SCALER_METADATA["required"] <= keys
    assert keys <= PROMETHEUS_SCALER_METADATA["required"] | PROMETHEUS_SCALER_METADATA["optional"]


def test_the_stack_trigger_queries_the_stacks_project_and_its_jobs_subscription(run):
    trigger = run.one("kubernetes:keda.sh/v1alpha1:ScaledObject", "autoscaling-scaled-object").inputs["spec"]["triggers"][-1]
    subscription = run.one(SUBSCRIPTION, "jobs-subscription").inputs["name"]
    assert trigger["metadata"]["query"] == jobs_module.backlog_query(stack_config(run).project, subscription)
