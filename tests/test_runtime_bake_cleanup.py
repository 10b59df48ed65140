"""The bake provider's retry and cleanup at their edges.

Which API answers are retried and how long, on a stand-in API method; the builder's cleanup on a
stand-in API that can refuse to delete; an interrupt in the middle of a bake against the fake
Compute API. test_runtime_bake.py covers the scenarios end to end.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import requests
from google.api_core import exceptions as gexc

from components.runtime_bake import compute
from components.runtime_bake.builder import BakeSpec
from components.runtime_bake.compute import BakeError, ComputeClient, Pacing
from components.runtime_bake.provider import RuntimeImageProvider
from tests import jitter
from tests.test_runtime_bake import (  # noqa: F401 - fake is a fixture
    BUILDER,
    FAST,
    HASH12,
    IMAGE,
    P,
    Z,
    assert_clean_end,
    bake_progresses,
    builder_resources,
    fake,
    props,
)

DATA_DISK = f"{BUILDER}-data"


class Method:
    """An API method that raises the given errors in turn, then answers "ok"; records each request."""

    def __init__(self, *errors: BaseException):
        self.errors, self.requests = list(errors), []

    def __call__(self, **kwargs: Any) -> str:
        self.requests.append(kwargs)
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


@pytest.fixture
def api(monkeypatch) -> ComputeClient:
    monkeypatch.setattr(compute.time, "sleep", lambda s: None)
    # A local endpoint (never contacted) makes the clients anonymous, as against the fake.
    return ComputeClient(P, "http://127.0.0.1:9", Pacing(poll_seconds=0, backoff_seconds=1.0, backoff_cap_seconds=3.0,
                                                         attempts=5))


@pytest.fixture
def draws(monkeypatch) -> list[tuple[float, float]]:
    return jitter.top_of_jitter(monkeypatch)


def http_error(code: int, reason: str = "backendError") -> gexc.GoogleAPICallError:
    return gexc.from_http_status(code, "boom", errors=[{"reason": reason}])


def test_pacing_defaults_poll_every_5s_and_back_off_from_1s_to_30s_over_7_attempts():
    assert (Pacing().poll_seconds, Pacing().backoff_seconds, Pacing().backoff_cap_seconds, Pacing().attempts) == (
        5.0, 1.0, 30.0, 7)


def test_each_call_names_the_project_and_turns_off_the_client_retry_with_a_180s_timeout(api):
    method = Method()
    assert api.call("reading", method, {"zone": Z}) == "ok"
    assert method.requests == [{"request": {"project": P, "zone": Z}, "retry": None, "timeout": 180}]


@pytest.mark.parametrize("code", [429, 500, 502, 503, 504])
def test_429_and_5xx_answers_are_retried(api, code):
    method = Method(http_error(code))
    assert api.call("reading", method, {}) == "ok"
    assert len(method.requests) == 2


@pytest.mark.parametrize("reason", ["rateLimitExceeded", "userRateLimitExceeded"])
def test_a_rate_limit_403_is_retried(api, reason):
    method = Method(http_error(403, reason))
    assert api.call("reading", method, {}) == "ok"


@pytest.mark.parametrize(("code", "reason"), [(400, "invalid"), (403, "forbidden"), (404, "notFound"), (501, "x")])
def test_other_answers_fail_at_once_saying_what_was_being_done(api, code, reason):
    method = Method(http_error(code, reason))
    with pytest.raises(BakeError) as failure:
        api.call("reading image x", method, {})
    assert str(failure.value) == f"reading image x: {code} boom"
    assert len(method.requests) == 1


def test_an_expected_error_propagates_as_it_is_without_retry(api):
    method = Method(gexc.NotFound("gone"), "never")
    with pytest.raises(gexc.NotFound):
        api.call("reading", method, {}, expect=(gexc.NotFound,))
    assert len(method.requests) == 1


def test_a_lost_connection_is_retried(api):
    method = Method(requests.ConnectionError("reset"), requests.Timeout("slow"))
    assert api.call("reading", method, {}) == "ok"
    assert len(method.requests) == 3


def test_a_connection_lost_on_every_attempt_is_told_with_its_error(api):
    method = Method(*[requests.ConnectionError("connection reset")] * 5)
    with pytest.raises(BakeError) as failure:
        api.call("reading image x", method, {})
    assert str(failure.value) == "reading image x: still failing after 5 attempts: connection reset"


def test_the_last_attempt_that_succeeds_is_taken(api):
    method = Method(*[http_error(503)] * 4)
    assert api.call("reading", method, {}) == "ok"
    assert len(method.requests) == 5


def test_failing_every_attempt_stops_after_the_last_one(api):
    method = Method(*[http_error(503)] * 5, "never")
    with pytest.raises(BakeError) as failure:
        api.call("reading image x", method, {})
    assert str(failure.value) == "reading image x: still failing after 5 attempts: 503 boom"
    assert len(method.requests) == 5


def test_backoff_doubles_up_to_the_cap_with_jitter_in_its_upper_half(api, draws):
    with pytest.raises(BakeError):
        api.call("reading", Method(*[http_error(503)] * 5), {})
    assert draws == [(0.5, 1.0), (1.0, 2.0), (1.5, 3.0), (1.5, 3.0)]


# ---- cleanup of the builder -------------------------------------------------------------------------------


class BuilderApi:
    """Stands in for ComputeClient in the cleanup: what exists, what is deleted, and a delete that may not stick."""

    instances = SimpleNamespace(get="instances.get", delete_unary="instances.delete")
    disks = SimpleNamespace(get="disks.get", list="disks.list", delete_unary="disks.delete")

    def __init__(self, vms: set[str], disks: set[str], labelled: set[str] = frozenset(), deletes_stick: bool = True):
        self.vms, self.named_disks, self.labelled = set(vms), set(disks), set(labelled)
        self.deletes_stick = deletes_stick
        self.deleted: list[tuple[str, str]] = []
        self.lists: list[dict] = []
        self.calls: list[tuple[str, str, dict]] = []

    def get(self, what: str, method: str, **request: Any):
        self.calls.append((what, method, request))
        pool = self.vms if method == "instances.get" else self.named_disks
        name = request.get("instance") or request.get("disk")
        return SimpleNamespace(name=name) if name in pool else None

    def listed(self, what: str, method: str, **request: Any):
        self.calls.append((what, method, request))
        self.lists.append(request)
        return [SimpleNamespace(name=n) for n in sorted(self.labelled)]

    def mutate(self, what: str, method: str, **request: Any) -> None:
        self.calls.append((what, method, request))
        name = request.get("instance") or request.get("disk")
        self.deleted.append((method, name))
        if self.deletes_stick:
            for pool in ((self.vms,) if method == "instances.delete" else (self.named_disks, self.labelled)):
                pool.discard(name)


def remove(api: BuilderApi, log: list[str] | None = None) -> None:
    provider = RuntimeImageProvider(FAST, report=(log if log is not None else []).append)
    provider._remove_builder(api, BakeSpec.from_props(props()), reason="testing")


def test_cleanup_deletes_the_vm_before_its_disks_and_reports_each():
    api, log = BuilderApi({BUILDER}, {BUILDER, DATA_DISK}), []
    remove(api, log)
    assert api.deleted == [("instances.delete", BUILDER), ("disks.delete", BUILDER), ("disks.delete", DATA_DISK)]
    assert log == [f"{IMAGE}: deleting builder VM {BUILDER} (testing)",
                   f"{IMAGE}: deleting builder disk {BUILDER} (testing)",
                   f"{IMAGE}: deleting builder disk {DATA_DISK} (testing)"]


def test_cleanup_names_each_call_and_aims_it_at_the_builder_zone():
    api = BuilderApi({BUILDER}, {DATA_DISK})
    remove(api)
    label_filter = {"zone": Z, "filter": f"labels.sdgke-builder = {HASH12}"}
    look = [
        (f"looking up {BUILDER}", "instances.get", {"zone": Z, "instance": BUILDER}),
        (f"listing builder disks in {Z}", "disks.list", label_filter),
        (f"looking up disk {BUILDER}", "disks.get", {"zone": Z, "disk": BUILDER}),
        (f"looking up disk {DATA_DISK}", "disks.get", {"zone": Z, "disk": DATA_DISK}),
    ]
    assert api.calls == [
        look[0],
        (f"deleting builder VM {BUILDER}", "instances.delete", {"zone": Z, "instance": BUILDER}),
        *look[1:],
        (f"deleting builder disk {DATA_DISK}", "disks.delete", {"zone": Z, "disk": DATA_DISK}),
        *look,
    ]


def test_cleanup_finds_builder_disks_by_label_too():
    api = BuilderApi(set(), set(), labelled={"sd-runtime-build-old-layout"})
    remove(api)
    assert api.deleted == [("disks.delete", "sd-runtime-build-old-layout")]
    assert api.lists[0]["filter"] == f"labels.sdgke-builder = {HASH12}"


def test_cleanup_with_nothing_left_deletes_nothing():
    api = BuilderApi(set(), set())
    remove(api)
    assert api.deleted == []


def test_cleanup_checks_that_nothing_is_left_after_deleting():
    api = BuilderApi({BUILDER}, {DATA_DISK}, deletes_stick=False)
    with pytest.raises(BakeError) as failure:
        remove(api)
    assert str(failure.value) == (f"builder resources in {Z} still exist after deleting them: "
                                  f"['{BUILDER}', '{DATA_DISK}']; delete them by hand with gcloud compute "
                                  "instances/disks delete")


def test_a_cleanup_that_fails_after_a_failed_bake_reports_both_failures():
    provider = RuntimeImageProvider(FAST, report=lambda m: None)
    first = BakeError("bake of x failed at step torch: no space")
    with pytest.raises(BakeError) as failure:
        provider._remove_builder_after_failure(BuilderApi({BUILDER}, set(), deletes_stick=False),
                                               BakeSpec.from_props(props()), first)
    assert str(failure.value) == (
        f"bake of x failed at step torch: no space\n\nremoving the builder afterwards failed too: builder resources in "
        f"{Z} still exist after deleting them: ['{BUILDER}']; delete them by hand with gcloud compute instances/disks "
        "delete")
    assert failure.value.__cause__ is first


def test_a_cleanup_that_succeeds_after_a_failed_bake_raises_nothing_itself():
    provider = RuntimeImageProvider(FAST, report=lambda m: None)
    api = BuilderApi({BUILDER}, set())
    provider._remove_builder_after_failure(api, BakeSpec.from_props(props()), BakeError("x"))
    assert api.deleted == [("instances.delete", BUILDER)]


def test_a_bake_over_removes_the_builder_saying_why(fake):  # noqa: F811 - the fixture
    from tests.test_runtime_bake import successful_bake

    successful_bake(fake)
    log: list[str] = []
    RuntimeImageProvider(FAST, report=log.append).create(props(fake))
    assert f"{IMAGE}: deleting builder VM {BUILDER} (the bake is over)" in log
    assert_clean_end(fake)


def test_a_failed_bake_whose_cleanup_fails_too_reports_the_bake_failure_first(fake):  # noqa: F811 - the fixture
    bake_progresses(fake, {"status": "failed", "error": "no space left"})
    fake.fail_next(method="DELETE", path_regex=f"/instances/{BUILDER}$", status=400, reason="invalid")
    log: list[str] = []
    with pytest.raises(BakeError) as failure:
        RuntimeImageProvider(FAST, report=log.append).create(props(fake))
    message = str(failure.value)
    assert message.startswith(f"bake of {IMAGE} failed at step ?: no space left")
    assert f"\n\nremoving the builder afterwards failed too: deleting builder VM {BUILDER}: 400 " in message
    assert f"{IMAGE}: deleting builder VM {BUILDER} (the bake did not finish)" in log


def test_an_interrupt_in_the_middle_of_a_bake_still_removes_the_builder(fake):  # noqa: F811 - the fixture
    bake_progresses(fake, {"step": "torch", "status": "running"}, {"step": "torch", "status": "running"})
    interrupted = []

    def report(message: str) -> None:
        if "bake step torch" in message and not interrupted:
            interrupted.append(message)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        RuntimeImageProvider(FAST, report=report).create(props(fake))
    assert interrupted and builder_resources(fake) == []
    assert_clean_end(fake)
