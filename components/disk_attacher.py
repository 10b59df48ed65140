"""The disk attacher: on every GPU node, the runtime disk image becomes a mounted, verified runtime.

The agent (images/attacher) creates a per-node disk from the runtime image, attaches it read-write
with autoDelete in the same call (the disk dies with its node), mounts it read-only on the host, checks its
manifest, and only then lifts the node's startup taint. A CronJob collects disks whose node is gone.
Both run as Google service accounts through Workload Identity, with custom roles that hold exactly
the permissions their calls need (images/attacher/attacher/permissions.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

from components.labels import k8s_labels, pod_security_labels, selector_labels
from components.registry import Registry, digest_ref, pushed_image
from components.runtime_layout import GPU_NODE_LABEL, HOST_MOUNT_PARENT, HOST_MOUNT_PATH, RUNTIME_NODE_LABEL, STARTUP_TAINT_KEY
from components.source import load_source
from components.webui import RuntimeVolume, checkov_skips, tolerations

CONTEXT = Path(__file__).resolve().parent.parent / "images" / "attacher"
NAMESPACE = "sd-system"
AGENT_KSA = "disk-attacher"
GC_KSA = "disk-gc"
HEALTH_PORT = 8080
GC_SCHEDULE = "*/15 * * * *"
GC_GRACE_SECONDS = 3600
PRIORITY = 1_000_000
MOUNT_NEEDS = "mounting the runtime disk on the host through a Bidirectional volume needs a privileged root container"
AGENT_CHECKOV_SKIPS = {
    "CKV_K8S_16": MOUNT_NEEDS,
    "CKV_K8S_20": "privileged implies escalation; the API rejects allowPrivilegeEscalation false on a privileged container",
    "CKV_K8S_23": MOUNT_NEEDS,
    "CKV_K8S_28": "capabilities cannot be dropped from a privileged container; it needs none for networking",
    "CKV_K8S_37": "capabilities cannot be dropped from a privileged container",
    "CKV_K8S_38": "the agent patches its node's taint through the Kubernetes API with this token",
    "CKV_K8S_40": MOUNT_NEEDS,
}


PERMISSIONS = load_source(CONTEXT / "attacher" / "permissions.py", "attacher_permissions")
"""The agent's own permission table: the custom roles are built from it, so they cannot drift."""


@dataclass
class DiskAttacherArgs:
    project: str
    zones: tuple[str, ...]
    environment: str
    registry: Registry
    runtime_image: pulumi.Input[str]
    """Image path, `projects/P/global/images/NAME`: a fixed image, never the family (which moves)."""
    runtime_hash12: pulumi.Input[str]
    """The runtime the agent mounts, and the only value of the node label it runs on."""
    disk_type: str
    disk_size_gb: int
    tolerations: list[dict]
    """Every taint the GPU pool's nodes carry, the startup taint included: the agent must run there."""


