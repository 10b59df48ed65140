"""WebUI's per-process calls through the front (issue 17 item 1): progress, interrupt and skip reach the pod
running the caller's own job (the basic-auth user and the client's address), or touch nobody's generation; an
options change that would swap one pod's model is refused."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from aiohttp import web

from tests.fakes.queue_worker import StandInWorker
from tests.request_queue.conftest import run_async
from tests.request_queue.helpers import TXT2IMG, auth_header, until_demand

USERS = "sd:secret,other:secret2"
IDLE_PROGRESS = {"progress": 0.0, "eta_relative": 0.0, "current_image": None, "textinfo": None,
                 "state": {"skipped": False, "interrupted": False, "stopping_generation": False, "job": "",
                           "job_count": 0, "job_timestamp": "0", "job_no": 0, "sampling_step": 0,
                           "sampling_steps": 0}}
CLIENT = "203.0.113.7"
POD_OPTIONS = {"sd_model_checkpoint": "sd15.safetensors [6ce0161689]", "sd_vae": "Automatic", "fp8_storage": "Disable",
               "cache_fp16_weight": False, "cross_attention_optimization": "Automatic",
               "sd_vae_overrides_per_model_preferences": True, "CLIP_stop_at_last_layers": 1}
"""Part of what a pod's GET /sdapi/v1/options answers (WebUI v1.10.1 option names)."""


class Pod:
    """A WebUI pod's per-process calls: progress names the pod; interrupt and skip are counted."""

    def __init__(self, name: str):
        self.name = name
        self.calls: list[str] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> Pod:
        app = web.Application()
        app.router.add_get("/sdapi/v1/progress", self._progress)
        app.router.add_post("/sdapi/v1/interrupt", self._stop)
        app.router.add_post("/sdapi/v1/skip", self._stop)
        app.router.add_post("/sdapi/v1/options", self._options)
        app.router.add_get("/sdapi/v1/options", self._current_options)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def _progress(self, request: web.Request) -> web.Response:
        self.calls.append("progress")
        return web.json_response({"pod": self.name})

    async def _stop(self, request: web.Request) -> web.Response:
        self.calls.append(request.path.rsplit("/", 1)[1])
        return web.json_response({} if request.path.endswith("interrupt") else None)

    async def _current_options(self, request: web.Request) -> web.Response:
        return web.json_response(POD_OPTIONS)

    async def _options(self, request: web.Request) -> web.Response:
        self.calls.append(f"options {await request.text()}")
        return web.json_response(None)


def _through_gateway(client: str, proxy: str, credentials: str = "sd:secret") -> dict[str, str]:
    """What the global external load balancer sends for `client`: X-Forwarded-For `<client-ip>,<load-balancer-ip>`."""
    return {**auth_header(credentials), "X-Forwarded-For": f"{client}, {proxy}"}


async def _caller_running_on_pod_b(start_queue, session, entries: str = "2", headers: dict | None = None):
    """Pods a and b registered; the caller's txt2img dispatched to b (a stays idle). (queue, pods, job, client)"""
    queue = start_queue(SD_API_AUTH=USERS, FORWARDED_FOR_ENTRIES=entries)
    pods = {name: await Pod(name).start() for name in ("pod-a", "pod-b")}
    workers = {name: StandInWorker(session, queue.workers_url, name, pod.url) for name, pod in pods.items()}
    for worker in workers.values():
        await worker.poll()
    client = asyncio.create_task(session.post(queue.url + TXT2IMG, data=json.dumps({"prompt": "fox"}),
                                              headers=headers or _through_gateway(CLIENT, "10.129.0.5")))
    await until_demand(session, queue.workers_url, waiting=1)
    job = await workers["pod-b"].poll()
    return queue, pods, workers["pod-b"], job, client


async def _stop(pods, session, worker, job, client) -> None:
    await worker.post_result(job, 200, b"{}")
    (await client).release()
    for pod in pods.values():
        await pod.runner.cleanup()


@run_async
async def test_progress_reaches_the_pod_running_the_callers_job_from_any_connection_of_that_caller(start_queue):
    async with aiohttp.ClientSession() as session:
        queue, pods, worker, job, client = await _caller_running_on_pod_b(start_queue, session)
        async with aiohttp.ClientSession() as other_thread:  # webuiapi polling from another thread
            async with other_thread.get(queue.url + "/sdapi/v1/progress",
                                        headers=_through_gateway(CLIENT, "10.129.0.9")) as response:
                progress = await response.json()
        await _stop(pods, session, worker, job, client)
    assert progress == {"pod": "pod-b"}
    assert pods["pod-a"].calls == []


@run_async
async def test_interrupt_and_skip_reach_only_the_pod_running_the_callers_job(start_queue):
    async with aiohttp.ClientSession() as session:
        queue, pods, worker, job, client = await _caller_running_on_pod_b(start_queue, session)
        answers = []
        for call in ("interrupt", "skip"):
            async with session.post(f"{queue.url}/sdapi/v1/{call}",
                                    headers=_through_gateway(CLIENT, "10.129.0.5")) as response:
                answers.append((response.status, await response.json()))
        await _stop(pods, session, worker, job, client)
    assert answers == [(200, {}), (200, None)]
    assert pods["pod-b"].calls == ["interrupt", "skip"] and pods["pod-a"].calls == []


