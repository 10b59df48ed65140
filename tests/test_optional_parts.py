"""Optional parts (gateway, observability, jobs): what turning one off refuses, and that it leaves nothing behind.

The inventory of each combination is tests/test_inventory.py's; here: the config rules, the cluster's own settings,
the request queue's NetworkPolicy, the APIs, and the policy pack on every combination (tests/variants.py).
"""

from __future__ import annotations

import json
import re

import pytest

from components import apis as apis_module
from components import config
from tests.conftest import ROOT
from tests.test_config import problems_of, stack_values
from tests.test_plan import unmet_apis
from tests.variants import PART_IDS, PART_VARIANTS, parts_variant
from tools import policy_check
from tools.plan import without_parts

CLUSTER = "gcp:container/cluster:Cluster"
GATEWAY_OFF = {"enabled": False}


def _without_email(values: dict) -> dict:
    values["observability"] = {k: v for k, v in values["observability"].items() if k != "notificationEmail"}
    return values


# --- config -------------------------------------------------------------------------------------------------------

def test_gateway_and_observability_are_on_and_jobs_off_unless_the_stack_says():
    values = stack_values()
    for part in config.PARTS:
        values.pop(part)
    assert config.parse(values).parts == ("gateway", "observability")


def test_a_public_webui_with_the_gateway_off_is_refused_naming_both_keys():
    assert problems_of(gateway=GATEWAY_OFF, webui={"public": True}) == [
        "webui.public: true is not allowed; expected false or no value while gateway.enabled is false "
        "(it acts only with the gateway on); set gateway.enabled: true, or remove webui.public"]


@pytest.mark.parametrize("key, value", [("hostname", "sd.example.com"), ("certificateMap", "sd-map"),
                                        ("iapClientId", "client.apps.googleusercontent.com"),
                                        ("iapSecretName", "iap-secret")])
def test_a_gateway_setting_with_the_gateway_off_is_refused_naming_both_keys(key, value):
    problem, = problems_of(gateway={"enabled": False, key: value})
    assert problem.startswith(f'gateway.{key}: "{value}" is not allowed; expected false or no value while '
                              "gateway.enabled is false")


def test_a_notification_email_with_observability_off_is_refused_naming_both_keys():
    assert problems_of(observability={"enabled": False}) == [
        'observability.notificationEmail: "sd-gke-dev-alerts@example.com" is not allowed; expected false or no value '
        "while observability.enabled is false (it acts only with the observability on); set observability.enabled: "
        "true, or remove observability.notificationEmail"]


def test_keys_that_need_an_off_part_are_reported_with_every_other_problem():
    problems = problems_of(gateway=GATEWAY_OFF, webui={"public": True}, observability={"enabled": False},
                           region="Central")
    assert [p.split(":")[0] for p in problems] == ["region", "webui.public", "observability.notificationEmail"]


def test_a_part_switch_that_is_not_a_boolean_is_named():
    assert problems_of(gateway={"enabled": "no"}) == ['gateway.enabled: "no" is not allowed; expected true or false']


def test_a_public_webui_with_the_gateway_off_asks_for_the_gateway_not_for_its_tls():
    problems = problems_of(gateway=GATEWAY_OFF, webui={"public": True})
    assert not any("needs TLS and IAP" in p for p in problems)


def test_an_off_parts_tuning_keys_may_stay():
    values = _without_email(stack_values())
    values["gateway"] = {"enabled": False, "proxyOnlyCidr": "10.10.0.0/23"}  # inside subnetCidr: unused, so unchecked
    values["observability"]["enabled"] = False
    values["jobs"]["enabled"] = False
    assert config.parse(values).parts == ()


def test_an_off_parts_key_left_empty_is_no_value():
    values = _without_email(stack_values())
    values["gateway"] = {"enabled": False, "iapClientId": ""}
    assert "gateway" not in config.parse(values).parts


def test_turning_parts_off_as_the_plan_does_drops_the_keys_that_need_them():
    values = stack_values()
    values["webui"]["public"] = True
    values["gateway"].update(hostname="sd.example.com", certificateMap="sd-map", iapClientId="client",
                             iapSecretName="iap-secret")
    raw = {f"{config.PROJECT}:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}
    parsed = config.parse(config.decode(without_parts(raw, ["gateway", "observability"])))
    assert parsed.parts == ("jobs",)
    assert parsed.observability.notification_email is None and not parsed.webui.public


# --- what the program registers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("stack, off", PART_VARIANTS, ids=PART_IDS)
def test_the_policy_pack_passes_on_every_combination(stack, off):
    assert [str(v) for v in policy_check.evaluate(parts_variant(stack, off), policy_check.stack_config(stack))] == []


@pytest.mark.parametrize("stack, off", PART_VARIANTS, ids=PART_IDS)
def test_every_enabled_api_is_called_by_a_resource_or_the_cluster(stack, off):
    run = parts_variant(stack, off)
    called = {api for r in run.resources for api in apis_module.RESOURCE_APIS.get(r.type, ())}
    enabled = {s.inputs["service"] for s in run.of_type("gcp:projects/service:Service")}
    assert enabled - called - set(apis_module.CLUSTER_APIS) == set()
    assert unmet_apis(run.to_json()) == []


def test_apis_follow_the_parts():
    assert set(apis_module.required_apis(("jobs",))) - set(apis_module.required_apis(())) == {
        "pubsub.googleapis.com", "storage.googleapis.com"}
    assert apis_module.required_apis(("gateway", "observability")) == apis_module.required_apis(())


def test_without_the_gateway_the_request_queue_admits_no_load_balancer_and_no_other_source():
    policy = parts_variant("dev", ("gateway",)).one("kubernetes:networking.k8s.io/v1:NetworkPolicy",
                                               "request-queue-network-policy").inputs["spec"]
    assert all(rule.get("from") for rule in policy["ingress"]), "a rule without `from` admits every source"
    assert not [peer for rule in policy["ingress"] for peer in rule["from"] if "ipBlock" in peer]


def test_without_the_gateway_the_cluster_runs_no_gateway_controller():
    cluster = parts_variant("dev", ("gateway",)).one(CLUSTER).inputs
    assert cluster["gatewayApiConfig"] == {"channel": "CHANNEL_DISABLED"}


def test_without_observability_the_cluster_collects_only_system_metrics():
    cluster = parts_variant("dev", ("observability",)).one(CLUSTER).inputs
    assert cluster["monitoringConfig"] == {"enableComponents": ["SYSTEM_COMPONENTS"],
                                           "managedPrometheus": {"enabled": False}}


def test_with_observability_the_cluster_collects_what_the_dashboard_reads():
    cluster = parts_variant("dev", ("gateway", "jobs")).one(CLUSTER).inputs
    assert cluster["monitoringConfig"]["managedPrometheus"] == {"enabled": True}
    assert {"DCGM", "POD", "DEPLOYMENT", "DAEMONSET"} <= set(cluster["monitoringConfig"]["enableComponents"])


def test_the_readmes_resource_counts_are_the_plans():
    readme = (ROOT / "README.md").read_text()
    full, smallest = (int(re.search(rf"^\| {label}[^|]*\| (\d+) \|", readme, re.M).group(1))
                      for label in ("everything on", "smallest"))
    assert (full, smallest) == (len(parts_variant("dev", ()).resources), len(parts_variant("dev", config.PARTS).resources))
    for part in config.PARTS:
        added = int(re.search(rf"^\| \+ `{part}\.enabled` \| \+(\d+):", readme, re.M).group(1))
        alone = tuple(p for p in config.PARTS if p != part)
        assert added == len(parts_variant("dev", alone).resources) - smallest, part
