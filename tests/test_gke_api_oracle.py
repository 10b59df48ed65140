"""Every GKE enum value the program sends is one the container.v1 API defines.

The oracle is Google's own discovery document, shipped in google-api-python-client.
"""

from __future__ import annotations

import json
from pathlib import Path

import googleapiclient
import pytest

from components import config

DISCOVERY = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "container.v1.json"
SCHEMAS = json.loads(DISCOVERY.read_text())["schemas"]

# (resource type, path in the registered inputs; * walks a list) -> (API schema, field)
SENT_ENUMS = [
    ("gcp:container/cluster:Cluster", "clusterAutoscaling.autoscalingProfile", "ClusterAutoscaling", "autoscalingProfile"),
    ("gcp:container/cluster:Cluster", "releaseChannel.channel", "ReleaseChannel", "channel"),
    ("gcp:container/cluster:Cluster", "gatewayApiConfig.channel", "GatewayAPIConfig", "channel"),
    ("gcp:container/cluster:Cluster", "nodeConfig.workloadMetadataConfig.mode", "WorkloadMetadataConfig", "mode"),
    ("gcp:container/nodePool:NodePool", "autoscaling.locationPolicy", "NodePoolAutoscaling", "locationPolicy"),
    ("gcp:container/nodePool:NodePool", "nodeConfig.workloadMetadataConfig.mode", "WorkloadMetadataConfig", "mode"),
    ("gcp:container/nodePool:NodePool", "nodeConfig.guestAccelerators.*.gpuDriverInstallationConfig.gpuDriverVersion",
     "GPUDriverInstallationConfig", "gpuDriverVersion"),
    ("gcp:container/nodePool:NodePool", "nodeConfig.taints.*.effect", "NodeTaint", "effect"),
    ("gcp:container/nodePool:NodePool", "upgradeSettings.strategy", "UpgradeSettings", "strategy"),
]


def api_enum(schema: str, field: str) -> list[str]:
    values = SCHEMAS[schema]["properties"][field].get("enum")
    assert values, f"{schema}.{field} is not an enum in container.v1"
    return values


def values_at(obj, path: str) -> list:
    parts = path.split(".")
    found = [obj]
    for part in parts:
        nxt = []
        for item in found:
            if part == "*" and isinstance(item, list):
                nxt.extend(item)
            elif isinstance(item, dict) and part in item:
                nxt.append(item[part])
        found = nxt
    return found


@pytest.mark.parametrize("type_, path, schema, field", SENT_ENUMS, ids=[f"{s}.{f}" for _, _, s, f in SENT_ENUMS])
def test_sent_value_is_defined_by_the_api(run, type_, path, schema, field):
    sent = [v for r in run.of_type(type_) for v in values_at(r.inputs, path)]
    assert sent, f"the program sends no {path} on {type_}"
    allowed = api_enum(schema, field)
    assert [v for v in sent if v not in allowed] == []


@pytest.mark.parametrize("allowed_in_config, schema, field", [
    (config.RELEASE_CHANNELS, "ReleaseChannel", "channel"),
    (config.LOCATION_POLICIES, "NodePoolAutoscaling", "locationPolicy"),
    (config.GPU_DRIVER_VERSIONS, "GPUDriverInstallationConfig", "gpuDriverVersion"),
])
def test_every_value_config_accepts_is_defined_by_the_api(allowed_in_config, schema, field):
    assert set(allowed_in_config) <= set(api_enum(schema, field))


def test_image_streaming_and_secondary_boot_disks_exist_in_the_api():
    """gcfsConfig.enabled is what the provider sends for Image Streaming."""
    assert SCHEMAS["GcfsConfig"]["properties"]["enabled"]["type"] == "boolean"
    assert "gcfsConfig" in SCHEMAS["NodeConfig"]["properties"]
    assert "gcfsConfig" in SCHEMAS["NodeConfigDefaults"]["properties"]



def keys_at(obj: dict, prefix: str = "") -> list[str]:
    """Every key path under obj, dotted: what the program sends, field by field."""
    out = []
    for key, value in obj.items():
        out.append(prefix + key)
        if isinstance(value, dict):
            out += keys_at(value, f"{prefix}{key}.")
    return out


def api_field(schema: str, path: str) -> dict | None:
    for part in path.split("."):
        prop = SCHEMAS[schema]["properties"].get(part)
        if prop is None:
            return None
        schema = prop.get("$ref", schema)
    return prop


@pytest.mark.parametrize(("field", "schema"), [("controlPlaneEndpointsConfig", "ControlPlaneEndpointsConfig"),
                                               ("privateClusterConfig", "PrivateClusterConfig")])
def test_the_control_plane_endpoint_fields_sent_are_the_apis(run, field, schema):
    """The DNS endpoint and the private IP endpoint (issue 18 item 7) are set by fields the API has, none of them
    output-only, and not both ways of switching the public IP endpoint (IPEndpointsConfig.enablePublicEndpoint and
    PrivateClusterConfig.enablePrivateEndpoint: "invalid to specify both")."""
    sent = run.one("gcp:container/cluster:Cluster").inputs[field]
    for path in keys_at(sent):
        prop = api_field(schema, path)
        assert prop is not None, f"{schema} has no {path}"
        assert not prop.get("description", "").startswith("Output only"), f"{schema}.{path} is output-only"
    cluster = run.one("gcp:container/cluster:Cluster").inputs
    assert not ("enablePrivateEndpoint" in cluster["privateClusterConfig"]
                and "enablePublicEndpoint" in (cluster["controlPlaneEndpointsConfig"].get("ipEndpointsConfig") or {}))
