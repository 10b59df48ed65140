"""WebUI's per-process API calls, made per caller: progress, interrupt and skip reach the pod running the
caller's own job; an option change that would swap one pod's model is refused.

WebUI answers these from its one process-wide state (AUTOMATIC1111/stable-diffusion-webui v1.10.1
`modules/api/api.py`: `progressapi` reads `shared.state`, `interruptapi` and `skip` set its flags), which with
several pods behind the front means "whichever pod the call reaches". So a call goes to the pod running the
caller's queued job (auth.caller: basic-auth user and client address; the `webuiapi` package's
`get_progress`, `interrupt` and `skip` share the generating thread's session, so both). With several of the
caller's jobs running, progress reports the one dispatched first, and interrupt or skip reach each of them.
With none running, the call touches nobody's generation and is answered as an idle WebUI answers it:
`progressapi` with `job_count == 0` returns `ProgressResponse(progress=0, eta_relative=0,
state=shared.state.dict(), textinfo=...)` (`modules/api/models.py`: `current_image` and `textinfo` None;
`modules/shared_state.py` `State`: the fields' initial values), `interruptapi` returns `{}`, `skip` returns
nothing (`null`). A caller whose job still waits in the buffer gets the same: WebUI clears both flags when a
generation begins (`State.begin`), so a request queued behind its lock runs in full after an interrupt too;
a client that no longer wants its request disconnects, which drops it from the buffer.

`POST /sdapi/v1/options` changing an option whose onchange reloads the model (RELOAD_KEYS) would do so on one
pod only, under that pod's `queue_lock` (v1.10.1 `modules/initialize_util.py` `configure_opts_onchange`),
leaving the others as they were: refused with 400; for `sd_model_checkpoint` and `sd_vae` the answer points to
`override_settings`, which WebUI applies per request and restores after it (v1.10.1 `modules/processing.py`
`process_images`). A value equal to what a pod has now is no change. Every other option passes to one pod.
"""

from __future__ import annotations

import json

import aiohttp
from aiohttp import web

from request_queue import auth, proxy
from request_queue.jobs import State
from request_queue.state import Front
from request_queue.workers import Worker

PROGRESS = "/sdapi/v1/progress"
PER_JOB = {("GET", PROGRESS), ("POST", "/sdapi/v1/interrupt"), ("POST", "/sdapi/v1/skip")}
OPTIONS = ("POST", "/sdapi/v1/options")
MODEL_KEYS = ("sd_model_checkpoint", "sd_vae")
"""Options whose change loads another model, and which `process_images` applies per request (override_settings)."""
RELOAD_KEYS = (*MODEL_KEYS, "sd_vae_overrides_per_model_preferences", "cross_attention_optimization", "fp8_storage",
               "cache_fp16_weight")
"""Every option whose onchange reloads weights or re-hijacks the model under `queue_lock` (v1.10.1
`modules/initialize_util.py` `configure_opts_onchange`: `wrap_queued_call(...)`)."""
IDLE_STATE = {"skipped": False, "interrupted": False, "stopping_generation": False, "job": "", "job_count": 0,
              "job_timestamp": "0", "job_no": 0, "sampling_step": 0, "sampling_steps": 0}
IDLE = {
    "/sdapi/v1/progress": {"progress": 0.0, "eta_relative": 0.0, "state": IDLE_STATE, "current_image": None,
                           "textinfo": None},
    "/sdapi/v1/interrupt": {},
    "/sdapi/v1/skip": None,
}


def is_per_job(method: str, path: str) -> bool:
    return (method.upper(), path) in PER_JOB


def _running_for(front: Front, caller: str) -> list[Worker]:
    jobs = sorted((job for job in front.held.values() if job.caller == caller and job.state is State.DISPATCHED),
                  key=lambda job: job.dispatched_at)
    workers = (front.registry.get(job.worker) for job in jobs)
    return [worker for worker in workers if worker is not None]


async def per_job(front: Front, request: web.Request) -> web.StreamResponse:
    """Progress, interrupt or skip, for the caller's own running job; an idle WebUI's answer without one."""
    workers = _running_for(front, auth.caller(request, front.settings.forwarded_for_entries))
    if not workers:
        return web.json_response(IDLE[request.path])
    if request.path == PROGRESS:
        return await proxy.forward(front, request, workers[0])
    answers = [await proxy.forward(front, request, worker) for worker in workers]
    return answers[0]


async def _current_options(front: Front, request: web.Request) -> dict:
    """What one pod has now (GET /sdapi/v1/options); {} when no pod answers, so every change counts as one."""
    worker = front.registry.pick()
    if worker is None or front.session is None:
        return {}
    headers = {"Authorization": request.headers["Authorization"]} if "Authorization" in request.headers else {}
    try:
        async with front.session.get(worker.url.rstrip("/") + "/sdapi/v1/options", headers=headers) as response:
            current = await response.json() if response.status == 200 else {}
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return {}
    return current if isinstance(current, dict) else {}


async def model_swap(front: Front, request: web.Request) -> web.Response | None:
    """400 naming the key and value when an options change would reload one pod's model; None otherwise. A key
    whose value is what a pod has now is no change: a client that GETs the options and POSTs them back passes."""
    if (request.method.upper(), request.path) != OPTIONS:
        return None
    try:
        options = json.loads(await request.read() or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # WebUI answers a body it cannot read with its own 422
    if not isinstance(options, dict) or not any(key in options for key in RELOAD_KEYS):
        return None
    current = await _current_options(front, request)
    changes = {key: options[key] for key in RELOAD_KEYS if key in options and current.get(key, _UNSET) != options[key]}
    if not changes:
        return None
    named = ", ".join(f"{key}={value!r}" for key, value in changes.items())
    detail = (f"POST /sdapi/v1/options with {named} is refused: requests are spread over several WebUI pods and "
              f"this would reload the model of one of them only.")
    per_request = {key: value for key, value in changes.items() if key in MODEL_KEYS}
    if per_request == changes:
        detail += (f" Choose the model per request instead: add {json.dumps({'override_settings': per_request})} "
                   f"to the txt2img or img2img request body.")
    return web.json_response({"detail": detail}, status=400)


_UNSET = object()
