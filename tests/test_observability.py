"""components/observability.py: every body it registers is a valid API request, as Google's discovery
documents define it (the checker of tests/fakes/compute/schema.py: unknown fields, enums, formats, required)."""

from __future__ import annotations

import io
import json
import re

import pytest

from components import config
from components.cluster import MONITORING_COMPONENTS
from components.observability import (
    ATTACHER,
    STEP_FAILURES_METRIC,
    STEP_SECONDS_METRIC,
    WEBUI,
    GpuCapacity,
    QueueSubscriptions,
    alert_policies,
    dashboard,
    log_metrics,
)
from images.attacher.attacher import log as agent_log
from tests.fakes.compute.schema import SchemaChecker, discovery_document
from tools.startup import recording

ALERT = "gcp:monitoring/alertPolicy:AlertPolicy"
DASHBOARD = "gcp:monitoring/dashboard:Dashboard"
CHANNEL = "gcp:monitoring/notificationChannel:NotificationChannel"
METRIC = "gcp:logging/metric:Metric"
TERRAFORM_ONLY = ("project",)
"""Inputs of the Pulumi resources that are the request's URL, not its body."""


def problems(api: str, method: str, body: dict) -> list[str]:
    checker = SchemaChecker(discovery_document(api))
    return checker.check_request(checker.methods[method], {}, {}, body)


def body(inputs: dict) -> dict:
    return {k: v for k, v in inputs.items() if k not in TERRAFORM_ONLY}


def camel(value):
    """snake_case keys as the SDK sends them (camelCase), for bodies built outside a Pulumi run."""
    if isinstance(value, dict):
        return {re.sub(r"_([a-z])", lambda m: m[1].upper(), k): camel(v) for k, v in value.items()}
    if isinstance(value, list):
        return [camel(v) for v in value]
    return value


def test_the_dashboard_is_a_monitoring_v1_dashboard(run):
    sent = json.loads(run.one(DASHBOARD).inputs["dashboardJson"])
    assert problems("monitoring.v1", "monitoring.projects.dashboards.create", sent) == []


def test_the_checker_refuses_a_field_the_api_does_not_know():
    sent = dashboard("dev", 300, GpuCapacity(2, 1), True)
    sent["mosaicLayout"]["tiles"][0]["widget"]["xyChart"]["dataSet"] = []
    assert problems("monitoring.v1", "monitoring.projects.dashboards.create", sent) == [
        "request monitoring.projects.dashboards.create: body.mosaicLayout.tiles[0].widget.xyChart: unknown field "
        "'dataSet' (did you mean 'dataSets'?)"]


def test_every_alert_policy_is_a_monitoring_v3_alert_policy(run):
    sent = run.of_type(ALERT)
    assert len(sent) == 5  # the dead-letter alert with the job queue (on in both stacks)
    assert [p for r in sent for p in problems("monitoring.v3", "monitoring.projects.alertPolicies.create", body(r.inputs))] == []


def test_the_notification_channel_is_a_monitoring_v3_channel(runs):
    channel = runs["dev"].one(CHANNEL)
    assert problems("monitoring.v3", "monitoring.projects.notificationChannels.create", body(channel.inputs)) == []
    assert channel.inputs["type"] == "email" and channel.inputs["labels"] == {"email_address": "sd-gke-dev-alerts@example.com"}


def test_every_log_based_metric_is_a_logging_v2_log_metric(run):
    sent = run.of_type(METRIC)
    assert len(sent) == 4
    assert [p for r in sent for p in problems("logging.v2", "logging.projects.metrics.create", body(r.inputs))] == []


def test_the_dead_letter_alert_and_backlog_chart_are_valid_when_there_is_a_queue():
    queue = QueueSubscriptions(work="sd-requests-webui", dead_letter="sd-requests-dead-letter")
    policy = camel(alert_policies("prod", 300, GpuCapacity(10, 1), True, queue)["dead-letter-not-empty"])
    assert problems("monitoring.v3", "monitoring.projects.alertPolicies.create", policy) == []
    assert 'resource.labels.subscription_id="sd-requests-dead-letter"' in policy["conditions"][0]["conditionThreshold"]["filter"]
    tiles = dashboard("prod", 300, GpuCapacity(10, 1), True, queue)["mosaicLayout"]["tiles"]
    assert "Queue backlog" in [t["widget"]["title"] for t in tiles]
    assert problems("monitoring.v1", "monitoring.projects.dashboards.create",
                    dashboard("prod", 300, GpuCapacity(10, 1), True, queue)) == []


def test_without_a_queue_there_is_no_dead_letter_alert():
    assert "dead-letter-not-empty" not in alert_policies("dev", 300, GpuCapacity(2, 1), True)


def test_every_alert_pages_the_configured_channel(runs):
    channel = runs["dev"].one(CHANNEL)
    for policy in runs["dev"].of_type(ALERT):
        assert policy.property_dependencies["notificationChannels"] == [channel.urn], policy.name
        assert len(policy.inputs["notificationChannels"]) == 1, policy.name


def test_without_an_address_there_is_no_channel_and_the_alerts_notify_nobody(run_stack):
    """Outside prod only: prod refuses a stack without an address (components/config/rules.py, _check_alerting)."""
    quiet = run_stack("dev", observability={"coldStartBudgetSeconds": 300})
    assert quiet.of_type(CHANNEL) == []
    assert quiet.of_type(ALERT) and all(not p.inputs.get("notificationChannels") for p in quiet.of_type(ALERT))


def test_alerts_on_log_based_metrics_wait_for_the_metrics(run):
    metrics = {m.urn for m in run.of_type(METRIC)}
    for policy in run.of_type(ALERT):
        assert metrics <= set(policy.dependencies), policy.name


