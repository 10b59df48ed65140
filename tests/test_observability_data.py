"""Every alert and chart of every plan variant reads series its cluster would export (tests/exported_series.py),
and the GPU-pool alert fires at the sum of every GPU pool's maximum (issue 18 item 2)."""

from __future__ import annotations

import copy
import json

import pytest

from components.observability import Queries
from tests import exported_series
from tests.exported_series import Exported, Selector, Series, filter_selector, promql_selectors
from tests.variants import IDS, VARIANTS, variant

ALERT = "gcp:monitoring/alertPolicy:AlertPolicy"
DASHBOARD = "gcp:monitoring/dashboard:Dashboard"
GPU_NODES_ALERT = "sd-gpu-pool-at-max"


def alert_queries(run) -> list[tuple[str, list[Selector]]]:
    out = []
    for policy in run.of_type(ALERT):
        for condition in policy.inputs["conditions"]:
            if "conditionPrometheusQueryLanguage" in condition:
                out.append((policy.name, promql_selectors(condition["conditionPrometheusQueryLanguage"]["query"])))
            else:
                out.append((policy.name, [filter_selector(condition["conditionThreshold"]["filter"])]))
    return out


def chart_queries(run) -> list[tuple[str, list[Selector]]]:
    board = json.loads(run.one(DASHBOARD).inputs["dashboardJson"])
    out = []
    for tile in board["mosaicLayout"]["tiles"]:
        for data_set in tile["widget"].get("xyChart", {}).get("dataSets", []):
            query = data_set["timeSeriesQuery"]
            selectors = (promql_selectors(query["prometheusQuery"]) if "prometheusQuery" in query
                         else [filter_selector(query["timeSeriesFilter"]["filter"])])
            out.append((tile["widget"]["title"], selectors))
    return out


def queries_without_data(run) -> list[str]:
    series = exported_series.exported(run)
    return [f"{where}: {missing}" for where, selectors in alert_queries(run) + chart_queries(run)
            for missing in series.without_data(selectors)]


@pytest.mark.parametrize("stack, delivery, capacity", VARIANTS, ids=IDS)
def test_every_alert_and_chart_reads_series_the_variant_exports(stack, delivery, capacity):
    run = variant(stack, delivery, capacity)
    assert alert_queries(run) and chart_queries(run)
    assert queries_without_data(run) == []


def gpu_pools_maximum(run) -> int:
    pools = [p.inputs for p in run.of_type("gcp:container/nodePool:NodePool") if p.inputs["nodeConfig"].get("guestAccelerators")]
    return sum(p["autoscaling"]["totalMaxNodeCount"] for p in pools)


@pytest.mark.parametrize("stack, delivery, capacity", VARIANTS, ids=IDS)
def test_the_gpu_alert_and_chart_compare_gpu_nodes_with_every_pools_maximum(stack, delivery, capacity):
    run = variant(stack, delivery, capacity)
    maximum = gpu_pools_maximum(run)
    query = run.one(ALERT, GPU_NODES_ALERT).inputs["conditions"][0]["conditionPrometheusQueryLanguage"]["query"]
    assert query.endswith(f">= {maximum}")
    board = json.loads(run.one(DASHBOARD).inputs["dashboardJson"])
    thresholds = [t["value"] for tile in board["mosaicLayout"]["tiles"]
                  for t in tile["widget"].get("xyChart", {}).get("thresholds", [])]
    assert thresholds == [maximum]


def test_with_the_on_demand_fallback_the_maximum_is_both_pools():
    run = variant("prod", "daemonset", "spotFirst")
    assert len([p for p in run.of_type("gcp:container/nodePool:NodePool")
                if p.inputs["nodeConfig"].get("guestAccelerators")]) == 2
    assert gpu_pools_maximum(run) == 2 * variant("prod", "daemonset", "stack").one(
        "gcp:container/nodePool:NodePool", "sd-gpu").inputs["autoscaling"]["totalMaxNodeCount"]


