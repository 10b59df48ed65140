"""Asynchronous jobs: a Pub/Sub queue in front of the GPUs, results in a bucket, nothing lost.

Batch users publish txt2img jobs (tools/jobs.py); the queue agent (images/queue-agent, components/worker.py),
the worker beside every WebUI, works them one at a time when the request queue has no interactive work
for it, and commits each result once to the bucket, then announces
it on the completions topic. A job that fails maxDeliveryAttempts times ends on the dead-letter topic
with its reason, where a subscription keeps it for inspection (a topic without a subscription keeps
nothing: https://cloud.google.com/pubsub/docs/subscription-overview).

The pod count follows the backlog through KEDA (`backlog_scaling`), next to the request queue's trigger of the same
Deployment's ScaledObject: an HPA may not target a Deployment KEDA already scales, and one ScaledObject
may carry several triggers (https://keda.sh/docs/2.16/concepts/scaling-deployments/).

The backlog trigger (issue 18, item 3), read in kedacore/keda@v2.20.2 (68a5b50):
- `gcp-pubsub`, used until now, can hold a GPU node forever. It asks Cloud Monitoring with MQL
  (pkg/scalers/gcp_pubsub_scaler.go getMetrics -> BuildMQLQuery, QueryMetrics in
  pkg/scalers/gcp/gcp_stackdriver_client.go) and returns an error when no time series comes back, as for
  an idle or new subscription, unless `valueIfNull` is set (QueryMetrics, the iterator.Done branch;
  kedacore/keda#5896, which #5897 answered with `valueIfNull`). With no trigger active and no fallback,
  the executor then takes its TriggerError branch instead of scaling to zero
  (pkg/scaling/executor/scale_scaledobjects.go RequestScale, `case isError && Fallback == nil`), and the
  HPA skips every scale-down while one of its metrics fails (kubernetes/kubernetes#99514).
- MQL is deprecated by Cloud Monitoring, and KEDA deprecated all three of its Cloud Monitoring scalers
  for it, `gcp-stackdriver` included (their `deprecatedAnnounce` tags at v2.20.2;
  https://keda.sh/blog/2025-09-15-gcp-deprecations). `gcp-stackdriver` does not in fact use MQL (its
  GetMetrics calls ListTimeSeries with a filter), but being deprecated too it is no replacement.
- The replacement is what that announcement recommends: KEDA's maintained `prometheus` scaler on Cloud
  Monitoring's Prometheus HTTP API, which reads the same metric by its PromQL name
  (https://cloud.google.com/monitoring/promql/promql-mapping) as KEDA's operator through Workload Identity
  with roles/monitoring.viewer, the grants this module already makes
  (https://keda.sh/docs/2.20/scalers/prometheus/, "Google Managed Service for Prometheus"; the scaler
  takes the TriggerAuthentication's `podIdentity: gcp` in NewPrometheusScaler through
  gcp.GetGCPOAuth2HTTPTransport, pkg/scalers/gcp/gcp_common.go).
  `ignoreNullValues: "true"` is that scaler's `valueIfNull`: an empty result is 0, not an error
  (pkg/scalers/prometheus_scaler.go ExecutePromQuery); the policy pack refuses a Cloud Monitoring
  trigger without it (keda-no-data-is-zero).

The metric itself is late: Cloud Monitoring samples subscription/num_undelivered_messages every 60 s
and shows it up to 120-240 s later (https://cloud.google.com/monitoring/api/metrics_gcp_p_z#gcp-pubsub),
so a batch waits 1-3 minutes before the first pod is asked for: nothing for a user who comes back later,
and GKE's HPA with an external metric (1.37+, to and from zero) reads the very same metric through the
same delay. The query takes the newest sample within `BACKLOG_WINDOW_SECONDS`, so that delay never reads
as "no backlog". The price of `ignoreNullValues`: a query that matches nothing reads as an empty queue
too, so tests/test_jobs.py pins the query to this module's subscription and project.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from components.autoscaling import KEDA_OPERATOR_SERVICE_ACCOUNT, BacklogScaling
from components.autoscaling import NAMESPACE as KEDA_NAMESPACE
from components.config import JobsConfig
from components.worker import BatchWork

MESSAGE_RETENTION = "604800s"
"""Seven days, Pub/Sub's maximum for a subscription: a batch outlives any outage of the GPU pool."""
AGENT_ROLES = {
    "subscription": ("roles/pubsub.subscriber",),  # pull, acknowledge, modifyAckDeadline
    "completions": ("roles/pubsub.publisher",),
    "dead_letter": ("roles/pubsub.publisher",),  # the agent dead-letters a job with its reason
    "bucket": ("roles/storage.objectCreator", "roles/storage.objectViewer"),  # create + get/list; no delete
}
"""The agent's grants, each on one resource, none on the project
(https://cloud.google.com/pubsub/docs/access-control#roles, https://cloud.google.com/storage/docs/access-control/iam-roles)."""
KEDA_AUTHENTICATION = "sd-jobs-monitoring"
KEDA_AUTHENTICATION_SPEC = {"podIdentity": {"provider": "gcp"}}


