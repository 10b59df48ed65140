"""Which headers cross the request queue: everything but the hop-by-hop ones (RFC 9110 section 7.6.1) and
those the next hop sets again (Host, Content-Length)."""

from __future__ import annotations

from collections.abc import Iterable

from multidict import CIMultiDict

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "transfer-encoding", "upgrade", "proxy-connection"})
RESET = frozenset({"host", "content-length"})
COLD_START = "X-Queue-Cold-Start"
QUEUE_WAIT = "X-Queue-Wait"
"""The marks on every queued response (docs/request-queue.md, "Clients")."""


def passed(headers: Iterable[tuple[str, str]], drop: Iterable[str] = ()) -> CIMultiDict[str]:
    skip = HOP_BY_HOP | RESET | {name.lower() for name in drop}
    return CIMultiDict((k, v) for k, v in headers if k.lower() not in skip)
