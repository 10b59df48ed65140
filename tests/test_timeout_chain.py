"""The timeout chain as a contract over what every plan variant registers (components/timeouts.py).

Every link is read back from the registered resources: the request queue's environment, the worker's and
WebUI's environment, the grace periods of both pods and the Gateway's backend timeout (GCPBackendPolicy
timeoutSec, whose 30 s default would cut every request held through a cold start:
https://cloud.google.com/kubernetes-engine/docs/how-to/configure-gateway-resources). No hop may cut a request
the hop behind it is still working on, and the client's budget covers the longest wait plus one generation.
The request queue waits GENERATION_TIMEOUT_SECONDS + 2 x MARGIN_SECONDS for a dispatched job's result
(docs/request-queue.md, "Timeouts").
"""

from __future__ import annotations

import pytest

from components import timeouts
from tests import variants
from tests.test_policy import _set, mutate
from tools.mockrun import Recorded

BACKEND_POLICY = ("kubernetes:networking.gke.io/v1:GCPBackendPolicy", "webui-backend-policy")
WEBUI = ("kubernetes:apps/v1:Deployment", "webui-deployment")
FRONT = ("kubernetes:apps/v1:Deployment", "request-queue-deployment")


def _inputs(resources: list[Recorded], key: tuple[str, str]) -> dict:
    return next(r.inputs for r in resources if (r.type, r.name) == key)


def _pod(resources: list[Recorded], key: tuple[str, str]) -> dict:
    return _inputs(resources, key)["spec"]["template"]["spec"]


def _env(pod: dict, container: str) -> dict[str, str]:
    found = next(c for c in pod["containers"] if c["name"] == container)
    return {e["name"]: e["value"] for e in found["env"] if "value" in e}


def chain(resources: list[Recorded]) -> dict[str, int]:
    """Every link, in seconds, read from what the program registered."""
    front_pod, webui_pod = _pod(resources, FRONT), _pod(resources, WEBUI)
    front = {k: int(v) for k, v in _env(front_pod, "request-queue").items() if k.endswith("_SECONDS")}
    worker = _env(webui_pod, "queue-agent")
    links = {
        "worker call": front["GENERATION_TIMEOUT_SECONDS"],
        "result wait": front["GENERATION_TIMEOUT_SECONDS"] + 2 * front["MARGIN_SECONDS"],
        "queue wait": front["QUEUE_MAX_WAIT_SECONDS"],
        "margin": front["MARGIN_SECONDS"],
        "front drain": front["DRAIN_SECONDS"],
        "front grace": front_pod["terminationGracePeriodSeconds"],
        "webui drain": int(_env(webui_pod, "webui")["SD_DRAIN_SECONDS"]),
        "webui grace": webui_pod["terminationGracePeriodSeconds"],
        "load balancer": _inputs(resources, BACKEND_POLICY)["spec"]["default"]["timeoutSec"],
    }
    links["client budget"] = links["queue wait"] + links["result wait"]
    if "JOBS_GENERATION_TIMEOUT_SECONDS" in worker:
        links["batch call"] = int(worker["JOBS_GENERATION_TIMEOUT_SECONDS"])
        links["batch drain"] = int(worker["JOBS_DRAIN_SECONDS"])
    return links


def broken_links(links: dict[str, int]) -> list[str]:
    """Each link shorter than what it must hold, named."""
    margin = links["margin"]
    rules = [
        ("result wait", links["worker call"] + margin, "the worker's call to WebUI and its report: the worker reports first"),
        ("client budget", links["queue wait"] + links["worker call"], "the longest wait plus one generation"),
        ("load balancer", links["client budget"] + margin, "the client budget: the Gateway never cuts an accepted request"),
        ("front drain", links["client budget"], "the client budget: a rollout finishes every accepted request"),
        ("front grace", links["front drain"] + 1, "the front's drain"),
        ("webui drain", links["worker call"], "the generation in flight"),
        ("webui grace", links["webui drain"] + margin, "the WebUI's drain and the worker's report"),
    ]
    if "batch call" in links:
        rules += [("webui drain", links["batch call"], "the batch generation in flight"),
                  ("webui grace", links["batch drain"] + 1, "the batch worker's drain")]
    return [f"{link} = {links[link]}s < {need}s ({why})" for link, need, why in rules if links[link] < need]


@pytest.mark.parametrize("variant", variants.VARIANTS, ids=variants.IDS)
def test_no_hop_cuts_a_request_the_hop_behind_it_still_works_on(variant):
    assert broken_links(chain(variants.variant(*variant).resources)) == []


def test_dev_chain_figures(runs):
    """The figures the README's timeout table quotes."""
    assert chain(runs["dev"].resources) == {
        "worker call": 120, "result wait": 180, "queue wait": 600, "margin": 30, "client budget": 780,
        "load balancer": 810, "front drain": 780, "front grace": 810, "webui drain": 120, "webui grace": 150,
        "batch call": 120, "batch drain": 120,
    }


def test_the_chain_follows_the_stack_config(run_stack):
    run = run_stack("dev", webui={"generationTimeoutSeconds": 300}, queue={"maxWaitSeconds": 1200, "maxDepth": 10})
    links = chain(run.resources)
    assert (links["worker call"], links["queue wait"]) == (300, 1200)
    assert links["client budget"] >= 1200 + 300 and broken_links(links) == []


def test_the_client_budget_tools_default_to_is_the_registered_one(runs):
    for stack, run in runs.items():
        assert timeouts.client_budget_seconds(stack) == chain(run.resources)["client budget"]
        assert run.outputs["client_budget_seconds"] == chain(run.resources)["client budget"]


def _front_env(name: str, value: str):
    def change(d: dict) -> None:
        container = d["spec"]["template"]["spec"]["containers"][0]
        next(e for e in container["env"] if e["name"] == name)["value"] = value
    return change


@pytest.mark.parametrize("key, change, broken", [
    (BACKEND_POLICY, _set("spec.default.timeoutSec", 30), "load balancer = 30s < 810s"),
    (FRONT, _front_env("DRAIN_SECONDS", "600"), "front drain = 600s < 780s"),
    (FRONT, _set("spec.template.spec.terminationGracePeriodSeconds", 700), "front grace = 700s < 781s"),
    (FRONT, _front_env("QUEUE_MAX_WAIT_SECONDS", "900"), "load balancer = 810s < 1110s"),
    (FRONT, _front_env("GENERATION_TIMEOUT_SECONDS", "200"), "webui drain = 120s < 200s"),
    (WEBUI, _set("spec.template.spec.terminationGracePeriodSeconds", 130), "webui grace = 130s < 150s"),
])
def test_a_shorter_link_breaks_the_chain(runs, key, change, broken):
    shortened = mutate(runs["dev"], key[0], key[1], change)
    assert any(b.startswith(broken) for b in broken_links(chain(shortened))), broken_links(chain(shortened))
