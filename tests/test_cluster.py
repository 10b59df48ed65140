"""The cluster component as registered by the real program, for dev and prod."""

from __future__ import annotations

import json

from components import apis as apis_module
from components import cluster as cluster_module
from components.config import parse
from components.runtime_layout import STARTUP_TAINT
from tests.conftest import ROOT
from tools import mockrun

CLUSTER = "gcp:container/cluster:Cluster"
NODE_POOL = "gcp:container/nodePool:NodePool"


def stack_config(run):
    from components.config import decode

    return parse(decode(run.config), ROOT)


def gpu_pool(run):
    return run.one(NODE_POOL, "sd-gpu").inputs


def system_pool(run):
    return run.one(NODE_POOL, "sd-system").inputs


def test_default_node_pool_is_removed(run):
    assert run.one(CLUSTER).inputs["removeDefaultNodePool"] is True


def test_release_channel_and_version_follow_the_stack(run):
    cfg = stack_config(run)
    inputs = run.one(CLUSTER).inputs
    assert inputs["releaseChannel"] == {"channel": cfg.cluster.release_channel}
    assert inputs["minMasterVersion"] == cfg.cluster.min_master_version


def test_cluster_is_regional_over_the_configured_zones(run):
    cfg = stack_config(run)
    inputs = run.one(CLUSTER).inputs
    assert inputs["location"] == cfg.region
    assert inputs["nodeLocations"] == list(cfg.zones)
    assert gpu_pool(run)["nodeLocations"] == list(cfg.zones)


def test_workload_identity_is_on(run):
    project = stack_config(run).project
    assert run.one(CLUSTER).inputs["workloadIdentityConfig"] == {"workloadPool": f"{project}.svc.id.goog"}


def test_nodes_use_the_gke_metadata_server(run):
    for pool in (gpu_pool(run), system_pool(run)):
        assert pool["nodeConfig"]["workloadMetadataConfig"] == {"mode": "GKE_METADATA"}


def test_nodes_are_shielded(run):
    assert run.one(CLUSTER).inputs["enableShieldedNodes"] is True
    for pool in (gpu_pool(run), system_pool(run)):
        assert pool["nodeConfig"]["shieldedInstanceConfig"] == {
            "enableSecureBoot": True, "enableIntegrityMonitoring": True,
        }


def test_nodes_are_private_behind_cloud_nat(run):
    private = run.one(CLUSTER).inputs["privateClusterConfig"]
    assert private["enablePrivateNodes"] is True
    assert private["masterIpv4CidrBlock"] == stack_config(run).network.master_cidr
    nat = run.one("gcp:compute/routerNat:RouterNat").inputs
    assert nat["sourceSubnetworkIpRangesToNat"] == "ALL_SUBNETWORKS_ALL_IP_RANGES"


def test_subnet_is_vpc_native_with_private_google_access(run):
    net = stack_config(run).network
    subnet = run.one("gcp:compute/subnetwork:Subnetwork", "sd-subnet").inputs
    assert subnet["privateIpGoogleAccess"] is True, "Image Streaming from private nodes needs it"
    assert subnet["ipCidrRange"] == net.subnet_cidr
    assert {r["rangeName"]: r["ipCidrRange"] for r in subnet["secondaryIpRanges"]} == {
        "pods": net.pods_cidr, "services": net.services_cidr,
    }
    assert run.one(CLUSTER).inputs["ipAllocationPolicy"] == {
        "clusterSecondaryRangeName": "pods", "servicesSecondaryRangeName": "services",
    }


def test_dataplane_v2_enforces_network_policies(run):
    assert run.one(CLUSTER).inputs["datapathProvider"] == "ADVANCED_DATAPATH"


def test_master_authorized_networks_follow_the_stack(run, run_stack):
    assert "masterAuthorizedNetworksConfig" not in run.one(CLUSTER).inputs  # the stack files leave the range to you
    network = {**json.loads(run.config["sd-gke:network"]), "masterAuthorizedCidrs": ["10.200.0.0/24"]}
    custom = run_stack(run.stack, network=network)
    assert custom.one(CLUSTER).inputs["masterAuthorizedNetworksConfig"] == {"cidrBlocks": [{"cidrBlock": "10.200.0.0/24"}]}


def test_image_streaming_is_the_cluster_default(run):
    defaults = run.one(CLUSTER).inputs["nodePoolDefaults"]["nodeConfigDefaults"]
    assert defaults["gcfsConfig"] == {"enabled": True}


