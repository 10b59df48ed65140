"""The request queue: one shared FIFO buffer between the Gateway and the WebUI pods (docs/request-queue.md).

Clients reach it on port 8080 (`http`, the Gateway's backend); KEDA reaches it on 8081 (`workers`) through the
same Service, and the workers beside the WebUI pods through a headless Service that lists every pod, ready or
draining, so that during a rollout (maxSurge 1: two pods, two buffers) they serve both, and report each job to
the pod that handed it out (docs/request-queue.md, "Rollout"). It runs on the system pool, one replica: the
buffer is one process's memory, and a second replica would split it.

Its pods are never evicted by the cluster autoscaler: a request may wait up to the client budget
(components/timeouts.py; 780 s in dev), longer than the autoscaler waits for pods when it empties a node
(`max-graceful-termination-sec`, 600 s by default: kubernetes/autoscaler cluster-autoscaler/FAQ.md, "What are
the parameters to CA?"). A pod annotated `cluster-autoscaler.kubernetes.io/safe-to-evict: "false"` keeps its
node from scale-down (same FAQ, "What types of pods can prevent CA from removing a node?"; GKE reports such a
node as `no.scale.down.node.pod.not.safe.to.evict.annotation`,
https://cloud.google.com/kubernetes-engine/docs/how-to/cluster-autoscaler-visibility). A rollout or a node
upgrade still deletes the pod normally, and the drain and grace period below let it finish what it holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s

from components import webui
from components.autoscaling import NAMESPACE as KEDA_NAMESPACE
from components.autoscaling import SYSTEM_NODE_SELECTOR
from components.config import QueueConfig
from components.labels import k8s_labels, pod_security_labels, selector_labels
from components.registry import Registry, digest_ref, pushed_image
from components.timeouts import TimeoutChain
from components.worker import QueueFront

CONTEXT = Path(__file__).resolve().parent.parent / "images" / "request-queue"
IMAGE = "sd-request-queue"
NAMESPACE = "request-queue"
SERVICE = "request-queue"
HTTP_PORT = 8080
WORKER_PORT = 8081
HEALTH_PATH = "/healthz"
WORKERS_URL = f"http://{SERVICE}.{NAMESPACE}.svc.cluster.local:{WORKER_PORT}"
DEMAND_URL = f"{WORKERS_URL}/v1/demand"
"""Where KEDA reads the demand: through the Service, from the ready pod (the new one during a rollout)."""
FRONTS_SERVICE = "request-queue-workers"
FRONTS_URL = f"http://{FRONTS_SERVICE}.{NAMESPACE}.svc.cluster.local.:{WORKER_PORT}"
"""Where the workers long-poll for jobs (QUEUE_FRONT_URL): a headless Service whose name resolves to every
request queue pod, ready or draining (docs/request-queue.md, "Rollout"). The trailing dot makes the name
absolute: the pods' resolv.conf has `ndots:5` (https://kubernetes.io/docs/concepts/services-networking/dns-pod-service/,
"Pod's DNS Config"), so a name with four dots would first be tried under every search domain, on every lookup."""
FRONT = QueueFront(namespace=NAMESPACE, workers_url=FRONTS_URL, worker_port=WORKER_PORT)
UID = 65532
"""An unprivileged uid with no entry in the image: nothing in the container belongs to it."""
UI_KEEPALIVE_SECONDS = 300
"""How long a browser visit keeps one WebUI pod wanted: five minutes after its last request, a tab left open
lets the pod go (the ScaledObject's cool-down comes on top)."""
SAFE_TO_EVICT = {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}
CHECKOV_SKIPS = {
    "CKV_K8S_11": "no CPU limit: a limit throttles the proxy under a burst; the request reserves its share",
    "CKV_K8S_35": "the request queue reads WebUI's credentials as SD_API_AUTH, the name WebUI's own --api-auth uses",
}


@dataclass
class RequestQueueArgs:
    config: QueueConfig
    environment: str
    registry: Registry
    chain: TimeoutChain
    load_balancer_ranges: list[str]
    """Where the Gateway's proxies and Google's health checks connect from (components/gateway.py)."""
    forwarded_for_entries: int
    """X-Forwarded-For entries the Gateway's class appends (components/gateway.py forwarded_for_entries)."""
    api_auth: pulumi.Input[str] | None = None
    """`user:password` for WebUI's API, as WebUI's --api-auth takes it; None: no auth."""


def environment(cfg: QueueConfig, chain: TimeoutChain, forwarded_for_entries: int) -> dict[str, str]:
    """The request queue's settings (docs/request-queue.md), every timeout from the chain."""
    return {
        "QUEUE_MAX_DEPTH": str(cfg.max_depth),
        "QUEUE_MAX_WAIT_SECONDS": str(chain.queue_wait),
        "GENERATION_TIMEOUT_SECONDS": str(chain.generation),
        "MARGIN_SECONDS": str(chain.margin),
        "UI_KEEPALIVE_SECONDS": str(UI_KEEPALIVE_SECONDS),
        "WORKER_TTL_SECONDS": str(2 * chain.margin),
        "DRAIN_SECONDS": str(chain.queue_drain),
        "HTTP_PORT": str(HTTP_PORT),
        "WORKER_PORT": str(WORKER_PORT),
        "FORWARDED_FOR_ENTRIES": str(forwarded_for_entries),
    }


def network_policy_spec(args: RequestQueueArgs, selector: dict[str, str]) -> k8s.networking.v1.NetworkPolicySpecArgs:
    """In: clients only through the load balancer, workers only from the WebUI and KEDA namespaces.
    Out: the WebUI pods' port (browser traffic and API calls that are not queued) and DNS."""
    def tcp(*ports: int) -> list[k8s.networking.v1.NetworkPolicyPortArgs]:
        return [k8s.networking.v1.NetworkPolicyPortArgs(port=p, protocol="TCP") for p in ports]

    def namespace(name: str) -> k8s.networking.v1.NetworkPolicyPeerArgs:
        return k8s.networking.v1.NetworkPolicyPeerArgs(namespace_selector=k8s.meta.v1.LabelSelectorArgs(
            match_labels={"kubernetes.io/metadata.name": name}))

    webui_pods = k8s.networking.v1.NetworkPolicyPeerArgs(
        namespace_selector=k8s.meta.v1.LabelSelectorArgs(match_labels={"kubernetes.io/metadata.name": webui.NAMESPACE}),
        pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector_labels("webui")),
    )
    # No load balancer (gateway.enabled false): no rule at all, since a rule whose `from` is empty admits every
    # source ("If this field is empty or missing, this rule matches all sources", NetworkPolicyIngressRule.from,
    # https://kubernetes.io/docs/reference/kubernetes-api/policy-resources/network-policy-v1/).
    load_balancer = [k8s.networking.v1.NetworkPolicyIngressRuleArgs(
        from_=[k8s.networking.v1.NetworkPolicyPeerArgs(ip_block=k8s.networking.v1.IPBlockArgs(cidr=c))
               for c in args.load_balancer_ranges],
        ports=tcp(HTTP_PORT),
    )] if args.load_balancer_ranges else []
    return k8s.networking.v1.NetworkPolicySpecArgs(
        pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
        policy_types=["Ingress", "Egress"],
        ingress=[
            *load_balancer,
            k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                from_=[namespace(webui.NAMESPACE), namespace(KEDA_NAMESPACE)], ports=tcp(WORKER_PORT),
            ),
        ],
        egress=[
            k8s.networking.v1.NetworkPolicyEgressRuleArgs(to=[webui_pods], ports=tcp(webui.PORT)),
            k8s.networking.v1.NetworkPolicyEgressRuleArgs(
                ports=[k8s.networking.v1.NetworkPolicyPortArgs(port=53, protocol=p) for p in ("UDP", "TCP")],
            ),
        ],
    )


