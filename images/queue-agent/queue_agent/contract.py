"""What a job is, where its result lives: the contract between the agent and the client (tools/jobs.py).

A job is one Pub/Sub message: its data is a txt2img payload (JSON object with at least a non-empty
string "prompt"), its attributes carry `job_id` (and `batch_id`, the client's grouping). A job's
result is committed by one object, `<job_id>/result.json`, created only if absent, so at most one
attempt ever commits; the images it lists live under the attempt's own prefix, so an attempt that
died half-way never mixes its images into another's result (its leftovers expire with the bucket's
lifecycle rule).
"""

from __future__ import annotations

import json
import re
from typing import Any

JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
JOB_ID_RULE = "1-128 letters, digits, '-' or '_', starting with a letter or digit"
TXT2IMG_FIELDS = {
    "prompt": str, "negative_prompt": str, "seed": int, "steps": int, "cfg_scale": (int, float),
    "width": int, "height": int, "batch_size": int, "n_iter": int, "sampler_name": str,
    "scheduler": str, "denoising_strength": (int, float), "styles": list,
}
"""The txt2img fields a job may set (StableDiffusionTxt2ImgProcessingAPI, AUTOMATIC1111/stable-diffusion-webui
@82a973c04367123ae98bd9abdf80d9eda9b910e2:modules/api/models.py); anything else is refused at submit
time rather than failing on a GPU."""
KIND_NAMES = {str: "a string", int: "an integer", float: "a number", list: "a list"}
RESULT = "result.json"


class JobError(ValueError):
    """A job that can never succeed as written."""


def result_name(job_id: str) -> str:
    return f"{job_id}/{RESULT}"


def image_name(job_id: str, attempt: str, index: int) -> str:
    return f"{job_id}/{attempt}/{index}.png"


def check_job_id(job_id: Any) -> str:
    if not isinstance(job_id, str) or not JOB_ID.match(job_id):
        raise JobError(f"job_id: {json.dumps(job_id)} is not allowed; expected {JOB_ID_RULE}")
    return job_id


def check_payload(payload: Any) -> dict[str, Any]:
    """The txt2img payload of a job, or JobError naming the field, the value and what is allowed."""
    if not isinstance(payload, dict):
        raise JobError(f"a job is a JSON object with a \"prompt\"; got {type(payload).__name__}")
    if "prompt" not in payload:
        raise JobError("prompt: missing; every job needs a non-empty string prompt")
    for key, value in payload.items():
        kind = TXT2IMG_FIELDS.get(key)
        if kind is None:
            raise JobError(f"{key}: unknown field; allowed fields are " + ", ".join(sorted(TXT2IMG_FIELDS)))
        if isinstance(value, bool) or not isinstance(value, kind):
            names = " or ".join(KIND_NAMES[k] for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise JobError(f"{key}: {json.dumps(value)} is not allowed; expected {names}")
    if not payload["prompt"].strip():
        raise JobError("prompt: \"\" is not allowed; expected a non-empty string")
    return payload


def decode_job(data: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(data)
    except ValueError as err:
        raise JobError(f"the message is not JSON: {err}") from None
    return check_payload(payload)