def test_image_streaming_is_on_in_every_pool(run):
    for pool in (gpu_pool(run), system_pool(run)):
        assert pool["nodeConfig"]["gcfsConfig"] == {"enabled": True}
        assert pool["nodeConfig"]["imageType"] == "COS_CONTAINERD"


def test_autoscaling_profile_optimizes_utilization(run):
    autoscaling = run.one(CLUSTER).inputs["clusterAutoscaling"]
    assert autoscaling == {"enabled": False, "autoscalingProfile": "OPTIMIZE_UTILIZATION"}


def test_gpu_pool_scales_from_zero_within_total_limits(run):
    cfg = stack_config(run).gpu_pool
    autoscaling = gpu_pool(run)["autoscaling"]
    assert autoscaling["totalMinNodeCount"] == cfg.min_nodes == 0
    assert autoscaling["totalMaxNodeCount"] == cfg.max_nodes
    assert autoscaling["locationPolicy"] == cfg.location_policy
    assert gpu_pool(run)["initialNodeCount"] == 0


def test_system_pool_starts_with_its_total_minimum_spread_over_zones(run_stack):
    run = run_stack("prod", systemPool={"machineType": "e2-standard-4", "minNodes": 4, "maxNodes": 6})
    assert system_pool(run)["initialNodeCount"] == 2, "4 nodes over 3 zones: 2 per zone, at least the minimum"
    assert system_pool(run)["autoscaling"]["totalMinNodeCount"] == 4


def test_node_upgrades_wait_for_the_weekend_window(run):
    window = run.one(CLUSTER).inputs["maintenancePolicy"]["recurringWindow"]
    assert window["recurrence"] == "FREQ=WEEKLY;BYDAY=SA,SU"
    assert window["startTime"] < window["endTime"]


def test_gpu_pool_spot_follows_the_stack(runs):
    assert runs["dev"].one(NODE_POOL, "sd-gpu").inputs["nodeConfig"]["spot"] is True
    assert runs["prod"].one(NODE_POOL, "sd-gpu").inputs["nodeConfig"]["spot"] is False


def test_gpu_pool_has_the_configured_accelerator_with_gke_installed_driver(run):
    cfg = stack_config(run).gpu_pool
    node = gpu_pool(run)["nodeConfig"]
    assert node["machineType"] == cfg.machine_type
    assert node["guestAccelerators"] == [{
        "type": cfg.accelerator_type,
        "count": cfg.accelerator_count,
        "gpuDriverInstallationConfig": {"gpuDriverVersion": cfg.gpu_driver_version},
    }]


def test_gpu_nodes_start_with_the_runtime_startup_taint(run):
    assert gpu_pool(run)["nodeConfig"]["taints"] == [
        {"key": STARTUP_TAINT["key"], "value": STARTUP_TAINT["value"], "effect": "NO_SCHEDULE"}
    ]
    assert STARTUP_TAINT["key"].startswith("ignore-taint.cluster-autoscaler.kubernetes.io/")


def test_system_pool_is_not_tainted_and_not_gpu(run):
    node = system_pool(run)["nodeConfig"]
    assert "taints" not in node and "guestAccelerators" not in node


def test_pools_run_as_the_dedicated_node_service_account(run):
    email = run.one("gcp:serviceaccount/account:Account", "sd-nodes").state["email"]
    assert run.one(CLUSTER).inputs["nodeConfig"]["serviceAccount"] == email
    for pool in (gpu_pool(run), system_pool(run)):
        assert pool["nodeConfig"]["serviceAccount"] == email
        assert not email.endswith("-compute@developer.gserviceaccount.com")


def test_node_service_account_has_only_the_roles_nodes_need(run):
    roles = sorted(m.inputs["role"] for m in run.of_type("gcp:projects/iAMMember:IAMMember")
                   if m.name.startswith("sd-nodes-"))
    assert roles == sorted(cluster_module.NODE_ROLES)
    assert "roles/serviceusage.serviceUsageConsumer" in roles, "Image Streaming with a custom node SA"


def test_cluster_waits_for_node_roles(run):
    role_urns = {m.urn for m in run.of_type("gcp:projects/iAMMember:IAMMember") if m.name.startswith("sd-nodes-")}
    assert role_urns <= set(run.one(CLUSTER).dependencies)


def test_required_apis_are_enabled_and_kept_on_destroy(run):
    services = {s.inputs["service"]: s.inputs for s in run.of_type("gcp:projects/service:Service")}
    assert set(services) == set(apis_module.required_apis(("gateway", "observability", "jobs")))
    assert "containerfilesystem.googleapis.com" in services, "Image Streaming"
    assert all(s["disableOnDestroy"] is False for s in services.values())