class RequestQueue(pulumi.ComponentResource):
    """Namespace, image, API credentials, Deployment, Service and NetworkPolicy of the request queue."""

    def __init__(self, name: str, args: RequestQueueArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sdgke:request_queue:RequestQueue", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = k8s_labels("request-queue", args.environment)
        selector = selector_labels("request-queue")
        chain = args.chain

        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=NAMESPACE, labels={**labels, **pod_security_labels("restricted")}),
            opts=child,
        )
        ns = namespace.metadata.name
        self.image = pushed_image(f"{name}-image", IMAGE, CONTEXT, args.registry, self)

        settings = environment(args.config, chain, args.forwarded_for_entries)
        env = [k8s.core.v1.EnvVarArgs(name=k, value=v) for k, v in settings.items()]
        if args.api_auth is not None:
            # A Secret is namespaced: the request queue checks clients against its own copy of WebUI's credentials.
            secret = k8s.core.v1.Secret(
                f"{name}-api-auth",
                metadata=k8s.meta.v1.ObjectMetaArgs(name="request-queue-api-auth", namespace=ns, labels=labels),
                type="Opaque",
                string_data={"SD_API_AUTH": args.api_auth},
                opts=child,
            )
            env.append(k8s.core.v1.EnvVarArgs(name="SD_API_AUTH", value_from=k8s.core.v1.EnvVarSourceArgs(
                secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(name=secret.metadata.name, key="SD_API_AUTH"))))

        def health(port: str) -> k8s.core.v1.HTTPGetActionArgs:
            return k8s.core.v1.HTTPGetActionArgs(path=HEALTH_PATH, port=port)

        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="request-queue", namespace=ns, labels=labels,
                                                annotations=webui.checkov_skips(CHECKOV_SKIPS)),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=1,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
                strategy=k8s.apps.v1.DeploymentStrategyArgs(
                    type="RollingUpdate",
                    rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(max_surge=1, max_unavailable=0),
                ),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels, annotations=SAFE_TO_EVICT),
                    spec=k8s.core.v1.PodSpecArgs(
                        automount_service_account_token=False,
                        enable_service_links=False,
                        node_selector=SYSTEM_NODE_SELECTOR,
                        termination_grace_period_seconds=chain.queue_grace,
                        security_context=k8s.core.v1.PodSecurityContextArgs(
                            run_as_non_root=True, run_as_user=UID, run_as_group=UID,
                            seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
                        ),
                        containers=[k8s.core.v1.ContainerArgs(
                            name="request-queue",
                            image=digest_ref(self.image),
                            image_pull_policy="IfNotPresent",
                            env=env,
                            ports=[k8s.core.v1.ContainerPortArgs(name="http", container_port=HTTP_PORT),
                                   k8s.core.v1.ContainerPortArgs(name="workers", container_port=WORKER_PORT)],
                            # The buffer holds request bodies (img2img carries base64 images): memory grows with
                            # queue.maxDepth, and the request queue answers 429 before it runs out.
                            resources=k8s.core.v1.ResourceRequirementsArgs(
                                requests={"cpu": "250m", "memory": "512Mi", "ephemeral-storage": "64Mi"},
                                limits={"memory": "1Gi", "ephemeral-storage": "256Mi"},
                            ),
                            startup_probe=k8s.core.v1.ProbeArgs(http_get=health("http"), period_seconds=2,
                                                                failure_threshold=30),
                            # 503 while draining: the load balancer and the Service stop sending new requests.
                            readiness_probe=k8s.core.v1.ProbeArgs(http_get=health("http"), period_seconds=5,
                                                                  failure_threshold=2),
                            # The workers' port answers while draining: results of accepted requests still arrive.
                            liveness_probe=k8s.core.v1.ProbeArgs(http_get=health("workers"), period_seconds=10,
                                                                 timeout_seconds=5, failure_threshold=6),
                            security_context=webui.restricted_container(UID),
                        )],
                    ),
                ),
            ),
            opts=child,
        )
        self.service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=SERVICE, namespace=ns, labels=labels),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="ClusterIP",
                selector=selector,
                ports=[k8s.core.v1.ServicePortArgs(name="http", port=HTTP_PORT, target_port="http"),
                       k8s.core.v1.ServicePortArgs(name="workers", port=WORKER_PORT, target_port="workers")],
            ),
            opts=child,
        )
        # Headless (no cluster IP, no kube-proxy: its DNS name resolves to the pods' own addresses,
        # https://kubernetes.io/docs/concepts/services-networking/service/#headless-services), and publishing
        # not-ready addresses: a draining pod (readiness 503) and a starting one stay listed
        # (https://kubernetes.io/docs/reference/kubernetes-api/service-resources/service-v1/ `publishNotReadyAddresses`),
        # a terminating pod too (kubernetes/kubernetes staging/src/k8s.io/endpointslice/utils.go podToEndpoint:
        # `ready := service.Spec.PublishNotReadyAddresses || (serving && !terminating)`).
        self.fronts_service = k8s.core.v1.Service(
            f"{name}-workers-service",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=FRONTS_SERVICE, namespace=ns, labels=labels),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="ClusterIP",
                cluster_ip="None",
                publish_not_ready_addresses=True,
                selector=selector,
                ports=[k8s.core.v1.ServicePortArgs(name="workers", port=WORKER_PORT, target_port="workers")],
            ),
            opts=child,
        )
        k8s.networking.v1.NetworkPolicy(
            f"{name}-network-policy",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="request-queue", namespace=ns, labels=labels),
            spec=network_policy_spec(args, selector),
            opts=child,
        )
        self.namespace = ns
        self.register_outputs({"namespace": ns, "service": self.service.metadata.name,
                               "workers_service": self.fronts_service.metadata.name})