def test_gpu_nodes_are_counted_from_each_gpu_not_from_a_workload():
    run = variant("dev", "secondaryBootDisk", "stack")
    query = run.one(ALERT, GPU_NODES_ALERT).inputs["conditions"][0]["conditionPrometheusQueryLanguage"]["query"]
    assert [s.metric for s in promql_selectors(query)] == ["DCGM_FI_DEV_GPU_UTIL"]


def test_without_the_disk_attacher_its_metrics_charts_and_alert_are_gone():
    run = variant("dev", "secondaryBootDisk", "stack")
    assert not any("attacher" in r.name for r in run.of_type(ALERT) + run.of_type("gcp:logging/metric:Metric"))
    assert not any("attacher" in title.lower() for title, _ in chart_queries(run))


# --- the model and the query readers themselves -----------------------------------------------

def test_a_query_on_a_daemonset_the_plan_lacks_has_no_data():
    run = variant("dev", "secondaryBootDisk", "stack")
    selectors = promql_selectors('max(kube_daemonset_status_desired_number_scheduled{namespace="sd-system",'
                                 'daemonset="disk-attacher"}) >= 2')
    assert exported_series.exported(run).without_data(selectors) == [
        "kube_daemonset_status_desired_number_scheduled{namespace='sd-system',daemonset='disk-attacher'}"]


def test_the_same_query_has_data_where_the_attacher_runs():
    run = variant("dev", "daemonset", "stack")
    selectors = promql_selectors('max(kube_daemonset_status_desired_number_scheduled{namespace="sd-system",'
                                 'daemonset="disk-attacher"})')
    assert exported_series.exported(run).without_data(selectors) == []


def test_a_log_metric_has_series_only_for_the_containers_its_filter_selects():
    run = variant("dev", "secondaryBootDisk", "stack")
    series = exported_series.exported(run)
    webui_errors = [s for s in series.series if s.metric == "logging.googleapis.com/user/sdgke/webui_errors"]
    assert {dict(s.labels)["namespace_name"] for s in webui_errors} == {"sd-webui"}


def test_promql_selectors_skip_functions_keywords_and_grouping_labels():
    query = 'sum by (node) (rate(foo{a="1", b=~"x.*"}[5m])) / on (node) group_left bar > 0 and baz'
    assert promql_selectors(query) == [Selector("foo", None, (("a", "=", "1"), ("b", "=~", "x.*"))),
                                       Selector("bar", None), Selector("baz", None)]


def test_a_filter_selects_its_metric_resource_and_resource_labels():
    selector = filter_selector('metric.type="m" AND resource.type="k8s_container" AND '
                               'resource.labels.namespace_name="ns" AND metric.label."step"="x"')
    assert selector == Selector("m", "k8s_container", (("namespace_name", "=", "ns"),))


def test_a_selector_matches_only_series_with_its_labels():
    exported = Exported([Series("m", None, (("namespace", "a"),))])
    assert exported.without_data([Selector("m", None, (("namespace", "=", "a"),))]) == []
    assert exported.without_data([Selector("m", None, (("namespace", "=", "b"),))]) == ["m{namespace='b'}"]
    assert exported.without_data([Selector("m", None, (("namespace", "!=", "a"),))]) == ["m{namespace!='a'}"]


def test_gpu_nodes_count_each_gpu_once_by_its_uuid_divided_by_the_gpus_of_a_node():
    assert Queries.gpu_nodes(1) == "count(count by (UUID) (DCGM_FI_DEV_GPU_UTIL))"
    assert Queries.gpu_nodes(4) == "count(count by (UUID) (DCGM_FI_DEV_GPU_UTIL)) / 4"


def test_without_the_dcgm_package_the_gpu_queries_have_no_data():
    run = copy.deepcopy(variant("dev", "daemonset", "stack"))
    monitoring = run.one("gcp:container/cluster:Cluster").inputs["monitoringConfig"]
    monitoring["enableComponents"] = [c for c in monitoring["enableComponents"] if c != "DCGM"]
    assert sorted(set(m.split(": ")[1] for m in queries_without_data(run))) == [
        "DCGM_FI_DEV_FB_FREE{}", "DCGM_FI_DEV_FB_USED{}", "DCGM_FI_DEV_GPU_UTIL{}"]