def test_the_cold_start_alert_waits_the_configured_budget(run_stack):
    run = run_stack("dev", observability={"notificationEmail": "oncall@sd-gke.dev", "coldStartBudgetSeconds": 420})
    condition = run.one(ALERT, "sd-cold-start-over-budget").inputs["conditions"][0]["conditionPrometheusQueryLanguage"]
    assert condition["duration"] == "420s"
    assert condition["query"] == ('(max(kube_deployment_spec_replicas{namespace="sd-webui",deployment="webui"}) - '
                                  'max(kube_deployment_status_replicas_available{namespace="sd-webui",deployment="webui"})) > 0')


def test_the_gpu_pool_alert_fires_at_the_configured_maximum(runs):
    condition = runs["prod"].one(ALERT, "sd-gpu-pool-at-max").inputs["conditions"][0]["conditionPrometheusQueryLanguage"]
    assert condition["query"].endswith(">= 10")


def test_the_cluster_collects_what_the_dashboard_reads(run):
    monitoring = run.one("gcp:container/cluster:Cluster").inputs["monitoringConfig"]
    assert monitoring["managedPrometheus"] == {"enabled": True}
    assert set(monitoring["enableComponents"]) == set(MONITORING_COMPONENTS) >= {"DCGM", "POD", "DEPLOYMENT", "DAEMONSET"}


def test_the_monitoring_components_are_container_v1_values():
    schemas = discovery_document("container.v1")["schemas"]
    allowed = schemas["MonitoringComponentConfig"]["properties"]["enableComponents"]["items"]["enum"]
    assert set(MONITORING_COMPONENTS) <= set(allowed)


def test_the_workloads_the_metrics_select_are_the_ones_the_program_registers(runs):
    objects = {(r.type, r.inputs["metadata"].get("namespace"), r.inputs["metadata"]["name"]): r
               for r in runs["dev"].kubernetes_objects() if "metadata" in r.inputs}
    for kind, workload in (("kubernetes:apps/v1:Deployment", WEBUI), ("kubernetes:apps/v1:DaemonSet", ATTACHER)):
        found = objects[(kind, workload.namespace, workload.name)]
        assert workload.container in [c["name"] for c in found.inputs["spec"]["template"]["spec"]["containers"]]
    assert (recording.WEBUI_NAMESPACE, recording.WEBUI_CONTAINER) == (WEBUI.namespace, WEBUI.container)
    assert (recording.ATTACHER_NAMESPACE, recording.ATTACHER_CONTAINER) == (ATTACHER.namespace, ATTACHER.container)


def test_the_step_metrics_read_fields_the_agent_writes(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    with pytest.raises(agent_log.StepFailed), agent_log.step("attach_disk", disk="d"):
        raise RuntimeError("quota")
    line = json.loads(out.getvalue())
    metrics = log_metrics(disk_attacher=True)
    extracted = {*metrics["step-duration"]["label_extractors"].values(), metrics["step-duration"]["value_extractor"]}
    assert {re.fullmatch(r"EXTRACT\(jsonPayload\.(\w+)\)", e)[1] for e in extracted} <= set(line)
    for spec in (metrics["step-duration"], metrics["step-failures"]):
        for field, value in re.findall(r'jsonPayload\.(\w+)="(\w+)"', spec["filter"]):
            assert line[field] == value
    assert {STEP_SECONDS_METRIC, STEP_FAILURES_METRIC} == {metrics["step-duration"]["name"], metrics["step-failures"]["name"]}


@pytest.mark.parametrize("value, allowed", [
    ("not-an-address", "an email address such as oncall@your-domain"),
    (42, "an email address such as oncall@your-domain"),
])
def test_a_bad_notification_address_is_named(value, allowed):
    with pytest.raises(config.ConfigError) as err:
        config.parse({**minimal(), "observability": {"notificationEmail": value}})
    assert f"observability.notificationEmail: {json.dumps(value)} is not allowed; expected {allowed}" in err.value.problems


def test_the_cold_start_budget_is_bounded():
    with pytest.raises(config.ConfigError) as err:
        config.parse({**minimal(), "observability": {"coldStartBudgetSeconds": 5}})
    assert err.value.problems == ["observability.coldStartBudgetSeconds: 5 is not allowed; expected an integer from 60 to 3600"]


def test_an_unknown_observability_key_is_named():
    with pytest.raises(config.ConfigError) as err:
        config.parse({**minimal(), "observability": {"email": "a@b.io"}})
    assert err.value.problems == [
        "observability.email: unknown key; allowed keys are coldStartBudgetSeconds, enabled, notificationEmail"]


def minimal(environment: str = "dev") -> dict:
    return {"project": "sd-gke-test", "region": "us-central1", "zones": ["us-central1-a"], "environment": environment}


def test_the_stack_with_the_job_queue_alerts_on_its_dead_letters_and_charts_its_backlog(run):
    alert = run.one("gcp:monitoring/alertPolicy:AlertPolicy", "sd-dead-letter-not-empty").inputs
    assert 'resource.labels.subscription_id="sd-jobs-dead-letter"' in alert["conditions"][0]["conditionThreshold"]["filter"]
    board = json.loads(run.one("gcp:monitoring/dashboard:Dashboard").inputs["dashboardJson"])
    assert 'resource.labels.subscription_id="sd-jobs"' in str(board)


def test_without_the_job_queue_no_dead_letter_alert_is_registered(run_stack):
    run = run_stack("dev", jobs={"enabled": False})
    assert "sd-dead-letter-not-empty" not in {r.name for r in run.of_type("gcp:monitoring/alertPolicy:AlertPolicy")}