@run_async
async def test_another_callers_progress_interrupt_and_skip_touch_no_generation_and_get_an_idle_webuis_answers(
        start_queue):
    async with aiohttp.ClientSession() as session:
        queue, pods, worker, job, client = await _caller_running_on_pod_b(start_queue, session)
        answers = []
        for headers in (_through_gateway("198.51.100.1", "10.129.0.5"),  # same user, another client
                        _through_gateway(CLIENT, "10.129.0.5", "other:secret2")):  # same client, another user
            for method, call in (("GET", "progress"), ("POST", "interrupt"), ("POST", "skip")):
                async with session.request(method, f"{queue.url}/sdapi/v1/{call}", headers=headers) as response:
                    answers.append((response.status, await response.json()))
        await _stop(pods, session, worker, job, client)
    assert answers == [(200, IDLE_PROGRESS), (200, {}), (200, None)] * 2
    assert pods["pod-a"].calls == [] and pods["pod-b"].calls == []


async def _progress_answer(start_queue, entries: str, job_headers: dict, progress_headers: dict) -> dict:
    async with aiohttp.ClientSession() as session:
        queue, pods, worker, job, client = await _caller_running_on_pod_b(start_queue, session, entries, job_headers)
        async with session.get(queue.url + "/sdapi/v1/progress", headers=progress_headers) as response:
            progress = await response.json()
        await _stop(pods, session, worker, job, client)
    return progress


@run_async
async def test_without_a_gateway_a_client_written_x_forwarded_for_makes_no_other_caller(start_queue):
    """No load balancer: the peer is the caller; whatever X-Forwarded-For a client sends counts for nothing."""
    progress = await _progress_answer(start_queue, "0", _through_gateway(CLIENT, "10.129.0.5"),
                                      _through_gateway("198.51.100.1", "10.129.0.5"))
    assert progress == {"pod": "pod-b"}


@run_async
async def test_behind_the_internal_gateway_entries_before_the_last_are_the_clients_own_and_count_for_nothing(
        start_queue):
    """One trusted entry: a client that writes another's address before its own is still itself."""
    progress = await _progress_answer(start_queue, "1", {**auth_header(), "X-Forwarded-For": CLIENT},
                                      {**auth_header(), "X-Forwarded-For": f"198.51.100.1, {CLIENT}"})
    assert progress == {"pod": "pod-b"}


@run_async
async def test_an_interrupt_while_the_callers_job_still_waits_cuts_nothing_and_the_job_runs_later(start_queue):
    queue = start_queue(SD_API_AUTH=USERS)
    pod = await Pod("pod-a").start()
    async with aiohttp.ClientSession() as session:
        client = asyncio.create_task(session.post(queue.url + TXT2IMG, data=json.dumps({"prompt": "fox"}),
                                                  headers=auth_header()))
        await until_demand(session, queue.workers_url, waiting=1)
        async with session.post(queue.url + "/sdapi/v1/interrupt", headers=auth_header()) as response:
            interrupted = (response.status, await response.json())
        worker = StandInWorker(session, queue.workers_url, "pod-a", pod.url)
        job = await worker.poll()
        await worker.post_result(job, 200, b'{"images": []}')
        async with await client as response:
            answer = response.status
    await pod.runner.cleanup()
    assert interrupted == (200, {}) and pod.calls == []
    assert answer == 200


@run_async
async def test_an_options_change_that_swaps_the_model_is_refused_naming_the_key_the_value_and_override_settings(
        start_queue):
    queue = start_queue(SD_API_AUTH=USERS)
    pod = await Pod("pod-a").start()
    async with aiohttp.ClientSession() as session:
        await StandInWorker(session, queue.workers_url, "pod-a", pod.url).poll()
        async with session.post(queue.url + "/sdapi/v1/options", headers=auth_header(),
                                json={"sd_model_checkpoint": "sdxl.safetensors", "CLIP_stop_at_last_layers": 2}
                                ) as response:
            refused = (response.status, (await response.json())["detail"])
        async with session.post(queue.url + "/sdapi/v1/options", headers=auth_header(),
                                json={"CLIP_stop_at_last_layers": 2}) as response:
            passed = response.status
    await pod.runner.cleanup()
    status, detail = refused
    assert status == 400
    assert "sd_model_checkpoint='sdxl.safetensors'" in detail
    assert '{"override_settings": {"sd_model_checkpoint": "sdxl.safetensors"}}' in detail
    assert passed == 200 and pod.calls == ['options {"CLIP_stop_at_last_layers": 2}']


async def _options_posted(start_queue, options: dict) -> tuple[int, str, list[str]]:
    """(status, detail or "", the pod's calls) for one POST /sdapi/v1/options through the front."""
    queue = start_queue(SD_API_AUTH=USERS)
    pod = await Pod("pod-a").start()
    async with aiohttp.ClientSession() as session:
        await StandInWorker(session, queue.workers_url, "pod-a", pod.url).poll()
        async with session.post(queue.url + "/sdapi/v1/options", headers=auth_header(), json=options) as response:
            answer = (response.status, (await response.json() or {}).get("detail", ""))
    await pod.runner.cleanup()
    return (*answer, pod.calls)


@run_async
async def test_an_options_change_that_reloads_the_weights_is_refused_without_pointing_to_override_settings(
        start_queue):
    status, detail, calls = await _options_posted(start_queue, {"fp8_storage": "Enable"})
    assert status == 400 and "fp8_storage='Enable'" in detail
    assert "override_settings" not in detail and calls == []


@run_async
async def test_options_posted_back_as_a_pod_has_them_now_are_no_change_and_pass(start_queue):
    status, _, calls = await _options_posted(start_queue, POD_OPTIONS)
    assert status == 200 and calls == [f"options {json.dumps(POD_OPTIONS)}"]
