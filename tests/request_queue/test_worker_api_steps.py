"""The workers' port, step by step, in-process: what each call answers and what it does to the buffer, the
registry and the job (docs/request-queue.md, "Workers").

The process tests (test_dispatch.py, test_release.py, test_cancel.py and the rest) show the protocol end to end
with a real client; these drive the real aiohttp application through aiohttp's own test server, so that the
state each call leaves behind can be read directly: which job went back to the head, which worker was
forgotten, what a refused call says."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Awaitable, Callable

from aiohttp.test_utils import TestClient, TestServer

from tests.request_queue.conftest import IMAGE, SETTINGS

sys.path.insert(0, str(IMAGE))  # the service's own package, imported as its image runs it
try:
    from request_queue import app, config, worker_api
    from request_queue.jobs import CLIENT_GONE, Job, Result, State
    from request_queue.state import Front
finally:
    sys.path.remove(str(IMAGE))

WORKER = "webui-0"
URL = "http://10.0.0.7:7860"
NEXT = f"/v1/workers/{WORKER}/next"
BAD_BODY = 'want a JSON body {"url": "http://POD_IP:7860", "wait": SECONDS}'


def on_the_workers_port(**settings) -> Callable[[Callable[[TestClient, Front], Awaitable[None]]], Callable[[], None]]:
    """A test `async def (client, front)` run on its own event loop against the real workers' application over
    loopback, with these settings changed (the suite has no asyncio plugin)."""

    def decorate(test: Callable[[TestClient, Front], Awaitable[None]]) -> Callable[[], None]:
        async def serve() -> None:
            front = Front.create(dataclasses.replace(config.load(SETTINGS), **settings))
            async with TestClient(TestServer(app.worker_app(front))) as client:
                await test(client, front)

        def run() -> None:
            asyncio.run(serve())

        run.__name__, run.__qualname__, run.__doc__ = test.__name__, test.__qualname__, test.__doc__
        return run

    return decorate


def queued(front: Front, job_id: str = "job-1", wait: float = 30.0) -> Job:
    """A client's request admitted to the buffer, as the client port admits it."""
    now = front.now()
    job = Job(id=job_id, method="POST", path="/sdapi/v1/txt2img", query="", headers={"X-A": "1"}, body=b"{}",
              arrived=now, deadline=now + wait, cold=False)
    front.held[job.id] = job
    assert front.buffer.admit(job)
    return job


async def poll(client: TestClient, wait: float = 0, worker: str = WORKER, **body):
    return await client.post(f"/v1/workers/{worker}/next", json={"url": URL, "wait": wait, **body})


async def refused(response, status: int = 400) -> str:
    assert (response.status, response.content_type) == (status, "application/json")
    return (await response.json())["detail"]


async def taken(client: TestClient, front: Front, job_id: str = "job-1") -> Job:
    job = queued(front, job_id)
    assert (await poll(client)).status == 200
    return job


# --- the poll's body --------------------------------------------------------------------------------


@on_the_workers_port()
async def test_a_poll_that_is_not_json_is_refused_saying_what_is_wanted(client, front):
    assert await refused(await client.post(NEXT, data=b"url=x")) == BAD_BODY


@on_the_workers_port()
async def test_a_poll_that_is_not_utf8_is_refused_saying_what_is_wanted(client, front):
    assert await refused(await client.post(NEXT, data=b'{"url": "\xff"}')) == BAD_BODY


@on_the_workers_port()
async def test_a_poll_whose_body_is_not_an_object_is_refused_naming_the_url(client, front):
    detail = await refused(await client.post(NEXT, json=[URL, 0]))
    assert detail == "url=None: want the worker's WebUI address, http://POD_IP:7860"


@on_the_workers_port()
async def test_a_poll_without_an_http_url_is_refused_naming_the_value(client, front):
    detail = await refused(await client.post(NEXT, json={"url": "10.0.0.7:7860"}))
    assert detail == "url='10.0.0.7:7860': want the worker's WebUI address, http://POD_IP:7860"
    assert front.registry.get(WORKER) is None


@on_the_workers_port()
async def test_a_poll_with_an_https_url_is_accepted(client, front):
    assert (await client.post(NEXT, json={"url": "https://10.0.0.7:7860"})).status == 204


@on_the_workers_port()
async def test_a_poll_without_a_wait_answers_at_once(client, front):
    asyncio.get_running_loop().call_later(0.3, queued, front)
    assert (await client.post(NEXT, json={"url": URL})).status == 204


@on_the_workers_port()
async def test_a_poll_whose_wait_is_a_boolean_is_refused_naming_the_value(client, front):
    assert await refused(await poll(client, wait=True)) == "wait=True: want seconds, 0 to 60"


