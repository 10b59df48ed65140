"""The browser UI through the request queue (issue 17 item 4): Gradio 3.41's page, its queue's WebSocket
(`/queue/join`) and its generation, against a strict stand-in of Gradio 3.41.2's queue (tests/fakes/gradio.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp

from tests.fakes.gradio import PAGE, UVICORN_WS_MAX_SIZE, FakeGradio
from tests.fakes.queue_worker import StandInWorker
from tests.request_queue.conftest import AUTH, run_async
from tests.request_queue.helpers import demand, txt2img, until_demand

GRADIO_CLIENT = [  # what Gradio 3.41's front end sends, in order, for one click of Generate
    ("send_hash", {"session_hash": "tab-1", "fn_index": 7}),
    ("estimation", None),
    ("send_data", {"data": ["a red fox"], "fn_index": 7, "session_hash": "tab-1", "event_data": None}),
    ("process_starts", None),
]


def _ws_url(queue) -> str:
    return queue.url.replace("http://", "ws://") + "/queue/join"


async def _until_started(socket: aiohttp.ClientWebSocketResponse) -> None:
    """One click of Generate, up to `process_starts`: the pod runs the browser's generation from there."""
    for expected, answer in GRADIO_CLIENT:
        assert (await socket.receive_json())["msg"] == expected
        if answer is not None:
            await socket.send_json(answer)


@run_async
async def test_the_page_the_queue_socket_and_a_generation_go_through_to_the_same_pod(start_queue):
    queue = start_queue(SD_API_AUTH=AUTH)
    gradio = await FakeGradio().start()
    try:
        async with aiohttp.ClientSession() as session:
            await StandInWorker(session, queue.workers_url, "pod-a", gradio.url).poll()
            async with session.get(queue.url + "/") as response:
                page_status, page = response.status, await response.text()
                assert response.cookies["sdgke-pod"].value == "pod-a"
            ws_url = queue.url.replace("http://", "ws://") + "/queue/join"
            async with session.ws_connect(ws_url) as socket:
                for expected, answer in GRADIO_CLIENT:
                    assert (await socket.receive_json())["msg"] == expected
                    if answer is not None:
                        await socket.send_json(answer)
                assert (await demand(session, queue.workers_url))["ui_active"] is True
                completed = await socket.receive_json()
    finally:
        await gradio.stop()
    assert (page_status, page) == (200, PAGE)
    assert completed == {"msg": "process_completed", "output": {"data": ["image of a red fox"]}, "success": True}
    assert gradio.generated == ["a red fox"] and gradio.violations == []


@run_async
async def test_a_message_out_of_turn_reaches_gradio_unchanged_and_is_refused_by_it(start_queue):
    queue = start_queue(SD_API_AUTH=AUTH)
    gradio = await FakeGradio().start()
    try:
        async with aiohttp.ClientSession() as session:
            await StandInWorker(session, queue.workers_url, "pod-a", gradio.url).poll()
            async with session.ws_connect(queue.url.replace("http://", "ws://") + "/queue/join") as socket:
                assert (await socket.receive_json())["msg"] == "send_hash"
                await socket.send_str("not json")
                closing = await socket.receive()
    finally:
        await gradio.stop()
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert gradio.generated == [] and len(gradio.violations) == 1


@run_async
async def test_an_img2img_input_larger_than_aiohttps_4_mib_default_crosses_the_queue_socket_both_ways(start_queue):
    base64_image = "data:image/png;base64," + "A" * (5 * 1024 * 1024)
    queue = start_queue(SD_API_AUTH=AUTH)
    gradio = await FakeGradio().start()
    try:
        async with aiohttp.ClientSession() as session:
            await StandInWorker(session, queue.workers_url, "pod-a", gradio.url).poll()
            ws_url = queue.url.replace("http://", "ws://") + "/queue/join"
            async with session.ws_connect(ws_url, max_msg_size=UVICORN_WS_MAX_SIZE) as socket:
                for expected, answer in GRADIO_CLIENT:
                    assert (await socket.receive_json())["msg"] == expected
                    if expected == "send_data":
                        answer = {**answer, "data": [base64_image]}
                    if answer is not None:
                        await socket.send_json(answer)
                completed = await socket.receive_json()
    finally:
        await gradio.stop()
    assert gradio.violations == [] and gradio.generated == [base64_image]
    assert completed["output"] == {"data": [f"image of {base64_image}"]}


