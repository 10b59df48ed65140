"""The request queue's settings, read once from the environment (components/request_queue.py sets them).

Every bad value is reported together, each naming the variable, the value and what is allowed, so that a
pod that cannot start says why in one log line instead of a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


class ConfigError(Exception):
    """One or more environment variables are missing or invalid; the message lists every one."""


@dataclass(frozen=True)
class Settings:
    max_depth: int
    """QUEUE_MAX_DEPTH: with this many requests waiting, a new one gets 429 at once."""
    max_wait: float
    """QUEUE_MAX_WAIT_SECONDS: a request not dispatched within it gets 503."""
    generation_timeout: float
    """GENERATION_TIMEOUT_SECONDS: the worker's limit on one generation, sent with every job."""
    margin: float
    """MARGIN_SECONDS: slack between hops (components/timeouts.py)."""
    ui_keepalive: float
    """UI_KEEPALIVE_SECONDS: how long a browser visit keeps one WebUI pod wanted."""
    worker_ttl: float
    """WORKER_TTL_SECONDS: a worker neither polling nor holding a job this long is forgotten."""
    drain: float
    """DRAIN_SECONDS: on SIGTERM, how long held requests may still take."""
    forwarded_for_entries: int
    """FORWARDED_FOR_ENTRIES: how many X-Forwarded-For entries, from the end, the load balancer appends; the
    first of them is the caller's address (auth.caller). 0: no load balancer, the peer is the caller."""
    http_port: int
    worker_port: int
    api_auth: dict[str, str] | None
    """SD_API_AUTH as WebUI's --api-auth takes it (`user:password[,user:password...]`); None: no auth."""

    @property
    def result_wait(self) -> float:
        """How long a dispatched job's result is awaited: the worker, which gives up after the generation
        timeout, always reports first (components/timeouts.py TimeoutChain.result_wait)."""
        return self.generation_timeout + 2 * self.margin

    @property
    def pod_read(self) -> float:
        """The longest a pod may stay silent on a call passed to it (proxy.forward): the longest it works on one
        answer, a generation outside Gradio's queue (`/run/*`), is the generation timeout; past it plus the
        margin the pod is taken as lost (one without FIN or RST would otherwise hold the call for hours)."""
        return self.generation_timeout + self.margin

    @property
    def heartbeat(self) -> float:
        """Ping interval on both sides of a relayed WebSocket: aiohttp closes a side whose pong has not come
        within half of it (aiohttp 3.14 client_ws.py / web_ws.py `_pong_heartbeat = heartbeat / 2`), so a lost
        pod or browser is noticed within 1.5 margins."""
        return self.margin


_NUMBERS = {
    # name: (attribute, type, smallest allowed)
    "QUEUE_MAX_DEPTH": ("max_depth", int, 1),
    "QUEUE_MAX_WAIT_SECONDS": ("max_wait", float, 0.1),
    "GENERATION_TIMEOUT_SECONDS": ("generation_timeout", float, 1),
    "MARGIN_SECONDS": ("margin", float, 0.1),
    "UI_KEEPALIVE_SECONDS": ("ui_keepalive", float, 0),
    "WORKER_TTL_SECONDS": ("worker_ttl", float, 1),
    "DRAIN_SECONDS": ("drain", float, 0),
    "FORWARDED_FOR_ENTRIES": ("forwarded_for_entries", int, 0),
}
_PORTS = {"HTTP_PORT": "http_port", "WORKER_PORT": "worker_port"}


def _number(name: str, raw: str, kind: type, smallest: float, errors: list[str]) -> float | int | None:
    noun = "an integer" if kind is int else "a number of seconds"
    try:
        value = kind(raw)
    except ValueError:
        errors.append(f"{name}={raw!r} is not {noun}; want {noun} >= {smallest}")
        return None
    if value != value or value in (float("inf"), float("-inf")) or value < smallest:
        errors.append(f"{name}={raw!r} is out of range; want {noun} >= {smallest}")
        return None
    return value


def _auth(raw: str, errors: list[str]) -> dict[str, str] | None:
    """WebUI splits --api-auth on ',' then each pair on ':' (modules/api/api.py Api.__init__)."""
    if raw == "":
        return None
    credentials = {}
    for pair in raw.split(","):
        user, sep, password = pair.partition(":")
        if not sep or not user or not password or ":" in password:
            errors.append("SD_API_AUTH is not `user:password[,user:password...]` (value withheld: it is a secret)")
            return None
        credentials[user] = password
    return credentials


def load(env: Mapping[str, str] = os.environ) -> Settings:
    """The settings from `env`; ConfigError listing every missing or invalid variable."""
    errors: list[str] = []
    values: dict[str, object] = {}
    for name, (attribute, kind, smallest) in _NUMBERS.items():
        if name not in env:
            errors.append(f"{name} is not set; want {'an integer' if kind is int else 'a number of seconds'} >= {smallest}")
            continue
        values[attribute] = _number(name, env[name], kind, smallest, errors)
    for name, attribute in _PORTS.items():
        if name not in env:
            errors.append(f"{name} is not set; want a TCP port, 0-65535 (0: any free port)")
            continue
        port = _number(name, env[name], int, 0, errors)
        if port is not None and port > 65535:
            errors.append(f"{name}={env[name]!r} is out of range; want a TCP port, 0-65535 (0: any free port)")
            port = None
        values[attribute] = port
    values["api_auth"] = _auth(env.get("SD_API_AUTH", ""), errors)
    if errors:
        raise ConfigError("invalid request queue settings:\n  " + "\n  ".join(errors))
    return Settings(**values)  # type: ignore[arg-type]