SUBSCRIPTION = "sd-jobs"
DEAD_LETTER_SUBSCRIPTION = "sd-jobs-dead-letter"
"""The subscriptions' names: what the agent pulls from, and where jobs that failed every attempt wait."""

BACKLOG_METRIC = "pubsub.googleapis.com/subscription/num_undelivered_messages"
BACKLOG_WINDOW_SECONDS = 300
"""60 s between samples plus up to 240 s before a sample is visible: the newest one is always inside."""


def promql_endpoint(project: str) -> str:
    """Cloud Monitoring's Prometheus HTTP API for a project (KEDA appends /api/v1/query;
    https://cloud.google.com/monitoring/api/ref_v3/rest/v1/projects.location.prometheus.api.v1/query)."""
    return f"https://monitoring.googleapis.com/v1/projects/{project}/location/global/prometheus"


def backlog_query(project: str, subscription: str) -> str:
    """The subscription's undelivered messages as one number: the scaler refuses a result of several
    series (prometheus_scaler.go ExecutePromQuery), and a metrics scope may hold other projects' ones.
    last_over_time is PromQL of Prometheus 2.26, within what Cloud Monitoring evaluates (parity with 2.44,
    https://cloud.google.com/stackdriver/docs/managed-prometheus/promql-differences)."""
    selector = ",".join(f'"{k}"="{v}"' for k, v in (
        ("__name__", BACKLOG_METRIC), ("monitored_resource", "pubsub_subscription"),
        ("project_id", project), ("subscription_id", subscription)))
    return f"sum(last_over_time({{{selector}}}[{BACKLOG_WINDOW_SECONDS}s]))"


def queue_trigger(project: str, subscription: str, jobs_per_pod: int) -> dict:
    """KEDA's prometheus trigger on the backlog: one pod per `jobs_per_pod` undelivered jobs, the first one as
    soon as one job waits (activationThreshold 0: active above 0), and no data read as an empty queue."""
    return {
        "type": "prometheus",
        "authenticationRef": {"name": KEDA_AUTHENTICATION},
        "metadata": {"serverAddress": promql_endpoint(project), "query": backlog_query(project, subscription),
                     "threshold": str(jobs_per_pod), "activationThreshold": "0", "ignoreNullValues": "true"},
    }


@dataclass
class JobsArgs:
    config: JobsConfig
    project: str
    region: str
    protect: bool
    webui_namespace: str
    webui_service_account: str
    generation_timeout_seconds: int