def test_apis_are_enabled_through_their_own_provider_that_the_google_provider_waits_for(run):
    services = run.of_type("gcp:projects/service:Service")
    assert all("pulumi:providers:gcp::google-apis::" in s.provider for s in services)
    assert {s.urn for s in services} <= set(run.one("pulumi:providers:gcp", "google").dependencies)


def test_deletion_protection_and_protect_only_in_prod(runs):
    for stack, expected in (("dev", False), ("prod", True)):
        cluster = runs[stack].one(CLUSTER)
        assert cluster.inputs["deletionProtection"] is expected
        assert cluster.protect is expected


def test_lifting_deletion_protection_changes_only_the_protections(runs, run_stack):
    protected = {r.urn: r for r in runs["prod"].resources}
    lifted = {r.urn: r for r in run_stack("prod", deletionProtection=False).resources}
    assert set(lifted) == set(protected)
    changed_inputs = {lifted[u].name: sorted(k for k in set(lifted[u].inputs) | set(protected[u].inputs)
                                             if lifted[u].inputs.get(k) != protected[u].inputs.get(k))
                      for u in lifted if lifted[u].inputs != protected[u].inputs}
    # the results bucket's forceDestroy is its own deletion protection: a teardown deletes the results in it
    assert changed_inputs == {"sd-gke": ["deletionProtection"], "jobs-results": ["forceDestroy"]}
    assert lifted[runs["prod"].one(CLUSTER).urn].inputs["deletionProtection"] is False
    assert {lifted[u].name for u in lifted if lifted[u].protect != protected[u].protect} == {
        "sd-gke", "sd-repository", "jobs-subscription", "jobs-dead-letters", "jobs-results"}
    assert not any(r.protect for r in lifted.values())


def test_teardown_policy_config_reports_lifted_protection_without_refusing_it(run_stack):
    from tools import policy_check

    lifted = run_stack("prod", deletionProtection=False)
    refused = policy_check.mandatory(policy_check.evaluate(lifted, policy_check.stack_config("prod")))
    assert {v.policy for v in refused} == {"gke-deletion-protection-in-prod"}
    teardown = policy_check.evaluate(lifted, policy_check.stack_config("prod-teardown"))
    assert policy_check.mandatory(teardown) == []
    assert {(v.policy, v.level) for v in teardown if v.policy == "gke-deletion-protection-in-prod"} == {
        ("gke-deletion-protection-in-prod", "advisory")}


def test_teardown_policy_config_is_prods_but_for_the_deletion_protection_level():
    from tools import policy_check

    prod, teardown = policy_check.stack_config("prod"), policy_check.stack_config("prod-teardown")
    assert teardown.pop("gke-deletion-protection-in-prod") == {
        **prod.pop("gke-deletion-protection-in-prod"), "enforcementLevel": "advisory"}
    assert teardown == prod


def test_kubernetes_provider_is_identified_by_the_cluster_and_waits_for_the_system_pool(run):
    provider = run.one("pulumi:providers:kubernetes")
    assert provider.inputs["clusterIdentifier"] == f"{run.one(CLUSTER).name}-id"  # the mock's id
    assert run.one(NODE_POOL, "sd-system").urn in provider.dependencies
    # The GPU pool follows the runtime: what runs there waits for it (tests/test_upgrade.py).


def test_kubeconfig_authenticates_with_the_gke_auth_plugin(run):
    kubeconfig = json.loads(run.one("pulumi:providers:kubernetes").inputs["kubeconfig"])
    user = kubeconfig["users"][0]["user"]
    assert user["exec"]["command"] == "gke-gcloud-auth-plugin"
    assert "token" not in user


def test_kubeconfig_reaches_the_dns_endpoint_trusting_the_systems_roots(run):
    """The DNS endpoint's certificate comes from a public Google CA, not the cluster CA: a kubeconfig carrying the
    cluster CA fails TLS there (GoogleCloudPlatform/gcpdiag#115, fluxcd/flux2#5896)."""
    cluster = json.loads(run.one("pulumi:providers:kubernetes").inputs["kubeconfig"])["clusters"][0]["cluster"]
    assert run.outputs["cluster_dns_endpoint"].endswith(".us-central1.gke.goog")
    assert cluster == {"server": f"https://{run.outputs['cluster_dns_endpoint']}"}


def test_every_gcp_resource_uses_the_explicit_google_provider(run):
    gcp_resources = [r for r in run.resources if r.type.startswith("gcp:") and r.custom
                     and r.type != "gcp:projects/service:Service"]
    assert gcp_resources
    assert all(r.provider and "pulumi:providers:gcp::google::" in r.provider for r in gcp_resources)