@contextlib.asynccontextmanager
async def _pod_holding_its_generations(start_queue, **settings: str):
    """The request queue, and pod-a registered with a Gradio whose generations run until `finish` is set."""
    queue = start_queue(SD_API_AUTH=AUTH, **settings)
    gradio = await FakeGradio().start()
    gradio.finish.clear()
    try:
        async with aiohttp.ClientSession() as session:
            worker = StandInWorker(session, queue.workers_url, "pod-a", gradio.url)
            await worker.poll()
            yield queue, gradio, session, worker
    finally:
        await gradio.stop()


async def _api_call_held_while_the_pod_is_busy(queue, session, worker) -> tuple[asyncio.Task, asyncio.Task]:
    """A txt2img call and the worker's long poll, once the demand shows the call waiting and the pod busy."""
    client = asyncio.create_task(txt2img(session, queue.url, "api"))
    poll = asyncio.create_task(worker.poll(wait=20))
    await until_demand(session, queue.workers_url, waiting=1, busy=1, workers=1)
    return client, poll


@run_async
async def test_a_pod_running_a_browsers_generation_counts_busy_until_gradio_completes_it(start_queue):
    async with _pod_holding_its_generations(start_queue) as (queue, gradio, session, _):
        async with session.ws_connect(_ws_url(queue)) as socket:
            await _until_started(socket)
            running = await until_demand(session, queue.workers_url, busy=1)
            gradio.finish.set()
            assert (await socket.receive_json())["msg"] == "process_completed"
            after = await until_demand(session, queue.workers_url, busy=0)
    assert (running["idle"], running["desired"]) == (0, 1)
    assert after["idle"] == 1


@run_async
async def test_a_worker_whose_pod_runs_a_browsers_generation_gets_the_next_job_only_once_it_completes(start_queue):
    async with _pod_holding_its_generations(start_queue) as (queue, gradio, session, worker):
        async with session.ws_connect(_ws_url(queue)) as socket:
            await _until_started(socket)
            client, poll = await _api_call_held_while_the_pod_is_busy(queue, session, worker)
            gradio.finish.set()
            assert (await socket.receive_json())["msg"] == "process_completed"
            job = await poll
        await worker.post_result(job, 200, b"{}")
        status, _, _ = await client
    assert job["headers"]["X-Loadtest-Request"] == "api" and status == 200


@run_async
async def test_a_browser_that_leaves_mid_generation_leaves_its_pod_busy_until_gradio_completes_it(start_queue):
    async with _pod_holding_its_generations(start_queue) as (queue, gradio, session, worker):
        async with session.ws_connect(_ws_url(queue)) as socket:
            await _until_started(socket)
        client, poll = await _api_call_held_while_the_pod_is_busy(queue, session, worker)
        gradio.finish.set()
        job = await poll
        await worker.post_result(job, 200, b"{}")
        await client
    assert gradio.delivered == ["a red fox"], "Gradio's process_completed reached the front's open socket"
    assert job["headers"]["X-Loadtest-Request"] == "api"


@run_async
async def test_a_browsers_event_outside_gradios_queue_keeps_its_pod_busy_until_the_pod_answers(start_queue):
    async with _pod_holding_its_generations(start_queue) as (queue, gradio, session, worker):
        event = asyncio.create_task(session.post(queue.url + "/run/predict", json={
            "data": ["a red fox"], "fn_index": 3, "session_hash": "tab-1", "event_data": None}))
        running = await until_demand(session, queue.workers_url, busy=1)
        client, poll = await _api_call_held_while_the_pod_is_busy(queue, session, worker)
        gradio.finish.set()
        answer = await event
        predicted = (answer.status, await answer.json())
        job = await poll
        await worker.post_result(job, 200, b"{}")
        await client
    assert (running["idle"], running["desired"]) == (0, 1)
    assert predicted == (200, {"data": ["image of a red fox"], "is_generating": False, "duration": 0.0,
                               "average_duration": 0.0})
    assert job["headers"]["X-Loadtest-Request"] == "api" and gradio.violations == []


