"""The browser UI through the request queue (issue 17 item 4): Gradio 3.41's page, its queue's WebSocket
(`/queue/join`) and its generation, against a strict stand-in of Gradio 3.41.2's queue (tests/fakes/gradio.py)."""

from __future__ import annotations

import aiohttp

from tests.fakes.gradio import PAGE, UVICORN_WS_MAX_SIZE, FakeGradio
from tests.fakes.queue_worker import StandInWorker
from tests.request_queue.conftest import AUTH, run_async
from tests.request_queue.helpers import demand

GRADIO_CLIENT = [  # what Gradio 3.41's front end sends, in order, for one click of Generate
    ("send_hash", {"session_hash": "tab-1", "fn_index": 7}),
    ("estimation", None),
    ("send_data", {"data": ["a red fox"], "fn_index": 7, "session_hash": "tab-1", "event_data": None}),
    ("process_starts", None),
]


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
