"""`python -m queue_agent`: settings from the environment the Deployment sets (components/worker.py, components/jobs.py).

With QUEUE_FRONT_URL it is the worker beside a WebUI (queue_agent/worker.py); without, the batch agent alone."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from queue_agent import agent
from queue_agent.results import BucketResults

ENV = {
    "JOBS_SUBSCRIPTION": "subscription", "JOBS_COMPLETIONS_TOPIC": "completions_topic",
    "JOBS_DEAD_LETTER_TOPIC": "dead_letter_topic", "JOBS_BUCKET": "bucket",
}
NUMBERS = {
    "JOBS_MAX_ATTEMPTS": ("max_attempts", int), "JOBS_ACK_DEADLINE_SECONDS": ("ack_deadline_seconds", int),
    "JOBS_GENERATION_TIMEOUT_SECONDS": ("generation_timeout_seconds", float),
    "JOBS_DRAIN_SECONDS": ("drain_seconds", float), "JOBS_READY_POLL_SECONDS": ("ready_poll_seconds", float),
    "JOBS_STORAGE_RETRY_SECONDS": ("storage_retry_seconds", float),
}


def settings_from(env: dict[str, str]) -> agent.Settings:
    missing = [key for key in (*ENV, "JOBS_MAX_ATTEMPTS") if not env.get(key)]
    if missing:
        raise SystemExit("queue agent: missing environment " + ", ".join(missing))
    values: dict = {attr: env[key] for key, attr in ENV.items()}
    for key, (attr, kind) in NUMBERS.items():
        if env.get(key):
            try:
                values[attr] = kind(env[key])
            except ValueError:
                raise SystemExit(f"queue agent: {key}={env[key]!r} is not a number") from None
    return agent.Settings(**values, webui_url=env.get("SD_API_URL", "http://127.0.0.1:7860"),
                          webui_auth=env.get("SD_API_AUTH") or None, heartbeat=env.get("JOBS_HEARTBEAT") or None)


def main(env: dict[str, str] | None = None, stop: threading.Event | None = None) -> int:
    from google.cloud import pubsub_v1, storage

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    env = dict(os.environ) if env is None else env
    if stop is None:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    if env.get("QUEUE_FRONT_URL"):  # the worker beside a WebUI: the request queue first, batch between
        from queue_agent import worker

        return worker.main(env, stop, settings_from(env) if env.get("JOBS_SUBSCRIPTION") else None)
    settings = settings_from(env)
    subscriber = pubsub_v1.SubscriberClient()
    publisher = pubsub_v1.PublisherClient()
    results = BucketResults(storage.Client(), settings.bucket, settings.storage_retry_seconds)
    worker = agent.Agent(settings, subscriber, publisher, results, agent.Webui(settings.webui_url, settings.webui_auth))
    worker.run(stop)
    logging.getLogger("queue_agent").info("stopped: %s", worker.outcomes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
