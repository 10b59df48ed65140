"""Stack config of the request queue (`queue`) and of warm schedules (`autoscaling.warmSchedules`): every bad
value is named with its key, the value and what is allowed."""

from __future__ import annotations

import json

import pytest

from components import config
from tests.test_config_bounds import MINIMAL

WEEKDAYS = {"timezone": "Europe/Berlin", "start": "0 9 * * 1-5", "end": "0 18 * * 1-5", "replicas": 1}
CRON = ('a 5-field cron expression (minute hour day-of-month month day-of-week) such as "0 9 * * MON-FRI", '
        "each number within 0-59, 0-23, 1-31, 1-12, 0-7")


def problems(**sections) -> list[str]:
    with pytest.raises(config.ConfigError) as err:
        config.parse({**MINIMAL, **sections})
    return err.value.problems


def schedules(*items: dict, **autoscaling) -> dict:
    return {"autoscaling": {"warmSchedules": list(items), **autoscaling}}


# --- warm schedules -------------------------------------------------------------------------

@pytest.mark.parametrize("start, end", [("0 9 * * 1-5", "0 18 * * 1-5"), ("30 7 * * MON-FRI", "0 12 * * SAT"),
                                        ("*/15 8-17 * * *", "0 18 1,15 JAN-MAR 0"), ("0 0 1 12 7", "59 23 31 12 7")])
def test_five_field_cron_windows_are_accepted(start, end):
    cfg = config.parse({**MINIMAL, **schedules({**WEEKDAYS, "start": start, "end": end})})
    assert cfg.autoscaling.warm_schedules == (config.WarmSchedule("Europe/Berlin", start, end, 1),)


@pytest.mark.parametrize("start", ["0 9 * *", "0 9 * * 1-5 2026", "60 9 * * *", "0 24 * * *", "0 9 0 * *",
                                   "0 9 * 13 *", "0 9 * * 8", "0 9 * JAN 8", "@daily", "0 9 ? * *", 900])
def test_a_cron_that_is_not_five_fields_in_range_is_refused(start):
    assert problems(**schedules({**WEEKDAYS, "start": start})) == [
        f"autoscaling.warmSchedules[0].start: {json.dumps(start)} is not allowed; expected {CRON}"]


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/Argentina/Buenos_Aires", "UTC", "Asia/Kolkata"])
def test_iana_time_zones_are_accepted(zone):
    assert config.parse({**MINIMAL, **schedules({**WEEKDAYS, "timezone": zone})}).autoscaling.warm_schedules


@pytest.mark.parametrize("zone", ["CEST", "Europe/Atlantis", "../etc/passwd", "", 1])
def test_a_time_zone_outside_the_iana_database_is_refused(zone):
    assert problems(**schedules({**WEEKDAYS, "timezone": zone})) == [
        f"autoscaling.warmSchedules[0].timezone: {json.dumps(zone)} is not allowed; expected an IANA time "
        "zone such as Europe/Berlin or America/New_York"]


def test_replicas_above_the_maximum_are_refused():
    assert problems(**schedules({**WEEKDAYS, "replicas": 3}, maxReplicas=2)) == [
        "autoscaling.warmSchedules[0].replicas: 3 is not allowed; expected from autoscaling.minReplicas (0) to "
        "autoscaling.maxReplicas (2)"]


def test_replicas_below_the_minimum_are_refused():
    prod = {"environment": "prod", "gpuPool": {"maxNodes": 4}, "observability": {"notificationEmail": "oncall@example.com"}}
    assert problems(**prod, **schedules({**WEEKDAYS, "replicas": 1}, minReplicas=2, maxReplicas=4)) == [
        "autoscaling.warmSchedules[0].replicas: 1 is not allowed; expected from autoscaling.minReplicas (2) to "
        "autoscaling.maxReplicas (4)"]


def test_a_window_that_ends_when_it_starts_is_refused():
    assert problems(**schedules({**WEEKDAYS, "end": WEEKDAYS["start"]})) == [
        'autoscaling.warmSchedules[0].end: "0 9 * * 1-5" is not allowed; expected a time other than start: KEDA '
        "refuses a cron window that starts and ends at once (https://keda.sh/docs/2.20/scalers/cron/)"]


def test_a_schedule_missing_a_key_names_it():
    partial = {k: v for k, v in WEEKDAYS.items() if k != "end"}
    assert problems(**schedules(WEEKDAYS, partial)) == [
        "autoscaling.warmSchedules[1].end: missing; a warm schedule needs timezone, start, end, replicas"]


