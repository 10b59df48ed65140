"""The GKE cluster: VPC-native private network, node identity and a system pool.

GPU nodes come from a pool per runtime (components/gpu_pool.py), built on this cluster's node basics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

from components.config import FIXED_DISK_TYPE, StackConfig
from components.iam import service_account_with_roles

AUTOSCALING_PROFILE = "OPTIMIZE_UTILIZATION"
IMAGE_TYPE = "COS_CONTAINERD"
NODE_ROLES = (
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/stackdriver.resourceMetadata.writer",
    "roles/artifactregistry.reader",
    "roles/serviceusage.serviceUsageConsumer",
)
"""What a node needs: ship logs and metrics, pull from Artifact Registry, and use the Container
File System API for Image Streaming (a custom node service account needs serviceUsageConsumer)."""
NODE_SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
MONITORING_COMPONENTS = ("SYSTEM_COMPONENTS", "POD", "DEPLOYMENT", "DAEMONSET", "DCGM")
"""What components/observability.py charts and alerts on, collected by GKE itself into Managed Service for
Prometheus (which must be on): kube state metrics of pods, Deployments and DaemonSets
(https://cloud.google.com/kubernetes-engine/docs/how-to/kube-state-metrics) and the GPUs' DCGM metrics
(https://cloud.google.com/kubernetes-engine/docs/how-to/dcgm-metrics: GKE-installed NVIDIA drivers, GKE
1.30.1-gke.1204000 or later). Values are container.v1 MonitoringComponentConfig.enableComponents."""
SYSTEM_MONITORING = ("SYSTEM_COMPONENTS",)
"""With observability off: GKE's system metrics only (CPU, memory, restarts: "free GKE system metrics",
https://cloud.google.com/stackdriver/docs/managed-prometheus; "System metrics" in
https://cloud.google.com/kubernetes-engine/docs/how-to/configure-metrics), and managed collection for Prometheus
off by an explicit `enabled: false` rather than left to whatever GKE's default for a new cluster is. The provider
takes both (pulumi-gcp 10.2.0 container/_inputs.py, ClusterMonitoringConfigArgs: `enable_components`,
`managed_prometheus.enabled`)."""
MAINTENANCE_WINDOW = {"start_time": "2026-01-03T02:00:00Z", "end_time": "2026-01-03T08:00:00Z",
                      "recurrence": "FREQ=WEEKLY;BYDAY=SA,SU"}
"""Upgrades and repairs that recreate nodes happen at weekend nights (UTC), not under load."""


@dataclass
class ClusterArgs:
    config: StackConfig


class Cluster(pulumi.ComponentResource):
    """Network, node service account, GKE cluster, node pools and a Kubernetes provider for them."""

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sdgke:cluster:Cluster", name, None, opts)
        cfg = args.config
        child = pulumi.ResourceOptions(parent=self)
        stateful = pulumi.ResourceOptions(parent=self, protect=cfg.protected)

        self.network = gcp.compute.Network(
            f"{name}-network",
            auto_create_subnetworks=False,
            routing_mode="REGIONAL",
            opts=child,
        )
        net = cfg.network
        self.subnet = gcp.compute.Subnetwork(
            f"{name}-subnet",
            network=self.network.id,
            region=cfg.region,
            ip_cidr_range=net.subnet_cidr,
            private_ip_google_access=True,
            secondary_ip_ranges=[
                gcp.compute.SubnetworkSecondaryIpRangeArgs(range_name="pods", ip_cidr_range=net.pods_cidr),
                gcp.compute.SubnetworkSecondaryIpRangeArgs(range_name="services", ip_cidr_range=net.services_cidr),
            ],
            opts=child,
        )
        router = gcp.compute.Router(f"{name}-router", network=self.network.id, region=cfg.region, opts=child)
        gcp.compute.RouterNat(
            f"{name}-nat",
            router=router.name,
            region=cfg.region,
            nat_ip_allocate_option="AUTO_ONLY",
            source_subnetwork_ip_ranges_to_nat="ALL_SUBNETWORKS_ALL_IP_RANGES",
            log_config=gcp.compute.RouterNatLogConfigArgs(enable=True, filter="ERRORS_ONLY"),
            opts=child,
        )

        self.node_service_account, node_roles = service_account_with_roles(
            f"{name}-nodes", cfg.project, "sd-gke GKE nodes", NODE_ROLES, child,
        )

        node_basics = dict(
            image_type=IMAGE_TYPE,
            service_account=self.node_service_account.email,
            oauth_scopes=NODE_SCOPES,
            shielded_instance_config=gcp.container.NodePoolNodeConfigShieldedInstanceConfigArgs(
                enable_secure_boot=True, enable_integrity_monitoring=True
            ),
            workload_metadata_config=gcp.container.NodePoolNodeConfigWorkloadMetadataConfigArgs(
                mode="GKE_METADATA"
            ),
            gcfs_config=gcp.container.NodePoolNodeConfigGcfsConfigArgs(enabled=True),
            gvnic=gcp.container.NodePoolNodeConfigGvnicArgs(enabled=True),
            metadata={"disable-legacy-endpoints": "true"},
        )
        self.node_basics = node_basics
        """Identity and hardening every node pool shares, the GPU pool's included."""

        self.cluster = gcp.container.Cluster(
            f"{name}-gke",
            location=cfg.region,
            node_locations=list(cfg.zones),
            network=self.network.id,
            subnetwork=self.subnet.id,
            networking_mode="VPC_NATIVE",
            datapath_provider="ADVANCED_DATAPATH",
            ip_allocation_policy=gcp.container.ClusterIpAllocationPolicyArgs(
                cluster_secondary_range_name="pods", services_secondary_range_name="services"
            ),
            private_cluster_config=gcp.container.ClusterPrivateClusterConfigArgs(
                enable_private_nodes=True,
                enable_private_endpoint=cfg.production,
                master_ipv4_cidr_block=net.master_cidr,
            ),
            control_plane_endpoints_config=control_plane_endpoints(),
            master_authorized_networks_config=gcp.container.ClusterMasterAuthorizedNetworksConfigArgs(
                cidr_blocks=[
                    gcp.container.ClusterMasterAuthorizedNetworksConfigCidrBlockArgs(cidr_block=c)
                    for c in net.master_authorized_cidrs
                ]
            )
            if net.master_authorized_cidrs
            else None,
            release_channel=gcp.container.ClusterReleaseChannelArgs(channel=cfg.cluster.release_channel),
            min_master_version=cfg.cluster.min_master_version,
            remove_default_node_pool=True,
            initial_node_count=1,
            node_config=gcp.container.ClusterNodeConfigArgs(
                service_account=self.node_service_account.email,
                oauth_scopes=NODE_SCOPES,
                shielded_instance_config=gcp.container.ClusterNodeConfigShieldedInstanceConfigArgs(
                    enable_secure_boot=True, enable_integrity_monitoring=True
                ),
                workload_metadata_config=gcp.container.ClusterNodeConfigWorkloadMetadataConfigArgs(
                    mode="GKE_METADATA"
                ),
            ),
            workload_identity_config=gcp.container.ClusterWorkloadIdentityConfigArgs(
                workload_pool=f"{cfg.project}.svc.id.goog"
            ),
            enable_shielded_nodes=True,
            node_pool_defaults=gcp.container.ClusterNodePoolDefaultsArgs(
                node_config_defaults=gcp.container.ClusterNodePoolDefaultsNodeConfigDefaultsArgs(
                    gcfs_config=gcp.container.ClusterNodePoolDefaultsNodeConfigDefaultsGcfsConfigArgs(enabled=True)
                )
            ),
            cluster_autoscaling=gcp.container.ClusterClusterAutoscalingArgs(
                enabled=False,
                autoscaling_profile=AUTOSCALING_PROFILE,
            ),
            addons_config=gcp.container.ClusterAddonsConfigArgs(
                gce_persistent_disk_csi_driver_config=gcp.container.ClusterAddonsConfigGcePersistentDiskCsiDriverConfigArgs(
                    enabled=True
                ),
                http_load_balancing=gcp.container.ClusterAddonsConfigHttpLoadBalancingArgs(disabled=False),
            ),
            # The GKE Gateway controller and the standard Gateway API CRDs, which the WebUI's Gateway needs
            # (https://cloud.google.com/kubernetes-engine/docs/how-to/deploying-gateways, "Enable the Gateway API
            # in your cluster"; `gcloud container clusters create --gateway-api=standard` on Standard clusters);
            # without the Gateway, neither (container.v1 GatewayAPIConfig.Channel CHANNEL_DISABLED).
            gateway_api_config=gcp.container.ClusterGatewayApiConfigArgs(
                channel="CHANNEL_STANDARD" if cfg.gateway.enabled else "CHANNEL_DISABLED"),
            monitoring_config=monitoring_config(cfg.observability.enabled),
            maintenance_policy=gcp.container.ClusterMaintenancePolicyArgs(
                recurring_window=gcp.container.ClusterMaintenancePolicyRecurringWindowArgs(**MAINTENANCE_WINDOW),
            ),
            deletion_protection=cfg.protected,
            opts=pulumi.ResourceOptions.merge(stateful, pulumi.ResourceOptions(depends_on=node_roles)),
        )

        sys_cfg = cfg.system_pool
        self.system_pool = gcp.container.NodePool(
            f"{name}-system",
            cluster=self.cluster.id,
            location=cfg.region,
            node_locations=list(cfg.zones),
            initial_node_count=per_zone(sys_cfg.min_nodes, len(cfg.zones)),
            autoscaling=gcp.container.NodePoolAutoscalingArgs(
                total_min_node_count=sys_cfg.min_nodes,
                total_max_node_count=sys_cfg.max_nodes,
                location_policy="BALANCED",
            ),
            management=gcp.container.NodePoolManagementArgs(auto_repair=True, auto_upgrade=True),
            node_config=gcp.container.NodePoolNodeConfigArgs(
                machine_type=sys_cfg.machine_type,
                disk_type=FIXED_DISK_TYPE,
                disk_size_gb=sys_cfg.disk_size_gb,
                labels={"sd-gke/pool": "system"},
                **node_basics,
            ),
            opts=child,
        )

        self.dns_endpoint = self.cluster.control_plane_endpoints_config.apply(_dns_endpoint)
        kubeconfig = pulumi.Output.all(self.cluster.name, self.dns_endpoint).apply(lambda a: _kubeconfig(a[0], a[1]))
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=kubeconfig,
            cluster_identifier=self.cluster.id,
            # Not on the GPU pool: that pool follows the runtime image (components/gpu_pool.py), and
            # whatever lands on it reads its label from it, so waits for it anyway.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.system_pool]),
        )

        self.register_outputs(
            {
                "clusterName": self.cluster.name,
                "endpoint": self.cluster.endpoint,
                "dnsEndpoint": self.dns_endpoint,
                "nodeServiceAccount": self.node_service_account.email,
            }
        )