class DiskAttacher(pulumi.ComponentResource):
    """Namespace, identities and roles, the agent DaemonSet and the orphaned-disk CronJob."""

    def __init__(self, name: str, args: DiskAttacherArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sdgke:disk_attacher:DiskAttacher", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = k8s_labels("disk-attacher", args.environment)
        gc_labels = k8s_labels("disk-gc", args.environment)

        self.image = pushed_image(f"{name}-image", "sd-disk-attacher", CONTEXT, args.registry, self)
        image_ref = digest_ref(self.image)

        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            # The agent mounts disks on the host: privileged, with hostPath /dev and /mnt/disks, which
            # only `privileged` admits; the collector meets Restricted, and warn and audit say so.
            metadata=k8s.meta.v1.ObjectMetaArgs(name=NAMESPACE, labels={
                **labels, **pod_security_labels("privileged"),
            }),
            opts=child,
        )
        ns = namespace.metadata.name

        self.agent_role = gcp.projects.IAMCustomRole(
            f"{name}-agent-role",
            project=args.project,
            role_id="sdgkeDiskAttacher",
            title="sd-gke disk attacher",
            description="Create a node's runtime disk from the runtime image and attach it read-only.",
            permissions=list(PERMISSIONS.AGENT_PERMISSIONS),
            opts=child,
        )
        self.gc_role = gcp.projects.IAMCustomRole(
            f"{name}-gc-role",
            project=args.project,
            role_id="sdgkeDiskGc",
            title="sd-gke runtime disk collector",
            description="Delete unattached sd-gke runtime disks whose node is gone.",
            permissions=list(PERMISSIONS.GC_PERMISSIONS),
            opts=child,
        )
        self.agent_account = self._identity(name, "agent", AGENT_KSA, args.project, self.agent_role, ns, labels)
        self.gc_account = self._identity(name, "gc", GC_KSA, args.project, self.gc_role, ns, gc_labels)

        cluster_role = k8s.rbac.v1.ClusterRole(
            f"{name}-node-patcher",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="sd-gke-disk-attacher", labels=labels),
            rules=[k8s.rbac.v1.PolicyRuleArgs(api_groups=r["apiGroups"], resources=r["resources"], verbs=r["verbs"])
                   for r in PERMISSIONS.NODE_RBAC_RULES],
            opts=child,
        )
        k8s.rbac.v1.ClusterRoleBinding(
            f"{name}-node-patcher-binding",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="sd-gke-disk-attacher", labels=labels),
            role_ref=k8s.rbac.v1.RoleRefArgs(api_group="rbac.authorization.k8s.io", kind="ClusterRole",
                                             name=cluster_role.metadata.name),
            subjects=[k8s.rbac.v1.SubjectArgs(kind="ServiceAccount", name=AGENT_KSA, namespace=ns)],
            opts=child,
        )
        priority = k8s.scheduling.v1.PriorityClass(
            f"{name}-priority",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="sd-gke-node-runtime", labels=labels),
            value=PRIORITY,
            global_default=False,
            preemption_policy="PreemptLowerPriority",
            description="The disk attacher must run on every GPU node before anything else can.",
            opts=child,
        )

        env = {
            "SDGKE_RUNTIME_IMAGE": args.runtime_image,
            "SDGKE_RUNTIME_HASH": args.runtime_hash12,
            "SDGKE_DISK_TYPE": args.disk_type,
            "SDGKE_DISK_SIZE_GB": str(args.disk_size_gb),
            "SDGKE_MOUNT_PATH": HOST_MOUNT_PATH,
            "SDGKE_STARTUP_TAINT": STARTUP_TAINT_KEY,
            "SDGKE_HEALTH_ADDRESS": f"0.0.0.0:{HEALTH_PORT}",
        }
        self.daemonset = k8s.apps.v1.DaemonSet(
            f"{name}-daemonset",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="disk-attacher", namespace=ns, labels=labels,
                                                annotations=checkov_skips(AGENT_CHECKOV_SKIPS)),
            spec=k8s.apps.v1.DaemonSetSpecArgs(
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector_labels("disk-attacher")),
                update_strategy=k8s.apps.v1.DaemonSetUpdateStrategyArgs(
                    type="RollingUpdate",
                    rolling_update=k8s.apps.v1.RollingUpdateDaemonSetArgs(max_unavailable="25%"),
                ),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
                    spec=k8s.core.v1.PodSpecArgs(
                        service_account_name=AGENT_KSA,
                        priority_class_name=priority.metadata.name,
                        security_context=k8s.core.v1.PodSecurityContextArgs(
                            seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
                        ),
                        termination_grace_period_seconds=10,
                        affinity=k8s.core.v1.AffinityArgs(node_affinity=k8s.core.v1.NodeAffinityArgs(
                            required_during_scheduling_ignored_during_execution=k8s.core.v1.NodeSelectorArgs(
                                node_selector_terms=[k8s.core.v1.NodeSelectorTermArgs(match_expressions=[
                                    k8s.core.v1.NodeSelectorRequirementArgs(key=GPU_NODE_LABEL, operator="Exists"),
                                    # Only nodes of this runtime's pool: an agent never meets a node that
                                    # holds another runtime's disk, and the DaemonSet controller removes
                                    # its pods from nodes that stop matching (components/gpu_pool.py).
                                    k8s.core.v1.NodeSelectorRequirementArgs(
                                        key=RUNTIME_NODE_LABEL, operator="In", values=[args.runtime_hash12]),
                                ])],
                            ),
                        )),
                        tolerations=tolerations(args.tolerations),
                        containers=[k8s.core.v1.ContainerArgs(
                            name="agent",
                            image=image_ref,
                            image_pull_policy="IfNotPresent",
                            args=[],
                            env=[
                                *[k8s.core.v1.EnvVarArgs(name=k, value=v) for k, v in env.items()],
                                k8s.core.v1.EnvVarArgs(name="SDGKE_NODE_NAME", value_from=k8s.core.v1.EnvVarSourceArgs(
                                    field_ref=k8s.core.v1.ObjectFieldSelectorArgs(field_path="spec.nodeName"),
                                )),
                            ],
                            ports=[k8s.core.v1.ContainerPortArgs(name="health", container_port=HEALTH_PORT)],
                            readiness_probe=k8s.core.v1.ProbeArgs(
                                http_get=k8s.core.v1.HTTPGetActionArgs(path="/healthz", port="health"),
                                period_seconds=5, failure_threshold=2,
                            ),
                            liveness_probe=k8s.core.v1.ProbeArgs(
                                tcp_socket=k8s.core.v1.TCPSocketActionArgs(port="health"),
                                period_seconds=30, failure_threshold=4,
                            ),
                            resources=k8s.core.v1.ResourceRequirementsArgs(
                                requests={"cpu": "10m", "memory": "64Mi"}, limits={"cpu": "500m", "memory": "192Mi"},
                            ),
                            # Mounting on the host through a Bidirectional volume needs a privileged container.
                            security_context=k8s.core.v1.SecurityContextArgs(
                                privileged=True, read_only_root_filesystem=True, run_as_user=0,
                            ),
                            volume_mounts=[
                                k8s.core.v1.VolumeMountArgs(name="dev", mount_path="/dev"),
                                k8s.core.v1.VolumeMountArgs(name="disks", mount_path=HOST_MOUNT_PARENT,
                                                            mount_propagation="Bidirectional"),
                            ],
                        )],
                        volumes=[
                            k8s.core.v1.VolumeArgs(name="dev", host_path=k8s.core.v1.HostPathVolumeSourceArgs(
                                path="/dev", type="Directory")),
                            k8s.core.v1.VolumeArgs(name="disks", host_path=k8s.core.v1.HostPathVolumeSourceArgs(
                                path=HOST_MOUNT_PARENT, type="DirectoryOrCreate")),
                        ],
                    ),
                ),
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.agent_account]),
        )

        self.gc = k8s.batch.v1.CronJob(
            f"{name}-gc",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="disk-gc", namespace=ns, labels=gc_labels),
            spec=k8s.batch.v1.CronJobSpecArgs(
                schedule=GC_SCHEDULE,
                concurrency_policy="Forbid",
                successful_jobs_history_limit=1,
                failed_jobs_history_limit=3,
                job_template=k8s.batch.v1.JobTemplateSpecArgs(spec=k8s.batch.v1.JobSpecArgs(
                    backoff_limit=1,
                    active_deadline_seconds=600,
                    ttl_seconds_after_finished=3600,
                    template=k8s.core.v1.PodTemplateSpecArgs(
                        metadata=k8s.meta.v1.ObjectMetaArgs(labels=gc_labels),
                        spec=k8s.core.v1.PodSpecArgs(
                            service_account_name=GC_KSA,
                            automount_service_account_token=False,
                            restart_policy="Never",
                            security_context=k8s.core.v1.PodSecurityContextArgs(
                                run_as_non_root=True, run_as_user=65532, run_as_group=65532,
                                seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
                            ),
                            containers=[k8s.core.v1.ContainerArgs(
                                name="gc",
                                image=image_ref,
                                image_pull_policy="IfNotPresent",
                                args=["gc", "--grace-seconds", str(GC_GRACE_SECONDS)],
                                env=[k8s.core.v1.EnvVarArgs(name="SDGKE_ZONES", value=",".join(args.zones))],
                                resources=k8s.core.v1.ResourceRequirementsArgs(
                                    requests={"cpu": "10m", "memory": "64Mi"}, limits={"cpu": "500m", "memory": "192Mi"},
                                ),
                                security_context=k8s.core.v1.SecurityContextArgs(
                                    allow_privilege_escalation=False, read_only_root_filesystem=True,
                                    capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
                                ),
                            )],
                        ),
                    ),
                )),
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.gc_account]),
        )

        # Neither the agent nor the collector serves anything but kubelet's probes.
        k8s.networking.v1.NetworkPolicy(
            f"{name}-network-policy",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="deny-ingress", namespace=ns, labels=labels),
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(), policy_types=["Ingress"],
            ),
            opts=child,
        )
        self.runtime_volume = RuntimeVolume(
            source={"host_path": k8s.core.v1.HostPathVolumeSourceArgs(path=HOST_MOUNT_PATH, type="Directory")},
            hash12=args.runtime_hash12,
            propagation="HostToContainer",
        )
        self.register_outputs({
            "agentServiceAccount": self.agent_account.email,
            "gcServiceAccount": self.gc_account.email,
            "image": image_ref,
        })

    def _identity(self, name: str, role_name: str, ksa: str, project: str, role: gcp.projects.IAMCustomRole,
                  namespace: pulumi.Output[str], labels: dict[str, str]) -> gcp.serviceaccount.Account:
        """A Google service account holding `role`, usable only by Kubernetes service account `ksa`."""
        child = pulumi.ResourceOptions(parent=self)
        account = gcp.serviceaccount.Account(
            f"{name}-{role_name}", account_id=f"sd-{ksa}", display_name=f"sd-gke {ksa}", opts=child,
        )
        gcp.projects.IAMMember(
            f"{name}-{role_name}-role-binding", project=project, role=role.name,
            member=account.email.apply(lambda e: f"serviceAccount:{e}"), opts=child,
        )
        gcp.serviceaccount.IAMMember(
            f"{name}-{role_name}-workload-identity",
            service_account_id=account.name,
            role="roles/iam.workloadIdentityUser",
            member=namespace.apply(lambda ns: f"serviceAccount:{project}.svc.id.goog[{ns}/{ksa}]"),
            opts=child,
        )
        k8s.core.v1.ServiceAccount(
            f"{name}-{role_name}-ksa",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=ksa, namespace=namespace, labels=labels,
                annotations={"iam.gke.io/gcp-service-account": account.email},
            ),
            automount_service_account_token=role_name == "agent",
            opts=child,
        )
        return account