@on_the_workers_port()
async def test_a_poll_whose_wait_is_text_is_refused_naming_the_value(client, front):
    assert await refused(await poll(client, wait="5")) == "wait='5': want seconds, 0 to 60"


@on_the_workers_port()
async def test_a_poll_whose_wait_is_negative_is_refused(client, front):
    assert await refused(await poll(client, wait=-0.5)) == "wait=-0.5: want seconds, 0 to 60"


@on_the_workers_port()
async def test_a_poll_whose_wait_is_over_the_longest_is_refused(client, front):
    assert await refused(await poll(client, wait=60.5)) == "wait=60.5: want seconds, 0 to 60"


@on_the_workers_port()
async def test_a_poll_may_wait_the_longest_allowed(client, front):
    queued(front)
    assert (await poll(client, wait=60)).status == 200


# --- next ---------------------------------------------------------------------------------------------------


@on_the_workers_port()
async def test_a_job_is_handed_out_as_its_message_with_the_generation_timeout(client, front):
    job = queued(front)
    response = await poll(client)
    assert response.status == 200
    assert await response.json() == job.as_message(30.0)


@on_the_workers_port()
async def test_a_handed_out_job_is_dispatched_to_the_worker_that_polled(client, front):
    job = await taken(client, front)
    assert (job.state, job.worker, front.registry.get(WORKER).job) == (State.DISPATCHED, WORKER, job)
    assert job.dispatched_at is not None


@on_the_workers_port()
async def test_a_poll_registers_the_worker_at_its_url(client, front):
    await poll(client)
    assert front.registry.get(WORKER).url == URL


@on_the_workers_port()
async def test_a_poll_that_ended_leaves_no_open_poll_counted_and_notes_when_it_ended(client, front):
    await poll(client, wait=0.2)
    worker = front.registry.get(WORKER)
    assert worker.polls == 0 and front.now() - worker.last_seen < 0.2


@on_the_workers_port()
async def test_every_open_poll_is_counted(client, front):
    waiting = [asyncio.create_task(poll(client, wait=5)) for _ in range(2)]
    async with asyncio.timeout(2):
        while front.registry.get(WORKER) is None or front.registry.get(WORKER).polls < 2:
            await asyncio.sleep(0.01)
    queued(front, "job-1")
    queued(front, "job-2")
    assert sorted([(await answer).status for answer in waiting]) == [200, 200]


@on_the_workers_port()
async def test_every_answer_to_next_says_whether_the_front_drains_and_whether_the_pod_runs_a_browser_event(client, front):
    response = await poll(client)
    assert (response.headers["X-Queue-Draining"], response.headers["X-Queue-Webui-Busy"]) == ("false", "false")
    front.draining = True
    front.buffer.release_polls()  # as the drain does: a poll held for the browser's event answers at once
    front.registry.get(WORKER).ui_event_started()
    response = await poll(client)
    assert (response.headers["X-Queue-Draining"], response.headers["X-Queue-Webui-Busy"]) == ("true", "true")


@on_the_workers_port()
async def test_a_job_answer_carries_the_same_marks(client, front):
    queued(front)
    response = await poll(client)
    assert (response.headers["X-Queue-Draining"], response.headers["X-Queue-Webui-Busy"]) == ("false", "false")


@on_the_workers_port()
async def test_a_poll_ends_the_workers_batch_hold(client, front):
    await poll(client)
    front.registry.started_batch(front.registry.get(WORKER))
    await poll(client)
    assert front.registry.get(WORKER).batch_since is None


@on_the_workers_port()
async def test_a_worker_that_polls_while_holding_a_job_let_it_go_and_it_goes_back_to_the_head(client, front):
    first = await taken(client, front)
    second = queued(front, "job-2")
    response = await poll(client)
    assert (await response.json())["id"] == "job-1"
    assert first.state is State.DISPATCHED and second.state is State.WAITING
    assert len(front.buffer) == 1


@on_the_workers_port()
async def test_a_job_let_go_after_its_clients_bound_is_lost_not_requeued(client, front):
    job = await taken(client, front)
    job.deadline = front.now() - 1
    assert (await poll(client)).status == 204
    assert job.state is State.LOST and len(front.buffer) == 0
    assert front.registry.get(WORKER).job is None


@on_the_workers_port()
async def test_a_job_let_go_whose_client_left_stays_gone(client, front):
    job = await taken(client, front)
    job.move(State.GONE)
    assert (await poll(client)).status == 204
    assert job.state is State.GONE and len(front.buffer) == 0


