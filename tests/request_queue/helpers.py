"""Client-side helpers for the request queue tests: API calls with WebUI's basic auth, waiting on the demand."""

from __future__ import annotations

import asyncio
import base64
import json

import aiohttp

from tests.request_queue.conftest import AUTH

TXT2IMG = "/sdapi/v1/txt2img"
POLL_EVERY = 0.02


def auth_header(credentials: str = AUTH) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


async def txt2img(session: aiohttp.ClientSession, url: str, tag: str = "", **payload) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one txt2img call, tagged X-Loadtest-Request as the load test does."""
    headers = {**auth_header(), "X-Loadtest-Request": tag}
    body = json.dumps({"prompt": tag or "dog", **payload}).encode()
    async with session.post(url + TXT2IMG, data=body, headers={**headers, "Content-Type": "application/json"}
                            ) as response:
        return response.status, dict(response.headers), await response.read()


async def demand(session: aiohttp.ClientSession, workers_url: str) -> dict:
    async with session.get(f"{workers_url}/v1/demand") as response:
        assert response.status == 200
        return await response.json()


async def until_demand(session: aiohttp.ClientSession, workers_url: str, timeout: float = 20, **expected) -> dict:
    """Wait until the demand shows `expected` (e.g. waiting=2): the queue's state is an event to await."""
    async with asyncio.timeout(timeout):
        while True:
            seen = await demand(session, workers_url)
            if all(seen[k] == v for k, v in expected.items()):
                return seen
            await asyncio.sleep(POLL_EVERY)
