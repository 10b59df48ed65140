"""Asynchronous jobs: a Pub/Sub queue in front of the GPUs, results in a bucket, nothing lost.

Batch users publish txt2img jobs (tools/jobs.py); the queue agent (images/queue-agent, components/worker.py),
the worker beside every WebUI, works them one at a time when the request queue has no interactive work
for it, and commits each result once to the bucket, then announces
it on the completions topic. A job that fails maxDeliveryAttempts times ends on the dead-letter topic
with its reason, where a subscription keeps it for inspection (a topic without a subscription keeps
nothing: https://cloud.google.com/pubsub/docs/subscription-overview).

The pod count follows the backlog through KEDA (`backlog_scaling`), next to the request queue's trigger of the same
Deployment's ScaledObject: an HPA may not target a Deployment KEDA already scales, and one ScaledObject
may carry several triggers (https://keda.sh/docs/2.16/concepts/scaling-deployments/). KEDA's
`gcp-pubsub` trigger reads subscription/num_undelivered_messages from Cloud Monitoring, which samples
it every 60 s and shows it up to 120-240 s later
(https://cloud.google.com/monitoring/api/metrics_gcp_p_z#gcp-pubsub), so a batch waits 1-3 minutes
before the first pod is asked for: nothing for a user who comes back later, and GKE's HPA with an
external metric (1.37+, to and from zero) reads the very same metric through the same delay. The
trigger is marked deprecated in KEDA's docs ("won't receive any modification",
https://keda.sh/docs/2.16/scalers/gcp-pub-sub/) but still ships; its replacement is the generic
`gcp-stackdriver` trigger on the same metric, with the same lag.
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
KEDA_AUTHENTICATION = "sd-jobs-pubsub"
KEDA_AUTHENTICATION_SPEC = {"podIdentity": {"provider": "gcp"}}


SUBSCRIPTION = "sd-jobs"
DEAD_LETTER_SUBSCRIPTION = "sd-jobs-dead-letter"
"""The subscriptions' names: what the agent pulls from, and where jobs that failed every attempt wait."""

def queue_trigger(subscription: pulumi.Input[str], jobs_per_pod: int) -> dict:
    """KEDA's Pub/Sub trigger: one pod per `jobs_per_pod` undelivered jobs, and the first pod as soon as one
    job waits (activationValue 0: active above 0, https://keda.sh/docs/2.16/scalers/gcp-pub-sub/)."""
    return {
        "type": "gcp-pubsub",
        "authenticationRef": {"name": KEDA_AUTHENTICATION},
        "metadata": {"subscriptionName": subscription, "mode": "SubscriptionSize",
                     "value": str(jobs_per_pod), "activationValue": "0"},
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
            trigger=pulumi.Output.from_input(queue_trigger(self.subscription.id, cfg.jobs_per_pod)),
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
