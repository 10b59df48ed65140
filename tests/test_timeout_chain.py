"""The timeout chain, computed from the recorded plan: every link at least as long as the one behind it.

A request that arrives while the WebUI is at zero waits at the interceptor for a ready pod, then for one
generation; every hop in front of it must wait at least that long, or the caller gets a 502/504 while
the pod it woke is still coming up (the load balancer's backend timeout defaults to 30 s:
GCPBackendPolicy timeoutSec, https://cloud.google.com/kubernetes-engine/docs/how-to/configure-gateway-resources).
The interceptor's timeouts are InterceptorRoute.spec.timeouts (kedacore/http-add-on@v0.15.0
operator/apis/http/v1beta1/interceptorroute_types.go): readiness (wait for a ready pod), responseHeader
(wait for the response once sent) and request (the whole lifecycle).
"""

from __future__ import annotations

import re

import pytest

from tests.test_policy import _set, mutate
from tools.mockrun import HELM_RELEASE, Recorded

API_ROUTE = ("kubernetes:http.keda.sh/v1beta1:InterceptorRoute", "autoscaling-webui-api")
BACKEND_POLICY = ("kubernetes:networking.gke.io/v1:GCPBackendPolicy", "webui-backend-policy")
DEPLOYMENT = ("kubernetes:apps/v1:Deployment", "webui-deployment")
ADD_ON = (HELM_RELEASE, "autoscaling-http-add-on")


def _seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, f"{duration!r} is not a whole number of seconds"
    return int(match.group(1))


def _one(resources: list[Recorded], key: tuple[str, str]) -> dict:
    return next(r.inputs for r in resources if (r.type, r.name) == key)


def chain(resources: list[Recorded]) -> dict[str, int]:
    """Every link, in seconds, read from what the program registered."""
    webui = _one(resources, DEPLOYMENT)["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in webui["env"]}
    timeouts = _one(resources, API_ROUTE)["spec"]["timeouts"]
    interceptor = _one(resources, ADD_ON)["values"]["interceptor"]
    return {
        "webui generation limit": int(env["SD_DRAIN_SECONDS"]),
        "interceptor responseHeader": _seconds(timeouts["responseHeader"]),
        "interceptor readiness": _seconds(timeouts["readiness"]),
        "interceptor request": _seconds(timeouts["request"]),
        "interceptor drainTimeout": _seconds(interceptor["drainTimeout"]),
        "interceptor grace": interceptor["terminationGracePeriodSeconds"] - _seconds(interceptor["shutdownDelay"]),
        "load balancer timeoutSec": _one(resources, BACKEND_POLICY)["spec"]["default"]["timeoutSec"],
    }


def broken_links(links: dict[str, int]) -> list[str]:
    """Each link shorter than what it must hold, named."""
    rules = [
        ("interceptor responseHeader", links["webui generation limit"] + 1, "a generation, and then some"),
        ("interceptor request", links["interceptor readiness"] + links["interceptor responseHeader"],
         "the wait for a ready pod + one generation"),
        ("load balancer timeoutSec", links["interceptor request"], "the interceptor's whole request"),
        ("load balancer timeoutSec", links["interceptor readiness"] + links["webui generation limit"],
         "the wait for a ready pod + one generation"),
        ("interceptor drainTimeout", links["interceptor request"], "a held request, so interceptor scale-in cuts none"),
        ("interceptor grace", links["interceptor drainTimeout"], "its drain"),
    ]
    return [f"{link} = {links[link]}s < {need}s ({why})" for link, need, why in rules if links[link] < need]


def test_the_chain_holds_end_to_end(run):
    assert broken_links(chain(run.resources)) == []


def test_dev_chain_figures(runs):
    """The figures the README quotes."""
    assert chain(runs["dev"].resources) == {
        "webui generation limit": 120, "interceptor responseHeader": 150, "interceptor readiness": 600,
        "interceptor request": 750, "interceptor drainTimeout": 750, "interceptor grace": 780,
        "load balancer timeoutSec": 780,
    }


def test_the_chain_follows_the_stack_config(run_stack):
    run = run_stack("dev", autoscaling={"minReplicas": 0, "maxReplicas": 2, "cooldownSeconds": 300,
                                        "coldStartTimeoutSeconds": 1200})
    links = chain(run.resources)
    assert links["interceptor readiness"] == 1200 and links["load balancer timeoutSec"] >= 1200 + 120
    assert broken_links(links) == []


@pytest.mark.parametrize("key, path, value, broken", [
    (BACKEND_POLICY, "spec.default.timeoutSec", 30, "load balancer timeoutSec = 30s < 750s"),
    (API_ROUTE, "spec.timeouts.responseHeader", "100s", "interceptor responseHeader = 100s < 121s"),
    (API_ROUTE, "spec.timeouts.request", "600s", "interceptor request = 600s < 750s"),
    (API_ROUTE, "spec.timeouts.readiness", "900s", "interceptor request = 750s < 1050s"),
    (ADD_ON, "values.interceptor.drainTimeout", "30s", "interceptor drainTimeout = 30s < 750s"),
    (ADD_ON, "values.interceptor.terminationGracePeriodSeconds", 45, "interceptor grace = 40s < 750s"),
])
def test_a_shorter_link_breaks_the_chain(runs, key, path, value, broken):
    run = runs["dev"]
    shortened = mutate(run, key[0], key[1], _set(path, value))
    assert any(b.startswith(broken) for b in broken_links(chain(shortened))), broken_links(chain(shortened))
