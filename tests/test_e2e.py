"""Issue 17 item 5, every criterion, from one run of tools/e2e (real request queue, real workers, stand-in
WebUIs, the real Pub/Sub emulator; minutes, so `make e2e`, run by .ci/run after `make test`)."""

import pytest

from tools.e2e import report, scenarios

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def results(request) -> dict[str, scenarios.Result]:
    """One run for every test here; its table printed with pytest's report."""
    settings = scenarios.Settings()
    ran = report.run_all(settings)
    with request.config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
        print(f"\ngeneration {settings.generation_s:g} s, {settings.pods} pods\n{report.table(ran)}", flush=True)
    return {result.scenario.split(" (")[0]: result for result in ran}


@pytest.mark.parametrize("scenario, key", [
    ("spike", "errors"),
    ("spike", "gap"),
    ("spike", "ratio"),
    ("steady", "errors"),
    ("steady", "ratio"),
    ("steady", "overhead"),
    ("batch mix", "errors"),
    ("batch mix", "errors without batch"),
    ("batch mix", "batch p95"),
    ("batch mix", "batch progress"),
    ("overload", "refused"),
    ("overload", "refused at once"),
    ("overload", "accepted served"),
    ("overload", "generated once"),
])
def test_criterion_holds(results, scenario, key):
    check = results[scenario].check(key)
    assert check.ok, f"{scenario}: {check.criterion}: measured {check.measured}"
