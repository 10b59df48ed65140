"""A value its own check refuses is reported once, by its own key: the cross-key rules that read it
(components/config/rules.py) skip it (`Reader.valid`) rather than judge it again or crash on it."""

from __future__ import annotations

import pytest

from components import config
from tests.conftest import ROOT
from tests.test_config_bounds import MINIMAL, PROD, problems
from tests.test_config_queue import WEEKDAYS

REFUSED_ONCE = [
    pytest.param({"jobs": {"minRetryBackoffSeconds": "60"}},
                 'jobs.minRetryBackoffSeconds: "60" is not allowed; expected an integer from 0 to 600',
                 id="backoff-compared-with-its-maximum"),
    pytest.param({"runtime": {"recipe": 5}},
                 "runtime.recipe: 5 is not allowed; expected a relative path to a .yaml recipe inside the project",
                 id="recipe-looked-for-under-the-root"),
    pytest.param({"gpuPool": {"acceleratorType": "nvidia-tesla-a100", "machineType": "a2-highgpu-1g",
                              "acceleratorCount": "1"}},
                 'gpuPool.acceleratorCount: "1" is not allowed; expected an integer from 1 to 8',
                 id="count-compared-with-the-machines-built-in-gpus"),
    pytest.param({"gpuPool": {"spot": 0, "onDemandFallback": True}},
                 "gpuPool.spot: 0 is not allowed; expected true or false", id="spot-read-by-the-fallback"),
    pytest.param({"gpuPool": {"spot": False, "onDemandFallback": 1}},
                 "gpuPool.onDemandFallback: 1 is not allowed; expected true or false", id="fallback-without-spot"),
    pytest.param({"runtime": {"delivery": "secondaryBootDisk", "diskType": "pd-extreme"}},
                 'runtime.diskType: "pd-extreme" is not allowed; expected one of pd-balanced, pd-ssd',
                 id="runtime-disk-compared-with-the-boot-disk"),
    pytest.param({"runtime": {"delivery": "secondaryBootDisk", "diskType": "pd-balanced"},
                  "gpuPool": {"diskType": "pd-extreme"}},
                 'gpuPool.diskType: "pd-extreme" is not allowed; expected one of pd-balanced, pd-ssd, pd-standard',
                 id="boot-disk-compared-with-the-runtime-disk"),
    pytest.param({"cluster": {"minMasterVersion": "latest"}, "gpuPool": {"spot": True, "onDemandFallback": True}},
                 'cluster.minMasterVersion: "latest" is not allowed; expected a GKE version such as 1.33 or '
                 "1.33.5-gke.1000 with minor 1.30 to 1.37", id="version-compared-with-what-the-fallback-needs"),
    pytest.param({"autoscaling": {"minReplicas": "2"}},
                 'autoscaling.minReplicas: "2" is not allowed; expected an integer from 0 to 100',
                 id="minimum-judged-outside-prod"),
    pytest.param({"environment": "staging", "autoscaling": {"minReplicas": 1}},
                 'environment: "staging" is not allowed; expected one of dev, prod', id="environment-of-the-minimum"),
    pytest.param({"autoscaling": {"minReplicas": "0", "warmSchedules": [WEEKDAYS]}},
                 'autoscaling.minReplicas: "0" is not allowed; expected an integer from 0 to 100',
                 id="minimum-bounding-the-schedules"),
    pytest.param({"autoscaling": {"maxReplicas": "2", "warmSchedules": [WEEKDAYS]}},
                 'autoscaling.maxReplicas: "2" is not allowed; expected an integer from 1 to 100',
                 id="maximum-bounding-the-schedules"),
    pytest.param({"autoscaling": {"maxReplicas": 1, "warmSchedules": ["x", {**WEEKDAYS, "replicas": 3}]}},
                 'autoscaling.warmSchedules[0]: "x" is not allowed; expected an object with keys timezone, start, end, '
                 "replicas", id="schedules-with-a-refused-one"),
    pytest.param({"gpuPool": {"machineType": "g2-standard-8!", "diskType": "pd-standard"}},
                 'gpuPool.machineType: "g2-standard-8!" is not allowed; expected a machine type such as e2-standard-4',
                 id="machine-whose-disk-types-are-looked-up"),
    pytest.param({"systemPool": {"machineType": "c4-standard-4!"}},
                 'systemPool.machineType: "c4-standard-4!" is not allowed; expected a machine type such as '
                 "e2-standard-4", id="system-machine-whose-disk-types-are-looked-up"),
    pytest.param({"cluster": {"minMasterVersion": "1.30"}, "gpuPool": {"spot": True, "onDemandFallback": 1}},
                 "gpuPool.onDemandFallback: 1 is not allowed; expected true or false",
                 id="fallback-whose-version-need-is-checked"),
    pytest.param({"webui": {"public": True}, "gateway": {"enabled": "yes"}},
                 'gateway.enabled: "yes" is not allowed; expected true or false', id="switch-of-a-public-gateway"),
    pytest.param({"network": {"subnetCidr": "10.24.0.0/20"}, "gateway": {"proxyOnlyCidr": "10.0.0.0/8"}},
                 'gateway.proxyOnlyCidr: "10.0.0.0/8" is not allowed; expected an IPv4 CIDR block with a prefix length '
                 "from /23 to /26", id="proxy-only-range-not-compared-in-its-default-place"),
    pytest.param({"network": {"subnetCidr": "10.24.0.0/20"}, "gateway": {"enabled": "yes"}},
                 'gateway.enabled: "yes" is not allowed; expected true or false', id="switch-of-the-proxy-only-range"),
    pytest.param({"environment": "prod", "observability": {"notificationEmail": "bogus"}},
                 'observability.notificationEmail: "bogus" is not allowed; expected an email address such as '
                 "oncall@your-domain", id="prods-email-not-also-missing"),
    pytest.param({"environment": "prod", "observability": {"enabled": "yes"}},
                 'observability.enabled: "yes" is not allowed; expected true or false', id="switch-of-prods-alerts"),
    pytest.param({"gpuPool": {"machineType": 5}},
                 "gpuPool.machineType: 5 is not allowed; expected a machine type such as e2-standard-4",
                 id="machine-that-is-not-text"),
]


@pytest.mark.parametrize(("sections", "problem"), REFUSED_ONCE)
def test_a_refused_value_is_reported_once_by_its_own_key(sections, problem):
    assert problems(**sections) == [problem]


def test_a_retry_backoff_whose_minimum_equals_its_maximum_is_accepted():
    jobs = config.parse({**MINIMAL, "jobs": {"minRetryBackoffSeconds": 60, "maxRetryBackoffSeconds": 60}}).jobs
    assert (jobs.min_retry_backoff_seconds, jobs.max_retry_backoff_seconds) == (60, 60)


def test_a_warm_schedule_at_the_minimum_replicas_is_accepted():
    sections = {**PROD, "autoscaling": {"minReplicas": 2, "warmSchedules": [{**WEEKDAYS, "replicas": 2}]}}
    assert config.parse({**MINIMAL, **sections}).autoscaling.warm_schedules[0].replicas == 2


def test_a_recipe_that_is_not_text_is_not_looked_for_under_the_root():
    with pytest.raises(config.ConfigError) as err:
        config.parse({**MINIMAL, "runtime": {"recipe": 5}}, ROOT)
    assert err.value.problems == [
        "runtime.recipe: 5 is not allowed; expected a relative path to a .yaml recipe inside the project"]