@on_the_workers_port(margin=0.1)
async def test_a_worker_that_does_not_claim_its_job_within_the_margin_is_forgotten_and_the_job_requeued(client, front):
    job = await taken(client, front)
    await asyncio.sleep(0.3)
    assert front.registry.get(WORKER) is None
    assert job.state is State.WAITING and len(front.buffer) == 1


@on_the_workers_port(margin=1.0)  # room for the cancel to arrive on a loaded machine; the check runs after it
async def test_a_worker_that_claims_its_job_within_the_margin_keeps_it(client, front):
    job = await taken(client, front)
    cancel = asyncio.create_task(client.get(f"/v1/workers/{WORKER}/jobs/job-1/cancel"))
    await asyncio.sleep(1.2)
    assert job.claimed and job.state is State.DISPATCHED and front.registry.get(WORKER).job is job
    job.finish(_result())
    assert (await cancel).status == 204


@on_the_workers_port(margin=0.15)
async def test_the_margin_check_of_an_earlier_dispatch_does_not_judge_a_later_one(client, front):
    job = await taken(client, front)
    await client.post(f"/v1/workers/{WORKER}/jobs/job-1/release")
    assert (await poll(client)).status == 200
    job.claimed = True
    await asyncio.sleep(0.2)
    assert front.registry.get(WORKER) is not None and job.state is State.DISPATCHED


def _result() -> Result:
    return Result(200, "application/json", b"{}")


# --- cancel -------------------------------------------------------------------------------------------------


@on_the_workers_port()
async def test_a_cancel_for_a_job_not_in_flight_is_gone(client, front):
    response = await client.get(f"/v1/workers/{WORKER}/jobs/job-9/cancel")
    assert await refused(response, 410) == "no such job in flight"


@on_the_workers_port()
async def test_a_cancel_for_a_job_of_another_worker_is_gone(client, front):
    await taken(client, front)
    response = await client.get("/v1/workers/webui-1/jobs/job-1/cancel")
    assert await refused(response, 410) == "no such job in flight"


@on_the_workers_port()
async def test_a_held_cancel_answers_204_once_the_result_arrives(client, front):
    job = await taken(client, front)
    cancel = asyncio.create_task(client.get(f"/v1/workers/{WORKER}/jobs/job-1/cancel"))
    await asyncio.sleep(0.05)
    job.finish(_result())
    assert (await cancel).status == 204


@on_the_workers_port()
async def test_a_held_cancel_answers_the_reason_to_interrupt(client, front):
    job = await taken(client, front)
    cancel = asyncio.create_task(client.get(f"/v1/workers/{WORKER}/jobs/job-1/cancel"))
    await asyncio.sleep(0.05)
    job.move(State.GONE)
    job.end(CLIENT_GONE)
    response = await cancel
    assert (response.status, await response.json()) == (200, {"reason": "client gone"})


@on_the_workers_port()
async def test_a_late_cancel_for_a_job_whose_client_left_still_says_why(client, front):
    job = await taken(client, front)
    job.move(State.GONE)
    job.end(CLIENT_GONE)
    response = await client.get(f"/v1/workers/{WORKER}/jobs/job-1/cancel")
    assert (response.status, await response.json()) == (200, {"reason": "client gone"})


@on_the_workers_port()
async def test_a_late_cancel_naming_another_job_than_the_one_whose_client_left_is_gone(client, front):
    job = await taken(client, front)
    job.move(State.GONE)
    job.end(CLIENT_GONE)
    response = await client.get(f"/v1/workers/{WORKER}/jobs/job-9/cancel")
    assert await refused(response, 410) == "no such job in flight"


@on_the_workers_port()
async def test_a_cancel_dropped_before_the_result_forgets_the_worker_and_requeues_the_job(client, front):
    job = await taken(client, front)
    cancel = asyncio.create_task(client.get(f"/v1/workers/{WORKER}/jobs/job-1/cancel"))
    while not job.claimed:
        await asyncio.sleep(0.01)
    cancel.cancel()
    while front.registry.get(WORKER) is not None:
        await asyncio.sleep(0.01)
    assert job.state is State.WAITING and len(front.buffer) == 1


@on_the_workers_port()
async def test_forgetting_a_worker_that_holds_another_job_leaves_that_job_with_it(client, front):
    job = await taken(client, front)
    other = queued(front, "job-2")
    front.buffer.drop(other)
    worker = front.registry.get(WORKER)
    worker_api._let_go(front, WORKER, other)
    assert worker.job is job


@on_the_workers_port()
async def test_forgetting_a_worker_clears_the_job_it_held(client, front):
    job = await taken(client, front)
    worker = front.registry.get(WORKER)
    worker_api._let_go(front, WORKER, job)
    assert worker.job is None and front.registry.get(WORKER) is None