def test_an_unknown_schedule_key_is_refused():
    assert problems(**schedules({**WEEKDAYS, "days": "weekdays"})) == [
        "autoscaling.warmSchedules[0].days: unknown key; allowed keys are end, replicas, start, timezone"]


NOT_A_WINDOW = {**WEEKDAYS, "end": WEEKDAYS["start"]}
NOT_A_WINDOW_PROBLEM = ('autoscaling.warmSchedules[1].end: "0 9 * * 1-5" is not allowed; expected a time other than '
                        "start: KEDA refuses a cron window that starts and ends at once "
                        "(https://keda.sh/docs/2.20/scalers/cron/)")


def test_the_schedules_after_one_that_is_not_an_object_are_still_checked():
    assert problems(**schedules("weekdays", NOT_A_WINDOW)) == [
        'autoscaling.warmSchedules[0]: "weekdays" is not allowed; expected an object with keys timezone, start, end, '
        "replicas", NOT_A_WINDOW_PROBLEM]


def test_the_schedules_after_one_missing_a_key_are_still_checked():
    partial = {k: v for k, v in WEEKDAYS.items() if k != "replicas"}
    assert problems(**schedules(partial, NOT_A_WINDOW)) == [
        "autoscaling.warmSchedules[0].replicas: missing; a warm schedule needs timezone, start, end, replicas",
        NOT_A_WINDOW_PROBLEM]


def test_the_schedules_after_one_with_a_bad_value_are_still_checked():
    assert problems(**schedules({**WEEKDAYS, "days": "weekdays"}, NOT_A_WINDOW)) == [
        "autoscaling.warmSchedules[0].days: unknown key; allowed keys are end, replicas, start, timezone",
        NOT_A_WINDOW_PROBLEM]


def test_warm_schedules_must_be_a_list():
    assert problems(**{"autoscaling": {"warmSchedules": WEEKDAYS}}) == [
        f"autoscaling.warmSchedules: {json.dumps(WEEKDAYS)} is not allowed; expected a list of "
        "{timezone, start, end, replicas}"]


# --- the request queue ----------------------------------------------------------------------

def test_the_wait_must_cover_the_cold_start_the_stack_expects():
    assert problems(queue={"maxWaitSeconds": 400}, observability={"coldStartBudgetSeconds": 600}) == [
        "queue.maxWaitSeconds: 400 is not allowed; expected at least observability.coldStartBudgetSeconds (600): "
        "a request that wakes the WebUI waits through its cold start"]


def test_a_wait_equal_to_the_cold_start_budget_is_accepted():
    cfg = config.parse({**MINIMAL, "queue": {"maxWaitSeconds": 600}, "observability": {"coldStartBudgetSeconds": 600}})
    assert cfg.queue.max_wait_seconds == 600


def test_an_unknown_queue_key_is_refused():
    assert problems(queue={"maxWait": 600}) == ["queue.maxWait: unknown key; allowed keys are maxDepth, maxWaitSeconds"]


@pytest.mark.parametrize("key, value, instead", [
    ("httpAddOnChartVersion", "0.15.0", "the KEDA HTTP add-on is replaced by the request queue "
                                        "(docs/request-queue.md); delete the key"),
    ("coldStartTimeoutSeconds", 600, "requests now wait in the request queue; set queue.maxWaitSeconds instead"),
])
def test_an_old_stack_file_with_the_add_on_keys_gets_told_what_replaced_them(key, value, instead):
    assert problems(autoscaling={key: value}) == [
        f"autoscaling.{key}: {json.dumps(value)} is not allowed; expected no value: the key is gone; {instead}"]


@pytest.mark.parametrize("entry", ["weekdays", None, 1, ["0 9 * * 1-5"]])
def test_a_schedule_that_is_not_an_object_is_refused(entry):
    assert problems(**schedules(entry)) == [
        f"autoscaling.warmSchedules[0]: {json.dumps(entry)} is not allowed; expected an object with keys "
        "timezone, start, end, replicas"]


def test_a_bad_value_in_a_schedule_is_named_once():
    assert problems(**schedules({**WEEKDAYS, "replicas": "1", "end": WEEKDAYS["start"]})) == [
        'autoscaling.warmSchedules[0].replicas: "1" is not allowed; expected an integer from 1 to 100']
