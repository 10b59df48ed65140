"""The Google APIs sd-gke calls, enabled in the project before anything that needs them.

On a fresh project most APIs are off, and creating a resource before its API is on fails with
SERVICE_DISABLED. `__main__.py` makes the `google` provider depend on this component, so every
resource created through that provider waits for these services: the SDK awaits a resource's
provider before registering it (pulumi 3.272.0 sdk/python/lib/pulumi/runtime/resource.py,
_create_provider_ref) and the engine orders a resource after its provider
(pulumi/pulumi@09c8227326b140ec8fba99c1253cae4c7afe172f:pkg/resource/graph/dependency_graph.go,
DependenciesOf: "the resource's provider, parent, ... Dependencies ... PropertyDependencies").
Resources on other providers (the bake's dynamic provider, docker-build) reach the services
through their inputs; tests/test_plan.py checks every resource against RESOURCE_APIS.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

PREREQUISITE_APIS = ("serviceusage.googleapis.com", "cloudresourcemanager.googleapis.com")
"""On before the first `pulumi up`, by the operator (README, Prerequisites): enabling an API goes
through Service Usage ("This resource requires the Service Usage API to use",
https://www.pulumi.com/registry/packages/gcp/api-docs/projects/service/), and reading a Service
first gets the project from Resource Manager (hashicorp/terraform-provider-google@fa4a3b00b747f340e6390610d366c9c61adcd2dc:
google/services/resourcemanager/resource_google_project_service.go, resourceGoogleProjectServiceRead),
so neither can be enabled by a Service of its own."""

RESOURCE_APIS: dict[str, tuple[str, ...]] = {
    "gcp:projects/service:Service": ("serviceusage.googleapis.com",),
    "gcp:projects/iAMMember:IAMMember": ("cloudresourcemanager.googleapis.com",),  # projects.setIamPolicy
    "gcp:projects/iAMCustomRole:IAMCustomRole": ("iam.googleapis.com",),
    "gcp:serviceaccount/account:Account": ("iam.googleapis.com",),
    "gcp:serviceaccount/iAMMember:IAMMember": ("iam.googleapis.com",),
    "gcp:artifactregistry/repository:Repository": ("artifactregistry.googleapis.com",),
    "gcp:compute/network:Network": ("compute.googleapis.com",),
    "gcp:compute/subnetwork:Subnetwork": ("compute.googleapis.com",),
    "gcp:compute/router:Router": ("compute.googleapis.com",),
    "gcp:compute/routerNat:RouterNat": ("compute.googleapis.com",),
    "gcp:compute/firewall:Firewall": ("compute.googleapis.com",),
    # Image Streaming needs the Container File System API (REFERENCE.md section 3;
    # https://cloud.google.com/kubernetes-engine/docs/how-to/image-streaming#requirements).
    "gcp:container/cluster:Cluster": ("container.googleapis.com", "containerfilesystem.googleapis.com"),
    "gcp:container/nodePool:NodePool": ("container.googleapis.com", "containerfilesystem.googleapis.com"),
    "docker-build:index:Image": ("artifactregistry.googleapis.com",),  # pushes to the repository
    "pulumi-python:dynamic:Resource": ("compute.googleapis.com",),  # the bake: VMs, disks, images
    "gcp:logging/metric:Metric": ("logging.googleapis.com",),
    "gcp:monitoring/dashboard:Dashboard": ("monitoring.googleapis.com",),
    "gcp:monitoring/alertPolicy:AlertPolicy": ("monitoring.googleapis.com",),
    "gcp:monitoring/notificationChannel:NotificationChannel": ("monitoring.googleapis.com",),
    "gcp:pubsub/topic:Topic": ("pubsub.googleapis.com",),
    "gcp:pubsub/subscription:Subscription": ("pubsub.googleapis.com",),
    "gcp:pubsub/topicIAMMember:TopicIAMMember": ("pubsub.googleapis.com",),
    "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember": ("pubsub.googleapis.com",),
    "gcp:storage/bucket:Bucket": ("storage.googleapis.com",),
    "gcp:storage/bucketIAMMember:BucketIAMMember": ("storage.googleapis.com",),
}
"""Resource type -> the APIs creating it calls. A new resource type needs a row here (the plan test
refuses a gcp: type it cannot place)."""

PART_APIS: dict[str, tuple[str, ...]] = {
    "jobs": ("pubsub.googleapis.com", "storage.googleapis.com"),
}
"""APIs only an optional part calls (components/config/model.py PARTS): enabled with the part, never without it. The
Gateway calls none of its own (its load balancer and firewall rule are Compute Engine's). Observability's log-based
metrics, dashboard and alerts call Logging and Monitoring, which the cluster calls too (CLUSTER_APIS)."""

CLUSTER_APIS = ("logging.googleapis.com", "monitoring.googleapis.com")
"""Called by the cluster itself whatever the parts: GKE's system logs and metrics (components/cluster.py
SYSTEM_MONITORING, NODE_ROLES), and KEDA's backlog read (components/jobs.py)."""

ALL_APIS = tuple(sorted({api for apis in RESOURCE_APIS.values() for api in apis} - set(PREREQUISITE_APIS)))


def required_apis(parts: Collection[str]) -> tuple[str, ...]:
    """The APIs a stack with these optional parts on enables."""
    optional = {api for apis in PART_APIS.values() for api in apis}
    wanted = {api for part in parts for api in PART_APIS.get(part, ())}
    return tuple(api for api in ALL_APIS if api not in optional or api in wanted)


@dataclass
class ProjectApisArgs:
    project: str
    parts: Collection[str]
    """The optional parts the stack turns on (components/config/model.py PARTS)."""


class ProjectApis(pulumi.ComponentResource):
    """One projects.Service per API the stack's parts call (required_apis)."""

    def __init__(self, name: str, args: ProjectApisArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sdgke:apis:ProjectApis", name, None, opts)
        # disable_on_destroy=False: destroying the stack leaves the APIs on. Disabling one would
        # break whatever else in the project uses it, and the provider then skips the call
        # (resource_google_project_service.go, resourceGoogleProjectServiceDelete).
        self.services = {
            api: gcp.projects.Service(
                f"{name}-{api.split('.')[0]}",
                project=args.project,
                service=api,
                disable_on_destroy=False,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for api in required_apis(args.parts)
        }
        self.register_outputs({"services": list(self.services)})
