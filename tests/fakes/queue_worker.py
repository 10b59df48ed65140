"""A strict stand-in for the worker beside a WebUI pod (docs/request-queue.md, "Workers").

It speaks the protocol one call at a time, so a test drives each step (poll, hold cancel, run on a WebUI,
post the result) and sees the request queue's answers; every answer is checked against what the protocol
allows for that call, and a job must carry exactly the documented fields.
"""

from __future__ import annotations

import asyncio
import base64

import aiohttp

JOB_FIELDS = {"id", "method", "path", "query", "headers", "body", "generation_timeout"}


class ProtocolError(AssertionError):
    """The request queue answered something the protocol does not allow."""


def _expect(response: aiohttp.ClientResponse, allowed: set[int], call: str) -> None:
    if response.status not in allowed:
        raise ProtocolError(f"{call}: HTTP {response.status}, the protocol allows {sorted(allowed)}")


class StandInWorker:
    def __init__(self, session: aiohttp.ClientSession, workers_url: str, name: str, webui_url: str):
        self.session = session
        self.base = f"{workers_url}/v1/workers/{name}"
        self.webui_url = webui_url

    async def poll(self, wait: float = 0) -> dict | None:
        """`next`: a job, or None on 204."""
        async with self.session.post(f"{self.base}/next", json={"url": self.webui_url, "wait": wait}) as response:
            _expect(response, {200, 204}, "next")
            if response.status == 204:
                return None
            job = await response.json()
        if set(job) != JOB_FIELDS:
            raise ProtocolError(f"next: job fields {sorted(job)}, want {sorted(JOB_FIELDS)}")
        return job

    def hold_cancel(self, job: dict) -> asyncio.Task:
        """`cancel`, held open in a task: its result is (status, reason or None)."""

        async def hold() -> tuple[int, str | None]:
            async with self.session.get(f"{self.base}/jobs/{job['id']}/cancel",
                                        timeout=aiohttp.ClientTimeout(total=None)) as response:
                _expect(response, {200, 204, 410}, "cancel")
                reason = (await response.json())["reason"] if response.status == 200 else None
                return response.status, reason

        return asyncio.create_task(hold())

    async def post_result(self, job: dict, status: int, body: bytes,
                          content_type: str = "application/json") -> int:
        async with self.session.post(f"{self.base}/jobs/{job['id']}/result", data=body,
                                     headers={"X-Upstream-Status": str(status), "Content-Type": content_type}
                                     ) as response:
            _expect(response, {204, 410}, "result")
            return response.status

    async def release(self, job: dict) -> int:
        """`release`: hand the job back unrun (its WebUI is busy); 204, or 410 for a job not in flight here."""
        async with self.session.post(f"{self.base}/jobs/{job['id']}/release") as response:
            _expect(response, {204, 410}, "release")
            return response.status

    async def run_on_webui(self, job: dict) -> tuple[int, str, bytes]:
        """Send the job to the WebUI as the worker does: same method, path, query, headers and body."""
        url = self.webui_url + job["path"] + (f"?{job['query']}" if job["query"] else "")
        async with self.session.request(job["method"], url, headers=job["headers"],
                                        data=base64.b64decode(job["body"])) as response:
            return response.status, response.headers.get("Content-Type", ""), await response.read()

    async def serve_one(self, wait: float = 5) -> dict | None:
        """One turn of the worker's loop: pull a job, run it on the WebUI holding `cancel`, post the outcome."""
        job = await self.poll(wait)
        if job is None:
            return None
        held = self.hold_cancel(job)
        status, content_type, body = await self.run_on_webui(job)
        await self.post_result(job, status, body, content_type)
        await held
        return job

    async def mark_batch(self) -> None:
        async with self.session.put(f"{self.base}/batch") as response:
            _expect(response, {204}, "batch")

    async def leave(self) -> None:
        async with self.session.delete(self.base) as response:
            _expect(response, {204}, "DELETE")