class Jobs(pulumi.ComponentResource):
    """Topics, the jobs subscription, the results bucket and the batch worker's identity and settings."""

    def __init__(self, name: str, args: JobsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sdgke:jobs:Jobs", name, None, opts)
        cfg = args.config
        child = pulumi.ResourceOptions(parent=self)
        stateful = pulumi.ResourceOptions(parent=self, protect=args.protect)

        self.topic = gcp.pubsub.Topic(f"{name}-topic", name="sd-jobs", message_retention_duration=MESSAGE_RETENTION,
                                      opts=child)
        self.completions = gcp.pubsub.Topic(f"{name}-completions", name="sd-jobs-completions", opts=child)
        self.dead_letter = gcp.pubsub.Topic(f"{name}-dead-letter", name="sd-jobs-dead-letter", opts=child)
        self.subscription = gcp.pubsub.Subscription(
            f"{name}-subscription",
            name=SUBSCRIPTION,
            topic=self.topic.id,
            ack_deadline_seconds=cfg.ack_deadline_seconds,
            message_retention_duration=MESSAGE_RETENTION,
            expiration_policy=gcp.pubsub.SubscriptionExpirationPolicyArgs(ttl=""),  # never expires while idle
            retry_policy=gcp.pubsub.SubscriptionRetryPolicyArgs(
                minimum_backoff=f"{cfg.min_retry_backoff_seconds}s",
                maximum_backoff=f"{cfg.max_retry_backoff_seconds}s",
            ),
            dead_letter_policy=gcp.pubsub.SubscriptionDeadLetterPolicyArgs(
                dead_letter_topic=self.dead_letter.id, max_delivery_attempts=cfg.max_delivery_attempts,
            ),
            opts=stateful,
        )
        self.dead_letters = gcp.pubsub.Subscription(
            f"{name}-dead-letters", name=DEAD_LETTER_SUBSCRIPTION, topic=self.dead_letter.id,
            message_retention_duration=MESSAGE_RETENTION,
            expiration_policy=gcp.pubsub.SubscriptionExpirationPolicyArgs(ttl=""), opts=stateful,
        )
        self.bucket = gcp.storage.Bucket(
            f"{name}-results",
            name=f"{args.project}-sd-results",
            location=args.region.upper(),
            uniform_bucket_level_access=True,
            public_access_prevention="enforced",
            force_destroy=not args.protect,
            lifecycle_rules=[gcp.storage.BucketLifecycleRuleArgs(
                action=gcp.storage.BucketLifecycleRuleActionArgs(type="Delete"),
                condition=gcp.storage.BucketLifecycleRuleConditionArgs(age=cfg.result_retention_days),
            )],
            opts=stateful,
        )

        account = gcp.serviceaccount.Account(f"{name}-agent", account_id="sd-queue-agent",
                                             display_name="sd-gke queue agent", opts=child)
        agent = account.email.apply(lambda email: f"serviceAccount:{email}")
        self._grant(name, agent)
        gcp.serviceaccount.IAMMember(
            f"{name}-agent-workload-identity",
            service_account_id=account.name,
            role="roles/iam.workloadIdentityUser",
            member=f"serviceAccount:{args.project}.svc.id.goog[{args.webui_namespace}/{args.webui_service_account}]",
            opts=child,
        )
        # Pub/Sub's own service agent forwards dead letters: it must publish to the dead-letter topic and
        # subscribe to the source subscription (https://cloud.google.com/pubsub/docs/handling-failures#grant_forwarding_permissions).
        number = gcp.organizations.get_project_output(project_id=args.project,
                                                      opts=pulumi.InvokeOutputOptions(parent=self)).number
        service_agent = number.apply(lambda n: f"serviceAccount:service-{n}@gcp-sa-pubsub.iam.gserviceaccount.com")
        gcp.pubsub.TopicIAMMember(f"{name}-forwarder-publisher", topic=self.dead_letter.name,
                                  role="roles/pubsub.publisher", member=service_agent, opts=child)
        gcp.pubsub.SubscriptionIAMMember(f"{name}-forwarder-subscriber", subscription=self.subscription.name,
                                         role="roles/pubsub.subscriber", member=service_agent, opts=child)

        self.batch = BatchWork(
            google_service_account=account.email,
            env={
                "JOBS_SUBSCRIPTION": self.subscription.id,
                "JOBS_COMPLETIONS_TOPIC": self.completions.id,
                "JOBS_DEAD_LETTER_TOPIC": self.dead_letter.id,
                "JOBS_BUCKET": self.bucket.name,
                "JOBS_MAX_ATTEMPTS": str(cfg.max_delivery_attempts),
                "JOBS_ACK_DEADLINE_SECONDS": str(cfg.ack_deadline_seconds),
                "JOBS_GENERATION_TIMEOUT_SECONDS": str(args.generation_timeout_seconds),
                "JOBS_DRAIN_SECONDS": str(args.generation_timeout_seconds),
            },
        )
        # KEDA reads the backlog as its operator's own identity (podIdentity gcp: Workload Identity of the
        # keda/keda-operator service account, https://keda.sh/docs/2.16/authentication-providers/gcp-workload-identity/),
        # which needs monitoring.timeSeries.list: roles/monitoring.viewer, the narrowest predefined role with it.
        metrics_reader = gcp.serviceaccount.Account(f"{name}-keda-metrics", account_id="sd-keda-metrics",
                                                    display_name="sd-gke KEDA metrics reader", opts=child)
        gcp.projects.IAMMember(f"{name}-keda-monitoring-viewer", project=args.project, role="roles/monitoring.viewer",
                               member=metrics_reader.email.apply(lambda e: f"serviceAccount:{e}"), opts=child)
        gcp.serviceaccount.IAMMember(
            f"{name}-keda-workload-identity", service_account_id=metrics_reader.name,
            role="roles/iam.workloadIdentityUser",
            member=f"serviceAccount:{args.project}.svc.id.goog[{KEDA_NAMESPACE}/{KEDA_OPERATOR_SERVICE_ACCOUNT}]", opts=child,
        )
        self.keda_service_account = metrics_reader.email
        """For KEDA's install: the keda-operator service account's iam.gke.io/gcp-service-account annotation."""
        self.backlog_scaling = BacklogScaling(
            trigger=queue_trigger(args.project, SUBSCRIPTION, cfg.jobs_per_pod),
            authentication=KEDA_AUTHENTICATION,
            authentication_spec=KEDA_AUTHENTICATION_SPEC, operator_google_service_account=metrics_reader.email,
        )
        """For the WebUI's ScaledObject (components/autoscaling.py): the backlog trigger beside the HTTP ones,
        its TriggerAuthentication in the WebUI's namespace, and KEDA's operator bound to the metrics reader."""
        self.register_outputs({"topic": self.topic.id, "subscription": self.subscription.id,
                               "bucket": self.bucket.name, "dead_letter": self.dead_letter.id})

    def _grant(self, name: str, member: pulumi.Input[str]) -> None:
        grants = [("subscription", gcp.pubsub.SubscriptionIAMMember, {"subscription": self.subscription.name}),
                  ("completions", gcp.pubsub.TopicIAMMember, {"topic": self.completions.name}),
                  ("dead_letter", gcp.pubsub.TopicIAMMember, {"topic": self.dead_letter.name}),
                  ("bucket", gcp.storage.BucketIAMMember, {"bucket": self.bucket.name})]
        for target, kind, scope in grants:
            for role in AGENT_ROLES[target]:
                kind(f"{name}-agent-{target.replace('_', '-')}-{role.rsplit('.', 1)[-1]}", role=role, member=member,
                     **scope, opts=pulumi.ResourceOptions(parent=self))