# --- result, release, batch, leave ------------------------------------------------------------------------------


async def post_result(client: TestClient, job_id: str = "job-1", **headers: str):
    return await client.post(f"/v1/workers/{WORKER}/jobs/{job_id}/result", data=b'{"images": []}',
                             headers=headers, skip_auto_headers=["Content-Type"])


@on_the_workers_port()
async def test_a_result_finishes_the_job_with_the_webuis_status_type_and_body(client, front):
    job = await taken(client, front)
    response = await post_result(client, **{"X-Upstream-Status": "422", "Content-Type": "application/json"})
    assert response.status == 204
    assert (job.state, job.result.status, job.result.content_type, job.result.body) == (
        State.DONE, 422, "application/json", b'{"images": []}')


@on_the_workers_port()
async def test_a_result_without_a_content_type_is_octet_stream(client, front):
    job = await taken(client, front)
    await post_result(client, **{"X-Upstream-Status": "200"})
    assert job.result.content_type == "application/octet-stream"


@on_the_workers_port()
async def test_a_result_frees_the_worker_and_notes_it_was_seen(client, front):
    await taken(client, front)
    worker = front.registry.get(WORKER)
    before = worker.last_seen = front.now()
    await post_result(client, **{"X-Upstream-Status": "200"})
    assert worker.job is None and worker.last_seen > before


@on_the_workers_port()
async def test_a_result_without_the_upstream_status_is_refused_saying_what_is_wanted(client, front):
    job = await taken(client, front)
    detail = await refused(await post_result(client))
    assert detail == "X-Upstream-Status: want WebUI's HTTP status, e.g. 200"
    assert job.state is State.DISPATCHED


@on_the_workers_port()
async def test_a_result_whose_upstream_status_is_not_a_number_is_refused(client, front):
    await taken(client, front)
    detail = await refused(await post_result(client, **{"X-Upstream-Status": "OK"}))
    assert detail == "X-Upstream-Status: want WebUI's HTTP status, e.g. 200"


@on_the_workers_port()
async def test_a_result_for_a_job_whose_client_left_is_gone_and_still_frees_the_worker(client, front):
    job = await taken(client, front)
    job.move(State.GONE)
    response = await post_result(client, **{"X-Upstream-Status": "200"})
    assert await refused(response, 410) == "the client is gone"
    assert front.registry.get(WORKER).job is None


@on_the_workers_port()
async def test_a_result_for_another_job_does_not_free_the_worker(client, front):
    job = await taken(client, front)
    await post_result(client, "job-9", **{"X-Upstream-Status": "200"})
    assert front.registry.get(WORKER).job is job


@on_the_workers_port()
async def test_a_released_job_goes_back_to_the_head_and_the_worker_is_free(client, front):
    job = await taken(client, front)
    queued(front, "job-2")
    response = await client.post(f"/v1/workers/{WORKER}/jobs/job-1/release")
    assert response.status == 204
    assert job.state is State.WAITING and front.registry.get(WORKER).job is None
    assert (await (await poll(client)).json())["id"] == "job-1"


@on_the_workers_port()
async def test_a_release_for_a_job_not_in_flight_is_gone(client, front):
    response = await client.post(f"/v1/workers/{WORKER}/jobs/job-9/release")
    assert await refused(response, 410) == "no such job in flight"


@on_the_workers_port()
async def test_a_batch_job_holds_the_worker_busy(client, front):
    await poll(client)
    assert (await client.put(f"/v1/workers/{WORKER}/batch")).status == 204
    assert front.registry.get(WORKER).batch_since is not None


@on_the_workers_port()
async def test_a_batch_from_an_unknown_worker_is_refused(client, front):
    response = await client.put(f"/v1/workers/{WORKER}/batch")
    assert await refused(response, 404) == "unknown worker: call next first"


@on_the_workers_port()
async def test_a_worker_that_leaves_is_forgotten(client, front):
    await poll(client)
    assert (await client.delete(f"/v1/workers/{WORKER}")).status == 204
    assert front.registry.get(WORKER) is None


@on_the_workers_port()
async def test_the_demand_counts_the_waiting_requests_and_the_workers(client, front):
    queued(front)
    await poll(client, worker="webui-1", wait=0)
    queued(front, "job-2")
    response = await client.get("/v1/demand")
    assert (response.status, await response.json()) == (200, worker_api.demand(front.registry, len(front.buffer),
                                                                                front.ui))


@on_the_workers_port()
async def test_liveness_says_whether_the_front_drains(client, front):
    assert await (await client.get("/healthz")).json() == {"draining": False}
    front.draining = True
    assert await (await client.get("/healthz")).json() == {"draining": True}
