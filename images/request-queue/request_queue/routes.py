"""Which WebUI API calls are queued: those that take WebUI's one process-wide `queue_lock`.

Read from AUTOMATIC1111/stable-diffusion-webui `modules/api/api.py` (the stored copy at 0050a35; the recipe
pins v1.10.1, 82a973c, whose api.py routes are the same): `with self.queue_lock:` is taken by
text2imgapi, img2imgapi, extras_single_image_api, extras_batch_images_api, interrogateapi,
refresh_checkpoints and refresh_vae, registered in Api.__init__ at the paths below, all POST. Every other
`/sdapi/v1/*` call runs beside a generation in WebUI, so it is not queued: progress, interrupt and skip go to
the pod running the caller's job, a model swap through options is refused (callers.py), the rest (the model
lists, other options...) go straight to one pod.
"""

from __future__ import annotations

API_PREFIX = "/sdapi/"
QUEUED = frozenset({
    ("POST", "/sdapi/v1/txt2img"),
    ("POST", "/sdapi/v1/img2img"),
    ("POST", "/sdapi/v1/extra-single-image"),
    ("POST", "/sdapi/v1/extra-batch-images"),
    ("POST", "/sdapi/v1/interrogate"),
    ("POST", "/sdapi/v1/refresh-checkpoints"),
    ("POST", "/sdapi/v1/refresh-vae"),
})


def is_queued(method: str, path: str) -> bool:
    """True for a call that takes WebUI's queue_lock: it waits in the buffer for a free pod."""
    return (method.upper(), path) in QUEUED


def is_api(path: str) -> bool:
    """True for WebUI's API (basic auth applies); everything else is the browser UI."""
    return path.startswith(API_PREFIX)