def test_google_provider_labels_every_resource(run):
    provider = run.one("pulumi:providers:gcp", "google").inputs
    labels = json.loads(provider["defaultLabels"]) if isinstance(provider["defaultLabels"], str) else provider["defaultLabels"]
    assert labels == {"app": "sd-gke", "environment": stack_config(run).environment, "managed-by": "pulumi"}


def test_components_follow_the_naming_rules(run):
    components = [r for r in run.resources if not r.custom]
    assert components
    for component in components:
        module, name = component.type.split(":")[1:]
        assert component.type.startswith("sdgke:") and module.islower() and name[0].isupper()
        for child in run.children(component):
            assert child.name.startswith(f"{component.name}-"), child.urn


def test_every_resource_but_the_provider_sits_under_a_component(run):
    top_level = [r for r in run.resources if r.parent and r.parent.endswith("::sd-gke-" + run.stack)]
    assert all(r.type.startswith(("sdgke:", "pulumi:providers:")) for r in top_level), [r.urn for r in top_level]


def test_run_resets_state_between_runs():
    first = mockrun.run("dev")
    second = mockrun.run("dev")
    assert sorted(r.urn for r in first.resources) == sorted(r.urn for r in second.resources)
    assert len(first.resources) == len(second.resources)


# Control-plane endpoints: private nodes; the DNS-based endpoint, authorized by IAM, for every stack; prod's IP
# endpoint private (https://cloud.google.com/kubernetes-engine/docs/concepts/network-isolation).
def test_prod_keeps_its_ip_endpoint_inside_the_vpc_and_dev_may_use_it_from_outside(runs):
    assert runs["dev"].one(CLUSTER).inputs["privateClusterConfig"] == {
        "enablePrivateNodes": True, "enablePrivateEndpoint": False, "masterIpv4CidrBlock": "172.16.0.0/28"}
    assert runs["prod"].one(CLUSTER).inputs["privateClusterConfig"] == {
        "enablePrivateNodes": True, "enablePrivateEndpoint": True, "masterIpv4CidrBlock": "172.16.0.16/28"}


def test_every_stack_opens_the_dns_endpoint_to_callers_outside_the_vpc(run):
    assert run.one(CLUSTER).inputs["controlPlaneEndpointsConfig"] == {"dnsEndpointConfig": {"allowExternalTraffic": True}}


def test_every_get_credentials_the_docs_and_workflows_give_uses_the_dns_endpoint():
    """Without --dns-endpoint, get-credentials writes the IP endpoint, which in prod answers inside the VPC only."""
    texts = [ROOT / "README.md", *sorted((ROOT / ".github" / "workflows").glob("*.yml"))]
    commands = [line for path in texts for line in path.read_text().splitlines() if "clusters get-credentials" in line]
    assert commands and [c for c in commands if "--dns-endpoint" not in c] == []


def test_master_authorized_networks_list_every_configured_block(run_stack):
    run = run_stack("dev", network={"subnetCidr": "10.10.0.0/20", "podsCidr": "10.16.0.0/14",
                                    "servicesCidr": "10.20.0.0/20", "masterCidr": "172.16.0.0/28",
                                    "masterAuthorizedCidrs": ["203.0.113.0/24", "198.51.100.7/32"]})
    assert run.one(CLUSTER).inputs["masterAuthorizedNetworksConfig"] == {
        "cidrBlocks": [{"cidrBlock": "203.0.113.0/24"}, {"cidrBlock": "198.51.100.7/32"}]}


# Auto-repair recreates unhealthy nodes, auto-upgrade follows the release channel
# (https://cloud.google.com/kubernetes-engine/docs/how-to/node-auto-repair).
def test_both_pools_repair_and_upgrade_their_nodes(run):
    for pool in (gpu_pool(run), system_pool(run)):
        assert pool["management"] == {"autoRepair": True, "autoUpgrade": True}


# Surge upgrades: maxSurge extra nodes are added before maxUnavailable old ones go
# (https://cloud.google.com/kubernetes-engine/docs/concepts/node-pool-upgrade-strategies#surge).
def test_gpu_pool_upgrades_add_one_node_before_removing_any(run):
    assert gpu_pool(run)["upgradeSettings"] == {"strategy": "SURGE", "maxSurge": 1, "maxUnavailable": 0}


def test_system_pool_balances_its_nodes_across_zones(run):
    assert system_pool(run)["autoscaling"]["locationPolicy"] == "BALANCED"