def monitoring_config(observability: bool) -> gcp.container.ClusterMonitoringConfigArgs:
    """What the cluster collects: everything the dashboard and alerts read, or only GKE's system metrics."""
    return gcp.container.ClusterMonitoringConfigArgs(
        enable_components=list(MONITORING_COMPONENTS if observability else SYSTEM_MONITORING),
        managed_prometheus=gcp.container.ClusterMonitoringConfigManagedPrometheusArgs(enabled=observability),
    )


def per_zone(total: int, zones: int) -> int:
    """initial_node_count counts per zone; the config's minimums are totals across zones."""
    return -(-total // zones)


def control_plane_endpoints() -> gcp.container.ClusterControlPlaneEndpointsConfigArgs:
    """The DNS-based control-plane endpoint, open to callers anywhere and authorized by IAM
    (`container.clusters.connect`) before Kubernetes RBAC: how the deploy workflow, the Kubernetes provider and
    operators reach every stack's API server, and in prod the only way from outside the VPC, since prod's IP
    endpoint is private (`enable_private_endpoint`); the nodes keep the internal IP endpoint
    (https://cloud.google.com/kubernetes-engine/docs/concepts/network-isolation, "DNS-based endpoint";
    container.v1 ControlPlaneEndpointsConfig.DNSEndpointConfig.allowExternalTraffic)."""
    return gcp.container.ClusterControlPlaneEndpointsConfigArgs(
        dns_endpoint_config=gcp.container.ClusterControlPlaneEndpointsConfigDnsEndpointConfigArgs(
            allow_external_traffic=True,
        ),
    )


def _dns_endpoint(endpoints) -> str:
    """The cluster's DNS endpoint (uid.REGION.gke.goog); endpoints arrive as an output type or, from some engines,
    as a plain dict."""
    if isinstance(endpoints, dict):
        dns = endpoints.get("dns_endpoint_config") or endpoints.get("dnsEndpointConfig") or {}
        return dns.get("endpoint") or ""
    return getattr(getattr(endpoints, "dns_endpoint_config", None), "endpoint", None) or ""


def _kubeconfig(cluster_name: str, endpoint: str) -> str:
    """A kubeconfig for the DNS endpoint that authenticates with gke-gcloud-auth-plugin: no static token to leak
    or expire. No certificate-authority-data: the DNS endpoint presents a certificate from a public Google CA, not
    the cluster's own (network-isolation page above), so clients verify it with the system's roots, as
    `gcloud container clusters get-credentials --dns-endpoint` writes it."""
    context = f"gke_{cluster_name}"
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": context, "cluster": {"server": f"https://{endpoint}"}}
            ],
            "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
            "current-context": context,
            "users": [
                {
                    "name": context,
                    "user": {
                        "exec": {
                            "apiVersion": "client.authentication.k8s.io/v1beta1",
                            "command": "gke-gcloud-auth-plugin",
                            "provideClusterInfo": True,
                            "installHint": "Install gke-gcloud-auth-plugin: "
                            "https://cloud.google.com/kubernetes-engine/docs/how-to/cluster-access-for-kubectl",
                        }
                    },
                }
            ],
        }
    )
