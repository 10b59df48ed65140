"""One timeout chain for a request, derived from the stack config, innermost first.

A request meets these hops (docs/request-queue.md): the Gateway's load balancer, the request queue (its
buffer, then its wait for a dispatched job's result), the worker beside the WebUI, and WebUI itself.
Each hop waits at least as long as the hop behind it may still be working, with MARGIN_SECONDS to
spare, so no hop cuts a request the next one is still working on (tests/test_timeout_chain.py reads
every value back from the registered resources and checks exactly that):

- generation G (webui.generationTimeoutSeconds): the worker's call to its WebUI, after which it
  interrupts the generation (`/sdapi/v1/interrupt`); the batch agent's call has the same limit;
- result wait = G + 2 x margin: the request queue waits that long for a dispatched job's result, so the
  worker, which gives up after G, always reports first;
- queue wait Q (queue.maxWaitSeconds): how long a request may wait in the buffer, a cold start included;
- client budget = Q + result wait: the longest an accepted request takes (the longest wait plus one
  generation, and the margins), which is what a client should be ready to wait (tools/loadtest.py);
- Gateway backend timeout = client budget + margin (GCPBackendPolicy timeoutSec; its default of 30 s
  would cut every request held through a cold start);
- the request queue's drain = client budget: on SIGTERM it stops accepting and finishes what it holds;
  its grace period = drain + margin;
- the WebUI pod's drain = G and grace period = G + margin: its worker finishes the generation in flight.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from components import config

MARGIN_SECONDS = 30
"""Slack between hops: connection set-up, upload of the request and download of the images, one hop's own work."""
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class TimeoutChain:
    """Every timeout of the request path, in seconds."""

    generation: int
    queue_wait: int
    margin: int = MARGIN_SECONDS

    @classmethod
    def of(cls, cfg: config.StackConfig) -> TimeoutChain:
        return cls(generation=cfg.webui.generation_timeout_seconds, queue_wait=cfg.queue.max_wait_seconds)

    @property
    def worker_call(self) -> int:
        """The worker's (and the batch agent's) call to its WebUI; past it the worker interrupts."""
        return self.generation

    @property
    def result_wait(self) -> int:
        """The request queue's wait for a dispatched job's result: the worker reports first."""
        return self.generation + 2 * self.margin

    @property
    def pod_read(self) -> int:
        """How long the request queue lets a pod stay silent on a call passed to it (the longest, a browser's
        event outside Gradio's queue, runs up to a generation); past it the pod is taken as lost."""
        return self.generation + self.margin

    @property
    def client_budget(self) -> int:
        """The longest an accepted request takes: the longest wait in the buffer plus one generation."""
        return self.queue_wait + self.result_wait

    @property
    def load_balancer(self) -> int:
        """The Gateway's backend timeout (GCPBackendPolicy timeoutSec)."""
        return self.client_budget + self.margin

    @property
    def queue_drain(self) -> int:
        """How long the request queue, on SIGTERM, keeps serving what it accepted."""
        return self.client_budget

    @property
    def queue_grace(self) -> int:
        return self.queue_drain + self.margin

    @property
    def webui_drain(self) -> int:
        """How long a WebUI pod, on SIGTERM, lets its generation in flight finish."""
        return self.generation

    @property
    def webui_grace(self) -> int:
        return self.webui_drain + self.margin


def client_budget_seconds(stack: str, root: Path = ROOT) -> int:
    """The client budget of a stack file's config: the longest a request accepted by the request queue takes."""
    return TimeoutChain.of(config.load_stack(root, stack)).client_budget