@run_async
async def test_the_front_opens_the_queue_socket_under_the_pods_own_host_not_the_clients(start_queue):
    """Headers the front passes on do not include the client's Host (headers.py). Gradio's queue posts its
    predictions to the local URL Blocks.launch gave it, not to this socket's host, so this guards only the Host."""
    async with _pod_holding_its_generations(start_queue) as (queue, gradio, session, _):
        gradio.finish.set()
        async with session.ws_connect(_ws_url(queue), headers={"Host": "sd.example.com"}) as socket:
            await _until_started(socket)
            assert (await socket.receive_json())["msg"] == "process_completed"
    assert gradio.join_hosts == [gradio.url.removeprefix("http://")]


@run_async
async def test_a_poll_held_past_its_wait_and_the_hold_answers_204_saying_the_webui_is_busy(start_queue):
    async with _pod_holding_its_generations(start_queue) as (queue, gradio, session, _):
        body = {"url": gradio.url, "wait": 0}
        async with session.post(queue.workers_url + "/v1/workers/pod-a/next", json=body) as response:
            idle = (response.status, response.headers["X-Queue-Webui-Busy"])
        async with session.ws_connect(_ws_url(queue)) as socket:
            await _until_started(socket)
            async with session.post(queue.workers_url + "/v1/workers/pod-a/next", json=body) as response:
                busy = (response.status, response.headers["X-Queue-Webui-Busy"])
            gradio.finish.set()
    assert idle == (204, "false")
    assert busy == (204, "true"), "a worker with batch on then polls again instead of pulling a batch job"


async def _until_draining(session: aiohttp.ClientSession, queue) -> None:
    async with asyncio.timeout(20):
        while (await session.get(queue.url + "/healthz")).status != 503:
            await asyncio.sleep(0.02)


@run_async
async def test_on_sigterm_a_socket_whose_event_has_not_started_is_cut_at_once_without_a_close_frame(start_queue):
    async with _pod_holding_its_generations(start_queue, DRAIN_SECONDS="300") as (queue, gradio, session, _):
        gradio.queue_open.clear()  # the event waits in Gradio's queue, before send_data
        async with session.ws_connect(_ws_url(queue)) as socket:
            assert (await socket.receive_json())["msg"] == "send_hash"
            await socket.send_json(GRADIO_CLIENT[0][1])
            assert (await socket.receive_json())["msg"] == "estimation"
            queue.terminate()
            async with asyncio.timeout(60):  # not DRAIN_SECONDS
                cut = await socket.receive()
        gradio.queue_open.set()
    events = [event["event"] for event in queue.events()]
    assert cut.type is aiohttp.WSMsgType.CLOSED and socket.close_code == aiohttp.WSCloseCode.ABNORMAL_CLOSURE, \
        "no close frame: Gradio's front end then reports 'Connection errored out.'"
    assert events[-2:] == ["draining", "stopped"]


@run_async
async def test_on_sigterm_a_socket_mid_generation_gets_its_result_and_the_front_stops_once_it_completed(start_queue):
    async with _pod_holding_its_generations(start_queue, DRAIN_SECONDS="300") as (queue, gradio, session, _):
        async with session.ws_connect(_ws_url(queue)) as socket:
            await _until_started(socket)
            queue.terminate()
            await _until_draining(session, queue)
            gradio.finish.set()
            completed = await socket.receive_json()
            closing = await socket.receive()
    events = [event["event"] for event in queue.events()]
    assert completed["msg"] == "process_completed" and closing.type is aiohttp.WSMsgType.CLOSE
    assert events[-2:] == ["draining", "stopped"]


def test_a_streaming_event_leaves_its_pod_free_once_it_streams_and_is_cut_by_the_drain(service_module):
    ui_events, workers = service_module("ui_events"), service_module("workers")
    worker = workers.Worker("pod-a", "http://10.0.0.1:7860", 0.0)
    socket = ui_events.UiSocket(worker)
    socket.saw('{"msg":"process_starts"}')
    busy = worker.busy
    socket.saw('{"msg":"process_generating","output":{"data":[1]},"success":true}')
    socket.drain()
    assert busy and not worker.busy
    assert socket.cut.is_set()


def test_the_kind_of_a_gradio_message_is_read_from_its_head_however_it_is_spaced(service_module):
    ui_events = service_module("ui_events")
    image = "A" * (1024 * 1024)
    assert ui_events.kind('{"msg":"process_starts"}') == "process_starts"
    message = json.dumps({"msg": "process_completed", "output": {"data": [image]}})
    assert ui_events.kind(message) == "process_completed"
    assert ui_events.kind('{"output": {}, "msg": "process_completed"}') is None
    assert ui_events.kind("not json") is None
